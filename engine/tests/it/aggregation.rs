//! Hash aggregation with small tables (`engine/src/optimizer/partial_aggregate_budget.rs`, `final_aggregate_fan_out.rs`) on generated files: the
//! groups match counts made here from the files with parquet's reader, while partial
//! aggregations really emit early and final ones really are split.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use tokenledger_engine::optimizer::final_aggregate_fan_out::FinalAggregateFanOutRule;
use tokenledger_engine::optimizer::partial_aggregate_budget::PartialAggregateBudgetRule;
use tokenledger_engine::{Access, DataLocation, MemoryLimits, SessionOptions, TraceSession};
use tokenledger_gen::GenOptions;

use crate::support::{batches_in_files, generated, stringify};

/// Count of spans and sum of input tokens per group of `key(work item, input tokens)`, read
/// from the Parquet files.
type Groups = BTreeMap<Option<String>, (u64, Option<i64>)>;

fn groups_in_files(dir: &Path, key: impl Fn(&str, Option<i64>) -> Option<String>) -> Groups {
    let mut groups = Groups::new();
    for batch in batches_in_files(&dir.join("spans")) {
        let items = cast(
            batch.column_by_name("work_item_id").unwrap(),
            &DataType::Utf8,
        );
        let items = items.unwrap();
        let items = items.as_string::<i32>();
        let tokens = cast(
            batch.column_by_name("input_tokens").unwrap(),
            &DataType::Int64,
        )
        .unwrap();
        let tokens = tokens.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let row_tokens = (!tokens.is_null(row)).then(|| tokens.value(row));
            let group = groups.entry(key(items.value(row), row_tokens)).or_default();
            group.0 += 1;
            if let Some(t) = row_tokens {
                group.1 = Some(group.1.unwrap_or(0) + t);
            }
        }
    }
    groups
}

/// `groups` as the rows of `SELECT key, count(*), sum(input_tokens) … ORDER BY key NULLS FIRST`.
fn as_rows(groups: Groups) -> Vec<Vec<String>> {
    let text = |value: Option<String>| value.unwrap_or_else(|| "NULL".to_string());
    groups
        .into_iter()
        .map(|(key, (spans, tokens))| {
            vec![
                text(key),
                spans.to_string(),
                text(tokens.map(|t| t.to_string())),
            ]
        })
        .collect()
}

/// A session with a partial budget, a final fan-out, and batches of 256 rows (so that even a
/// small data set reaches the aggregations in many batches).
async fn session(dir: &Path, budget: usize, fan_out: usize) -> TraceSession {
    TraceSession::open(
        DataLocation::parse(dir.to_str().unwrap()).unwrap(),
        &SessionOptions {
            settings: vec![
                ("datafusion.execution.batch_size".into(), "256".into()),
                (
                    "tokenledger_optimizer.partial_budget_bytes".into(),
                    budget.to_string(),
                ),
                (
                    "tokenledger_optimizer.final_fan_out".into(),
                    fan_out.to_string(),
                ),
            ],
            ..SessionOptions::default()
        },
    )
    .await
    .unwrap()
}

/// A generated data set of ten work items.
async fn ten_work_items() -> tempfile::TempDir {
    generated(10, GenOptions::default().spans_per_file).await
}

/// Runs `sql`, returning its rows and its executed plan (with metrics).
async fn run(session: &TraceSession, sql: &str) -> (Vec<Vec<String>>, Arc<dyn ExecutionPlan>) {
    let frame = session.plan_sql(sql, Access::ReadWrite).await.unwrap();
    let context = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await.unwrap();
    let batches = collect(Arc::clone(&plan), context).await.unwrap();
    (stringify(&batches), plan)
}

/// The nodes of `plan`, depth first.
fn nodes(plan: &Arc<dyn ExecutionPlan>) -> Vec<Arc<dyn ExecutionPlan>> {
    let mut all = vec![Arc::clone(plan)];
    for child in plan.children() {
        all.extend(nodes(child));
    }
    all
}

/// Rows the partial aggregations of `plan` passed on.
fn partial_output_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
    nodes(plan)
        .iter()
        .filter(|node| {
            node.downcast_ref::<AggregateExec>()
                .is_some_and(|a| *a.mode() == AggregateMode::Partial)
        })
        .map(|node| node.metrics().unwrap().output_rows().unwrap())
        .sum()
}

/// Work items: a work item's spans lie close together in the files, so partial tables that
/// emit early rarely split one.
const BY_WORK_ITEM: &str = "SELECT work_item_id, count(*), sum(input_tokens) FROM spans \
                            GROUP BY work_item_id ORDER BY work_item_id NULLS FIRST";

/// 1,000 token remainders (and NULL), scattered over every batch: each early emission passes
/// most of them on again.
const BY_REMAINDER: &str = "SELECT CAST(input_tokens % 1000 AS VARCHAR), count(*), \
                            sum(input_tokens) FROM spans GROUP BY 1 ORDER BY 1 NULLS FIRST";

#[tokio::test]
async fn groups_match_the_files_while_partial_tables_emit_early_and_finals_run_in_turn() {
    let dir = generated(3_000, 4_000).await;
    let by_item = as_rows(groups_in_files(dir.path(), |item, _| {
        Some(item.to_string())
    }));
    assert_eq!(by_item.len(), 3_000);
    // Ordered as text, as the query orders them.
    let by_remainder = as_rows(groups_in_files(dir.path(), |_, tokens| {
        tokens.map(|t| (t % 1000).to_string())
    }));

    // Neither: each partition's partial aggregation keeps all its groups.
    let plain = session(dir.path(), 0, 1).await;
    let (answer, plan) = run(&plain, BY_WORK_ITEM).await;
    assert_eq!(answer, by_item);
    let names: Vec<String> = nodes(&plan).iter().map(|n| n.name().to_string()).collect();
    for added in ["PartialAggregateBudgetExec", "InTurnExec"] {
        assert!(!names.iter().any(|name| name == added), "{names:?}");
    }
    let (answer, plan) = run(&plain, BY_REMAINDER).await;
    assert_eq!(answer, by_remainder);
    let whole_tables = partial_output_rows(&plan);

    // A budget of 4 KiB holds a few dozen groups: the partial tables emit after almost every
    // batch, so many more partial rows reach the final phase, which merges them into the same
    // answers.
    let small = session(dir.path(), 4 << 10, 3).await;
    let (answer, _) = run(&small, BY_WORK_ITEM).await;
    assert_eq!(answer, by_item);
    let (answer, plan) = run(&small, BY_REMAINDER).await;
    assert_eq!(answer, by_remainder);
    let emitted = partial_output_rows(&plan);
    assert!(
        emitted > 4 * whole_tables,
        "{emitted} partial rows with the budget, {whole_tables} without"
    );
    let in_turn = nodes(&plan)
        .into_iter()
        .find(|n| n.name() == "InTurnExec")
        .expect("the final aggregation is split");
    // A second pass of the rules leaves the plan as it is.
    let config = datafusion::config::ConfigOptions::default();
    let again = FinalAggregateFanOutRule
        .optimize(
            PartialAggregateBudgetRule
                .optimize(Arc::clone(&plan), &config)
                .unwrap(),
            &config,
        )
        .unwrap();
    assert_eq!(
        displayable(again.as_ref()).indent(true).to_string(),
        displayable(plan.as_ref()).indent(true).to_string()
    );
    let final_partitions = in_turn.children()[0]
        .properties()
        .output_partitioning()
        .partition_count();
    let partitions = in_turn.properties().output_partitioning().partition_count();
    assert_eq!(final_partitions, 3 * partitions);
}

#[tokio::test]
async fn a_single_group_larger_than_the_budget_is_aggregated_not_refused() {
    // DataFusion fails a partial aggregation refused memory while it holds one group; a batch
    // of one group must therefore be granted memory past the budget. Every row's key here is
    // the same 350 KB text, the budget 1 KiB.
    let dir = ten_work_items().await;
    let spans: u64 = groups_in_files(dir.path(), |_, _| None)
        .values()
        .map(|(spans, _)| spans)
        .sum();
    assert!(spans > 1, "{spans} spans");
    let session = session(dir.path(), 1 << 10, 2).await;
    // Built from a column (not a constant DataFusion would know to be sorted): the key is the
    // same for every span, as no span lacks an id.
    let sql = "SELECT length(k), count(*) FROM (SELECT repeat(CASE WHEN span_id IS NULL \
               THEN 'y' ELSE 'x' END, 350000) AS k FROM spans) GROUP BY k";
    let (answer, plan) = run(&session, sql).await;
    assert!(
        nodes(&plan)
            .iter()
            .any(|n| n.name() == "PartialAggregateBudgetExec"),
        "the aggregation has no budget"
    );
    assert_eq!(answer, vec![vec!["350000".to_string(), spans.to_string()]]);
}

#[tokio::test]
async fn final_aggregations_are_split_only_under_a_cap_that_can_share() {
    let dir = ten_work_items().await;
    let capped = |query_bytes: usize| SessionOptions {
        memory: Some(MemoryLimits {
            pool_bytes: 1 << 30,
            query_bytes,
            spill_dir: None,
            spill_bytes: 1 << 30,
        }),
        ..SessionOptions::default()
    };
    for (options, split) in [
        (SessionOptions::default(), true),
        (capped(1 << 30), true),
        (capped(4 << 20), false),
    ] {
        let session = TraceSession::open(
            DataLocation::parse(dir.path().to_str().unwrap()).unwrap(),
            &options,
        )
        .await
        .unwrap();
        let (_, plan) = run(&session, BY_WORK_ITEM).await;
        let in_turn = nodes(&plan).iter().any(|n| n.name() == "InTurnExec");
        assert_eq!(in_turn, split, "{:?}", options.memory);
    }
}
