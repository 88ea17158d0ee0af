//! Spike for #16 (not a feature yet): what deltalake-core 1.1 does with tokenledger's data in
//! our DataFusion 55 session. Writes the sample's spans as a Delta table through our own object
//! store, with an application transaction and commit metadata, appends again, and reads both
//! versions back through `DeltaTable::table_provider` registered in a `TraceSession`.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use deltalake_core::kernel::Transaction;
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::{DeltaTable, DeltaTableBuilder};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use tokenledger_engine::Access;
use url::Url;

use crate::support::{open, repo_root};

const APP: &str = "tokenledger-compact/spans";

/// Delta has no view types: text columns go in as plain Utf8.
fn without_views(batch: &RecordBatch) -> RecordBatch {
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()).unwrap())
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

async fn count_and_tokens(session: &tokenledger_engine::TraceSession, table: &str) -> (i64, i64) {
    let frame = session
        .plan_sql(
            &format!("SELECT count(*), sum(input_tokens) FROM {table}"),
            Access::ReadOnly,
        )
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = session
        .execute(frame)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let b = &batches[0];
    (
        b.column(0).as_primitive::<Int64Type>().value(0),
        b.column(1).as_primitive::<Int64Type>().value(0),
    )
}

#[tokio::test]
async fn spike_delta_round_trip_with_app_transactions_and_time_travel() {
    let session = open(&repo_root().join("testdata/sample")).await;
    let frame = session
        .plan_sql("SELECT * FROM spans", Access::ReadOnly)
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = session
        .execute(frame)
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(without_views)
        .collect();
    let (rows, tokens) = count_and_tokens(&session, "spans").await;

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    let url = Url::from_directory_path(dir.path().join("_curated/spans")).unwrap();
    let table: DeltaTable = DeltaTableBuilder::from_url(url.clone())
        .unwrap()
        .with_storage_backend(Arc::clone(&store), url.clone())
        .build()
        .unwrap();
    let commit = |version: i64, absorbed: &str| {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(APP, version))
            .with_metadata([(
                "tokenledger.absorbed".to_string(),
                serde_json::json!([absorbed]),
            )])
            .with_cleanup_expired_logs(Some(false))
    };
    let table = table
        .write(batches.clone())
        .with_commit_properties(commit(1, "spans/a.parquet"))
        .await
        .unwrap();
    assert_eq!(table.version(), Some(0));
    let half: Vec<RecordBatch> = batches.iter().take(2).cloned().collect();
    let half_rows: i64 = half.iter().map(|b| b.num_rows() as i64).sum();
    let table = table
        .write(half)
        .with_commit_properties(commit(2, "spans/b.parquet"))
        .await
        .unwrap();
    assert_eq!(table.version(), Some(1));
    let txn = table
        .snapshot()
        .unwrap()
        .transaction_version(table.log_store().as_ref(), APP)
        .await
        .unwrap();
    assert_eq!(txn, Some(2));

    // Read back through our session.
    let latest = table.table_provider().await.unwrap();
    session.register_table("curated_latest", latest).unwrap();
    let (got_rows, _) = count_and_tokens(&session, "curated_latest").await;
    assert_eq!(got_rows, rows + half_rows);

    let mut first = DeltaTableBuilder::from_url(url.clone())
        .unwrap()
        .with_storage_backend(Arc::clone(&store), url.clone())
        .build()
        .unwrap();
    first.load_version(0).await.unwrap();
    session
        .register_table("curated_v0", first.table_provider().await.unwrap())
        .unwrap();
    assert_eq!(
        count_and_tokens(&session, "curated_v0").await,
        (rows, tokens)
    );

    let history: Vec<_> = table.history(None).try_collect().await.unwrap();
    let absorbed: Vec<String> = history
        .iter()
        .map(|c| format!("{:?}", c.info.get("tokenledger.absorbed")))
        .collect();
    eprintln!("history: {} commits; absorbed {absorbed:?}", history.len());
    assert_eq!(history.len(), 2);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[tokio::test]
async fn spike_compact_absorbs_settled_landing_files_once() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    let session = open(dir.path()).await;
    let (rows, tokens) = count_and_tokens(&session, "spans").await;
    let spans = &tokenledger_engine::schema::SPANS;
    let first = session
        .compact(spans, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        (first.files, first.rows, first.version),
        (4, rows as u64, Some(0))
    );
    let again = session
        .compact(spans, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        (again.files, again.version),
        (0, None),
        "nothing new: no commit"
    );

    let url = Url::from_directory_path(dir.path().join("_curated/spans")).unwrap();
    let mut curated = DeltaTableBuilder::from_url(url).unwrap().build().unwrap();
    curated.load().await.unwrap();
    session
        .register_table("curated_spans", curated.table_provider().await.unwrap())
        .unwrap();
    assert_eq!(
        count_and_tokens(&session, "curated_spans").await,
        (rows, tokens)
    );
    // Written sorted by tenant: each tenant's rows are contiguous in the curated files.
    let frame = session
        .plan_sql(
            "SELECT count(*) FROM (SELECT DISTINCT tenant FROM curated_spans)",
            Access::ReadOnly,
        )
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = session
        .execute(frame)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 5);

    // A new session reads the table as curated + unabsorbed landing files: the landing files
    // still on disk are not counted again.
    let reopened = open(dir.path()).await;
    assert_eq!(count_and_tokens(&reopened, "spans").await, (rows, tokens));
    // A file landing after the compaction is read from landing, then from the curated table.
    let extra = dir.path().join("spans/invoice/part-00000.parquet");
    std::fs::copy(&extra, dir.path().join("spans/late.parquet")).unwrap();
    let late = open(dir.path()).await;
    let invoice = late
        .plan_sql(
            "SELECT count(*), sum(input_tokens) FROM spans WHERE workflow = 'invoice'",
            Access::ReadOnly,
        )
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = late
        .execute(invoice)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let invoice_rows = batches[0].column(0).as_primitive::<Int64Type>().value(0);
    assert_eq!(
        invoice_rows % 2,
        0,
        "the invoice file counts twice: once curated, once landed"
    );
    let with_late = count_and_tokens(&late, "spans").await;
    assert_eq!(with_late.0, rows + invoice_rows / 2);
    // Compaction absorbs the late file; its spans are all curated already, so none is written
    // again: at-least-once duplicates end at compaction.
    let third = late
        .compact(spans, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((third.files, third.rows, third.version), (1, 0, Some(1)));
    assert_eq!(
        count_and_tokens(&open(dir.path()).await, "spans").await,
        (rows, tokens)
    );
    // Time travel: each version's counts as recorded at each step.
    let session = open(dir.path()).await;
    assert_eq!(
        count_and_tokens(&session, "spans_at(0)").await,
        (rows, tokens)
    );
    assert_eq!(
        count_and_tokens(&session, "spans_at(1)").await,
        (rows, tokens)
    );
    let now = chrono::Utc::now().to_rfc3339();
    assert_eq!(
        count_and_tokens(&session, &format!("spans_at('{now}')")).await,
        (rows, tokens)
    );
    let early = session
        .plan_sql(
            "SELECT count(*) FROM spans_at('2020-01-01')",
            Access::ReadOnly,
        )
        .await;
    let error = match early {
        Ok(frame) => session.execute(frame).await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    }
    .expect("a time before the history is an error");
    assert!(
        error.contains("before the curated spans table's history begins"),
        "{error}"
    );

    // The history: two commits of spans, newest first, with what each absorbed and added.
    let frame = session
        .plan_sql(
            "SELECT version, operation, rows_added, files_absorbed FROM tokenledger_history \
             WHERE table_name = 'spans' ORDER BY version",
            Access::ReadOnly,
        )
        .await
        .unwrap();
    let batches: Vec<RecordBatch> = session
        .execute(frame)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    eprintln!("{text}");
    let files = batches[0].column(3).as_primitive::<Int64Type>();
    assert_eq!(
        (batches[0].num_rows(), files.value(0), files.value(1)),
        (2, 4, 1),
        "{text}"
    );
}

#[tokio::test]
async fn spike_two_compactors_at_once_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    let (a, b) = (open(dir.path()).await, open(dir.path()).await);
    let (rows, tokens) = count_and_tokens(&a, "spans").await;
    let spans = &tokenledger_engine::schema::SPANS;
    let zero = std::time::Duration::ZERO;
    let (first, second) = tokio::join!(a.compact(spans, zero), b.compact(spans, zero));
    let outcomes = [&first, &second];
    let committed = outcomes.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<String> = outcomes
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    eprintln!("committed {committed}, refused {refused:?}");
    assert_eq!(
        committed, 1,
        "exactly one compactor commits: {first:?} / {second:?}"
    );
    assert!(
        refused[0].contains("another compaction committed first"),
        "{refused:?}"
    );
    assert_eq!(
        count_and_tokens(&open(dir.path()).await, "spans").await,
        (rows, tokens)
    );
}
