//! The machinery shared by tokenledger's aggregates: a small per-group state that takes rows,
//! gives them back (sliding windows), merges with partial states from other partitions, and
//! travels between them as arrays. Each aggregate defines its state; this module turns it into
//! DataFusion's single-group `Accumulator` and all-groups `GroupsAccumulator`.

use std::fmt::Debug;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Float64Array};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

/// A mergeable, retractable aggregate state of one group.
pub(crate) trait AggState: Debug + Default + Copy + Send + Sync + 'static {
    /// One input row, as the state reads it.
    type Row: Copy;

    /// Calls `f(index, row)` for each input row that counts: rows that pass `filter` and that the
    /// aggregate does not skip (for instance for NULLs).
    fn rows(values: &[ArrayRef], filter: Option<&BooleanArray>, f: impl FnMut(usize, Self::Row));
    /// Takes a row in.
    fn add(&mut self, row: Self::Row);
    /// Gives back a row taken in earlier.
    fn remove(&mut self, row: Self::Row);
    /// Absorbs a partial state.
    fn merge(&mut self, other: &Self);
    /// The aggregate's value, NULL as `None`.
    fn evaluate(&self) -> Option<f64>;
    /// States as arrays, one per state field.
    fn to_arrays(states: &[Self]) -> Vec<ArrayRef>;
    /// The state at `row` of arrays made by [`AggState::to_arrays`].
    fn from_arrays(arrays: &[ArrayRef], row: usize) -> Self;
}

/// Whether `row` passes an optional FILTER clause.
pub(crate) fn passes(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|m| m.is_valid(row) && m.value(row))
}

/// One group's accumulator; it can retract, so it also serves sliding window frames.
#[derive(Debug, Default)]
pub(crate) struct StateAccumulator<S>(S);

impl<S: AggState> Accumulator for StateAccumulator<S> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        S::rows(values, None, |_, row| self.0.add(row));
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        S::rows(values, None, |_, row| self.0.remove(row));
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.0.evaluate()))
    }

    fn size(&self) -> usize {
        size_of_val(self)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        S::to_arrays(&[self.0])
            .iter()
            .map(|a| ScalarValue::try_from_array(a, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for row in 0..states[0].len() {
            self.0.merge(&S::from_arrays(states, row));
        }
        Ok(())
    }
}

/// All groups of a GROUP BY at once (what DataFusion uses for grouped aggregation).
#[derive(Debug, Default)]
pub(crate) struct StateGroups<S> {
    states: Vec<S>,
}

impl<S: AggState> GroupsAccumulator for StateGroups<S> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.states.resize(total_num_groups, S::default());
        let states = &mut self.states;
        S::rows(values, opt_filter, |i, row| {
            states[group_indices[i]].add(row)
        });
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let emitted = emit_to.take_needed(&mut self.states);
        Ok(std::sync::Arc::new(
            emitted.iter().map(S::evaluate).collect::<Float64Array>(),
        ))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(S::to_arrays(&emit_to.take_needed(&mut self.states)))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.states.resize(total_num_groups, S::default());
        for (row, &group) in group_indices.iter().enumerate() {
            self.states[group].merge(&S::from_arrays(values, row));
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
        let mut states = vec![S::default(); values[0].len()];
        S::rows(values, opt_filter, |i, row| states[i].add(row));
        Ok(S::to_arrays(&states))
    }

    fn size(&self) -> usize {
        self.states.capacity() * size_of::<S>()
    }
}

/// The accumulator methods of an aggregate UDF whose state is the [`AggState`] `$state`: one
/// [`StateAccumulator`] per group for plain aggregation, [`StateGroups`] for grouped.
macro_rules! state_accumulators {
    ($state:ty) => {
        fn accumulator(
            &self,
            _args: datafusion::logical_expr::function::AccumulatorArgs,
        ) -> datafusion::common::Result<Box<dyn datafusion::logical_expr::Accumulator>> {
            Ok(Box::new(
                $crate::state::StateAccumulator::<$state>::default(),
            ))
        }

        fn groups_accumulator_supported(
            &self,
            _args: datafusion::logical_expr::function::AccumulatorArgs,
        ) -> bool {
            true
        }

        fn create_groups_accumulator(
            &self,
            _args: datafusion::logical_expr::function::AccumulatorArgs,
        ) -> datafusion::common::Result<Box<dyn datafusion::logical_expr::GroupsAccumulator>> {
            Ok(Box::new($crate::state::StateGroups::<$state>::default()))
        }
    };
}
pub(crate) use state_accumulators;
