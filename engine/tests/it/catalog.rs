//! The catalog: which files a table reads, and how it reports files it cannot read.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use tokenledger_engine::{Access, DataLocation, EngineError, SessionOptions, TraceSession};

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
    let result = async {
        let frame = session.plan_sql(sql, Access::ReadWrite).await?;
        Ok::<_, EngineError>(frame.collect().await?)
    }
    .await;
    result.expect_err("query should fail").user_message()
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

/// A spans directory with one good file (3 rows) and every kind of bad file a pipeline drops.
async fn good_file_among_bad_ones(d: &std::path::Path) {
    let good = good_batch("good", &[1, 2, 3]);
    write_file(d, "spans/good.parquet", &good.schema(), &good).await;
    let mistyped = spans_batch(
        "bad",
        1,
        Arc::new(StringArray::from(vec!["lots"])),
        DataType::Utf8,
    );
    write_file(
        d,
        "spans/2026/mistyped.parquet",
        &mistyped.schema(),
        &mistyped,
    )
    .await;
    let batch = good_batch("w", &[1]);
    let without_workflow = batch.project(&[0, 1, 2, 3, 5, 6, 7, 8]).unwrap();
    write_file(
        d,
        "spans/no_workflow.parquet",
        &without_workflow.schema(),
        &without_workflow,
    )
    .await;
    std::fs::write(
        d.join("spans/garbage.parquet"),
        b"this is not parquet at all",
    )
    .unwrap();
    // A file cut short, as an interrupted upload leaves it.
    let whole = std::fs::read(d.join("spans/good.parquet")).unwrap();
    std::fs::write(d.join("spans/truncated.parquet"), &whole[..whole.len() / 2]).unwrap();
}

#[tokio::test]
async fn bad_files_are_quarantined_and_listed_and_good_ones_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    good_file_among_bad_ones(d).await;
    std::fs::write(d.join("spans/export.csv"), b"trace_id\nx\n").unwrap();
    std::fs::write(d.join("spans/late.parquet.tmp"), b"still uploading").unwrap();

    let session = open(d).await;
    assert_eq!(
        rows(&session, "SELECT count(*), sum(input_tokens) FROM spans").await,
        vec![vec!["3", "6"]]
    );
    let files = rows(
        &session,
        "SELECT regexp_replace(path, '^.*/spans/', ''), table_name, rows, status, error \
         FROM tokenledger_files ORDER BY path",
    )
    .await;
    let by_name = |name: &str| {
        files
            .iter()
            .find(|f| f[0] == name)
            .unwrap_or_else(|| panic!("{name} not in {files:?}"))
    };
    assert_eq!(by_name("good.parquet")[1..4], ["spans", "3", "ok"]);
    assert_eq!(by_name("good.parquet")[4], "NULL");
    let expected_errors = [
        ("2026/mistyped.parquet", "column \"input_tokens\""),
        (
            "no_workflow.parquet",
            "\"workflow\" is required but missing",
        ),
        ("garbage.parquet", "not readable as Parquet"),
        ("truncated.parquet", "not readable as Parquet"),
        (
            "export.csv",
            "not read: tables read only files named *.parquet",
        ),
    ];
    for (name, error) in expected_errors {
        let file = by_name(name);
        assert_eq!(file[2..4], ["NULL", "quarantined"], "{file:?}");
        assert!(file[4].contains(error), "{name}: {}", file[4]);
        assert!(!file[4].contains('\n'), "one line: {}", file[4]);
    }
    assert_eq!(
        files.len(),
        6,
        "in-progress files are not listed: {files:?}"
    );
}

#[tokio::test]
async fn strict_mode_makes_a_bad_file_an_error_naming_the_file_and_column() {
    let cases: [(&str, &[&str]); 4] = [
        ("2026/mistyped.parquet", &["input_tokens", "Utf8", "Int64"]),
        (
            "no_workflow.parquet",
            &["\"workflow\" is required but missing"],
        ),
        ("garbage.parquet", &["not readable as Parquet"]),
        ("truncated.parquet", &["not readable as Parquet"]),
    ];
    for (bad, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        good_file_among_bad_ones(d).await;
        // Leave only the good file and this one bad file.
        for (other, _) in cases.iter().filter(|(name, _)| *name != bad) {
            std::fs::remove_file(d.join("spans").join(other)).unwrap();
        }
        let strict = SessionOptions {
            strict: true,
            ..SessionOptions::default()
        };
        let session =
            TraceSession::open(DataLocation::parse(d.to_str().unwrap()).unwrap(), &strict)
                .await
                .unwrap();
        let message = query_error(&session, "SELECT count(*) FROM spans").await;
        assert!(message.contains(&format!("spans/{bad}")), "{message}");
        for part in expected {
            assert!(message.contains(part), "{bad}: {message}");
        }
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

/// A session over `dir` whose listings are kept for `ttl`, so tests see new files soon.
async fn open_with_listing_ttl(dir: &std::path::Path, ttl: std::time::Duration) -> TraceSession {
    let options = SessionOptions {
        listing_ttl: Some(ttl),
        ..SessionOptions::default()
    };
    TraceSession::open(
        DataLocation::parse(dir.to_str().unwrap()).unwrap(),
        &options,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn new_and_completed_files_are_seen_after_the_listing_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = good_batch("first", &[1]);
    write_file(d, "spans/first.parquet", &first.schema(), &first).await;
    let ttl = std::time::Duration::from_millis(300);
    let session = open_with_listing_ttl(d, ttl).await;
    let count = "SELECT count(*) FROM spans";
    assert_eq!(rows(&session, count).await, vec![vec!["1"]]);

    // A second file lands, and a third arrives half-written under its final name.
    let second = good_batch("second", &[2, 3]);
    write_file(d, "spans/second.parquet", &second.schema(), &second).await;
    let third = good_batch("third", &[4, 5, 6]);
    write_file(d, "staging/third.parquet", &third.schema(), &third).await;
    let whole = std::fs::read(d.join("staging/third.parquet")).unwrap();
    std::fs::write(d.join("spans/third.parquet"), &whole[..whole.len() / 3]).unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(rows(&session, count).await, vec![vec!["3"]]);

    // The upload completes: the new version is checked again and read.
    std::fs::write(d.join("spans/third.parquet"), &whole).unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(rows(&session, count).await, vec![vec!["6"]]);
    assert_eq!(
        rows(
            &session,
            "SELECT count(*) FROM tokenledger_files WHERE status = 'ok'"
        )
        .await,
        vec![vec!["3"]]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_while_files_come_and_go_answer_consistently_or_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // File i holds i + 1 rows of 10^i tokens, so a sum's decimal digit i says whether the whole
    // of file i was read (digit i + 1) or none of it (0); anything else is a torn read.
    const FILES: u32 = 6;
    for i in 0..FILES {
        let tokens = vec![10_i64.pow(i); i as usize + 1];
        let batch = good_batch(&format!("f{i}"), &tokens);
        write_file(d, &format!("staging/f{i}.parquet"), &batch.schema(), &batch).await;
    }
    std::fs::create_dir_all(d.join("spans")).unwrap();
    let options = SessionOptions {
        listing_ttl: Some(std::time::Duration::from_millis(1)),
        ..SessionOptions::default()
    };
    let session = TraceSession::open(DataLocation::parse(d.to_str().unwrap()).unwrap(), &options)
        .await
        .unwrap();

    // A pipeline adding files (atomically, by rename) and a janitor deleting them.
    let spans = d.join("spans");
    let staging = d.join("staging");
    let churn = std::thread::spawn(move || {
        for round in 0..400_u32 {
            let i = round * 7 % FILES;
            let live = spans.join(format!("f{i}.parquet"));
            if live.exists() {
                std::fs::remove_file(&live).unwrap();
            } else {
                let tmp = spans.join(format!(".f{i}.parquet"));
                std::fs::copy(staging.join(format!("f{i}.parquet")), &tmp).unwrap();
                std::fs::rename(&tmp, &live).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });

    let (mut answered, mut failed) = (0, 0);
    while !churn.is_finished() {
        let result = async {
            let frame = session
                .plan_sql(
                    "SELECT count(*), sum(input_tokens) FROM spans",
                    Access::ReadWrite,
                )
                .await?;
            Ok::<_, EngineError>(frame.collect().await?)
        }
        .await;
        match result {
            Ok(batches) => {
                let row = &crate::support::stringify(&batches)[0];
                let count: u32 = row[0].parse().unwrap();
                let sum: i64 = if row[1] == "NULL" {
                    0
                } else {
                    row[1].parse().unwrap()
                };
                let mut expected_count = 0;
                for i in 0..FILES {
                    let digit = (sum / 10_i64.pow(i) % 10) as u32;
                    assert!(digit == 0 || digit == i + 1, "torn read: sum {sum}");
                    expected_count += digit;
                }
                assert_eq!(count, expected_count, "count and sum disagree: {row:?}");
                answered += 1;
            }
            Err(e) => {
                let message = e.user_message();
                assert!(!message.to_lowercase().contains("panic"), "{message}");
                assert!(
                    message.contains("not found") || message.contains("No such file"),
                    "a vanished file should be named as such: {message}"
                );
                failed += 1;
            }
        }
    }
    churn.join().unwrap();
    assert!(answered > 0, "no query answered ({failed} failed)");
}

/// Runs `sql` through [`TraceSession::execute`], as the CLI and the Flight server do.
async fn execute(session: &TraceSession, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let answer = async {
        let frame = session.plan_sql(sql, Access::ReadWrite).await?;
        let batches = session.execute(frame).await?;
        Ok::<_, EngineError>(datafusion::physical_plan::common::collect(batches).await?)
    };
    answer.await.map_err(|e| e.user_message())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_a_query_runs_fails_that_query_only_and_quarantines_nothing() {
    use datafusion::logical_expr::{Volatility, create_udf};
    let dir = tempfile::tempdir().unwrap();
    let generated = crate::support::gen_into(
        dir.path(),
        &tokenledger_gen::GenOptions {
            work_items: 200,
            ..Default::default()
        },
    )
    .await;
    let session = open(dir.path()).await;
    // Stands in for a bug in a dependency's decoder: a function that panics on every batch.
    session.register_udf(create_udf(
        "explode",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(|_| panic!("boom from below the query")),
    ));
    // Once inside DataFusion's partition tasks (an aggregate over several files), once in the
    // task that polls the stream.
    for sql in [
        "SELECT workflow, sum(explode(input_tokens)) FROM spans GROUP BY workflow",
        "SELECT explode(input_tokens) FROM spans LIMIT 1",
    ] {
        let error = execute(&session, sql).await.expect_err(sql);
        assert!(
            error.contains("boom from below the query"),
            "{sql}: {error}"
        );
    }
    // Every file decodes cleanly, so none was blamed; the session goes on answering.
    assert_eq!(
        rows(&session, "SELECT DISTINCT status FROM tokenledger_files").await,
        [["ok"]]
    );
    let count = execute(&session, "SELECT count(*) FROM spans")
        .await
        .unwrap();
    assert_eq!(
        crate::support::stringify(&count),
        [[generated.spans.to_string()]]
    );
}

#[tokio::test]
async fn the_sessions_parquet_settings_reach_the_table_scans() {
    use parquet::file::properties::WriterProperties;
    use tokenledger_engine::storage::writer::StreamingParquetFile;
    // One file of ten row groups, input_tokens 0..999 in order: statistics can skip eight.
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<i64> = (0..1000).collect();
    let batch = good_batch("invoice", &tokens);
    let path = dir.path().join("spans/sorted.parquet");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut file = StreamingParquetFile::create(
        Arc::new(object_store::local::LocalFileSystem::new()),
        object_store::path::Path::from_absolute_path(&path).unwrap(),
        &batch.schema(),
        props,
    )
    .unwrap();
    file.write(&batch).await.unwrap();
    file.close().await.unwrap();

    let sql = "EXPLAIN ANALYZE SELECT count(*) FROM spans WHERE input_tokens < 150";
    let scan = async |settings: &[(&str, &str)]| {
        let options = SessionOptions {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..SessionOptions::default()
        };
        let location = DataLocation::parse(dir.path().to_str().unwrap()).unwrap();
        let session = TraceSession::open(location, &options).await.unwrap();
        crate::support::pruning_metric(&rows(&session, sql).await, "row_groups_pruned_statistics")
    };
    assert_eq!(scan(&[]).await, (10, 2), "pruning is on by default");
    // Turned off in the session, the same scan reads every row group.
    let off = [("datafusion.execution.parquet.pruning", "false")];
    assert_eq!(scan(&off).await, (10, 10), "pruning off in the session");
}

#[tokio::test]
async fn the_session_plans_statements_and_refuses_by_kind() {
    let session = open(&crate::support::repo_root().join("testdata/handmade")).await;
    match session
        .plan_sql("SELECT * FROM no_such_table", Access::ReadOnly)
        .await
    {
        Err(EngineError::TableNotFound(name)) => {
            assert_eq!(name, "tokenledger.public.no_such_table")
        }
        other => panic!("expected TableNotFound, got {:?}", other.map(|_| ())),
    }
    for sql in [
        "CREATE TABLE stolen AS SELECT 1",
        "INSERT INTO outcomes (work_item_id) VALUES ('x')",
        "COPY (SELECT 1) TO '/tmp/tokenledger-plan-test.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "EXPLAIN ANALYZE CREATE TABLE stolen AS SELECT 1",
    ] {
        match session.plan_sql(sql, Access::ReadOnly).await {
            Err(EngineError::ReadOnly(_)) => {}
            other => panic!("{sql}: expected ReadOnly, got {:?}", other.map(|_| ())),
        }
    }
    assert!(!std::path::Path::new("/tmp/tokenledger-plan-test.parquet").exists());
    // A table function is a table reference too, and plans.
    let frame = session
        .plan_sql(
            "SELECT count(*) FROM generate_series(1, 3)",
            Access::ReadOnly,
        )
        .await
        .unwrap();
    let batches = frame.collect().await.unwrap();
    assert_eq!(crate::support::stringify(&batches), [["3"]]);
    // The CLI may change its own session.
    session
        .plan_sql("CREATE VIEW mine AS SELECT 1 AS one", Access::ReadWrite)
        .await
        .unwrap();
    assert_eq!(rows(&session, "SELECT one FROM mine").await, [["1"]]);
}

/// Counts the reads that reach storage.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn object_store::ObjectStore>,
    reads: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CountingStore({})", self.inner)
    }
}

impl CountingStore {
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &object_store::path::Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn small_files_are_fetched_once_and_a_rewritten_one_is_read_anew() {
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt, path::Path};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, tokens) in [("a", &[1, 2][..]), ("b", &[3][..])] {
        let batch = good_batch(name, tokens);
        write_file(d, &format!("spans/{name}.parquet"), &batch.schema(), &batch).await;
    }
    let counting = Arc::new(CountingStore {
        inner: Arc::new(object_store::local::LocalFileSystem::new()),
        reads: Default::default(),
    });
    let spans_dir = Path::from_absolute_path(d.join("spans")).unwrap();
    let store = tokenledger_engine::storage::files::TableFileStore::new(
        counting.clone(),
        vec![(spans_dir.clone(), &tokenledger_engine::schema::SPANS)],
        None,
        "/",
        false,
    );
    let list = || async {
        store
            .list(Some(&spans_dir))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    };
    let listed = list().await;
    assert_eq!(listed.len(), 2);
    // The check read each file once (each is smaller than the footer read).
    assert_eq!(counting.reads(), 2);

    // What a scan reads comes from those reads, byte for byte, however it asks.
    for meta in &listed {
        let on_disk =
            std::fs::read(d.join("spans").join(meta.location.filename().unwrap())).unwrap();
        let len = on_disk.len() as u64;
        let whole = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(whole.as_ref(), on_disk.as_slice());
        let parts = store
            .get_ranges(&meta.location, &[0..4, len - 8..len])
            .await
            .unwrap();
        assert_eq!(parts[0].as_ref(), &on_disk[..4]);
        assert_eq!(parts[1].as_ref(), &on_disk[len as usize - 8..]);
        let middle = store.get_range(&meta.location, 10..20).await.unwrap();
        assert_eq!(middle.as_ref(), &on_disk[10..20]);
        // A range past the end is an error naming the file, as storage would refuse it.
        let past = store
            .get_ranges(&meta.location, &[10..20, 0..len + 1])
            .await
            .unwrap_err()
            .to_string();
        assert!(past.contains(meta.location.filename().unwrap()), "{past}");
    }
    assert_eq!(counting.reads(), 2, "the scan's reads reached storage");

    // `a` is rewritten in place with other rows: the next listing checks the new version, and
    // reads return its bytes, not the old ones.
    let rewritten = good_batch("a", &[10, 20, 30]);
    write_file(d, "spans/a.parquet", &rewritten.schema(), &rewritten).await;
    let a = list()
        .await
        .into_iter()
        .find(|meta| meta.location.as_ref().ends_with("a.parquet"))
        .unwrap();
    assert_eq!(
        counting.reads(),
        3,
        "only the rewritten file is checked again"
    );
    let on_disk = std::fs::read(d.join("spans/a.parquet")).unwrap();
    let whole = store.get(&a.location).await.unwrap().bytes().await.unwrap();
    assert_eq!(whole.as_ref(), on_disk.as_slice());
}

#[tokio::test]
async fn a_small_file_rewritten_in_place_answers_with_its_new_rows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = good_batch("a", &[1, 2]);
    write_file(d, "spans/a.parquet", &first.schema(), &first).await;
    let ttl = std::time::Duration::from_millis(200);
    let session = open_with_listing_ttl(d, ttl).await;
    let sum = "SELECT count(*), sum(input_tokens) FROM spans";
    assert_eq!(rows(&session, sum).await, vec![vec!["2", "3"]]);
    let second = good_batch("a", &[10, 20, 30]);
    write_file(d, "spans/a.parquet", &second.schema(), &second).await;
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(rows(&session, sum).await, vec![vec!["3", "60"]]);
}
