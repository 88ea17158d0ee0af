//! A memory budget for each partition's partial aggregation, so its hash table stays in the
//! CPU's cache.
//!
//! DataFusion aggregates in two phases: a `Partial` aggregation in each input partition, then a
//! `FinalPartitioned` one in each partition of a hash repartition of the partial results. Both
//! keep every group they have seen until their input ends. With many groups (10 M spans over
//! 900 K work items) the tables grow to tens of MB, and each new group and each probe of a cold
//! one is a cache miss: 60 % of `GROUP BY work_item_id`'s time went to the tables' lookups and
//! inserts.
//!
//! [`PartialAggregateBudgetRule`] gives each partition's partial aggregation a memory budget.
//! When its reservation is refused, DataFusion emits the groups it holds as partial results and
//! starts a fresh table ("emit early"), which is correct because the final phase merges partial
//! results whatever their number. Rows of the same group usually arrive close together (a work
//! item's spans are written together), so most groups are still merged in the partial phase.
//! [`super::final_aggregate_fan_out`] keeps the final phase's tables small.
//!
//! `SET tokenledger_optimizer.partial_budget_bytes = 0` turns it off.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, make_comparator};
use arrow::compute::SortOptions;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PlanProperties,
    SendableRecordBatchStream, replace_children_if_necessary,
};
use futures::TryStreamExt;

use super::{OptimizerOptions, contains};
use crate::plan_node::{one_input_node, only_child};

/// Runs every grouped `Partial` aggregation whose accumulators have a fixed-size state under a
/// [`PartialAggregateBudgetExec`].
#[derive(Debug, Default)]
pub struct PartialAggregateBudgetRule;

impl PhysicalOptimizerRule for PartialAggregateBudgetRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let budget = OptimizerOptions::of(config).partial_budget_bytes;
        if budget == 0 || contains::<PartialAggregateBudgetExec>(&plan)? {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !takes_a_budget(aggregate) {
                return Ok(Transformed::no(node));
            }
            let input: Arc<dyn ExecutionPlan> =
                Arc::new(BudgetInputExec::new(Arc::clone(aggregate.input())));
            let aggregate = replace_children_if_necessary(Arc::clone(&node), vec![input])?;
            Ok(Transformed::yes(PartialAggregateBudgetExec::over(
                aggregate, budget,
            )))
        })
        .data()
    }

    fn name(&self) -> &str {
        "partial_aggregate_budget"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether emitting early is what a refused reservation makes `aggregate` do: a grouped partial
/// aggregation with one grouping set, in no input order (an ordered one emits groups as they
/// end already), without a `LIMIT` of groups, whose accumulators each hold a few fixed-size
/// values per group (a list-valued state, as `array_agg`'s or a `DISTINCT`'s, can outgrow any
/// budget within one group).
fn takes_a_budget(aggregate: &AggregateExec) -> bool {
    *aggregate.mode() == AggregateMode::Partial
        && !aggregate.group_expr().is_empty()
        && aggregate.group_expr().is_single()
        && aggregate.limit_options().is_none()
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.aggr_expr().iter().all(|expr| {
            !expr.is_distinct()
                && expr
                    .state_fields()
                    .is_ok_and(|fields| fields.iter().all(|f| !f.data_type().is_nested()))
        })
}

/// Runs its input, a partial aggregation, with a memory pool of `budget` bytes per partition
/// drawn from the query's pool (`BudgetPool`).
#[derive(Debug)]
pub struct PartialAggregateBudgetExec {
    aggregate: Arc<dyn ExecutionPlan>,
    /// The aggregation's group keys, over its input's rows.
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    budget: usize,
}

impl PartialAggregateBudgetExec {
    /// `aggregate` under a budget, or `aggregate` alone if it is not an aggregation.
    fn over(aggregate: Arc<dyn ExecutionPlan>, budget: usize) -> Arc<dyn ExecutionPlan> {
        let Some(group_exprs) = aggregate
            .downcast_ref::<AggregateExec>()
            .map(|a| a.group_expr().input_exprs())
        else {
            return aggregate;
        };
        Arc::new(Self {
            aggregate,
            group_exprs,
            budget,
        })
    }
}

impl DisplayAs for PartialAggregateBudgetExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "PartialAggregateBudgetExec: budget={} bytes per partition",
            self.budget
        )
    }
}

impl ExecutionPlan for PartialAggregateBudgetExec {
    one_input_node!("PartialAggregateBudgetExec", aggregate);

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Self::over(only_child(children, self.name())?, self.budget))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let last_input = Arc::new(LastInput {
            batch: Mutex::new(None),
            group_exprs: self.group_exprs.clone(),
        });
        let budgeted = budgeted_context(&context, self.budget, last_input);
        self.aggregate.execute(partition, budgeted)
    }
}

/// What the plan below a budgeted aggregation needs from the budgeted context: the query's own
/// context, and where to leave each batch it gives the aggregation.
#[derive(Debug)]
struct BudgetScope {
    query: Arc<TaskContext>,
    last_input: Arc<LastInput>,
}

/// `context` with its memory pool replaced by a [`BudgetPool`] of `budget` bytes over it, and a
/// [`BudgetScope`] as an extension so the plan below the aggregation can go back to `context`.
fn budgeted_context(
    context: &Arc<TaskContext>,
    budget: usize,
    last_input: Arc<LastInput>,
) -> Arc<TaskContext> {
    let mut runtime = context.runtime_env().as_ref().clone();
    runtime.memory_pool = Arc::new(BudgetPool {
        query: Arc::clone(&runtime.memory_pool),
        budget,
        held: AtomicUsize::new(0),
        last_input: Arc::clone(&last_input),
    });
    let scope = BudgetScope {
        query: Arc::clone(context),
        last_input,
    };
    let config = context
        .session_config()
        .clone()
        .with_extension(Arc::new(scope));
    Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        Arc::new(runtime),
    ))
}

/// The input of a budgeted aggregation. Run inside a [`PartialAggregateBudgetExec`], it runs
/// the plan below with the query's own context (the budget is for the aggregation, not for a
/// join or sort under it) and keeps the batch it last gave the aggregation in `LastInput`.
#[derive(Debug)]
pub struct BudgetInputExec {
    input: Arc<dyn ExecutionPlan>,
}

impl BudgetInputExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        Self { input }
    }
}

impl DisplayAs for BudgetInputExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BudgetInputExec")
    }
}

impl ExecutionPlan for BudgetInputExec {
    one_input_node!("BudgetInputExec", input);

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(only_child(children, self.name())?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let Some(scope) = context.session_config().get_extension::<BudgetScope>() else {
            return self.input.execute(partition, context);
        };
        let stream = self.input.execute(partition, Arc::clone(&scope.query))?;
        let schema = stream.schema();
        let kept = stream.inspect_ok(move |batch| scope.last_input.keep(batch));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, kept)))
    }
}

/// The batch a budgeted aggregation was last given, and its group keys: DataFusion updates an
/// aggregation's reservation right after aggregating a batch, and emits early only when it
/// holds two groups or more; otherwise a refusal fails the query.
#[derive(Debug)]
struct LastInput {
    batch: Mutex<Option<RecordBatch>>,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
}

impl LastInput {
    fn keep(&self, batch: &RecordBatch) {
        *self.batch.lock().expect("not poisoned") = Some(batch.clone());
    }

    /// Whether the last batch holds two different groups, so the aggregation that has just
    /// aggregated it holds two groups at least and can emit early. `false` when unsure.
    fn has_two_groups(&self) -> bool {
        let batch = self.batch.lock().expect("not poisoned");
        let Some(batch) = batch.as_ref() else {
            return false;
        };
        let Ok(keys) = self
            .group_exprs
            .iter()
            .map(|expr| expr.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()
        else {
            return false;
        };
        let Ok(comparators) = keys
            .iter()
            .map(|key| make_comparator(key, key, SortOptions::default()))
            .collect::<Result<Vec<_>, _>>()
        else {
            return false;
        };
        (1..batch.num_rows()).any(|row| comparators.iter().any(|cmp| cmp(0, row).is_ne()))
    }
}

/// A pool of `budget` bytes for one partition's partial aggregation, each byte also drawn from
/// the query's pool, so the query's limits still hold. Past the budget it refuses, making the
/// aggregation emit early, when the aggregation holds two groups at least; with one group it
/// grants, since DataFusion would fail the query rather than emit (a single huge key).
struct BudgetPool {
    query: Arc<dyn MemoryPool>,
    budget: usize,
    held: AtomicUsize,
    last_input: Arc<LastInput>,
}

impl fmt::Debug for BudgetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BudgetPool({} of {} bytes)",
            self.held.load(Ordering::Relaxed),
            self.budget
        )
    }
}

impl fmt::Display for BudgetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl MemoryPool for BudgetPool {
    fn name(&self) -> &str {
        "partial aggregation budget"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.query.register(consumer);
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.query.unregister(consumer);
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.held.fetch_add(additional, Ordering::Relaxed);
        self.query.grow(reservation, additional);
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.held.fetch_sub(shrink, Ordering::Relaxed);
        self.query.shrink(reservation, shrink);
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let held = self.held.load(Ordering::Relaxed);
        if held + additional > self.budget && self.last_input.has_two_groups() {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the partial aggregation budget of {} bytes per partition: {additional} more on \
                 top of {held}",
                self.budget
            )));
        }
        self.query.try_grow(reservation, additional)?;
        self.held.fetch_add(additional, Ordering::Relaxed);
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.budget)
    }
}
