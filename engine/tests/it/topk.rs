//! `ORDER BY key … LIMIT k` over a scan, read in two passes (`engine/src/optimizer/topk_threshold.rs`),
//! on generated files, checked against a top-k computed here from the files themselves.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};

use tokenledger_engine::{DataLocation, SessionOptions, TraceSession};

use crate::support::{batches_in_files, generated, open, rows};

/// A span as the test needs it.
struct Span {
    input_tokens: Option<i64>,
    span_id: String,
    workflow: String,
}

/// Every span, read from the Parquet files with parquet's reader.
fn spans_in_files(dir: &Path) -> Vec<Span> {
    let mut spans = Vec::new();
    for batch in batches_in_files(&dir.join("spans")) {
        let tokens = cast(
            batch.column_by_name("input_tokens").unwrap(),
            &DataType::Int64,
        )
        .unwrap();
        let tokens = tokens.as_primitive::<Int64Type>();
        let ids = cast(batch.column_by_name("span_id").unwrap(), &DataType::Utf8).unwrap();
        let ids = ids.as_string::<i32>();
        let workflows = cast(batch.column_by_name("workflow").unwrap(), &DataType::Utf8).unwrap();
        let workflows = workflows.as_string::<i32>();
        for row in 0..batch.num_rows() {
            spans.push(Span {
                input_tokens: (!tokens.is_null(row)).then(|| tokens.value(row)),
                span_id: ids.value(row).to_string(),
                workflow: workflows.value(row).to_string(),
            });
        }
    }
    spans
}

/// The value of `name=` on the plan line that mentions `operator`.
fn metric_on<'a>(plan: &'a str, operator: &str, name: &str) -> &'a str {
    let line = plan
        .lines()
        .find(|line| line.contains(operator))
        .unwrap_or_else(|| panic!("no {operator} in\n{plan}"));
    line.split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.split([',', ']']).next())
        .unwrap_or_else(|| panic!("no {name} on {line}"))
}

/// Runs `ORDER BY input_tokens DESC NULLS LAST, span_id LIMIT k` (of one workflow's spans, or
/// all) and checks the rows and the threshold against `spans`; with filters evaluated after
/// decoding (the default), also the rows decoded whole.
async fn check_top_k(
    session: &TraceSession,
    spans: &[Span],
    workflow: Option<&str>,
    k: usize,
    pushdown: bool,
) {
    let mut kept: Vec<&Span> = spans
        .iter()
        .filter(|span| workflow.is_none_or(|w| span.workflow == w))
        .collect();
    kept.sort_by(|a, b| match (a.input_tokens, b.input_tokens) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.span_id.cmp(&b.span_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.span_id.cmp(&b.span_id),
    });
    let expected: Vec<Vec<String>> = kept[..k]
        .iter()
        .map(|span| vec![span.span_id.clone(), span.input_tokens.unwrap().to_string()])
        .collect();
    let threshold = kept[k - 1].input_tokens.unwrap();
    let at_or_past = kept
        .iter()
        .filter(|span| span.input_tokens >= Some(threshold))
        .count();

    let filter = workflow.map_or(String::new(), |w| format!("WHERE workflow = '{w}'"));
    let sql = format!(
        "SELECT span_id, input_tokens FROM spans {filter} \
         ORDER BY input_tokens DESC NULLS LAST, span_id LIMIT {k}"
    );
    assert_eq!(rows(session, &sql).await, expected, "{sql}");

    let plan: String = rows(session, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .iter()
        .map(|row| row.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let line = plan
        .lines()
        .find(|l| l.contains("ThresholdScanExec"))
        .unwrap_or_else(|| panic!("no ThresholdScanExec for {sql}:\n{plan}"));
    assert!(line.contains(&format!("threshold={threshold}")), "{line}");
    if pushdown {
        // The first pass filters while decoding too, and the passes share the metrics.
        return;
    }
    // Past the threshold, only the rows at or past it (and of the workflow) were decoded whole
    // (the two passes share the scan's metrics; only the second filters rows while decoding).
    assert_eq!(
        metric_on(&plan, "DataSourceExec", "pushdown_rows_matched"),
        at_or_past.to_string(),
        "{sql}"
    );
}

#[tokio::test]
async fn a_top_k_reads_only_rows_at_or_past_the_kth_key_and_matches_a_full_sort() {
    let dir = generated(3_000, 2_000).await;
    let spans = spans_in_files(dir.path());
    assert!(spans.len() > 20_000, "{} spans", spans.len());
    let session = open(dir.path()).await;
    check_top_k(&session, &spans, None, 7, false).await;
    // With a WHERE, the threshold is the k-th value among invoice spans, which hold fewer
    // tokens than the largest spans of other workflows.
    check_top_k(&session, &spans, Some("invoice"), 7, false).await;
    // With filters pushed into the decoder, the WHERE is part of the scan, not a FilterExec:
    // the first pass must keep it.
    let pushdown = TraceSession::open(
        DataLocation::parse(dir.path().to_str().unwrap()).unwrap(),
        &SessionOptions {
            settings: vec![(
                "datafusion.execution.parquet.pushdown_filters".into(),
                "true".into(),
            )],
            ..SessionOptions::default()
        },
    )
    .await
    .unwrap();
    check_top_k(&pushdown, &spans, None, 7, true).await;
    check_top_k(&pushdown, &spans, Some("invoice"), 7, true).await;

    // Not rewritten: NULLs first (the default descending), and a float key (NaN sorts last).
    for sql in [
        "SELECT span_id FROM spans ORDER BY input_tokens DESC LIMIT 7",
        "SELECT span_id FROM spans ORDER BY cost_usd DESC NULLS LAST LIMIT 7",
    ] {
        let plan = rows(&session, &format!("EXPLAIN {sql}")).await;
        assert!(
            !format!("{plan:?}").contains("ThresholdScanExec"),
            "{sql}: {plan:?}"
        );
    }
}
