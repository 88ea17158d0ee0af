//! Time travel: `spans_at(version | time)` and the others, `--as-of`, and `tokenledger_history`.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::DeltaTable;

use super::table::scan_delta;
use super::{Curated, delta_error};
use crate::error::{EngineError, Result};
use crate::system::FreshRows;

/// Which state of a curated table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// A version number (0 is the first compaction).
    Version(u64),
    /// The newest version committed at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
}

impl AsOf {
    /// `YYYY-MM-DD` (midnight UTC) or RFC 3339 (`2026-03-01T12:00:00Z`).
    pub fn parse_time(text: &str) -> Option<AsOf> {
        let time = chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok()
            .or_else(|| {
                let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
                Some(day.and_hms_opt(0, 0, 0)?.and_utc())
            })?;
        Some(AsOf::Time(time))
    }
}

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsOf::Version(v) => write!(f, "version {v}"),
            AsOf::Time(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

/// The curated table as of `as_of`: an error for a version not written yet or a time before
/// the first commit (delta-rs would answer the oldest version; an audit must not get it).
async fn load_as_of(curated: &Curated, as_of: AsOf) -> Result<DeltaTable> {
    let name = curated.def.name;
    if !curated.exists().await? {
        return Err(EngineError::History(format!(
            "{name} has no history yet: its first `tokenledger compact` starts it"
        )));
    }
    let mut delta = curated.open()?;
    match as_of {
        AsOf::Version(v) => delta.load_version(v).await.map_err(|e| {
            EngineError::History(format!("{name} has no version {v}: {}", delta_error(e)))
        })?,
        AsOf::Time(t) => {
            let version = version_at(curated, &delta, t).await?;
            delta.load_version(version).await.map_err(delta_error)?;
        }
    }
    Ok(delta)
}

/// The newest version committed at or before `t`, by the commit times `tokenledger_history`
/// shows (delta-rs's `load_with_datetime` goes by the log files' modification times, a little
/// later, and answers a time before the first commit with the oldest version). Commit times
/// grow with versions (one compactor commits at a time), so a binary search finds it.
async fn version_at(
    curated: &Curated,
    delta: &DeltaTable,
    t: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    let name = curated.def.name;
    let wanted = t.timestamp_millis();
    let committed = |version| async move {
        Ok::<_, EngineError>(
            curated
                .commit_info(version)
                .await?
                .timestamp()
                .unwrap_or(i64::MAX),
        )
    };
    let first = committed(0).await?;
    if first > wanted {
        let first = chrono::DateTime::from_timestamp_millis(first)
            .map_or_else(String::new, |c| c.to_rfc3339());
        return Err(EngineError::History(format!(
            "{name} as of {}: that is before its history begins ({first}, its first compaction)",
            t.to_rfc3339()
        )));
    }
    let latest = delta.get_latest_version().await.map_err(delta_error)?;
    // Invariant: version `low` was committed by `t`; versions above `high` were not.
    let (mut low, mut high) = (0, latest);
    while low < high {
        let middle = low + (high - low).div_ceil(2);
        if committed(middle).await? <= wanted {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    Ok(low)
}

/// A trace table as its curated table was at one point: what had been compacted by then
/// (landing files are not part of it).
#[derive(Debug)]
pub struct AsOfTable {
    curated: Curated,
    as_of: AsOf,
}

impl AsOfTable {
    pub(crate) fn new(curated: Curated, as_of: AsOf) -> Self {
        AsOfTable { curated, as_of }
    }
}

#[async_trait]
impl TableProvider for AsOfTable {
    fn schema(&self) -> SchemaRef {
        self.curated.def.query_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let delta = load_as_of(&self.curated, self.as_of)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        scan_delta(&delta, &self.curated, state, projection, filters, limit).await
    }
}

/// What a session puts around each table it serves (a tenant filter, or nothing).
type WrapTable = dyn Fn(Arc<dyn TableProvider>) -> DfResult<Arc<dyn TableProvider>> + Send + Sync;

/// `spans_at(version | 'time')`, one per table: [`AsOfTable`] as a table function.
pub struct AsOfFunction {
    curated: Curated,
    /// What to put around the table: tenant-scoped sessions filter it as they filter the table.
    wrap: Box<WrapTable>,
}

impl std::fmt::Debug for AsOfFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsOfFunction")
            .field("table", &self.curated.def.name)
            .finish_non_exhaustive()
    }
}

impl AsOfFunction {
    /// The time-travel function of `curated`'s table, each result passed through `wrap`.
    pub(crate) fn new(
        curated: Curated,
        wrap: impl Fn(Arc<dyn TableProvider>) -> DfResult<Arc<dyn TableProvider>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        AsOfFunction {
            curated,
            wrap: Box::new(wrap),
        }
    }
}

impl TableFunctionImpl for AsOfFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let usage = || {
            DataFusionError::Plan(format!(
                "{}_at takes one argument: a version number (0, 1, …) or a time ('2026-03-01', \
                 '2026-03-01T12:00:00Z')",
                self.curated.def.name
            ))
        };
        let as_of = match args.exprs() {
            [Expr::Literal(ScalarValue::Int64(Some(v)), _)] if *v >= 0 => AsOf::Version(*v as u64),
            [Expr::Literal(ScalarValue::Utf8(Some(text)), _)] => {
                AsOf::parse_time(text).ok_or_else(usage)?
            }
            _ => return Err(usage()),
        };
        (self.wrap)(Arc::new(AsOfTable::new(self.curated.clone(), as_of)))
    }
}

/// The table that lists every commit of every curated table.
pub const HISTORY_TABLE: &str = "tokenledger_history";

/// `tokenledger_history`: one row per commit of each curated table, newest first, read afresh
/// by each query.
#[derive(Debug)]
pub struct HistoryTable {
    tables: Vec<Curated>,
}

impl HistoryTable {
    /// The history of these curated tables.
    pub(crate) fn new(tables: Vec<Curated>) -> Self {
        HistoryTable { tables }
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("committed_at", crate::schema::timestamp_type(), true),
            Field::new("operation", DataType::Utf8, true),
            Field::new("files_added", DataType::Int64, true),
            Field::new("files_removed", DataType::Int64, true),
            Field::new("rows_added", DataType::Int64, true),
            Field::new("landing_files_absorbed", DataType::Int64, true),
        ]))
    }

    async fn batch(&self) -> Result<RecordBatch> {
        use arrow::array::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
        let mut table_name = StringBuilder::new();
        let mut version = Int64Builder::new();
        let mut committed = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut operation = StringBuilder::new();
        let mut files_added = Int64Builder::new();
        let mut files_removed = Int64Builder::new();
        let mut rows_added = Int64Builder::new();
        let mut absorbed = Int64Builder::new();
        for curated in &self.tables {
            let Some(delta) = curated.load_latest().await? else {
                continue;
            };
            for at in (0..=delta.version().unwrap_or_default()).rev() {
                let commit = curated.commit_info(at).await?;
                table_name.append_value(curated.def.name);
                version.append_value(at as i64);
                committed.append_option(commit.timestamp().map(|ms| ms * 1000));
                operation.append_option(commit.operation());
                files_added.append_option(commit.metric(&["num_added_files", "numFilesAdded"]));
                files_removed
                    .append_option(commit.metric(&["num_removed_files", "numFilesRemoved"]));
                rows_added.append_option(commit.metric(&["num_added_rows"]));
                absorbed.append_option(commit.absorbed().map(|n| n as i64));
            }
        }
        Ok(RecordBatch::try_new(
            Self::schema(),
            vec![
                Arc::new(table_name.finish()),
                Arc::new(version.finish()),
                Arc::new(committed.finish()),
                Arc::new(operation.finish()),
                Arc::new(files_added.finish()),
                Arc::new(files_removed.finish()),
                Arc::new(rows_added.finish()),
                Arc::new(absorbed.finish()),
            ],
        )?)
    }
}

#[async_trait]
impl FreshRows for HistoryTable {
    fn schema(&self) -> SchemaRef {
        Self::schema()
    }

    async fn rows(&self) -> Result<RecordBatch> {
        self.batch().await
    }
}
