//! Eager aggregation (`engine/src/optimizer/eager_aggregation.rs`) on generated files: spans added up
//! per work item before they are joined to outcomes give the answers counted here from the
//! files with parquet's reader, and the rule leaves alone what it must not rewrite.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::{Optimizer, OptimizerContext};
use tokenledger_engine::optimizer::eager_aggregation::EagerAggregationRule;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};
use tokenledger_gen::GenOptions;

use crate::support::{batches_in_files, generated, stringify};

/// The text column `name` of every row of `batches`, as `String`s.
fn texts(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
    let column = column.as_string::<i32>();
    (0..column.len())
        .map(|row| (!column.is_null(row)).then(|| column.value(row).to_string()))
        .collect()
}

/// Per outcome: spans, spans with input tokens, their sum, minimum and maximum, from the
/// files, as rows of `JOINED`.
fn per_outcome_in_files(dir: &Path) -> Vec<Vec<String>> {
    let mut outcome_of = HashMap::new();
    for batch in batches_in_files(&dir.join("outcomes")) {
        let items = texts(&batch, "work_item_id");
        let outcomes = texts(&batch, "outcome");
        for (item, outcome) in items.into_iter().zip(outcomes) {
            outcome_of.insert(item.unwrap(), outcome.unwrap());
        }
    }
    // (spans, priced, sum, min, max)
    let mut groups: BTreeMap<String, (u64, u64, i64, i64, i64)> = BTreeMap::new();
    for batch in batches_in_files(&dir.join("spans")) {
        let items = texts(&batch, "work_item_id");
        let tokens = cast(
            batch.column_by_name("input_tokens").unwrap(),
            &DataType::Int64,
        )
        .unwrap();
        let tokens = tokens.as_primitive::<Int64Type>();
        for (row, item) in items.iter().enumerate() {
            let Some(outcome) = item.as_ref().and_then(|item| outcome_of.get(item)) else {
                continue;
            };
            let group = groups
                .entry(outcome.clone())
                .or_insert((0, 0, 0, i64::MAX, i64::MIN));
            group.0 += 1;
            if !tokens.is_null(row) {
                let t = tokens.value(row);
                group.1 += 1;
                group.2 += t;
                group.3 = group.3.min(t);
                group.4 = group.4.max(t);
            }
        }
    }
    groups
        .into_iter()
        .map(|(outcome, (spans, priced, sum, min, max))| {
            vec![
                outcome,
                spans.to_string(),
                priced.to_string(),
                sum.to_string(),
                min.to_string(),
                max.to_string(),
            ]
        })
        .collect()
}

const JOINED: &str = "SELECT o.outcome, count(*), count(s.input_tokens), sum(s.input_tokens), \
                      min(s.input_tokens), max(s.input_tokens) \
                      FROM spans s JOIN outcomes o ON s.work_item_id = o.work_item_id \
                      GROUP BY o.outcome ORDER BY o.outcome";

async fn session(dir: &Path, eager: bool) -> TraceSession {
    TraceSession::open(
        DataLocation::parse(dir.to_str().unwrap()).unwrap(),
        &SessionOptions {
            settings: vec![(
                "tokenledger_optimizer.eager_aggregation".into(),
                eager.to_string(),
            )],
            ..SessionOptions::default()
        },
    )
    .await
    .unwrap()
}

async fn optimized(session: &TraceSession, sql: &str) -> LogicalPlan {
    let frame = session.plan_sql(sql, Access::ReadWrite).await.unwrap();
    frame.into_optimized_plan().unwrap()
}

/// Whether an input of a join in `plan` is an aggregation (under projections and aliases).
fn aggregates_under_a_join(plan: &LogicalPlan) -> bool {
    fn aggregation(plan: &LogicalPlan) -> bool {
        match plan {
            LogicalPlan::Aggregate(_) => true,
            LogicalPlan::Projection(p) => aggregation(&p.input),
            LogicalPlan::SubqueryAlias(a) => aggregation(&a.input),
            _ => false,
        }
    }
    let mut found = false;
    plan.apply(|node| {
        if let LogicalPlan::Join(join) = node {
            found |= aggregation(&join.left) || aggregation(&join.right);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    found
}

#[tokio::test]
async fn spans_added_up_per_work_item_before_the_join_give_the_counts_in_the_files() {
    let dir = generated(3_000, 4_000).await;
    let expected = per_outcome_in_files(dir.path());
    assert!(expected.len() >= 2, "{expected:?}");

    for eager in [true, false] {
        let session = session(dir.path(), eager).await;
        let plan = optimized(&session, JOINED).await;
        assert_eq!(aggregates_under_a_join(&plan), eager, "{plan}");
        let batches = session
            .plan_sql(JOINED, Access::ReadWrite)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(stringify(&batches), expected, "eager_join = {eager}");
    }
}

#[tokio::test]
async fn the_rule_rewrites_a_plan_once_and_leaves_the_rest_alone() {
    let dir = generated(10, GenOptions::default().spans_per_file).await;
    let session = session(dir.path(), true).await;

    // Run over its own output, the rule finds nothing more to do.
    let plan = optimized(&session, JOINED).await;
    let optimizer = Optimizer::with_rules(vec![Arc::new(EagerAggregationRule)]);
    let again = optimizer
        .optimize(plan.clone(), &OptimizerContext::new(), |_, _| {})
        .unwrap();
    assert_eq!(
        again.display_indent().to_string(),
        plan.display_indent().to_string()
    );

    let from = "FROM spans s JOIN outcomes o ON s.work_item_id = o.work_item_id";
    // Each query with the number of aggregations its plan has without the rule.
    for (sql, aggregations) in [
        // A count of no rows is 0; a sum of partial counts over no rows would be NULL.
        (format!("SELECT count(*), sum(s.input_tokens) {from}"), 1),
        (
            format!("SELECT o.outcome, avg(s.input_tokens) {from} GROUP BY o.outcome"),
            1,
        ),
        // DataFusion groups by the distinct values first.
        (
            format!("SELECT o.outcome, count(DISTINCT s.model) {from} GROUP BY o.outcome"),
            2,
        ),
        // Aggregates reading both sides, or none.
        (
            format!(
                "SELECT o.outcome, sum(s.input_tokens * o.value_usd) {from} GROUP BY o.outcome"
            ),
            1,
        ),
        (
            format!("SELECT o.outcome, count(*) {from} GROUP BY o.outcome"),
            1,
        ),
        // Outcomes added up per work item, their row key: one row per key, nothing to gain.
        (
            format!("SELECT s.model, sum(o.value_usd) {from} GROUP BY s.model"),
            1,
        ),
        // A join condition besides the keys.
        (
            format!(
                "SELECT o.outcome, sum(s.input_tokens) {from} AND s.attempt > o.resolved_attempt GROUP BY o.outcome"
            ),
            1,
        ),
        (
            "SELECT o.outcome, count(s.span_id) FROM outcomes o LEFT JOIN spans s \
          ON s.work_item_id = o.work_item_id GROUP BY o.outcome"
                .to_string(),
            1,
        ),
        // Already aggregated before the join, as the reports do.
        (
            "SELECT o.outcome, sum(i.n) FROM (SELECT work_item_id, count(*) AS n FROM spans \
          GROUP BY work_item_id) i JOIN outcomes o ON i.work_item_id = o.work_item_id \
          GROUP BY o.outcome"
                .to_string(),
            2,
        ),
    ] {
        let plan = optimized(&session, &sql).await;
        let found = plan
            .display_indent()
            .to_string()
            .matches("Aggregate:")
            .count();
        assert_eq!(found, aggregations, "{sql}\n{plan}");
    }
}
