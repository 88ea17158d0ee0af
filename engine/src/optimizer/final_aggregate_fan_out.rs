//! Final aggregations split into several run one after another, so each hash table holds a
//! share of a partition's groups and stays in the CPU's cache (see
//! [`super::partial_aggregate_budget`] for why the tables' size matters).
//!
//! [`FinalAggregateFanOutRule`] repartitions the partial results into `f` times as many
//! partitions and runs the final aggregations of each group of `f` one after another
//! ([`InTurnExec`]), so each table holds a `1/f` share of a partition's groups.
//!
//! `SET tokenledger_optimizer.final_fan_out = 1` turns it off.

use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, assert_eq_or_internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, Partitioning, PlanProperties,
    SendableRecordBatchStream, replace_children_if_necessary,
};
use futures::{StreamExt, TryStreamExt};

use super::{OptimizerOptions, contains};
use crate::plan_node::{one_input_node, only_child};

/// Splits each `FinalPartitioned` aggregation over a hash repartition into
/// [`OptimizerOptions::final_fan_out`] smaller ones run one after another, so each holds a
/// fraction of the partition's groups in its table.
#[derive(Debug, Default)]
pub struct FinalAggregateFanOutRule;

impl PhysicalOptimizerRule for FinalAggregateFanOutRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let fan_out = OptimizerOptions::of(config).final_fan_out;
        if fan_out < 2 || contains::<InTurnExec>(&plan)? {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(repartition) = hash_repartition_under_final(&node) else {
                return Ok(Transformed::no(node));
            };
            let Partitioning::Hash(keys, partitions) = repartition.partitioning() else {
                return Ok(Transformed::no(node));
            };
            let wider: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
                Arc::clone(repartition.input()),
                Partitioning::Hash(keys.clone(), partitions * fan_out),
            )?);
            let finals = replace_children_if_necessary(Arc::clone(&node), vec![wider])?;
            Ok(Transformed::yes(Arc::new(InTurnExec::new(
                finals,
                Arc::clone(node.properties()),
            ))))
        })
        .data()
    }

    fn name(&self) -> &str {
        "final_aggregate_fan_out"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The hash repartition under `node`, when `node` is a final aggregation in no particular order
/// reading it directly.
fn hash_repartition_under_final(node: &Arc<dyn ExecutionPlan>) -> Option<&RepartitionExec> {
    let aggregate = node.downcast_ref::<AggregateExec>()?;
    if *aggregate.mode() != AggregateMode::FinalPartitioned
        || *aggregate.input_order_mode() != InputOrderMode::Linear
        || aggregate.limit_options().is_some()
    {
        return None;
    }
    let repartition = aggregate.input().downcast_ref::<RepartitionExec>()?;
    let hashed = matches!(repartition.partitioning(), Partitioning::Hash(..));
    (hashed && !repartition.preserve_order()).then_some(repartition)
}

/// Reads its input's partitions `p, p + n, p + 2n, …` one after another as its partition `p` of
/// `n`. Over a hash repartition into `n·f` partitions (a row goes to `hash % n·f`) that gives
/// exactly the rows a repartition into `n` puts in `p`, as `hash % n·f % n = hash % n`: the plan
/// above keeps the partitioning it was planned for.
#[derive(Debug)]
pub struct InTurnExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl InTurnExec {
    fn new(input: Arc<dyn ExecutionPlan>, properties: Arc<PlanProperties>) -> Self {
        Self { input, properties }
    }

    fn input_partitions(&self) -> usize {
        self.input
            .properties()
            .output_partitioning()
            .partition_count()
    }

    fn partitions(&self) -> usize {
        self.properties.output_partitioning().partition_count()
    }
}

impl DisplayAs for InTurnExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "InTurnExec: {} partitions read as {}, one after another",
            self.input_partitions(),
            self.partitions()
        )
    }
}

impl ExecutionPlan for InTurnExec {
    one_input_node!("InTurnExec", input);

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    /// The new input must have as many partitions as the old: the node's partitioning says so.
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(children, self.name())?;
        let inputs = input.properties().output_partitioning().partition_count();
        assert_eq_or_internal_err!(
            inputs,
            self.input_partitions(),
            "InTurnExec reads as many partitions as its input had"
        );
        Ok(Arc::new(Self::new(input, Arc::clone(&self.properties))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = Arc::clone(&self.input);
        let schema = input.schema();
        let parts = (partition..self.input_partitions()).step_by(self.partitions());
        // Each input partition is started only when the one before it has ended, so only one
        // of their tables is held at a time.
        let batches = futures::stream::iter(parts)
            .map(move |part| input.execute(part, Arc::clone(&context)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}
