//! Three additions to datafusion-distributed 4.0.0's planning: file scans split so that every
//! task gets the same number of partitions, a sort after each shuffle that claims an order,
//! and `EXPLAIN` that shows the stages.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::{FileGroup, FileGroupPartitioner, FileScanConfig};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::{LogicalPlan, PlanType, StringifiedPlan, ToStringifiedPlan};
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, ExecutionPlanProperties, ReplaceChildrenOptions,
    displayable,
};
use datafusion_distributed::{
    DistributedExec, DistributedLeafExec, NetworkShuffleExec, ScaleUpLeafNodeEvent,
    ScaleUpLeafNodeEventResponse, display_plan_ascii,
};

/// Splits a Parquet scan into one variant per task, each with the same number of partitions.
///
/// datafusion-distributed 4.0.0's own splitter deals the file groups out round-robin, so when
/// the files cannot be cut into `partitions × tasks` groups (few files, or files that must
/// keep their order) the tasks get different numbers of groups and planning fails with
/// "Different partition count where provided in two different variants of
/// DistributedLeafExec". Here the tasks that got fewer groups are given empty ones, which
/// read nothing; and when there are fewer groups than tasks, each file becomes a group of its
/// own, so that every worker that can get a file does. Scans with a declared partitioning are
/// left to the built-in splitter.
pub(crate) fn split_file_scan(
    event: ScaleUpLeafNodeEvent,
) -> Option<Result<ScaleUpLeafNodeEventResponse>> {
    let scan = event.plan.downcast_ref::<DataSourceExec>()?;
    let config = scan.data_source().downcast_ref::<FileScanConfig>()?;
    if config.output_partitioning.is_some() {
        return None;
    }
    let tasks = event.task_count.max(1);
    let partitions = event.plan.output_partitioning().partition_count().max(1);
    let mut groups = FileGroupPartitioner::new()
        .with_target_partitions(partitions * tasks)
        .with_repartition_file_min_size(0)
        .with_preserve_order_within_groups(!config.output_ordering.is_empty())
        .repartition_file_groups(&config.file_groups)
        .unwrap_or_else(|| config.file_groups.clone());
    if groups.len() < tasks {
        // Files that could not be cut (they must keep their order) go one to a group, so
        // that as many tasks as there are files get work. A file alone keeps its order.
        let files: Vec<_> = groups.iter().flat_map(|g| g.iter().cloned()).collect();
        if files.len() > groups.len() {
            groups = files.into_iter().map(|f| FileGroup::new(vec![f])).collect();
        }
    }
    let per_task = groups.len().div_ceil(tasks).max(1);
    let mut dealt: Vec<Vec<FileGroup>> = vec![Vec::with_capacity(per_task); tasks];
    for (index, group) in groups.into_iter().enumerate() {
        dealt[index % tasks].push(group);
    }
    let variants = dealt.into_iter().map(|mut task_groups| {
        task_groups.resize_with(per_task, || FileGroup::new(Vec::new()));
        let mut variant = config.clone();
        variant.file_groups = task_groups;
        DataSourceExec::from_data_source(variant) as Arc<dyn ExecutionPlan>
    });
    Some(
        DistributedLeafExec::try_new(Arc::clone(event.plan), variants)
            .map(|leaf| ScaleUpLeafNodeEventResponse::new(Arc::new(leaf))),
    )
}

/// The distributed planner with two corrections:
///
/// - **Order after shuffles.** A `NetworkShuffleExec` advertises the ordering of the plan that
///   feeds it, but each of its partitions concatenates the streams of several tasks, so that
///   order does not hold (fixed upstream after 4.0.0, datafusion-distributed PR 735). An
///   operator above that relies on it (an aggregation in sorted mode over files sorted by
///   workflow) then splits groups: `tests/it/distributed.rs` shows a `GROUP BY workflow`
///   returning wrong rows. Each such shuffle gets a `SortExec` above it, which restores the
///   order it claims; on the partial aggregates a shuffle carries, the sort is small.
/// - **`EXPLAIN`** (not `EXPLAIN ANALYZE`, which datafusion-distributed handles) goes through
///   the distributed planner and shows the stages and tasks. Without this, DataFusion plans
///   the explained query with its default planner and shows a single-node plan that is not
///   what runs.
#[derive(Debug)]
pub(crate) struct TokenledgerPlanner {
    /// The distributed planner.
    pub(crate) inner: Arc<dyn QueryPlanner + Send + Sync>,
}

impl TokenledgerPlanner {
    async fn plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self
            .inner
            .create_physical_plan(logical_plan, session)
            .await?;
        sort_after_ordered_shuffles(plan)
    }
}

/// `plan` with a `SortExec` (per partition) above every `NetworkShuffleExec` that claims an
/// output ordering; see [`TokenledgerPlanner`].
fn sort_after_ordered_shuffles(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let claims_order = |child: &Arc<dyn ExecutionPlan>| {
        child.is::<NetworkShuffleExec>() && child.output_ordering().is_some()
    };
    plan.transform_up(|node| {
        if !node.children().into_iter().any(claims_order) {
            return Ok(Transformed::no(node));
        }
        let children = node
            .children()
            .into_iter()
            .map(|child| match child.output_ordering() {
                Some(ordering) if claims_order(child) => {
                    let sort = SortExec::new(ordering.clone(), Arc::clone(child))
                        .with_preserve_partitioning(true);
                    Arc::new(sort) as Arc<dyn ExecutionPlan>
                }
                _ => Arc::clone(child),
            })
            .collect();
        let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        Ok(Transformed::yes(node.replace_children(children, options)?))
    })
    .map(|transformed| transformed.data)
}

#[async_trait]
impl QueryPlanner for TokenledgerPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let LogicalPlan::Explain(explain) = logical_plan else {
            return self.plan(logical_plan, session).await;
        };
        let physical = self.plan(&explain.plan, session).await?;
        let text = if physical.is::<DistributedExec>() {
            display_plan_ascii(physical.as_ref(), false)
        } else {
            displayable(physical.as_ref()).indent(true).to_string()
        };
        // As DataFusion's planner lists them: the logical plans, then the physical one.
        let mut plans: Vec<StringifiedPlan> = explain
            .stringified_plans
            .iter()
            .filter(|plan| plan.should_display(explain.verbose))
            .cloned()
            .collect();
        plans.push(explain.plan.to_stringified(PlanType::FinalLogicalPlan));
        plans.push(StringifiedPlan::new(PlanType::FinalPhysicalPlan, text));
        Ok(Arc::new(ExplainExec::new(
            Arc::clone(explain.schema.inner()),
            plans,
            explain.verbose,
        )))
    }
}
