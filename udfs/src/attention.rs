//! Context growth: self-attention compute grows with the square of the context length.

use std::sync::LazyLock;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::TOKEN_ECONOMICS;
use crate::kernel::{PairFunction, eval_pair, show};

/// `attention_cost_ratio(context_tokens, reference_tokens)` = (context / reference)².
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct AttentionCostRatio {
    signature: Signature,
}

impl Default for AttentionCostRatio {
    fn default() -> Self {
        AttentionCostRatio {
            signature: Signature::uniform(2, vec![DataType::Float64], Volatility::Immutable),
        }
    }
}

impl PairFunction for AttentionCostRatio {
    const NAME: &'static str = "attention_cost_ratio";

    fn apply(context: f64, reference: f64) -> f64 {
        let r = context / reference;
        r * r
    }

    fn null_if(_context: f64, reference: f64) -> bool {
        reference <= 0.0 || reference.is_nan()
    }

    fn check(context: f64, _reference: f64) -> Option<String> {
        (context.is_nan() || context < 0.0)
            .then(|| format!("context_tokens must be >= 0, got {}", show(context)))
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

impl ScalarUDFImpl for AttentionCostRatio {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        eval_pair::<Self>(&args.args, args.number_rows)
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
