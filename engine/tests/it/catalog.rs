//! The catalog: which files a table reads, and how it reports files it cannot read.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use tokenledger_engine::{DataLocation, EngineError, SessionOptions, TraceSession};

use crate::support::{open, rows, write_file};

const T0: i64 = 1_767_571_200_000_000; // 2026-01-05T00:00:00Z

/// A minimal spans file: the required columns plus `input_tokens` as `tokens_type`.
fn spans_batch(
    workflow: &str,
    n: usize,
    tokens: Arc<dyn arrow::array::Array>,
    tokens_type: DataType,
) -> RecordBatch {
    let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as Arc<dyn arrow::array::Array>;
    let ids: Vec<String> = (0..n).map(|i| format!("{workflow}-{i}")).collect();
    let schema = Schema::new(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("work_item_id", DataType::Utf8, false),
        Field::new("attempt", DataType::Int32, false),
        Field::new("workflow", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new(
            "start_time",
            tokenledger_engine::schema::timestamp_type(),
            false,
        ),
        Field::new("status", DataType::Utf8, false),
        Field::new("input_tokens", tokens_type, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(ids.clone())),
            Arc::new(StringArray::from(ids.clone())),
            Arc::new(StringArray::from(ids)),
            Arc::new(arrow::array::Int32Array::from(vec![1; n])),
            text(workflow),
            text("llm"),
            Arc::new(TimestampMicrosecondArray::from(vec![T0; n]).with_timezone("UTC")),
            text("ok"),
            tokens,
        ],
    )
    .unwrap()
}

fn good_batch(workflow: &str, tokens: &[i64]) -> RecordBatch {
    spans_batch(
        workflow,
        tokens.len(),
        Arc::new(Int64Array::from(tokens.to_vec())),
        DataType::Int64,
    )
}

async fn query_error(session: &TraceSession, sql: &str) -> String {
    let result = async { session.ctx.sql(sql).await?.collect().await }.await;
    EngineError::from(result.expect_err("query should fail")).user_message()
}

#[tokio::test]
async fn reads_files_at_any_depth_and_skips_in_progress_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_file(
        d,
        "spans/a.parquet",
        &good_batch("a", &[1]).schema(),
        &good_batch("a", &[1]),
    )
    .await;
    write_file(
        d,
        "spans/2026/01/05/b.parquet",
        &good_batch("b", &[2, 3]).schema(),
        &good_batch("b", &[2, 3]),
    )
    .await;
    // A pipeline's temporary and hidden files, an empty placeholder and a non-Parquet file.
    write_file(
        d,
        "spans/_tmp/c.parquet",
        &good_batch("c", &[100]).schema(),
        &good_batch("c", &[100]),
    )
    .await;
    write_file(
        d,
        "spans/.d.parquet",
        &good_batch("d", &[100]).schema(),
        &good_batch("d", &[100]),
    )
    .await;
    std::fs::write(d.join("spans/2026/e.parquet"), b"").unwrap();
    std::fs::write(d.join("spans/notes.txt"), b"not data").unwrap();

    let session = open(d).await;
    assert_eq!(
        rows(
            &session,
            "SELECT workflow, sum(input_tokens) FROM spans GROUP BY 1 ORDER BY 1"
        )
        .await,
        vec![vec!["a", "1"], vec!["b", "5"]]
    );
    // Absent table directories read as empty tables.
    assert_eq!(
        rows(&session, "SELECT count(*) FROM outcomes").await,
        vec![vec!["0"]]
    );
}

#[tokio::test]
async fn missing_optional_columns_read_as_null_and_extra_columns_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = good_batch("old", &[10]);
    write_file(d, "spans/old.parquet", &old.schema(), &old).await;
    // A newer writer adds a column the table does not know yet.
    let newer = good_batch("new", &[20]);
    let mut fields: Vec<Field> = newer
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("gpu_seconds", DataType::Float64, true));
    let mut columns = newer.columns().to_vec();
    columns.push(Arc::new(arrow::array::Float64Array::from(vec![1.5])));
    let newer = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    write_file(d, "spans/new.parquet", &newer.schema(), &newer).await;

    let session = open(d).await;
    assert_eq!(
        rows(
            &session,
            "SELECT workflow, input_tokens, model, cost_usd FROM spans ORDER BY 1"
        )
        .await,
        vec![
            vec!["new", "20", "NULL", "NULL"],
            vec!["old", "10", "NULL", "NULL"]
        ]
    );
}

#[tokio::test]
async fn narrower_types_are_widened() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let batch = spans_batch(
        "w",
        2,
        Arc::new(arrow::array::Int32Array::from(vec![7, 8])),
        DataType::Int32,
    );
    write_file(d, "spans/int32.parquet", &batch.schema(), &batch).await;
    let session = open(d).await;
    assert_eq!(
        rows(
            &session,
            "SELECT sum(input_tokens), arrow_typeof(sum(input_tokens)) FROM spans"
        )
        .await,
        vec![vec!["15", "Int64"]]
    );
}

#[tokio::test]
async fn a_mistyped_column_is_an_error_naming_the_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = good_batch("good", &[1]);
    write_file(d, "spans/good.parquet", &good.schema(), &good).await;
    let bad = spans_batch(
        "bad",
        1,
        Arc::new(StringArray::from(vec!["lots"])),
        DataType::Utf8,
    );
    write_file(d, "spans/2026/bad.parquet", &bad.schema(), &bad).await;

    let session = open(d).await;
    let message = query_error(&session, "SELECT count(*) FROM spans").await;
    assert!(message.contains("spans/2026/bad.parquet"), "{message}");
    assert!(message.contains("input_tokens"), "{message}");
    assert!(
        message.contains("Utf8") && message.contains("Int64"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
}

#[tokio::test]
async fn a_missing_required_column_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let batch = good_batch("w", &[1]);
    let without_workflow = batch.project(&[0, 1, 2, 3, 5, 6, 7, 8]).unwrap();
    write_file(
        d,
        "spans/x.parquet",
        &without_workflow.schema(),
        &without_workflow,
    )
    .await;
    let session = open(d).await;
    let message = query_error(&session, "SELECT * FROM spans").await;
    assert!(
        message.contains("spans/x.parquet")
            && message.contains("\"workflow\" is required but missing"),
        "{message}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_parquet_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("outcomes")).unwrap();
    std::fs::write(
        dir.path().join("outcomes/garbage.parquet"),
        b"this is not parquet at all",
    )
    .unwrap();
    let session = open(dir.path()).await;
    let message = query_error(&session, "SELECT count(*) FROM outcomes").await;
    assert!(
        message.contains("outcomes/garbage.parquet") && message.contains("not readable as Parquet"),
        "{message}"
    );
}

#[tokio::test]
async fn a_missing_location_is_a_clear_error() {
    let result = TraceSession::open(
        DataLocation::parse("/no/such/tokenledger/data").unwrap(),
        &SessionOptions::default(),
    )
    .await;
    let message = result.err().expect("must fail").user_message();
    assert_eq!(
        message,
        "data location \"/no/such/tokenledger/data\": does not exist"
    );
}
