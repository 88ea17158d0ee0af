//! tokenledger's token-economics SQL functions for DataFusion.
//!
//! They put the questions a CFO asks about AI spend into SQL:
//!
//! | function | kind | answers |
//! |---|---|---|
//! | `effective_cost(base_cost, p)` | scalar | cost per *resolved* item when attempts succeed with rate p |
//! | `break_even_rate(cost_per_attempt, unit_price)` | scalar | success rate below which a unit price is cheaper |
//! | `attention_cost_ratio(context, reference)` | scalar | relative attention compute of a long context |
//! | `token_cost(model, input, cached, cache_write, cache_write_1h, output, reasoning, tier, at)` | scalar | USD of a call as the provider bills it, at the price valid then |
//! | `token_price(model, token_kind, input_tokens, tier, at)` | scalar | USD per million tokens of one kind of token of a call |
//! | `cost_per_outcome(cost, succeeded)` | aggregate | spend per success, failures included |
//! | `marginal_token_utility(value, cost)` | aggregate, window | value per extra dollar (slope) |
//!
//! Every session tokenledger creates calls [`register_all`], so the functions are the same in the
//! CLI, over Flight SQL and in tests. Each carries DataFusion [`Documentation`], listed by
//! `SHOW FUNCTIONS`, `information_schema.routines` and `tokenledger functions`.

mod attention;
pub mod error;
mod kernel;
mod marginal;
mod outcome;
mod pricing;
mod state;
mod success;
mod sum;
mod time;

use std::sync::Arc;

pub use error::FunctionError;

use datafusion::logical_expr::{AggregateUDF, DocSection, Documentation, ScalarUDF};
use datafusion::prelude::SessionContext;

pub use attention::AttentionCostRatio;
pub use kernel::{PairFunction, PairUdf};
pub use marginal::MarginalTokenUtility;
pub use outcome::CostPerOutcome;
pub use pricing::{
    CallTokens, PriceBook, PricePeriod, STANDARD_TIER, SharedPrices, TokenCost, TokenPrice,
};
pub use success::{BreakEvenRate, EffectiveCost};
pub use sum::CheckedSum;
pub use time::UtcDateTrunc;

/// The documentation section all tokenledger functions belong to.
pub const TOKEN_ECONOMICS: DocSection = DocSection {
    include: true,
    label: "Token economics",
    description: Some(
        "What inference spend buys: cost per outcome, retries, pricing, value per dollar.",
    ),
};

/// The scalar functions; `token_cost` prices from `prices`.
pub fn scalar_functions(prices: Arc<SharedPrices>) -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(PairUdf::<EffectiveCost>::default()),
        ScalarUDF::from(PairUdf::<BreakEvenRate>::default()),
        ScalarUDF::from(PairUdf::<AttentionCostRatio>::default()),
        ScalarUDF::from(TokenCost::new(Arc::clone(&prices))),
        ScalarUDF::from(TokenPrice::new(prices)),
    ]
}

/// The aggregate functions (also usable as window functions).
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(CostPerOutcome::default()),
        AggregateUDF::from(MarginalTokenUtility::default()),
    ]
}

/// Registers every tokenledger function on `ctx`, pricing `token_cost` from `prices`.
pub fn register_all(ctx: &SessionContext, prices: Arc<SharedPrices>) {
    for udf in scalar_functions(prices) {
        ctx.register_udf(udf);
    }
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf);
    }
}

/// Name, kind and documentation of every function, for listings.
pub fn catalog() -> Vec<(String, &'static str, Documentation)> {
    let scalars = scalar_functions(Arc::default())
        .into_iter()
        .map(|f| (f.name().to_string(), "scalar", f.documentation().cloned()));
    let aggregates = aggregate_functions().into_iter().map(|f| {
        (
            f.name().to_string(),
            "aggregate",
            f.documentation().cloned(),
        )
    });
    scalars
        .chain(aggregates)
        .map(|(name, kind, doc)| {
            (
                name,
                kind,
                doc.expect("every tokenledger function is documented"),
            )
        })
        .collect()
}
