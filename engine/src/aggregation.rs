//! Hash aggregation with tables that stay in the CPU's cache.
//!
//! DataFusion aggregates in two phases: a `Partial` aggregation in each input partition, then a
//! `FinalPartitioned` one in each partition of a hash repartition of the partial results. Both
//! keep every group they have seen until their input ends. With many groups (10 M spans over
//! 900 K work items) the tables grow to tens of MB, and each new group and each probe of a cold
//! one is a cache miss: 60 % of `GROUP BY work_item_id`'s time went to the tables' lookups and
//! inserts. Two rules keep the tables small, without changing any answer:
//!
//! - [`PartialAggregateBudgetRule`] gives each partition's partial aggregation a memory budget.
//!   When its reservation is refused, DataFusion emits the groups it holds as partial results
//!   and starts a fresh table ("emit early"), which is correct because the final phase merges
//!   partial results whatever their number. Rows of the same group usually arrive close
//!   together (a work item's spans are written together), so most groups are still merged in
//!   the partial phase.
//! - [`FinalAggregateFanOutRule`] repartitions the partial results into `f` times as many
//!   partitions and runs the final aggregations of each group of `f` one after another
//!   ([`InTurnExec`]), so each table holds a `1/f` share of a partition's groups.
//!
//! Both are settings of the `tokenledger_aggregation` namespace ([`AggregationOptions`]), for
//! `SET` or `TOKENLEDGER_AGGREGATION_*` variables.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{RecordBatch, make_comparator};
use arrow::compute::SortOptions;
use datafusion::common::config::ConfigOptions;
use datafusion::common::extensions_options;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, assert_eq_or_internal_err};
use datafusion::config::ConfigExtension;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, Partitioning, PlanProperties,
    SendableRecordBatchStream, replace_children_if_necessary,
};
use futures::{StreamExt, TryStreamExt};

extensions_options! {
    /// How tokenledger keeps aggregation hash tables small (`SET tokenledger_aggregation.…`).
    pub struct AggregationOptions {
        /// Bytes each partition's partial aggregation may hold before it emits its groups;
        /// 0 = no budget. Chosen by measurement (`benches/tuning.md`): half the L2 cache of a
        /// core of the benchmark machine.
        pub partial_budget_bytes: usize, default = 512 * 1024
        /// Into how many final aggregations, run one after another, each partition of a final
        /// aggregation is split; 1 = not split. Chosen by measurement (`benches/tuning.md`);
        /// 1 by default for queries capped below [`MIN_QUERY_BYTES_FOR_FAN_OUT`].
        pub final_fan_out: usize, default = 8
        /// Whether an inner join's aggregated side is added up per join key before the join
        /// ([`crate::eager_aggregation::EagerAggregationRule`]).
        pub eager_join: bool, default = true
    }
}

impl ConfigExtension for AggregationOptions {
    const PREFIX: &'static str = "tokenledger_aggregation";
}

/// The smallest per-query memory cap under which final aggregations are split. DataFusion's
/// pools share a cap fairly among the operators that can spill, and each partition of the
/// wider repartition is one more of them: under a cap of a few MiB, a fan-out of 8 leaves each
/// final aggregation too small a share even to merge what it spilled.
pub const MIN_QUERY_BYTES_FOR_FAN_OUT: usize = 256 << 20;

impl AggregationOptions {
    /// The defaults for queries capped at `query_bytes` (`None`: no cap): no fan-out below
    /// [`MIN_QUERY_BYTES_FOR_FAN_OUT`].
    pub fn for_query_cap(query_bytes: Option<usize>) -> AggregationOptions {
        let mut options = AggregationOptions::default();
        if query_bytes.is_some_and(|cap| cap < MIN_QUERY_BYTES_FOR_FAN_OUT) {
            options.final_fan_out = 1;
        }
        options
    }

    /// The options in `config`, or the defaults when it has none.
    pub(crate) fn of(config: &ConfigOptions) -> AggregationOptions {
        config
            .extensions
            .get::<AggregationOptions>()
            .cloned()
            .unwrap_or_default()
    }
}

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
        let budget = AggregationOptions::of(config).partial_budget_bytes;
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

/// Whether `plan` has a `T` node: a plan a rule has been through once is left alone, so that
/// optimizing twice does not wrap an aggregation twice or widen a repartition again.
fn contains<T: ExecutionPlan + 'static>(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    plan.exists(|node| Ok(node.downcast_ref::<T>().is_some()))
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
/// drawn from the query's pool ([`BudgetPool`]).
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
    fn name(&self) -> &'static str {
        "PartialAggregateBudgetExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.aggregate]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        assert_eq_or_internal_err!(
            children.len(),
            1,
            "PartialAggregateBudgetExec has one input"
        );
        Ok(Self::over(children.swap_remove(0), self.budget))
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
/// join or sort under it) and keeps the batch it last gave the aggregation in [`LastInput`].
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
    fn name(&self) -> &'static str {
        "BudgetInputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        assert_eq_or_internal_err!(children.len(), 1, "BudgetInputExec has one input");
        Ok(Arc::new(Self::new(children.swap_remove(0))))
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

/// Splits each `FinalPartitioned` aggregation over a hash repartition into
/// [`AggregationOptions::final_fan_out`] smaller ones run one after another, so each holds a
/// fraction of the partition's groups in its table.
#[derive(Debug, Default)]
pub struct FinalAggregateFanOutRule;

impl PhysicalOptimizerRule for FinalAggregateFanOutRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let fan_out = AggregationOptions::of(config).final_fan_out;
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
    fn name(&self) -> &'static str {
        "InTurnExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// The new input must have as many partitions as the old: the node's partitioning says so.
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        assert_eq_or_internal_err!(children.len(), 1, "InTurnExec has one input");
        let input = children.swap_remove(0);
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
