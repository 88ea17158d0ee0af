//! Context growth: self-attention compute grows with the square of the context length.

use std::sync::LazyLock;

use datafusion::logical_expr::Documentation;

use crate::TOKEN_ECONOMICS;
use crate::kernel::{PairFunction, show};

/// `attention_cost_ratio(context_tokens, reference_tokens)` = (context / reference)².
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct AttentionCostRatio;

impl PairFunction for AttentionCostRatio {
    const NAME: &'static str = "attention_cost_ratio";

    fn documentation() -> &'static Documentation {
        &DOC
    }

    fn apply(context: f64, reference: f64) -> f64 {
        let r = context / reference;
        r * r
    }

    fn null_if(_context: f64, reference: f64) -> bool {
        reference <= 0.0 || reference.is_nan()
    }

    fn invalid(context: f64, _reference: f64) -> bool {
        // Written so NaN fails too.
        context < 0.0 || context.is_nan()
    }

    fn invalid_message(context: f64, _reference: f64) -> String {
        format!("context_tokens must be >= 0, got {}", show(context))
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "Relative self-attention compute of a context of context_tokens against one of \
         reference_tokens: (context_tokens / reference_tokens)^2, since attention is quadratic in \
         sequence length. Doubling the context quadruples it. NULL when reference_tokens <= 0; \
         negative context_tokens is an error. (Per-token prices are linear: this measures the \
         compute, and the latency, that long contexts cost the provider.)",
        "attention_cost_ratio(context_tokens, reference_tokens)",
    )
    .with_argument("context_tokens", "Tokens in the context being measured.")
    .with_argument(
        "reference_tokens",
        "Tokens in the reference context, e.g. the workflow median.",
    )
    .with_sql_example("```sql\n> SELECT attention_cost_ratio(16000, 8000);\n-- 4.0\n```")
    .build()
});
