//! `sum` over 64-bit integers that fails instead of wrapping.
//!
//! DataFusion 55's `sum` adds `Int64` values with wrapping arithmetic: two spans of 2^63−1 and 1
//! input tokens sum to −9,223,372,036,854,775,808. A ledger must never show a wrapped number, so
//! tokenledger's sessions replace `sum` with this wrapper. For `Int64` (every token column, and
//! `Int32` columns, which `sum` widens) each addition is checked and an overflow is an error
//! naming the summed expression; every other type (floats, decimals, intervals) and
//! `sum(DISTINCT …)` are DataFusion's own. Counts within range sum at the same speed: the check
//! is one overflow flag per addition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_datafusion_err};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, Expr, GroupsAccumulator, Operator,
    ReversedUDAF, SetMonotonicity, Signature,
};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::prim_op::PrimitiveGroupsAccumulator;

/// DataFusion's `sum`, with `Int64` sums checked for overflow.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CheckedSum {
    inner: Sum,
}

impl Default for CheckedSum {
    fn default() -> Self {
        Self { inner: Sum::new() }
    }
}

/// Whether `args` sums 64-bit integers without DISTINCT: the case this wrapper checks.
fn checks(args: &AccumulatorArgs) -> bool {
    !args.is_distinct && args.return_field.data_type() == &DataType::Int64
}

/// What the error names: the summed expression as the plan shows it (`input_tokens@11`).
fn summed(args: &AccumulatorArgs) -> String {
    args.exprs
        .first()
        .map_or_else(|| "?".to_string(), |e| e.to_string())
}

/// The error of a sum of `what` past the 64-bit range.
fn overflow(what: &str) -> DataFusionError {
    exec_datafusion_err!(
        "sum({what}) exceeds the 64-bit integer range (more than 9223372036854775807): \
         some rows hold implausible values; see tokenledger_files and docs/integrity.md"
    )
}

impl AggregateUDFImpl for CheckedSum {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if !checks(&args) {
            return self.inner.accumulator(args);
        }
        Ok(Box::new(CheckedSumAccumulator {
            sum: None,
            what: summed(&args),
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        self.inner.groups_accumulator_supported(args)
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        if !checks(&args) {
            return self.inner.create_groups_accumulator(args);
        }
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflowed);
        let inner = PrimitiveGroupsAccumulator::<Int64Type, _>::new(
            &DataType::Int64,
            move |sum: &mut i64, value: i64| {
                let (total, wrapped) = sum.overflowing_add(value);
                *sum = total;
                if wrapped {
                    flag.store(true, Ordering::Relaxed);
                }
            },
        );
        Ok(Box::new(CheckedGroupsAccumulator {
            inner: Box::new(inner),
            overflowed,
            what: summed(&args),
        }))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        // Window frames that slide add and retract: a wrap on the way can be undone by the
        // retraction, so only the value shown is checked, by the plain accumulator's rule.
        if !checks(&args) {
            return self.inner.create_sliding_accumulator(args);
        }
        Ok(Box::new(CheckedSlidingAccumulator {
            sum: 0i128,
            count: 0,
            what: summed(&args),
        }))
    }

    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::Identical
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn set_monotonicity(&self, data_type: &DataType) -> SetMonotonicity {
        self.inner.set_monotonicity(data_type)
    }

    fn simplify_expr_op_literal(
        &self,
        agg_function: &AggregateFunction,
        arg: &Expr,
        op: Operator,
        lit: &Expr,
        arg_is_left: bool,
    ) -> Result<Option<Expr>> {
        self.inner
            .simplify_expr_op_literal(agg_function, arg, op, lit, arg_is_left)
    }
}

/// One group's checked sum.
#[derive(Debug)]
struct CheckedSumAccumulator {
    sum: Option<i64>,
    what: String,
}

impl Accumulator for CheckedSumAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let values = values[0].as_primitive::<Int64Type>();
        if values.null_count() == values.len() {
            return Ok(());
        }
        let batch =
            datafusion::arrow::compute::sum_checked(values).map_err(|_| overflow(&self.what))?;
        let Some(batch) = batch else { return Ok(()) };
        let sum = self.sum.unwrap_or(0);
        match sum.checked_add(batch) {
            Some(total) => self.sum = Some(total),
            None => return Err(overflow(&self.what)),
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(self.sum))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.what.capacity()
    }
}

/// A sliding window's sum, kept in 128 bits so additions and retractions never wrap; the
/// value shown must fit 64 bits.
#[derive(Debug)]
struct CheckedSlidingAccumulator {
    sum: i128,
    count: u64,
    what: String,
}

impl CheckedSlidingAccumulator {
    fn add(&mut self, values: &ArrayRef, sign: i128) {
        let values = values.as_primitive::<Int64Type>();
        for value in values.iter().flatten() {
            self.sum += sign * i128::from(value);
        }
        let present = (values.len() - values.null_count()) as u64;
        if sign > 0 {
            self.count += present;
        } else {
            self.count -= present;
        }
    }
}

impl Accumulator for CheckedSlidingAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], 1);
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0], -1);
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(&states[..1])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            self.evaluate()?,
            ScalarValue::UInt64(Some(self.count)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.count == 0 {
            return Ok(ScalarValue::Int64(None));
        }
        match i64::try_from(self.sum) {
            Ok(sum) => Ok(ScalarValue::Int64(Some(sum))),
            Err(_) => Err(overflow(&self.what)),
        }
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.what.capacity()
    }
}

/// Many groups' sums: DataFusion's own accumulator adding with a flag raised on a wrap, which
/// fails the query at the end of the batch that wrapped.
struct CheckedGroupsAccumulator {
    inner: Box<dyn GroupsAccumulator>,
    overflowed: Arc<AtomicBool>,
    what: String,
}

impl CheckedGroupsAccumulator {
    fn check(&self) -> Result<()> {
        if self.overflowed.load(Ordering::Relaxed) {
            return Err(overflow(&self.what));
        }
        Ok(())
    }
}

impl GroupsAccumulator for CheckedGroupsAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .update_batch(values, group_indices, opt_filter, total_num_groups)?;
        self.check()
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.inner
            .merge_batch(values, group_indices, total_num_groups)?;
        self.check()
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.check()?;
        self.inner.evaluate(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.check()?;
        self.inner.state(emit_to)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // One value per row: nothing is added, so nothing can wrap.
        self.inner.convert_to_state(values, opt_filter)
    }

    fn size(&self) -> usize {
        self.inner.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn array(values: &[Option<i64>]) -> ArrayRef {
        Arc::new(Int64Array::from(values.to_vec()))
    }

    fn accumulator() -> CheckedSumAccumulator {
        CheckedSumAccumulator {
            sum: None,
            what: "input_tokens@11".into(),
        }
    }

    #[test]
    fn a_wrap_inside_one_batch_or_across_batches_is_an_error_naming_the_column() {
        let error = accumulator()
            .update_batch(&[array(&[Some(i64::MAX), Some(1)])])
            .unwrap_err();
        assert!(
            error.to_string().contains("sum(input_tokens@11) exceeds"),
            "{error}"
        );
        let mut across = accumulator();
        across.update_batch(&[array(&[Some(i64::MAX)])]).unwrap();
        assert!(across.merge_batch(&[array(&[Some(1)])]).is_err());
    }

    #[test]
    fn sums_in_range_are_exact_and_all_nulls_stay_null() {
        let mut sum = accumulator();
        sum.update_batch(&[array(&[None, None])]).unwrap();
        assert_eq!(sum.evaluate().unwrap(), ScalarValue::Int64(None));
        sum.update_batch(&[array(&[Some(i64::MAX - 1), None])])
            .unwrap();
        sum.update_batch(&[array(&[Some(1), Some(-3), Some(3)])])
            .unwrap();
        assert_eq!(sum.evaluate().unwrap(), ScalarValue::Int64(Some(i64::MAX)));
    }

    #[test]
    fn a_sliding_window_may_pass_the_range_on_the_way_but_not_show_it() {
        let mut window = CheckedSlidingAccumulator {
            sum: 0,
            count: 0,
            what: "v".into(),
        };
        window
            .update_batch(&[array(&[Some(i64::MAX), Some(5)])])
            .unwrap();
        assert!(window.evaluate().is_err());
        window.retract_batch(&[array(&[Some(i64::MAX)])]).unwrap();
        assert_eq!(window.evaluate().unwrap(), ScalarValue::Int64(Some(5)));
    }
}
