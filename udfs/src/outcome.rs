//! Cost per outcome: every attempt is paid for, only successes count.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, UInt64Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use crate::TOKEN_ECONOMICS;

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

impl Tally {
    fn value(&self) -> Option<f64> {
        (self.successes > 0).then(|| self.cost / self.successes as f64)
    }
}

/// Calls `f(row, cost, succeeded)` for each row that passes `filter`, NULL cost as 0.
fn for_each_row(
    values: &[ArrayRef],
    filter: Option<&BooleanArray>,
    mut f: impl FnMut(usize, f64, bool),
) {
    let cost = values[0].as_primitive::<Float64Type>();
    let succeeded = values[1].as_boolean();
    for row in 0..cost.len() {
        if filter.is_some_and(|m| !m.is_valid(row) || !m.value(row)) {
            continue;
        }
        let c = if cost.is_valid(row) {
            cost.value(row)
        } else {
            0.0
        };
        f(row, c, succeeded.is_valid(row) && succeeded.value(row));
    }
}

fn tally_arrays(tallies: &[Tally]) -> Vec<ArrayRef> {
    vec![
        Arc::new(tallies.iter().map(|t| t.cost).collect::<Float64Array>()),
        Arc::new(tallies.iter().map(|t| t.successes).collect::<UInt64Array>()),
    ]
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

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(TallyAccumulator::default()))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(TallyGroups::default()))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// One group's accumulator; also serves sliding window frames (it can retract rows).
#[derive(Debug, Default)]
struct TallyAccumulator(Tally);

impl Accumulator for TallyAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let t = &mut self.0;
        for_each_row(values, None, |_, cost, ok| {
            t.cost += cost;
            t.successes += u64::from(ok);
        });
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let t = &mut self.0;
        for_each_row(values, None, |_, cost, ok| {
            t.cost -= cost;
            t.successes -= u64::from(ok);
        });
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.0.value()))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Float64(Some(self.0.cost)),
            ScalarValue::UInt64(Some(self.0.successes)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (cost, successes) = (
            states[0].as_primitive::<Float64Type>(),
            states[1].as_primitive::<UInt64Type>(),
        );
        for i in 0..cost.len() {
            self.0.cost += cost.value(i);
            self.0.successes += successes.value(i);
        }
        Ok(())
    }
}

/// All groups of a GROUP BY at once (what DataFusion uses for grouped aggregation).
#[derive(Debug, Default)]
struct TallyGroups {
    tallies: Vec<Tally>,
}

impl GroupsAccumulator for TallyGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.tallies.resize(total_num_groups, Tally::default());
        let tallies = &mut self.tallies;
        for_each_row(values, opt_filter, |row, cost, ok| {
            let t = &mut tallies[group_indices[row]];
            t.cost += cost;
            t.successes += u64::from(ok);
        });
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let emitted = emit_to.take_needed(&mut self.tallies);
        Ok(Arc::new(
            emitted.iter().map(Tally::value).collect::<Float64Array>(),
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(tally_arrays(&emit_to.take_needed(&mut self.tallies)))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.tallies.resize(total_num_groups, Tally::default());
        let (cost, successes) = (
            values[0].as_primitive::<Float64Type>(),
            values[1].as_primitive::<UInt64Type>(),
        );
        for (row, &group) in group_indices.iter().enumerate() {
            let t = &mut self.tallies[group];
            t.cost += cost.value(row);
            t.successes += successes.value(row);
        }
        Ok(())
    }

    /// Each input row as its own partial state (DataFusion skips partial aggregation this way
    /// when groups barely repeat).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let mut tallies = vec![Tally::default(); values[0].len()];
        for_each_row(values, opt_filter, |row, cost, ok| {
            tallies[row] = Tally {
                cost,
                successes: u64::from(ok),
            };
        });
        Ok(tally_arrays(&tallies))
    }

    fn size(&self) -> usize {
        self.tallies.capacity() * size_of::<Tally>()
    }
}
