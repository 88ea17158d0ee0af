//! Cost per outcome: every attempt is paid for, only successes count.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt64Type};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::function::StateFieldsArgs;
use datafusion::logical_expr::{AggregateUDFImpl, Documentation, Signature, Volatility};

use crate::TOKEN_ECONOMICS;
use crate::state::{AggState, passes, state_accumulators};

/// `cost_per_outcome(cost, succeeded)`: total cost of all rows / rows that succeeded.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CostPerOutcome {
    signature: Signature,
}

impl Default for CostPerOutcome {
    fn default() -> Self {
        CostPerOutcome {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Spend and successes of one group. NULL costs add nothing; NULL `succeeded` is not a success.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Tally {
    cost: f64,
    successes: u64,
}

impl AggState for Tally {
    /// (cost, succeeded)
    type Row = (f64, bool);

    /// Every row counts: a NULL cost as 0, a NULL `succeeded` as not succeeded.
    fn rows(
        values: &[ArrayRef],
        filter: Option<&BooleanArray>,
        mut f: impl FnMut(usize, (f64, bool)),
    ) {
        let cost = values[0].as_primitive::<Float64Type>();
        let succeeded = values[1].as_boolean();
        for row in (0..cost.len()).filter(|&row| passes(filter, row)) {
            let c = if cost.is_valid(row) {
                cost.value(row)
            } else {
                0.0
            };
            f(row, (c, succeeded.is_valid(row) && succeeded.value(row)));
        }
    }

    fn add(&mut self, (cost, ok): (f64, bool)) {
        self.cost += cost;
        self.successes += u64::from(ok);
    }

    fn remove(&mut self, (cost, ok): (f64, bool)) {
        self.cost -= cost;
        self.successes -= u64::from(ok);
    }

    fn merge(&mut self, other: &Self) {
        self.cost += other.cost;
        self.successes += other.successes;
    }

    fn evaluate(&self) -> Option<f64> {
        (self.successes > 0).then(|| self.cost / self.successes as f64)
    }

    fn to_arrays(states: &[Self]) -> Vec<ArrayRef> {
        vec![
            Arc::new(states.iter().map(|t| t.cost).collect::<Float64Array>()),
            Arc::new(states.iter().map(|t| t.successes).collect::<UInt64Array>()),
        ]
    }

    fn from_arrays(arrays: &[ArrayRef], row: usize) -> Self {
        Tally {
            cost: arrays[0].as_primitive::<Float64Type>().value(row),
            successes: arrays[1].as_primitive::<UInt64Type>().value(row),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "Cost per successful outcome: the sum of cost over all rows divided by the number of rows \
         where succeeded is true. Failed attempts and retries are paid for by the successes. \
         NULL costs count as 0 and a NULL succeeded as not succeeded; NULL when nothing succeeded.",
        "cost_per_outcome(cost, succeeded)",
    )
    .with_argument("cost", "Cost of the row (an attempt, a call, a work item).")
    .with_argument("succeeded", "Whether the row produced the outcome (BOOLEAN).")
    .with_sql_example(
        "```sql\n> SELECT workflow, cost_per_outcome(cost_usd, status = 'ok') FROM attempts GROUP BY workflow;\n```",
    )
    .with_related_udf("effective_cost")
    .build()
});

impl AggregateUDFImpl for CostPerOutcome {
    fn name(&self) -> &str {
        "cost_per_outcome"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [cost, succeeded]
                if (cost.is_numeric() || cost.is_null())
                    && matches!(succeeded, DataType::Boolean | DataType::Null) =>
            {
                Ok(vec![DataType::Float64, DataType::Boolean])
            }
            _ => plan_err!(
                "cost_per_outcome(cost, succeeded) takes a number and a BOOLEAN, got {arg_types:?}"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[cost]", args.name),
                DataType::Float64,
                false,
            )),
            Arc::new(Field::new(
                format!("{}[successes]", args.name),
                DataType::UInt64,
                false,
            )),
        ])
    }

    state_accumulators!(Tally);

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}
