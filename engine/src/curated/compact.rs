//! `tokenledger compact`: settled landing files into the curated table, absorbed landing files
//! deleted after the grace period, and the maintenance operations (optimize, vacuum).

use std::collections::{BTreeSet, HashSet};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::ExprFunctionExt;
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};
use deltalake_core::DeltaTable;
use deltalake_core::kernel::Transaction;
use deltalake_core::kernel::transaction::CommitProperties;
use deltalake_core::operations::optimize::OptimizeType;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::table::{DELIVERY_COLUMN, LandingFiles};
use super::{ABSORBED, Curated, IN_LANDING, absorbed_in_landing, delta_error, faults};
use crate::error::{EngineError, Result};
use crate::integrity::{Policy, rejected_rows, write_rejected};
use crate::storage::files::TableFileStore;
use crate::storage::writer::writer_properties;

/// How `tokenledger compact` moves landing files.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// A landing file must be this old before it is compacted, so that no writer is still at it.
    pub min_age: Duration,
    /// How long after the commit that absorbed it a landing file is deleted. Longer than any
    /// query: a query that planned before the commit still reads the file from landing.
    pub grace: Duration,
    /// Size of the data files written.
    pub target_file_size: u64,
    /// At most this many bytes of landing files per commit: each commit is one step of
    /// progress and what a crash can cost.
    pub batch_bytes: u64,
    /// How long history must stay readable for audits: the table's log and deleted-file
    /// retention, and the vacuum's.
    pub audit_window: Duration,
}

/// Seven years, the usual retention of financial records.
pub const DEFAULT_AUDIT_WINDOW: Duration = Duration::from_secs(7 * 366 * 24 * 3600);

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            min_age: Duration::from_secs(60),
            grace: Duration::from_secs(3600),
            target_file_size: 128 << 20,
            batch_bytes: 256 << 20,
            audit_window: DEFAULT_AUDIT_WINDOW,
        }
    }
}

/// What a compaction is doing, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactProgress {
    /// Landing files were chosen: `files` of `bytes` in `commits` commits.
    Planned {
        table: &'static str,
        files: usize,
        bytes: u64,
        commits: usize,
    },
    /// One commit made.
    Committed {
        table: &'static str,
        version: u64,
        files: usize,
        rows: u64,
        /// Copies of spans already kept, left out.
        duplicates: u64,
        /// Rows breaking the validation policy, moved to `rejected_spans`.
        set_aside: u64,
    },
    /// Absorbed landing files past the grace period deleted.
    Cleaned { table: &'static str, files: usize },
}

/// What one compaction of one table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Landing files absorbed.
    pub files: usize,
    /// Rows added to the curated table (duplicates removed).
    pub rows: u64,
    /// Rows of the landing files left out as copies of a span already kept: redeliveries, and
    /// conflicting copies (another tenant, workflow, count or time under the same ids).
    pub duplicates: u64,
    /// Rows breaking the validation policy, written to `rejected_spans` instead of the curated
    /// table (from files pipelines dropped).
    pub set_aside: u64,
    /// The versions committed, oldest first; empty when there was nothing to do.
    pub versions: Vec<u64>,
    /// Landing files deleted after their grace period.
    pub deleted: usize,
}

/// How far apart the start times of two copies of one span may be for a compaction to find the
/// curated copy: a week.
const COPY_TIME_MARGIN: datafusion::common::ScalarValue =
    datafusion::common::ScalarValue::IntervalMonthDayNano(Some(
        arrow::datatypes::IntervalMonthDayNano {
            months: 0,
            days: 7,
            nanoseconds: 0,
        },
    ));

/// The application id under which compactions of `table` number their runs.
fn app_id(table: &str) -> String {
    format!("tokenledger-compact/{table}")
}

/// Table properties set when a curated table is created: history kept for the audit window,
/// never cleaned up by a commit, and no row ever deleted.
fn table_properties(audit_window: Duration) -> Vec<(String, Option<String>)> {
    let days = audit_window.as_secs().div_ceil(86_400).max(1);
    let interval = format!("interval {days} days");
    [
        ("delta.enableExpiredLogCleanup", "false".to_string()),
        ("delta.logRetentionDuration", interval.clone()),
        ("delta.deletedFileRetentionDuration", interval),
        ("delta.appendOnly", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Some(v)))
    .collect()
}

/// `ctx`'s state (its stores, memory pool, settings) with Delta's planner, which writes and
/// optimize need for their own plan nodes.
fn delta_state(ctx: &SessionContext) -> Arc<dyn datafusion::catalog::Session> {
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
        .with_query_planner(deltalake_core::delta_datafusion::planner::DeltaPlanner::new())
        .build();
    Arc::new(state)
}

/// Moves the settled landing files of one table into its curated table, in commits of at most
/// `batch_bytes`, then deletes absorbed landing files past their grace period.
pub(crate) async fn compact(
    ctx: &SessionContext,
    files: &TableFileStore,
    curated: &Curated,
    options: &CompactOptions,
    progress: &mut (dyn FnMut(CompactProgress) + Send),
) -> Result<CompactReport> {
    let table = curated.def.name;
    let mut delta = curated.load_latest().await?;
    let mut in_landing: BTreeSet<String> = match &delta {
        Some(delta) => absorbed_in_landing(curated, delta)
            .await?
            .into_iter()
            .collect(),
        None => BTreeSet::new(),
    };
    let present = files.list_visible(&curated.landing_dir()).await?;
    let present_keys: HashSet<String> = present
        .iter()
        .map(|m| curated.landing_key(&m.location))
        .collect();
    // Files deleted since: no reader can meet them in landing any more.
    in_landing.retain(|key| present_keys.contains(key));
    let settled = chrono::Utc::now()
        - chrono::Duration::from_std(options.min_age).unwrap_or_else(|_| chrono::Duration::zero());
    let candidates = present
        .into_iter()
        .filter(|m| m.last_modified <= settled)
        .filter(|m| !in_landing.contains(&curated.landing_key(&m.location)))
        .collect();
    let chosen = files.admit_all(candidates).await?;
    let batches = batches_by_bytes(chosen, options.batch_bytes);
    progress(CompactProgress::Planned {
        table,
        files: batches.iter().map(Vec::len).sum(),
        bytes: batches.iter().flatten().map(|m| m.size).sum(),
        commits: batches.len(),
    });
    let mut report = CompactReport::default();
    // The first compaction creates the table even with nothing to absorb, so every table's
    // history starts at the same run and `--as-of` can read all of them.
    let create_empty = delta.is_none() && batches.is_empty();
    for batch in batches
        .iter()
        .map(Vec::as_slice)
        .chain(create_empty.then_some(&[][..]))
    {
        let absorbed: Vec<String> = batch
            .iter()
            .map(|m| curated.landing_key(&m.location))
            .collect();
        in_landing.extend(absorbed.iter().cloned());
        let landing = landing_row_count(ctx, curated, batch).await?;
        let failing = has_failing_rows(files, batch).await;
        let (committed, rows, set_aside) = commit_batch(
            ctx,
            curated,
            delta.take(),
            batch,
            &absorbed,
            &in_landing,
            failing,
            options,
        )
        .await?;
        let version = committed.version().unwrap_or_default();
        faults::point(faults::AFTER_COMMIT);
        let duplicates = landing.saturating_sub(rows + set_aside);
        progress(CompactProgress::Committed {
            table,
            version,
            files: batch.len(),
            rows,
            duplicates,
            set_aside,
        });
        report.files += batch.len();
        report.rows += rows;
        report.duplicates += duplicates;
        report.set_aside += set_aside;
        report.versions.push(version);
        delta = Some(committed);
    }
    if let Some(delta) = &delta {
        report.deleted = delete_absorbed(curated, delta, options.grace).await?;
        if report.deleted > 0 {
            progress(CompactProgress::Cleaned {
                table,
                files: report.deleted,
            });
        }
    }
    Ok(report)
}

/// Rows in the landing files of `batch` (from their footers).
async fn landing_row_count(
    ctx: &SessionContext,
    curated: &Curated,
    batch: &[ObjectMeta],
) -> Result<u64> {
    let landing = LandingFiles::new(curated.def, curated.location.store_url(), batch.to_vec());
    Ok(ctx.read_table(Arc::new(landing))?.count().await? as u64)
}

/// `files` in order, cut into runs of at most `limit` bytes (a larger file is a run of its own).
fn batches_by_bytes(files: Vec<ObjectMeta>, limit: u64) -> Vec<Vec<ObjectMeta>> {
    let mut batches: Vec<Vec<ObjectMeta>> = Vec::new();
    let mut bytes = 0;
    for file in files {
        match batches.last_mut() {
            Some(batch) if bytes + file.size <= limit => {
                bytes += file.size;
                batch.push(file);
            }
            _ => {
                bytes = file.size;
                batches.push(vec![file]);
            }
        }
    }
    batches
}

/// Writes `batch`'s rows and commits them with the landing files they came from, in one
/// commit that fails rather than retries when another writer committed first (it could have
/// absorbed the same files).
#[allow(clippy::too_many_arguments)]
async fn commit_batch(
    ctx: &SessionContext,
    curated: &Curated,
    delta: Option<DeltaTable>,
    batch: &[ObjectMeta],
    absorbed: &[String],
    in_landing: &BTreeSet<String>,
    failing: bool,
    options: &CompactOptions,
) -> Result<(DeltaTable, u64, u64)> {
    let plan = landing_rows(ctx, curated, batch, delta.as_ref(), failing).await?;
    let delta = match delta {
        Some(delta) => delta,
        None => curated.open()?,
    };
    let run = match delta.snapshot() {
        Ok(state) => state
            .transaction_version(delta.log_store().as_ref(), app_id(curated.def.name))
            .await
            .map_err(delta_error)?
            .unwrap_or(0),
        Err(_) => 0,
    };
    // Written before the commit, under the run's number: a compaction that crashes before
    // committing writes the same file again.
    let set_aside = match failing {
        true => set_aside_failing_rows(ctx, curated, batch, run + 1).await?,
        false => 0,
    };
    let commit = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id(curated.def.name), run + 1))
        .with_metadata([
            (ABSORBED.to_string(), serde_json::json!(absorbed)),
            (IN_LANDING.to_string(), serde_json::json!(in_landing)),
        ])
        .with_cleanup_expired_logs(Some(false))
        .with_max_retries(0);
    let written = delta
        .write(Vec::new())
        .with_input_plan(plan)
        .with_session_state(delta_state(ctx))
        .with_target_file_size(NonZeroU64::new(options.target_file_size))
        // tokenledger's Parquet settings (zstd, row groups of 256 Ki rows so scans split a file
        // across cores, page statistics, no dictionaries for random ids), not delta-rs's.
        .with_writer_properties(writer_properties(&curated.def.query_schema(), &[]))
        .with_configuration(table_properties(options.audit_window))
        .with_commit_properties(commit)
        .await
        .map_err(delta_error)?;
    let version = written.version().unwrap_or_default();
    let rows = curated
        .commit_info(version)
        .await?
        .metric(&["num_added_rows"])
        .unwrap_or_default() as u64;
    Ok((written, rows, set_aside))
}

/// Whether any file of `batch` holds rows that break the validation policy (from the checks
/// the file store made when it listed them).
async fn has_failing_rows(files: &TableFileStore, batch: &[ObjectMeta]) -> bool {
    for meta in batch {
        if files
            .value_check(meta)
            .await
            .is_some_and(|check| check.failing_rows > 0)
        {
            return true;
        }
    }
    false
}

/// Writes the rows of `batch` that break the validation policy to
/// `rejected_spans/compaction/<table>-run-<run>.parquet`, each with the rule it broke: the
/// curated table takes only rows that meet it. Returns how many there were.
async fn set_aside_failing_rows(
    ctx: &SessionContext,
    curated: &Curated,
    batch: &[ObjectMeta],
    run: i64,
) -> Result<u64> {
    let policy = Policy::now();
    let landing = LandingFiles::new(curated.def, curated.location.store_url(), batch.to_vec());
    let failing = ctx
        .read_table(Arc::new(landing))?
        .filter(!policy.valid_span_predicate())?
        .collect()
        .await?;
    let mut rejected = Vec::new();
    for batch in failing.iter().filter(|b| b.num_rows() > 0) {
        rejected.push(rejected_rows(
            batch,
            &policy.check_rows(batch)?,
            "compaction",
        )?);
    }
    let rows = rejected.iter().map(|b| b.num_rows() as u64).sum();
    if rows > 0 {
        let name = format!("{}-run-{run}", curated.def.name);
        write_rejected(
            Arc::clone(&curated.store),
            &curated.location,
            &["compaction", &name],
            &rejected,
        )
        .await?;
    }
    Ok(rows)
}

/// The rows of `batch` as the curated table stores them: sorted by tenant, workflow and time;
/// text as Utf8 (Delta has no view types). For `spans`, one row per span identity
/// (`trace_id`, `span_id`), whatever the copies hold: the ledger is append-only, so the first
/// copy delivered is the record — one already curated, else the one in the earliest-delivered
/// landing file (modification time, then path; copies within one file are interchangeable
/// deliveries of the same request). Later copies are dropped, and counted by the caller.
async fn landing_rows(
    ctx: &SessionContext,
    curated: &Curated,
    batch: &[ObjectMeta],
    existing: Option<&DeltaTable>,
    failing: bool,
) -> Result<LogicalPlan> {
    let def = curated.def;
    let schema = def.query_schema();
    let has = |c: &str| schema.index_of(c).is_ok();
    let spans = has("trace_id") && has("span_id");
    let mut landing = LandingFiles::new(def, curated.location.store_url(), batch.to_vec());
    if spans {
        landing = landing.with_delivery_order();
    }
    let mut frame = ctx.read_table(Arc::new(landing))?;
    if failing {
        // Rows that break the validation policy go to `rejected_spans`, not the record.
        frame = frame.filter(Policy::now().valid_span_predicate())?;
    }
    if spans && let Some(existing) = existing {
        frame = without_curated_spans(ctx, frame, existing).await?;
    }
    let order: Vec<_> = ["tenant", "workflow", "start_time", "closed_at"]
        .into_iter()
        .filter(|c| has(c))
        .map(|c| col(c).sort(true, true))
        .collect();
    if spans {
        let copy = row_number()
            .partition_by(vec![col("trace_id"), col("span_id")])
            .order_by(vec![col(DELIVERY_COLUMN).sort(true, true)])
            .build()?
            .alias("_copy");
        frame = frame
            .window(vec![copy])?
            .filter(col("_copy").eq(lit(1u64)))?;
    }
    if !order.is_empty() {
        frame = frame.sort(order)?;
    }
    let columns: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            arrow::datatypes::DataType::Utf8View => {
                cast(col(f.name().as_str()), arrow::datatypes::DataType::Utf8).alias(f.name())
            }
            _ => col(f.name().as_str()),
        })
        .collect();
    Ok(frame.select(columns)?.into_unoptimized_plan())
}

/// `spans` without the spans `existing` already holds. Only curated spans that start within
/// [`COPY_TIME_MARGIN`] of the time range of `spans` are compared, so the curated table's file
/// statistics keep this from reading all of it: a copy that claims a start time further from
/// the curated one's is not recognised (docs/integrity.md).
async fn without_curated_spans(
    ctx: &SessionContext,
    spans: DataFrame,
    existing: &DeltaTable,
) -> Result<DataFrame> {
    let bounds = spans
        .clone()
        .aggregate(
            vec![],
            vec![
                min(col("start_time")).alias("lo"),
                max(col("start_time")).alias("hi"),
            ],
        )?
        .collect()
        .await?;
    let bound = |name: &str| -> Result<Option<datafusion::common::ScalarValue>> {
        let Some(batch) = bounds.first() else {
            return Ok(None);
        };
        let column = batch
            .column_by_name(name)
            .expect("aggregate names its columns");
        let value = datafusion::common::ScalarValue::try_from_array(column, 0)?;
        Ok((!value.is_null()).then_some(value))
    };
    let (Some(lo), Some(hi)) = (bound("lo")?, bound("hi")?) else {
        return Ok(spans);
    };
    let known = ctx
        .read_table(existing.table_provider().await?)?
        .filter(col("start_time").between(
            lit(lo) - lit(COPY_TIME_MARGIN),
            lit(hi) + lit(COPY_TIME_MARGIN),
        ))?
        .select(vec![
            col("trace_id").alias("known_trace_id"),
            col("span_id").alias("known_span_id"),
        ])?;
    Ok(spans.join(
        known,
        JoinType::LeftAnti,
        &["trace_id", "span_id"],
        &["known_trace_id", "known_span_id"],
        None,
    )?)
}

/// Deletes the landing files absorbed at least `grace` ago: those on the list of the newest
/// compaction commit older than that (each list holds every absorbed file still in landing).
async fn delete_absorbed(curated: &Curated, delta: &DeltaTable, grace: Duration) -> Result<usize> {
    let cutoff = chrono::Utc::now().timestamp_millis() - grace.as_millis() as i64;
    let mut deletable = HashSet::new();
    for version in (0..=delta.version().unwrap_or_default()).rev() {
        let commit = curated.commit_info(version).await?;
        if commit.timestamp().is_some_and(|t| t <= cutoff)
            && let Some(list) = commit.in_landing()
        {
            deletable = list;
            break;
        }
    }
    let mut deleted = 0;
    for key in deletable {
        match curated.store.delete(&curated.landing_path(&key)).await {
            Ok(()) => deleted += 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        faults::point(faults::DURING_CLEANUP);
    }
    Ok(deleted)
}

/// What `tokenledger compact --optimize` / `--vacuum` do.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Rewrite small data files into files of `target_file_size` (bin-packing).
    pub optimize: bool,
    /// Delete data files that no version inside the audit window needs.
    pub vacuum: bool,
    /// Size of the files optimize writes.
    pub target_file_size: u64,
    /// The vacuum's retention: history older than this can no longer be read.
    pub audit_window: Duration,
}

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Data files optimize added and removed.
    pub files_added: u64,
    /// Data files optimize removed from the current version.
    pub files_removed: u64,
    /// Data files the vacuum deleted from storage.
    pub files_vacuumed: usize,
    /// The version optimize committed, if it committed.
    pub version: Option<u64>,
}

/// Optimize and/or vacuum one curated table. Neither cleans up the log: time travel keeps
/// working for every version whose files the vacuum kept.
pub(crate) async fn maintain(
    ctx: &SessionContext,
    curated: &Curated,
    options: &MaintainOptions,
) -> Result<Maintenance> {
    let Some(mut delta) = curated.load_latest().await? else {
        return Ok(Maintenance::default());
    };
    let mut done = Maintenance::default();
    if options.optimize {
        let before = delta.version();
        let (optimized, metrics) = delta
            .optimize()
            .with_type(OptimizeType::Compact)
            .with_target_size(NonZeroU64::new(options.target_file_size).unwrap_or(NonZeroU64::MIN))
            .with_writer_properties(writer_properties(&curated.def.query_schema(), &[]))
            .with_session_state(delta_state(ctx))
            .with_commit_properties(
                CommitProperties::default()
                    .with_cleanup_expired_logs(Some(false))
                    .with_max_retries(3),
            )
            .await
            .map_err(delta_error)?;
        done.files_added = metrics.num_files_added;
        done.files_removed = metrics.num_files_removed;
        done.version = optimized.version().filter(|v| Some(*v) != before);
        delta = optimized;
    }
    if options.vacuum {
        let (_, metrics) = delta
            .vacuum()
            .with_retention_period(
                chrono::Duration::from_std(options.audit_window)
                    .map_err(|e| EngineError::Config(format!("audit window: {e}")))?,
            )
            .with_enforce_retention_duration(true)
            .with_commit_properties(
                CommitProperties::default().with_cleanup_expired_logs(Some(false)),
            )
            .await
            .map_err(delta_error)?;
        done.files_vacuumed = metrics.files_deleted.len();
    }
    Ok(done)
}
