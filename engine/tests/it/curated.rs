//! Compaction and time travel (#16): landing files into curated Delta tables with no row lost or
//! counted twice. Expected values come from the source Parquet files, read with the parquet
//! crate (not through the engine).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use futures::TryStreamExt;
use tokenledger_engine::curated::{CompactOptions, CompactReport, MaintainOptions};
use tokenledger_engine::schema::{SPANS, TABLES};
use tokenledger_engine::{Access, TenantScope, TraceSession};

use crate::support::{open, repo_root, write_file};

/// Rows, input tokens and distinct span ids of a set of span files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truth {
    pub rows: i64,
    pub input_tokens: i64,
    pub distinct_spans: i64,
}

/// The span batches of every Parquet file under `dir`, read with the parquet crate.
fn read_spans(dir: &Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for file in parquet_files(dir) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    batches
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Ground truth of `batches` with duplicates of `(trace_id, span_id)` counted once.
fn truth(batches: &[RecordBatch]) -> Truth {
    let mut seen = HashSet::new();
    let mut spans = HashSet::new();
    let (mut rows, mut input_tokens) = (0, 0);
    for batch in batches {
        let text = |name: &str| {
            arrow::compute::cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap()
        };
        let (trace, span) = (text("trace_id"), text("span_id"));
        let (trace, span) = (trace.as_string::<i32>(), span.as_string::<i32>());
        let tokens = arrow::compute::cast(
            batch.column_by_name("input_tokens").unwrap(),
            &DataType::Int64,
        )
        .unwrap();
        let tokens = tokens.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            if seen.insert((trace.value(row).to_string(), span.value(row).to_string())) {
                rows += 1;
                input_tokens += if tokens.is_null(row) {
                    0
                } else {
                    tokens.value(row)
                };
                spans.insert(span.value(row).to_string());
            }
        }
    }
    Truth {
        rows,
        input_tokens,
        distinct_spans: spans.len() as i64,
    }
}

/// What the engine says about `table` (a table or a table function call).
pub async fn measure(session: &TraceSession, table: &str) -> Truth {
    let sql = format!(
        "SELECT count(*), coalesce(sum(input_tokens), 0), count(DISTINCT span_id) FROM {table}"
    );
    let batches = run(session, &sql).await.unwrap();
    let value = |i: usize| batches[0].column(i).as_primitive::<Int64Type>().value(0);
    Truth {
        rows: value(0),
        input_tokens: value(1),
        distinct_spans: value(2),
    }
}

async fn run(session: &TraceSession, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let frame = session
        .plan_sql(sql, Access::ReadOnly)
        .await
        .map_err(|e| e.user_message())?;
    session
        .execute(frame)
        .await
        .map_err(|e| tokenledger_engine::EngineError::from(e).user_message())?
        .try_collect()
        .await
        .map_err(|e| tokenledger_engine::EngineError::from(e).user_message())
}

pub fn copy_dir(from: &Path, to: &Path) {
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

/// Compact everything at once, deleting nothing (a long grace).
pub fn at_once() -> CompactOptions {
    CompactOptions {
        min_age: Duration::ZERO,
        grace: Duration::from_secs(3600),
        ..CompactOptions::default()
    }
}

async fn compact(session: &TraceSession, options: &CompactOptions) -> CompactReport {
    session
        .compact(&SPANS, options, &mut |_| {})
        .await
        .expect("compaction succeeds")
}

#[tokio::test]
async fn compaction_absorbs_each_landing_file_once_and_reads_never_double_count() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    let expected = truth(&read_spans(&dir.path().join("spans")));
    let session = open(dir.path()).await;
    assert_eq!(
        measure(&session, "spans").await,
        expected,
        "before compaction"
    );

    let first = compact(&session, &at_once()).await;
    assert_eq!(
        (first.files, first.rows, first.versions.clone()),
        (4, expected.rows as u64, vec![0])
    );
    // The same session, and a new one, read curated + unabsorbed landing: the landing files
    // still on disk are not counted again.
    assert_eq!(measure(&session, "spans").await, expected);
    assert_eq!(measure(&open(dir.path()).await, "spans").await, expected);
    // `tokenledger tables` counts the curated rows once, not again in landing.
    let summary = session.table_summaries().await.unwrap()[0].clone();
    assert_eq!(
        (summary.table, summary.rows, summary.curated_version),
        ("spans", expected.rows as u64, Some(0))
    );
    // Idempotent: nothing new, no commit.
    let again = compact(&session, &at_once()).await;
    assert_eq!(again, CompactReport::default());

    // A redelivered file (at-least-once ingest): counted twice while it waits in landing,
    // once after compaction, which drops spans already curated.
    let redelivered = parquet_files(&dir.path().join("spans/invoice"))[0].clone();
    let duplicate = dir.path().join("spans/otlp/redelivered.parquet");
    std::fs::create_dir_all(duplicate.parent().unwrap()).unwrap();
    std::fs::copy(&redelivered, &duplicate).unwrap();
    let copy_rows = truth(&read_spans(duplicate.parent().unwrap())).rows;
    let waiting = measure(&session, "spans").await;
    assert_eq!(waiting.rows, expected.rows + copy_rows);
    assert_eq!(waiting.distinct_spans, expected.distinct_spans);
    let third = compact(&session, &at_once()).await;
    assert_eq!((third.files, third.rows, third.versions), (1, 0, vec![1]));
    assert_eq!(measure(&session, "spans").await, expected);

    // Time travel: each version as recorded at each step; a time before the history is an
    // error, not the oldest version.
    assert_eq!(measure(&session, "spans_at(0)").await, expected);
    assert_eq!(measure(&session, "spans_at(1)").await, expected);
    let now = chrono::Utc::now().to_rfc3339();
    assert_eq!(
        measure(&session, &format!("spans_at('{now}')")).await,
        expected
    );
    let early = run(&session, "SELECT count(*) FROM spans_at('2020-01-01')").await;
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.contains("before its history begins")),
        "{early:?}"
    );
    let missing = run(&session, "SELECT count(*) FROM spans_at(7)").await;
    assert!(
        missing
            .as_ref()
            .is_err_and(|e| e.contains("spans has no version 7")),
        "{missing:?}"
    );

    // The history: what each commit absorbed and added.
    let history = run(
        &session,
        "SELECT version, operation, rows_added, landing_files_absorbed FROM tokenledger_history \
         WHERE table_name = 'spans' ORDER BY version",
    )
    .await
    .unwrap();
    let column = |i: usize| history[0].column(i).as_primitive::<Int64Type>().clone();
    assert_eq!(history[0].num_rows(), 2);
    assert_eq!(column(2).values().to_vec(), vec![expected.rows, 0]);
    assert_eq!(column(3).values().to_vec(), vec![4, 1]);
}

#[tokio::test]
async fn every_table_gets_a_curated_table_and_as_of_reads_all_of_them() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    // A file delivered twice, compacted in the same batch as its first copy: written once.
    let original = parquet_files(&dir.path().join("spans/invoice"))[0].clone();
    std::fs::create_dir_all(dir.path().join("spans/otlp")).unwrap();
    std::fs::copy(&original, dir.path().join("spans/otlp/again.parquet")).unwrap();
    let expected = truth(&read_spans(&dir.path().join("spans")));
    let session = open(dir.path()).await;
    assert!(measure(&session, "spans").await.rows > expected.rows);
    let before = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for table in TABLES {
        session
            .compact(table, &at_once(), &mut |_| {})
            .await
            .unwrap();
    }
    for table in TABLES {
        assert!(
            dir.path()
                .join(format!("_curated/{}/_delta_log", table.name))
                .is_dir(),
            "{} has a curated table",
            table.name
        );
    }
    // A session as of now reads what had been compacted: everything.
    let as_of = |time: chrono::DateTime<chrono::Utc>| tokenledger_engine::SessionOptions {
        as_of: Some(tokenledger_engine::curated::AsOf::Time(time)),
        ..Default::default()
    };
    let location = tokenledger_engine::DataLocation::parse(dir.path().to_str().unwrap()).unwrap();
    let now = TraceSession::open(location.clone(), &as_of(chrono::Utc::now()))
        .await
        .unwrap();
    assert_eq!(measure(&now, "spans").await, expected);
    // A report reads them too (outcomes, prices and baselines as of then).
    let report = tokenledger_engine::reports::view("cost_per_outcome").unwrap();
    let rows: Vec<RecordBatch> = now
        .execute(now.report(report).await.unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(rows.iter().map(RecordBatch::num_rows).sum::<usize>() > 0);
    // Before the first compaction: an error naming the table, not an empty answer.
    let earlier = TraceSession::open(location, &as_of(before)).await.unwrap();
    let error = run(&earlier, "SELECT count(*) FROM spans")
        .await
        .unwrap_err();
    assert!(error.contains("before its history begins"), "{error}");
}

#[tokio::test]
async fn two_compactors_at_once_commit_once() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    let expected = truth(&read_spans(&dir.path().join("spans")));
    let (a, b) = (open(dir.path()).await, open(dir.path()).await);
    let options = at_once();
    let (mut quiet_a, mut quiet_b) = (|_| {}, |_| {});
    let (first, second) = tokio::join!(
        a.compact(&SPANS, &options, &mut quiet_a),
        b.compact(&SPANS, &options, &mut quiet_b)
    );
    let outcomes = [&first, &second];
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "exactly one compactor commits: {first:?} / {second:?}"
    );
    let refused = outcomes.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert!(
        matches!(refused, tokenledger_engine::EngineError::Conflict(_)),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("another compaction committed first"),
        "{refused}"
    );
    assert_eq!(measure(&open(dir.path()).await, "spans").await, expected);
}

/// The sample's spans split into `pieces` landing files under `dir/spans/otlp/`.
async fn small_landing_files(dir: &Path, pieces: usize) -> Vec<RecordBatch> {
    let batches = read_spans(&repo_root().join("testdata/sample/spans"));
    let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let size = all.num_rows().div_ceil(pieces);
    for piece in 0..pieces {
        let start = piece * size;
        let length = size.min(all.num_rows() - start);
        let slice = all.slice(start, length);
        write_file(
            dir,
            &format!("spans/otlp/piece-{piece:03}.parquet"),
            &all.schema(),
            &slice,
        )
        .await;
    }
    vec![all]
}

#[tokio::test]
async fn readers_count_the_same_rows_while_compaction_optimize_and_cleanup_run() {
    let dir = tempfile::tempdir().unwrap();
    let batches = small_landing_files(dir.path(), 12).await;
    let expected = truth(&batches);
    let session = Arc::new(open(dir.path()).await);
    assert_eq!(measure(&session, "spans").await, expected);

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (session, stop) = (Arc::clone(&session), Arc::clone(&stop));
            let dir = dir.path().to_path_buf();
            tokio::spawn(async move {
                let mut counted = 0;
                while !stop.load(Ordering::Relaxed) || counted < 3 {
                    // One reader keeps its session (cached snapshots), the other opens anew.
                    let seen = if reader == 0 {
                        measure(&session, "spans").await
                    } else {
                        measure(&open(&dir).await, "spans").await
                    };
                    assert_eq!(seen, expected, "reader {reader}, count {counted}");
                    counted += 1;
                }
                counted
            })
        })
        .collect();

    // Several commits (small batches), then cleanup once the grace has passed, then optimize.
    let options = CompactOptions {
        min_age: Duration::ZERO,
        grace: Duration::from_secs(1),
        batch_bytes: 40_000,
        ..CompactOptions::default()
    };
    let compactor = open(dir.path()).await;
    let mut recorded = Vec::new();
    let mut record = |step| {
        if let tokenledger_engine::curated::CompactProgress::Committed { version, rows, .. } = step
        {
            recorded.push((version, rows));
        }
    };
    let first = compactor
        .compact(&SPANS, &options, &mut record)
        .await
        .unwrap();
    assert!(first.versions.len() > 3, "{first:?}");
    assert_eq!(first.files, 12);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let cleanup = compact(&compactor, &options).await;
    // Commits take a while: the first run already deleted what it absorbed more than a
    // second before its end; the second deletes the rest.
    assert_eq!(cleanup.files, 0, "{cleanup:?}");
    assert_eq!(first.deleted + cleanup.deleted, 12, "{first:?} {cleanup:?}");
    assert!(parquet_files(&dir.path().join("spans")).is_empty());
    let optimized = compactor
        .maintain(
            &SPANS,
            &MaintainOptions {
                optimize: true,
                vacuum: false,
                target_file_size: 64 << 20,
                audit_window: Duration::from_secs(3600),
            },
        )
        .await
        .unwrap();
    assert!(optimized.files_removed > 1, "{optimized:?}");
    assert_eq!(optimized.files_added, 1, "{optimized:?}");
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() >= 3);
    }
    assert_eq!(measure(&session, "spans").await, expected);
    // Time travel gives the rows recorded at each step, by version and by commit time; optimize
    // removed files from the table, not from storage, so every version still reads.
    let history = run(
        &compactor,
        "SELECT version, CAST(committed_at AS VARCHAR), operation FROM tokenledger_history \
         WHERE table_name = 'spans' ORDER BY version",
    )
    .await
    .unwrap();
    let (versions, times, operations) = (
        history[0].column(0).as_primitive::<Int64Type>(),
        history[0].column(1).as_string_view(),
        history[0].column(2).as_string::<i32>(),
    );
    let mut cumulative = 0;
    for (version, rows) in &recorded {
        cumulative += *rows as i64;
        let at = measure(&compactor, &format!("spans_at({version})")).await;
        assert_eq!(at.rows, cumulative, "version {version}");
        let row = versions
            .values()
            .iter()
            .position(|v| *v == *version as i64)
            .unwrap();
        let time = times.value(row).replace(' ', "T");
        let by_time = measure(&compactor, &format!("spans_at('{time}')")).await;
        assert_eq!(by_time.rows, cumulative, "as of {time} (version {version})");
    }
    assert_eq!(cumulative, expected.rows);
    assert_eq!(operations.value(history[0].num_rows() - 1), "OPTIMIZE");
    let newest = versions.value(history[0].num_rows() - 1);
    assert_eq!(
        measure(&compactor, &format!("spans_at({newest})")).await,
        expected
    );
}

#[tokio::test]
async fn quarantined_landing_files_are_neither_compacted_nor_read() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    let expected = truth(&read_spans(&dir.path().join("spans")));
    std::fs::write(
        dir.path().join("spans/broken.parquet"),
        b"not parquet at all",
    )
    .unwrap();
    let session = open(dir.path()).await;
    let report = compact(&session, &at_once()).await;
    assert_eq!(report.files, 4, "the broken file is not absorbed");
    assert_eq!(measure(&session, "spans").await, expected);
    let quarantined = run(
        &session,
        "SELECT count(*) FROM tokenledger_files WHERE status = 'quarantined'",
    )
    .await
    .unwrap();
    assert_eq!(
        quarantined[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0),
        1
    );
}

#[tokio::test]
async fn tenants_travel_in_time_through_their_own_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("testdata/sample"), dir.path());
    let batches = read_spans(&dir.path().join("spans"));
    // The expected rows of one tenant, from the files.
    let tenant = {
        let tenants = arrow::compute::cast(
            batches[0].column_by_name("tenant").unwrap(),
            &DataType::Utf8,
        )
        .unwrap();
        tenants.as_string::<i32>().value(0).to_string()
    };
    let own: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let tenants =
                arrow::compute::cast(b.column_by_name("tenant").unwrap(), &DataType::Utf8).unwrap();
            let mask = arrow::compute::kernels::cmp::eq(
                &tenants,
                &arrow::array::StringArray::new_scalar(tenant.as_str()),
            )
            .unwrap();
            arrow::compute::filter_record_batch(b, &mask).unwrap()
        })
        .collect();
    let expected = truth(&own);
    let admin = open(dir.path()).await;
    compact(&admin, &at_once()).await;
    let scoped = admin
        .for_scope(&TenantScope::only([tenant.as_str()]))
        .await
        .unwrap();
    assert_eq!(measure(&scoped, "spans").await, expected);
    assert_eq!(measure(&scoped, "spans_at(0)").await, expected);
    let history = run(&scoped, "SELECT * FROM tokenledger_history").await;
    assert!(
        history
            .as_ref()
            .is_err_and(|e| e.contains("administrators only")),
        "{history:?}"
    );
}
