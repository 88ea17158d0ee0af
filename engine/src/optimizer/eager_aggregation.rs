//! Aggregating one side of a join before the join ("eager aggregation").
//!
//! An analyst's `SELECT o.outcome, count(*), sum(s.input_tokens) FROM spans s JOIN outcomes o
//! ON s.work_item_id = o.work_item_id GROUP BY o.outcome` joins every span (10 M) to its
//! outcome, only to add them up again. When every aggregate reads one side of an inner
//! equi-join, that side can be added up per join key first: each of its rows meets the same
//! rows of the other side as the others with its key, so a count becomes a sum of counts, a sum
//! a sum of sums, and a minimum or maximum that of the partial ones. The join then sees one row
//! per key (900 K work items) instead of one per span, and the repartition under it moves as
//! few.
//!
//! [`EagerAggregationRule`] rewrites
//!
//! ```text
//! Aggregate: group by G, aggregates A(s.x)
//!   [Projection of columns]
//!   Inner Join: s.k = o.k
//!     S
//!     O
//! ```
//!
//! into
//!
//! ```text
//! Projection: G, A′ cast to A's types, named as A
//!   Aggregate: group by G, aggregates A′ (sum of counts, sum of sums, min of minimums…)
//!     Inner Join: s.k = o.k
//!       Aggregate: group by s.k and the columns of G from S, aggregates A
//!         S
//!       O
//! ```
//!
//! It applies only where the answer cannot change: an inner join with equality keys and no
//! other condition, the aggregated side's keys and every grouping expression plain columns,
//! a non-empty `GROUP BY` (a `count` of no rows is 0, a sum of no counts NULL), and only
//! `count`, `sum`, `min` and `max`, not `DISTINCT`, not ordered, each reading that side alone.
//! A side that is already an aggregation is left alone, so the rule does not stack aggregations
//! when the optimizer runs it again, and neither do reports that aggregate before joining.
//!
//! Whether it pays depends on how often the aggregated side repeats a key, which the logical
//! plan does not know. The rule leaves alone a side whose join keys are its table's row key
//! ([`TableDef::row_key`]: outcomes by work item), where adding up per key gains nothing; it is
//! made for a fact table's foreign key (spans by work item: 25-30 % faster at 10 M spans).
//! `SET tokenledger_optimizer.eager_aggregation = false` turns it off.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DFSchema, Result};
use datafusion::functions_aggregate::count::Count;
use datafusion::functions_aggregate::min_max::{Max, Min, max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::Sum;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, AggregateUDF, Expr, Join, JoinType, LogicalPlan, Projection, cast, col,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use tokenledger_udfs::CheckedSum;

use super::OptimizerOptions;
use crate::schema::{TABLES, TableDef};

/// Prefix of the partial aggregates' names in the aggregation added under a join.
const PARTIAL_PREFIX: &str = "__tokenledger_eager_";

/// Adds up the aggregated side of an inner join per join key before the join (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct EagerAggregationRule;

impl OptimizerRule for EagerAggregationRule {
    fn name(&self) -> &str {
        "tokenledger_eager_aggregation"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !OptimizerOptions::of(&config.options()).eager_aggregation {
            return Ok(Transformed::no(plan));
        }
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match eager_plan(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// Which input of the join is aggregated early.
#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
}

/// How an aggregate's results per key are combined into the aggregate over all rows.
type Combine = fn(Expr) -> Expr;

/// The rewritten plan for `aggregate`, or `None` where the rule does not apply.
fn eager_plan(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let Some(join) = join_under(&aggregate.input) else {
        return Ok(None);
    };
    if join.join_type != JoinType::Inner || join.filter.is_some() || join.on.is_empty() {
        return Ok(None);
    }
    if aggregate.group_expr.is_empty() || !aggregate.group_expr.iter().all(is_column) {
        return Ok(None);
    }
    let Some(side) = aggregated_side(aggregate, join) else {
        return Ok(None);
    };
    let (early, other) = match side {
        Side::Left => (&join.left, &join.right),
        Side::Right => (&join.right, &join.left),
    };
    if is_aggregation(early) {
        return Ok(None);
    }
    let Some(combines) = aggregate
        .aggr_expr
        .iter()
        .map(combine_of)
        .collect::<Option<Vec<Combine>>>()
    else {
        return Ok(None);
    };
    let keys: Vec<&Expr> = join
        .on
        .iter()
        .map(|(left, right)| match side {
            Side::Left => left,
            Side::Right => right,
        })
        .collect();
    if !keys.iter().all(|key| is_column(key)) || keys_name_rows(early, &keys) {
        return Ok(None);
    }

    // Per key (and per grouping column of the early side), the partial aggregates.
    let mut early_groups: Vec<Expr> = keys.into_iter().cloned().collect();
    for group in &aggregate.group_expr {
        if has_columns_of(early.schema(), group) && !early_groups.contains(group) {
            early_groups.push(group.clone());
        }
    }
    let partials = aggregate
        .aggr_expr
        .iter()
        .enumerate()
        .map(|(i, expr)| expr.clone().unalias().alias(format!("{PARTIAL_PREFIX}{i}")))
        .collect();
    let early = Arc::new(LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::clone(early),
        early_groups,
        partials,
    )?));
    let (left, right) = match side {
        Side::Left => (early, Arc::clone(other)),
        Side::Right => (Arc::clone(other), early),
    };
    let join = LogicalPlan::Join(Join::try_new(
        left,
        right,
        join.on.clone(),
        None,
        JoinType::Inner,
        join.join_constraint,
        join.null_equality,
        join.null_aware,
    )?);

    // The same groups, each aggregate combined from the partial ones.
    let combined = combines
        .iter()
        .enumerate()
        .map(|(i, combine)| combine(col(Column::from_name(format!("{PARTIAL_PREFIX}{i}")))))
        .collect();
    let combined = Aggregate::try_new(Arc::new(join), aggregate.group_expr.clone(), combined)?;
    Ok(Some(same_output(aggregate, combined)?))
}

/// A projection of `combined` with the names and types of `original`'s output, so the plan
/// above reads the columns it read before.
fn same_output(original: &Aggregate, combined: Aggregate) -> Result<LogicalPlan> {
    let groups = original.group_expr.len();
    let output = combined
        .schema
        .columns()
        .into_iter()
        .zip(original.schema.iter())
        .enumerate()
        .map(|(i, (column, (qualifier, field)))| {
            if i < groups {
                Expr::Column(column)
            } else if combined.schema.field(i).data_type() == field.data_type() {
                Expr::Column(column).alias_qualified(qualifier.cloned(), field.name())
            } else {
                cast(Expr::Column(column), field.data_type().clone())
                    .alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        output,
        Arc::new(LogicalPlan::Aggregate(combined)),
    )?))
}

/// The join input every aggregate reads, if one input holds all the columns they read (and
/// they read at least one, so a lone `count(*)` does not pick a side at random).
fn aggregated_side(aggregate: &Aggregate, join: &Join) -> Option<Side> {
    let aggregates = &aggregate.aggr_expr;
    if aggregates.iter().all(|expr| expr.column_refs().is_empty()) {
        return None;
    }
    let all_in = |schema: &DFSchema| aggregates.iter().all(|expr| has_columns_of(schema, expr));
    match (all_in(join.left.schema()), all_in(join.right.schema())) {
        (true, false) => Some(Side::Left),
        (false, true) => Some(Side::Right),
        _ => None,
    }
}

/// How `expr`'s results per key are combined, if it is a plain `count`, `sum`, `min` or `max`
/// (possibly named by an alias, which the final projection restores anyway).
fn combine_of(expr: &Expr) -> Option<Combine> {
    let function = match expr {
        Expr::Alias(alias) => return combine_of(&alias.expr),
        Expr::AggregateFunction(function) => function,
        _ => return None,
    };
    let params = &function.params;
    if params.distinct || !params.order_by.is_empty() || params.null_treatment.is_some() {
        return None;
    }
    let inner = function.func.inner().as_ref();
    if inner.is::<Count>() || inner.is::<Sum>() || inner.is::<CheckedSum>() {
        Some(sum_of)
    } else if inner.is::<Min>() {
        Some(min_of)
    } else if inner.is::<Max>() {
        Some(max_of)
    } else {
        None
    }
}

/// Partial counts and sums add up with the checked sum sessions use, so a total out of range
/// fails as the query without the rule would.
fn sum_of(partial: Expr) -> Expr {
    aggregate_of(Arc::new(AggregateUDF::from(CheckedSum::default())), partial)
}

fn min_of(partial: Expr) -> Expr {
    aggregate_of(min_udaf(), partial)
}

fn max_of(partial: Expr) -> Expr {
    aggregate_of(max_udaf(), partial)
}

fn aggregate_of(function: Arc<AggregateUDF>, partial: Expr) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        function,
        vec![partial],
        false,
        None,
        vec![],
        None,
    ))
}

/// Whether the join `keys` of `side` include the row key of the table it scans
/// ([`TableDef::row_key`]): then each key has one row, and adding rows up per key would cost
/// an aggregation and save the join nothing (outcomes joined by work item: 8-10 % slower with
/// the rule at 10 M spans).
fn keys_name_rows(side: &LogicalPlan, keys: &[&Expr]) -> bool {
    let Some(table) = scanned_table(side) else {
        return false;
    };
    let key_names: Vec<&str> = keys
        .iter()
        .filter_map(|key| match key {
            Expr::Column(column) => Some(column.name.as_str()),
            _ => None,
        })
        .collect();
    table
        .row_key
        .iter()
        .all(|column| key_names.contains(column))
}

/// The table `plan` reads, if it is a scan of one of tokenledger's tables under filters,
/// projections and aliases (which keep its rows' keys).
fn scanned_table(plan: &LogicalPlan) -> Option<&'static TableDef> {
    match plan {
        LogicalPlan::TableScan(scan) => TABLES
            .iter()
            .copied()
            .find(|table| table.name == scan.table_name.table()),
        LogicalPlan::Filter(filter) => scanned_table(&filter.input),
        LogicalPlan::Projection(projection) => scanned_table(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => scanned_table(&alias.input),
        _ => None,
    }
}

/// The join `plan` is, or that a projection of plain columns reads (the optimizer puts one
/// between an aggregation and a join to drop the join keys). The rewritten plan reads the join
/// directly: the aggregation names the columns it reads.
fn join_under(plan: &LogicalPlan) -> Option<&Join> {
    match plan {
        LogicalPlan::Join(join) => Some(join),
        LogicalPlan::Projection(projection) if projection.expr.iter().all(is_column) => {
            match projection.input.as_ref() {
                LogicalPlan::Join(join) => Some(join),
                _ => None,
            }
        }
        _ => None,
    }
}

fn is_column(expr: &Expr) -> bool {
    matches!(expr, Expr::Column(_))
}

/// Whether every column `expr` reads is in `schema`.
fn has_columns_of(schema: &DFSchema, expr: &Expr) -> bool {
    expr.column_refs()
        .iter()
        .all(|column| schema.has_column(column))
}

/// Whether `plan` is an aggregation, under any projections or aliases.
fn is_aggregation(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(_) => true,
        LogicalPlan::Projection(projection) => is_aggregation(&projection.input),
        LogicalPlan::SubqueryAlias(alias) => is_aggregation(&alias.input),
        _ => false,
    }
}
