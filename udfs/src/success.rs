//! Cost of success: what a first-try success rate does to the cost of a finished unit.
//!
//! If one attempt costs `T` and succeeds with probability `p`, and failures are retried until one
//! succeeds, the number of attempts is geometric with mean `1/p`, so a resolved item costs `T/p`
//! on average. The inflation is not linear: from p = 0.9 to p = 0.7 the cost per resolved item
//! rises by 0.9/0.7 − 1 = 28.6 %, not 20 %.

use std::sync::LazyLock;

use datafusion::logical_expr::Documentation;

use crate::TOKEN_ECONOMICS;
use crate::kernel::{PairFunction, show};

/// `effective_cost(base_cost, p)`: expected cost per resolved item.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct EffectiveCost;

impl PairFunction for EffectiveCost {
    const NAME: &'static str = "effective_cost";

    fn documentation() -> &'static Documentation {
        &EFFECTIVE_COST_DOC
    }

    fn apply(cost: f64, p: f64) -> f64 {
        cost / p
    }

    fn null_if(_cost: f64, p: f64) -> bool {
        p == 0.0
    }

    fn invalid(_cost: f64, p: f64) -> bool {
        // Written so NaN fails too.
        !(0.0..=1.0).contains(&p)
    }

    fn invalid_message(_cost: f64, p: f64) -> String {
        format!("success rate p must be in [0, 1], got {}", show(p))
    }
}

static EFFECTIVE_COST_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "Expected cost per resolved item when one attempt costs base_cost and succeeds with \
         probability p, failures being retried: base_cost / p (attempts per success are 1/p on \
         average). p = 0 gives NULL (nothing is ever resolved); p outside [0, 1] or NaN is an error.",
        "effective_cost(base_cost, p)",
    )
    .with_argument("base_cost", "Cost of one attempt (any numeric expression).")
    .with_argument("p", "First-try success rate, in [0, 1].")
    .with_sql_example(
        "```sql\n> SELECT effective_cost(1.0, 0.7) / effective_cost(1.0, 0.9);\n-- 1.2857… : 90 % → 70 % success costs 28.6 % more per resolved item\n```",
    )
    .with_related_udf("break_even_rate")
    .build()
});

/// `break_even_rate(cost_per_attempt, unit_price)`: the success rate at which AI and a unit price
/// cost the same.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct BreakEvenRate;

impl PairFunction for BreakEvenRate {
    const NAME: &'static str = "break_even_rate";

    fn documentation() -> &'static Documentation {
        &BREAK_EVEN_DOC
    }

    fn apply(cost: f64, price: f64) -> f64 {
        cost / price
    }

    fn null_if(_cost: f64, price: f64) -> bool {
        price <= 0.0 || price.is_nan()
    }
}

static BREAK_EVEN_DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "First-try success rate below which AI costs more per completed unit than unit_price \
         (an outsourcing price, say): from cost_per_attempt / p = unit_price, p = cost_per_attempt \
         / unit_price. NULL when unit_price <= 0. A result above 1 means AI cannot win at any rate.",
        "break_even_rate(cost_per_attempt, unit_price)",
    )
    .with_argument("cost_per_attempt", "Cost of one attempt.")
    .with_argument("unit_price", "Price of one completed unit by the alternative.")
    .with_sql_example("```sql\n> SELECT break_even_rate(0.80, 3.20);\n-- 0.25: AI wins while more than a quarter of first tries succeed\n```")
    .with_related_udf("effective_cost")
    .build()
});
