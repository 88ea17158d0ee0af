//! The validation policy at the ways in that live in the engine: files pipelines drop (checked,
//! counted per rule, their failing rows left out of `spans` and the reports), CSV import (rows
//! refused alone, kept in `rejected_spans`), and compaction (one row per span identity). Expected
//! values are worked out by hand from the rows each test writes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use tokenledger_engine::import::import_csv;
use tokenledger_engine::schema::{SPANS, batch_by_name};
use tokenledger_engine::{Access, DataLocation};

use crate::curated::{at_once, copy_dir};
use crate::support::{open, repo_root, rows, write_file};

/// 2026-01-05T00:00:00Z in microseconds.
const JAN_5: i64 = 1_767_571_200_000_000;

/// One span as a test writes it: ids, keys, and the values the rules look at.
#[derive(Clone)]
struct Row {
    span: &'static str,
    work_item: &'static str,
    tenant: &'static str,
    workflow: &'static str,
    input: Option<i64>,
    cached: Option<i64>,
    cost: Option<f64>,
    start: i64,
}

fn row(span: &'static str, input: Option<i64>) -> Row {
    Row {
        span,
        work_item: "BAD-1",
        tenant: "acme-retail",
        workflow: "refund_triage",
        input,
        cached: None,
        cost: None,
        start: JAN_5,
    }
}

/// `rows` as a batch of `spans` (one trace; columns not set are NULL).
fn spans(rows: &[Row]) -> RecordBatch {
    let text = |f: fn(&Row) -> &str| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    batch_by_name(&SPANS, |name| {
        Some(match name {
            "trace_id" => text(|_| "0123456789abcdef0123456789abcdef"),
            "span_id" => text(|r| r.span),
            "work_item_id" => text(|r| r.work_item),
            "tenant" => text(|r| r.tenant),
            "workflow" => text(|r| r.workflow),
            "kind" => text(|_| "llm"),
            "status" => text(|_| "ok"),
            "model" => text(|_| "gpt-4.1-mini"),
            "attempt" => Arc::new(arrow::array::Int32Array::from(vec![1; rows.len()])),
            "input_tokens" => Arc::new(rows.iter().map(|r| r.input).collect::<Int64Array>()),
            "cached_input_tokens" => {
                Arc::new(rows.iter().map(|r| r.cached).collect::<Int64Array>())
            }
            "cost_usd" => Arc::new(rows.iter().map(|r| r.cost).collect::<Float64Array>()),
            "start_time" => Arc::new(
                rows.iter()
                    .map(|r| Some(r.start))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            ),
            other => arrow::array::new_null_array(
                SPANS.schema().field_with_name(other).ok()?.data_type(),
                rows.len(),
            ),
        })
    })
    .unwrap()
}

async fn drop_file(dir: &Path, relative: &str, rows: &[Row]) {
    write_file(dir, relative, &SPANS.schema(), &spans(rows)).await;
}

#[tokio::test]
async fn a_dropped_file_breaking_the_rules_is_counted_per_rule_and_its_rows_left_out() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/handmade"), dir.path());
    let before = open(dir.path()).await;
    let totals = "SELECT count(*), sum(input_tokens) FROM spans";
    let [count, tokens] = <[String; 2]>::try_from(rows(&before, totals).await.remove(0)).unwrap();
    let (count, tokens): (i64, i64) = (count.parse().unwrap(), tokens.parse().unwrap());

    // A pipeline's file: one good span and four that no provider bills.
    drop_file(
        dir.path(),
        "spans/pipeline/bad.parquet",
        &[
            row("00000000000000a1", Some(100)),
            row("00000000000000a2", Some(-5)),
            row("00000000000000a3", Some(i64::MAX)),
            Row {
                cached: Some(1000),
                ..row("00000000000000a4", Some(10))
            },
            Row {
                cost: Some(f64::NAN),
                ..row("00000000000000a5", Some(7))
            },
        ],
    )
    .await;
    let session = open(dir.path()).await;
    assert_eq!(
        rows(
            &session,
            "SELECT rows, rows_failing, failed_rules FROM tokenledger_files \
             WHERE path LIKE '%pipeline/bad.parquet'"
        )
        .await,
        [[
            "5",
            "4",
            "tokens_out_of_range: 2, cached_above_input: 1, cost_out_of_range: 1"
        ]]
    );
    // The handmade file was written before tokenledger marked its files: checked on listing,
    // nothing fails.
    assert_eq!(
        rows(
            &session,
            "SELECT rows_failing FROM tokenledger_files \
             WHERE table_name = 'spans' AND path NOT LIKE '%pipeline%'"
        )
        .await,
        [["0"]]
    );
    // Only the good span joins the table: the sum is exact, not wrapped by 2^63-1, and the
    // reports see the same rows.
    assert_eq!(
        rows(&session, totals).await,
        [[(count + 1).to_string(), (tokens + 100).to_string()]]
    );
    assert_eq!(
        rows(
            &session,
            "SELECT span_id FROM spans WHERE work_item_id = 'BAD-1'"
        )
        .await,
        [["00000000000000a1"]]
    );
    let reported = rows(
        &session,
        "SELECT count(*), sum(input_tokens) FROM priced_spans WHERE work_item_id = 'BAD-1'",
    )
    .await;
    assert_eq!(reported, [["1", "100"]]);

    // Compaction writes only rows that meet the policy into the record and moves the others to
    // rejected_spans, so a fresh session (which never lists the absorbed file) agrees.
    let options = at_once();
    let report = session
        .compact(&SPANS, &options, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        (report.rows, report.set_aside, report.duplicates),
        (count as u64 + 1, 4, 0)
    );
    let fresh = open(dir.path()).await;
    assert_eq!(
        rows(&fresh, totals).await,
        [[(count + 1).to_string(), (tokens + 100).to_string()]]
    );
    assert_eq!(
        rows(
            &fresh,
            "SELECT source, span_id, rule FROM rejected_spans ORDER BY span_id"
        )
        .await,
        [
            ["compaction", "00000000000000a2", "tokens_out_of_range"],
            ["compaction", "00000000000000a3", "tokens_out_of_range"],
            ["compaction", "00000000000000a4", "cached_above_input"],
            ["compaction", "00000000000000a5", "cost_out_of_range"],
        ]
    );
}

#[tokio::test]
async fn csv_rows_breaking_the_rules_are_refused_alone_and_kept_for_administrators() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let csv = dir.path().join("batch-7.csv");
    std::fs::write(
        &csv,
        "trace_id,span_id,work_item_id,attempt,workflow,tenant,kind,status,start_time,input_tokens,output_tokens,reasoning_tokens\n\
         t1,s1,W1,1,claims,acme-retail,llm,ok,2026-01-05T00:00:00Z,100,50,10\n\
         t1,s2,W1,1,claims,acme-retail,llm,ok,2026-01-05T00:00:01Z,-5,50,10\n\
         t1,s3,W1,1,claims,acme-retail,llm,ok,2026-01-05T00:00:02Z,100,50,60\n\
         t1,s4,W1,1,claims,acme-retail,llm,ok,1970-01-01T00:00:00Z,100,50,10\n",
    )
    .unwrap();
    let location = DataLocation::parse(data.to_str().unwrap()).unwrap();
    let store = location.open_store(&[]).unwrap();
    let imported = import_csv(store, &location, &SPANS, &csv).await.unwrap();
    assert_eq!(imported.rows, 1);
    assert_eq!(
        imported.rejected,
        [
            "line 3: tokens_out_of_range: input_tokens -5 is outside 0..=1000000000",
            "line 4: reasoning_above_output: reasoning_tokens 60 > output_tokens 50 (output includes reasoning)",
            "line 5: start_outside_window: start_time 1970-01-01T00:00:00+00:00 is before 2000-01-01 or more than a day ahead of the receiver's clock",
        ]
    );
    let session = open(&data).await;
    assert_eq!(
        rows(&session, "SELECT span_id, input_tokens FROM spans").await,
        [["s1", "100"]]
    );
    assert_eq!(
        rows(
            &session,
            "SELECT source, span_id, rule, attributes LIKE '%\"input_tokens\":\"-5\"%' \
             FROM rejected_spans ORDER BY span_id"
        )
        .await,
        [
            ["csv", "s2", "tokens_out_of_range", "true"],
            ["csv", "s3", "reasoning_above_output", "false"],
            ["csv", "s4", "start_outside_window", "false"],
        ]
    );
    // Imported files say every row was checked: nothing to read again, nothing failing.
    assert_eq!(
        rows(
            &session,
            "SELECT rows_failing FROM tokenledger_files WHERE table_name = 'spans'"
        )
        .await,
        [["0"]]
    );
    // Tenant-scoped sessions have no such table.
    let scoped = session
        .for_scope(&tokenledger_engine::TenantScope::Only(
            ["acme-retail".to_string()].into(),
        ))
        .await
        .unwrap();
    let refused = scoped
        .plan_sql("SELECT * FROM rejected_spans", Access::ReadOnly)
        .await
        .expect_err("no rejected_spans for tenants");
    assert!(refused.to_string().contains("rejected_spans"), "{refused}");
}

/// Sets the modification time of `path` `seconds_ago` seconds back.
fn age(path: &Path, seconds_ago: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
        .unwrap();
}

#[tokio::test]
async fn compaction_keeps_one_row_per_span_the_first_copy_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let first = Row {
        work_item: "W1",
        ..row("00000000000000b1", Some(10))
    };
    // The same span redelivered with another tenant, workflow, count and time, and a second
    // span delivered twice unchanged.
    let conflicting = Row {
        tenant: "globex-insurance",
        workflow: "claims_intake",
        start: JAN_5 + 3_600_000_000,
        ..row("00000000000000b1", Some(20))
    };
    let twin = Row {
        work_item: "W1",
        ..row("00000000000000b2", Some(5))
    };
    drop_file(dir.path(), "spans/z-first.parquet", &[first, twin.clone()]).await;
    drop_file(
        dir.path(),
        "spans/a-later.parquet",
        &[conflicting, twin.clone()],
    )
    .await;
    // Delivered in that order, whatever the names say.
    age(&dir.path().join("spans/z-first.parquet"), 120);
    age(&dir.path().join("spans/a-later.parquet"), 60);
    let session = open(dir.path()).await;
    let options = at_once();
    let report = session
        .compact(&SPANS, &options, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((report.rows, report.duplicates), (2, 2));
    let by_span = "SELECT span_id, tenant, workflow, input_tokens, start_time FROM spans \
                   ORDER BY span_id";
    let kept = [
        [
            "00000000000000b1",
            "acme-retail",
            "refund_triage",
            "10",
            "2026-01-05T00:00:00Z",
        ],
        [
            "00000000000000b2",
            "acme-retail",
            "refund_triage",
            "5",
            "2026-01-05T00:00:00Z",
        ],
    ];
    assert_eq!(rows(&session, by_span).await, kept);
    // A later compaction meets a third copy: the curated one stays the record.
    let third = Row {
        tenant: "umbrella-legal",
        start: JAN_5 + 2 * 86_400_000_000,
        ..row("00000000000000b1", Some(30))
    };
    drop_file(dir.path(), "spans/late.parquet", &[third]).await;
    age(&dir.path().join("spans/late.parquet"), 1);
    let report = session
        .compact(&SPANS, &options, &mut |_| {})
        .await
        .unwrap();
    assert_eq!((report.rows, report.duplicates), (0, 1));
    assert_eq!(rows(&session, by_span).await, kept);
}

/// The policy's two forms, the row check (ways in, file counts) and the SQL predicate (what
/// `spans` leaves out), give the same answer on every row of a batch mixing each column's edge
/// values (NULL, negative, zero, in range, at and past each limit, NaN, infinities).
#[tokio::test]
async fn the_row_check_and_the_sql_predicate_agree_on_every_row() {
    use arrow::array::{Array, AsArray, Int32Array};
    use datafusion::prelude::SessionContext;
    use tokenledger_engine::integrity::{
        EARLIEST_START_MICROS, MAX_COST_USD, MAX_DURATION_MS, MAX_TOKENS, Policy,
    };
    let now = 1_780_000_000_000_000;
    let policy = Policy::at(now);
    let tokens = [
        None,
        Some(-1),
        Some(0),
        Some(10),
        Some(1000),
        Some(MAX_TOKENS),
        Some(MAX_TOKENS + 1),
        Some(i64::MAX),
    ];
    let costs = [
        None,
        Some(-0.5),
        Some(0.0),
        Some(0.25),
        Some(MAX_COST_USD),
        Some(MAX_COST_USD * 2.0),
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
    ];
    let starts = [
        None,
        Some(0),
        Some(EARLIEST_START_MICROS - 1),
        Some(EARLIEST_START_MICROS),
        Some(now),
        Some(now + 86_400_000_000),
        Some(now + 86_400_000_001),
    ];
    let durations = [
        None,
        Some(-1),
        Some(0),
        Some(MAX_DURATION_MS),
        Some(MAX_DURATION_MS + 1),
    ];
    let docs = [None, Some(-1), Some(0), Some(3), Some(8)];
    // A deterministic walk through the combinations (all of them would be 10 million rows).
    let rows = 20_000;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut pick = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
    for name in [
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cache_write_input_tokens",
        "cache_write_1h_input_tokens",
    ] {
        let values: Int64Array = (0..rows).map(|_| tokens[pick(tokens.len())]).collect();
        columns.push((name, Arc::new(values)));
    }
    let values: Float64Array = (0..rows).map(|_| costs[pick(costs.len())]).collect();
    columns.push(("cost_usd", Arc::new(values)));
    let values: TimestampMicrosecondArray = (0..rows).map(|_| starts[pick(starts.len())]).collect();
    columns.push(("start_time", Arc::new(values.with_timezone("UTC"))));
    let values: Int64Array = (0..rows)
        .map(|_| durations[pick(durations.len())])
        .collect();
    columns.push(("duration_ms", Arc::new(values)));
    for name in ["docs_retrieved", "docs_used"] {
        let values: Int32Array = (0..rows).map(|_| docs[pick(docs.len())]).collect();
        columns.push((name, Arc::new(values)));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();

    let by_rows: Vec<bool> = policy
        .check_rows(&batch)
        .unwrap()
        .iter()
        .map(Option::is_none)
        .collect();
    let ctx = SessionContext::new();
    let answered = ctx
        .read_batch(batch)
        .unwrap()
        .select(vec![policy.valid_span_predicate().alias("valid")])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let by_sql: Vec<bool> = answered
        .iter()
        .flat_map(|b| {
            let valid = b.column(0).as_boolean();
            (0..valid.len()).map(move |i| valid.is_valid(i) && valid.value(i))
        })
        .collect();
    assert_eq!(by_rows.len(), rows);
    let passing = by_rows.iter().filter(|v| **v).count();
    assert!(
        passing > 10 && passing < rows,
        "{passing} of {rows} rows pass: the walk must reach both sides"
    );
    let disagreements: Vec<usize> = (0..rows).filter(|&i| by_rows[i] != by_sql[i]).collect();
    assert!(disagreements.is_empty(), "rows {disagreements:?} differ");
}
