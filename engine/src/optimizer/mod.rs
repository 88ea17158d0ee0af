//! tokenledger's own plan rewrites, one rule per file, all registered here and each switched
//! off by a setting of the `tokenledger_optimizer` namespace ([`OptimizerOptions`]: `SET
//! tokenledger_optimizer.text_equality = false`, or `TOKENLEDGER_OPTIMIZER_TEXT_EQUALITY=false`
//! in the environment). None changes an answer, only how it is computed; the switches let a
//! test compare every answer with the rule on and off.
//!
//! | rule | file | what it rewrites |
//! |---|---|---|
//! | `eager_aggregation` (logical) | [`eager_aggregation`] | a join's aggregated side added up per join key before the join |
//! | `text_equality` | [`text_eq`] | `text = 'literal'` compared by string view |
//! | `topk_two_pass` | [`topk_threshold`] | `ORDER BY key LIMIT k` over a scan read in two passes |
//! | `partial_budget_bytes` | [`partial_aggregate_budget`] | partial aggregations under a memory budget (0 = off) |
//! | `final_fan_out` | [`final_aggregate_fan_out`] | final aggregations split, run in turn (1 = off) |
//!
//! The rules run only in plans executed here: workers of a distributed query could not decode
//! the nodes and expressions they put in place.

pub mod eager_aggregation;
pub mod final_aggregate_fan_out;
pub mod partial_aggregate_budget;
pub mod text_eq;
pub mod topk_threshold;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::extensions_options;
use datafusion::common::tree_node::TreeNode;
use datafusion::config::ConfigExtension;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlan;

extensions_options! {
    /// Switches and sizes of tokenledger's rules (`SET tokenledger_optimizer.…`).
    pub struct OptimizerOptions {
        /// Whether `text = 'literal'` filters compare string views directly
        /// ([`text_eq::TextEqualityRule`]).
        pub text_equality: bool, default = true
        /// Whether a top-k over a Parquet scan reads the key first, then only rows at or past
        /// the k-th ([`topk_threshold::TopKThresholdRule`]).
        pub topk_two_pass: bool, default = true
        /// Whether an inner join's aggregated side is added up per join key before the join
        /// ([`eager_aggregation::EagerAggregationRule`]).
        pub eager_aggregation: bool, default = true
        /// Bytes each partition's partial aggregation may hold before it emits its groups;
        /// 0 = no budget ([`partial_aggregate_budget::PartialAggregateBudgetRule`]). Chosen by
        /// measurement (`benches/tuning.md`): half the L2 cache of a core of the benchmark
        /// machine.
        pub partial_budget_bytes: usize, default = 512 * 1024
        /// Into how many final aggregations, run one after another, each partition of a final
        /// aggregation is split; 1 = not split
        /// ([`final_aggregate_fan_out::FinalAggregateFanOutRule`]). Chosen by measurement
        /// (`benches/tuning.md`); 1 by default for queries capped below
        /// [`MIN_QUERY_BYTES_FOR_FAN_OUT`].
        pub final_fan_out: usize, default = 8
    }
}

impl ConfigExtension for OptimizerOptions {
    const PREFIX: &'static str = "tokenledger_optimizer";
}

/// The smallest per-query memory cap under which final aggregations are split. DataFusion's
/// pools share a cap fairly among the operators that can spill, and each partition of the
/// wider repartition is one more of them: under a cap of a few MiB, a fan-out of 8 leaves each
/// final aggregation too small a share even to merge what it spilled.
pub const MIN_QUERY_BYTES_FOR_FAN_OUT: usize = 256 << 20;

impl OptimizerOptions {
    /// The defaults for queries capped at `query_bytes` (`None`: no cap): no fan-out below
    /// [`MIN_QUERY_BYTES_FOR_FAN_OUT`].
    pub fn for_query_cap(query_bytes: Option<usize>) -> OptimizerOptions {
        let mut options = OptimizerOptions::default();
        if query_bytes.is_some_and(|cap| cap < MIN_QUERY_BYTES_FOR_FAN_OUT) {
            options.final_fan_out = 1;
        }
        options
    }

    /// The options in `config`, or the defaults when it has none.
    pub(crate) fn of(config: &ConfigOptions) -> OptimizerOptions {
        config
            .extensions
            .get::<OptimizerOptions>()
            .cloned()
            .unwrap_or_default()
    }
}

/// `builder` with every tokenledger rule registered, in the order they run.
pub fn with_rules(builder: SessionStateBuilder) -> SessionStateBuilder {
    builder
        .with_optimizer_rule(Arc::new(eager_aggregation::EagerAggregationRule))
        .with_physical_optimizer_rule(Arc::new(text_eq::TextEqualityRule))
        .with_physical_optimizer_rule(Arc::new(topk_threshold::TopKThresholdRule))
        .with_physical_optimizer_rule(Arc::new(
            partial_aggregate_budget::PartialAggregateBudgetRule,
        ))
        .with_physical_optimizer_rule(Arc::new(final_aggregate_fan_out::FinalAggregateFanOutRule))
}

/// Whether `plan` has a `T` node: a plan a rule has been through once is left alone, so that
/// optimizing twice does not wrap a node twice.
pub(crate) fn contains<T: ExecutionPlan + 'static>(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    plan.exists(|node| Ok(node.downcast_ref::<T>().is_some()))
}
