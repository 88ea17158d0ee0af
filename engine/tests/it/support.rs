//! Helpers shared by the engine's tests.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use tokenledger_engine::storage::writer::{StreamingParquetFile, writer_properties};
use tokenledger_engine::{DataLocation, SessionOptions, TraceSession};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("engine/ has a parent")
        .to_path_buf()
}

/// Generates a trace data set into a local directory.
pub async fn gen_into(
    dir: &std::path::Path,
    options: &tokenledger_gen::GenOptions,
) -> tokenledger_gen::GenSummary {
    let location = DataLocation::parse(dir.to_str().unwrap()).unwrap();
    let store = location.open_store(&[]).unwrap();
    tokenledger_gen::generate(store, &location, options, tokenledger_gen::silent())
        .await
        .unwrap()
}

/// A generated data set of `work_items` work items in files of about `spans_per_file` spans,
/// in a directory of its own (removed when dropped).
pub async fn generated(work_items: u64, spans_per_file: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    gen_into(
        dir.path(),
        &tokenledger_gen::GenOptions {
            work_items,
            spans_per_file,
            ..tokenledger_gen::GenOptions::default()
        },
    )
    .await;
    dir
}

/// Opens a session over a local directory.
pub async fn open(dir: &std::path::Path) -> TraceSession {
    TraceSession::open(
        DataLocation::parse(dir.to_str().unwrap()).unwrap(),
        &SessionOptions::default(),
    )
    .await
    .expect("session opens")
}

/// Writes `batch` as a Parquet file at `dir/relative`.
pub async fn write_file(
    dir: &std::path::Path,
    relative: &str,
    schema: &SchemaRef,
    batch: &RecordBatch,
) {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = Arc::new(LocalFileSystem::new());
    let object_path = Path::from_absolute_path(&path).unwrap();
    let mut file =
        StreamingParquetFile::create(store, object_path, schema, writer_properties(schema, &[]))
            .unwrap();
    file.write(batch).await.unwrap();
    file.close().await.unwrap();
}

/// Runs `sql` and returns the rows as strings (NULL for nulls), for compact assertions.
pub async fn rows(session: &TraceSession, sql: &str) -> Vec<Vec<String>> {
    let frame = session
        .plan_sql(sql, tokenledger_engine::Access::ReadWrite)
        .await
        .unwrap();
    let batches = frame.collect().await.unwrap();
    stringify(&batches)
}

/// Every batch of every Parquet file under `dir`, read with parquet's own reader: the
/// independent side of a check against tokenledger's answers.
pub fn batches_in_files(dir: &std::path::Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        batches.extend(reader.map(|batch| batch.unwrap()));
    }
    batches
}

/// Every row of `batches` as text, NULL as "NULL" (the .slt runner's rendering).
pub use crate::slt_db::stringify;

/// "N total → M matched" of an EXPLAIN ANALYZE metric (`files_ranges_pruned_statistics`, …),
/// as (N, M).
pub fn pruning_metric(plan: &[Vec<String>], metric: &str) -> (u64, u64) {
    let text: String = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    let value = text
        .split(&format!("{metric}="))
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no {metric} in {text}"));
    let numbers: Vec<u64> = value
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}
