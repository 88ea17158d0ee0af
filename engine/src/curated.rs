//! Curated tables (spike for #16, not wired into queries yet): settled landing files moved into
//! a Delta Lake table per trace table, `<location>/_curated/<table>`, in one commit per run that
//! records which landing files it absorbed. See docs/compaction-spike.md.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionContext, col};
use deltalake_core::kernel::Transaction;
use deltalake_core::kernel::transaction::{CommitProperties, TransactionError};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::error::{EngineError, Result};
use crate::files::{FileCheck, TableFileStore};
use crate::location::DataLocation;
use crate::schema::TableDef;

/// Where the curated tables live, under the data location.
pub const CURATED_DIR: &str = "_curated";
/// Commit metadata key: the landing files a commit absorbed, as `tokenledger_files` names them.
const ABSORBED: &str = "tokenledger.absorbed";

/// What one compaction of one table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// The table.
    pub table: &'static str,
    /// Landing files absorbed.
    pub files: usize,
    /// Rows written to the curated table (after duplicates were removed).
    pub rows: u64,
    /// The Delta version committed; `None` when there was nothing to do.
    pub version: Option<u64>,
}

/// The application id under which compactions of `table` commit their run numbers.
fn app_id(table: &str) -> String {
    format!("tokenledger-compact/{table}")
}

/// Delta's log store for `s3://` tables over the store tokenledger already configured: commits
/// are conditional puts (`If-None-Match`), which S3 and SeaweedFS honour, so no locking
/// service (deltalake-aws's DynamoDB) is needed.
struct S3LogStoreFactory;

impl deltalake_core::logstore::LogStoreFactory for S3LogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &url::Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn deltalake_core::logstore::LogStore>> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers [`S3LogStoreFactory`] once per process (Delta's registry is global).
fn register_s3_log_store() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let s3 = url::Url::parse("s3://").expect("static URL");
        deltalake_core::logstore::logstore_factories()
            .entry(s3)
            .or_insert_with(|| Arc::new(S3LogStoreFactory));
    });
}

/// Opens (without loading) the curated Delta table of `table`.
fn delta_table(
    location: &DataLocation,
    store: Arc<dyn ObjectStore>,
    table: &str,
) -> Result<DeltaTable> {
    let listing = location.table_url(&format!("{CURATED_DIR}/{table}"))?;
    let url = url::Url::parse(listing.as_str())
        .map_err(|e| EngineError::Config(format!("curated table URL: {e}")))?;
    register_s3_log_store();
    DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.with_storage_backend(store, url).build())
        .map_err(delta_error)
}

fn delta_error(e: DeltaTableError) -> EngineError {
    EngineError::Input(format!("curated table: {e}"))
}

/// The landing files every commit of `table` absorbed.
async fn absorbed(table: &DeltaTable) -> Result<BTreeSet<String>> {
    if table.version().is_none() {
        return Ok(BTreeSet::new());
    }
    let commits: Vec<_> = table
        .history(None)
        .try_collect()
        .await
        .map_err(delta_error)?;
    Ok(commits
        .iter()
        .filter_map(|commit| commit.info.get(ABSORBED)?.as_array().cloned())
        .flatten()
        .filter_map(|path| path.as_str().map(str::to_string))
        .collect())
}

/// Moves `table`'s settled landing files (older than `min_age`, not quarantined, not absorbed
/// before) into its curated table in one commit. Spans are deduplicated on `(trace_id,
/// span_id)` within the run and written sorted by tenant, workflow and time.
pub(crate) async fn compact(
    ctx: &SessionContext,
    files: &TableFileStore,
    location: &DataLocation,
    store: Arc<dyn ObjectStore>,
    table: &'static TableDef,
    min_age: Duration,
) -> Result<CompactReport> {
    let log = location
        .root()
        .join(CURATED_DIR)
        .join(table.name)
        .join("_delta_log");
    let exists = store.list(Some(&log)).try_next().await?.is_some();
    let mut delta = delta_table(location, store, table.name)?;
    if exists {
        delta.load().await.map_err(delta_error)?;
    }
    let done = absorbed(&delta).await?;
    let settled = chrono::Utc::now()
        - chrono::Duration::from_std(min_age).unwrap_or_else(|_| chrono::Duration::zero());
    let chosen: Vec<String> = files
        .file_report()
        .await?
        .into_iter()
        .filter(|f| f.table == table.name && matches!(f.check, FileCheck::Ok { .. }))
        .filter(|f| f.modified <= settled && !done.contains(&f.path))
        .map(|f| f.path)
        .collect();
    let mut report = CompactReport {
        table: table.name,
        files: chosen.len(),
        rows: 0,
        version: None,
    };
    if chosen.is_empty() {
        return Ok(report);
    }
    let curated = delta.version().is_some().then_some(&delta);
    let batches = read_landing(ctx, location, table, &chosen, curated).await?;
    report.rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let run = match delta.snapshot() {
        Ok(state) => state
            .transaction_version(delta.log_store().as_ref(), app_id(table.name))
            .await
            .map_err(delta_error)?
            .unwrap_or(0),
        Err(_) => 0,
    };
    let commit = CommitProperties::default()
        .with_application_transaction(Transaction::new(app_id(table.name), run + 1))
        .with_metadata([(ABSORBED.to_string(), serde_json::json!(chosen))])
        .with_cleanup_expired_logs(Some(false))
        // A concurrent compaction absorbed the same files: fail rather than commit them twice.
        .with_max_retries(0);
    let written = delta
        .write(batches)
        .with_commit_properties(commit)
        .await
        .map_err(|e| match e {
            DeltaTableError::Transaction {
                source:
                    TransactionError::MaxCommitAttempts(_) | TransactionError::CommitConflict(_),
            } => EngineError::Input(format!(
                "{}: another compaction committed first; nothing was written by this one \
                 (run it again to compact what is left)",
                table.name
            )),
            other => delta_error(other),
        })?;
    report.version = written.version();
    Ok(report)
}

/// The rows of `paths` as `table`'s columns, sorted, with text as Utf8 (Delta has no view
/// types). Spans are deduplicated on `(trace_id, span_id)`, among themselves and against the
/// rows `curated` already holds (at-least-once delivery sends some twice).
async fn read_landing(
    ctx: &SessionContext,
    location: &DataLocation,
    table: &'static TableDef,
    paths: &[String],
    curated: Option<&DeltaTable>,
) -> Result<Vec<RecordBatch>> {
    let state = ctx.state();
    let landing = landing_table(location, table, paths, &state)?;
    let mut frame = ctx.read_table(Arc::new(landing))?;
    let has = |c: &str| table.query_schema().index_of(c).is_ok();
    if has("span_id") && has("trace_id") {
        let all = table
            .query_schema()
            .fields()
            .iter()
            .map(|f| col(f.name().as_str()))
            .collect();
        frame = frame.distinct_on(vec![col("trace_id"), col("span_id")], all, None)?;
        if let Some(curated) = curated {
            let known = ctx
                .read_table(curated.table_provider().await?)?
                .select(vec![
                    col("trace_id").alias("known_trace_id"),
                    col("span_id").alias("known_span_id"),
                ])?;
            frame = frame.join(
                known,
                datafusion::logical_expr::JoinType::LeftAnti,
                &["trace_id", "span_id"],
                &["known_trace_id", "known_span_id"],
                None,
            )?;
        }
    }
    let order: Vec<_> = ["tenant", "workflow", "start_time", "closed_at"]
        .into_iter()
        .filter(|c| has(c))
        .map(|c| col(c).sort(true, true))
        .collect();
    if !order.is_empty() {
        frame = frame.sort(order)?;
    }
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let mut batches = frame.collect().await?;
    if batches.is_empty() {
        // Everything was a duplicate: the commit still records the files as absorbed.
        batches.push(RecordBatch::new_empty(schema));
    }
    batches.iter().map(without_views).collect()
}

/// `batch` with Utf8View columns as Utf8.
fn without_views(batch: &RecordBatch) -> Result<RecordBatch> {
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
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// A trace table read as its curated Delta snapshot plus the landing files that snapshot has not
/// absorbed, both fixed when a query is planned, so no row is counted twice or missed while a
/// compaction commits (spike for #16).
#[derive(Debug)]
pub struct CuratedTraceTable {
    def: &'static TableDef,
    location: DataLocation,
    store: Arc<dyn ObjectStore>,
    files: Arc<TableFileStore>,
}

impl CuratedTraceTable {
    /// `def` over `location`, reading landing files through `files` (quarantine applies).
    pub fn new(
        def: &'static TableDef,
        location: DataLocation,
        store: Arc<dyn ObjectStore>,
        files: Arc<TableFileStore>,
    ) -> Self {
        CuratedTraceTable {
            def,
            location,
            store,
            files,
        }
    }

    /// Whether `table` has a curated table at `location`.
    pub async fn exists(location: &DataLocation, store: &dyn ObjectStore, table: &str) -> bool {
        let log = location
            .root()
            .join(CURATED_DIR)
            .join(table)
            .join("_delta_log");
        matches!(store.list(Some(&log)).try_next().await, Ok(Some(_)))
    }
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for CuratedTraceTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.def.query_schema()
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::logical_expr::Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        Ok(vec![
            datafusion::logical_expr::TableProviderFilterPushDown::Inexact;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let external = |e: EngineError| datafusion::error::DataFusionError::External(Box::new(e));
        // The snapshot first: landing files it absorbed are left out below.
        let mut delta = delta_table(&self.location, Arc::clone(&self.store), self.def.name)
            .map_err(external)?;
        delta.load().await.map_err(|e| external(delta_error(e)))?;
        let done = absorbed(&delta).await.map_err(external)?;
        let landing: Vec<String> = self
            .files
            .file_report()
            .await
            .map_err(external)?
            .into_iter()
            .filter(|f| f.table == self.def.name && matches!(f.check, FileCheck::Ok { .. }))
            .filter(|f| !done.contains(&f.path))
            .map(|f| f.path)
            .collect();
        let mut inputs = Vec::new();
        if !landing.is_empty() {
            let table = landing_table(&self.location, self.def, &landing, state)?;
            inputs.push(table.scan(state, projection, filters, limit).await?);
        }
        let curated = delta.table_provider().await?;
        let plan = curated.scan(state, projection, filters, limit).await?;
        inputs.push(cast_to(plan, &self.def.query_schema(), projection)?);
        datafusion::physical_plan::union::UnionExec::try_new(inputs)
    }
}

/// A ListingTable over exactly `paths` (as `tokenledger_files` names them) with `def`'s columns.
fn landing_table(
    location: &DataLocation,
    def: &'static TableDef,
    paths: &[String],
    state: &dyn datafusion::catalog::Session,
) -> datafusion::error::Result<ListingTable> {
    let prefix = location.display_prefix();
    let urls = paths
        .iter()
        .map(|p| {
            let key = p.strip_prefix(&prefix).unwrap_or(p);
            ListingTableUrl::parse(format!("{}{key}", location.store_url().as_str()))
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let parquet = state.table_options().parquet.clone();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_options(parquet)))
        .with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(def.query_schema());
    ListingTable::try_new(config)
}

/// `plan`'s columns cast to the types of `schema` (projected): the curated side reads text as
/// Utf8, the tables show Utf8View.
fn cast_to(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    schema: &arrow::datatypes::SchemaRef,
    projection: Option<&Vec<usize>>,
) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    use datafusion::physical_expr::expressions::{CastExpr, Column};
    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let input = plan.schema();
    let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = wanted
        .iter()
        .enumerate()
        .map(|(position, &index)| {
            let field = schema.field(index);
            let column: Arc<dyn datafusion::physical_expr::PhysicalExpr> =
                Arc::new(Column::new(input.field(position).name(), position));
            let expr: Arc<dyn datafusion::physical_expr::PhysicalExpr> =
                if input.field(position).data_type() == field.data_type() {
                    column
                } else {
                    Arc::new(CastExpr::new(column, field.data_type().clone(), None))
                };
            (expr, field.name().clone())
        })
        .collect();
    Ok(Arc::new(
        datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, plan)?,
    ))
}

/// Which state of a curated table a query reads.
#[derive(Debug, Clone, Copy)]
enum AsOf {
    Version(u64),
    Time(chrono::DateTime<chrono::Utc>),
}

/// `spans_at(version | 'timestamp')` and the same for each table: the curated table as it was.
/// "As of T" is what had been compacted by T; landing files are not part of it.
#[derive(Debug)]
pub struct AsOfFunction {
    def: &'static TableDef,
    location: DataLocation,
    store: Arc<dyn ObjectStore>,
}

impl AsOfFunction {
    /// The time-travel function of `def`.
    pub fn new(
        def: &'static TableDef,
        location: DataLocation,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        AsOfFunction {
            def,
            location,
            store,
        }
    }
}

impl datafusion::catalog::TableFunctionImpl for AsOfFunction {
    fn call_with_args(
        &self,
        args: datafusion::catalog::TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn datafusion::catalog::TableProvider>> {
        use datafusion::common::ScalarValue;
        use datafusion::logical_expr::Expr;
        let usage = || {
            datafusion::error::DataFusionError::Plan(format!(
                "{}_at takes one argument: a version number (0, 1, …) or a time ('2026-03-01', \
                 '2026-03-01T12:00:00Z')",
                self.def.name
            ))
        };
        let as_of = match args.exprs() {
            [Expr::Literal(ScalarValue::Int64(Some(v)), _)] if *v >= 0 => AsOf::Version(*v as u64),
            [Expr::Literal(ScalarValue::Utf8(Some(text)), _)] => {
                AsOf::Time(parse_time(text).ok_or_else(usage)?)
            }
            _ => return Err(usage()),
        };
        Ok(Arc::new(AsOfTable {
            def: self.def,
            location: self.location.clone(),
            store: Arc::clone(&self.store),
            as_of,
        }))
    }
}

/// `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_time(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| {
            let day = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            Some(day.and_hms_opt(0, 0, 0)?.and_utc())
        })
}

#[derive(Debug)]
struct AsOfTable {
    def: &'static TableDef,
    location: DataLocation,
    store: Arc<dyn ObjectStore>,
    as_of: AsOf,
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for AsOfTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.def.query_schema()
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let name = self.def.name;
        let plan_error = |why: String| datafusion::error::DataFusionError::Plan(why);
        if !CuratedTraceTable::exists(&self.location, self.store.as_ref(), name).await {
            return Err(plan_error(format!(
                "{name} has no curated history yet: run `tokenledger compact` first"
            )));
        }
        let mut delta = delta_table(&self.location, Arc::clone(&self.store), name)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        match self.as_of {
            AsOf::Version(v) => delta
                .load_version(v)
                .await
                .map_err(|e| plan_error(format!("{name} has no version {v}: {e}")))?,
            AsOf::Time(t) => {
                delta
                    .load_with_datetime(t)
                    .await
                    .map_err(|e| plan_error(format!("{name} as of {t}: {e}")))?;
                // delta-rs answers a time before the first commit with the oldest version; an
                // audit must get an error instead.
                let loaded: Vec<_> = delta.history(Some(1)).try_collect().await?;
                let committed = loaded.first().and_then(|c| c.timestamp);
                if committed.is_some_and(|ms| ms > t.timestamp_millis()) {
                    return Err(plan_error(format!(
                        "{t} is before the curated {name} table's history begins ({})",
                        chrono::DateTime::from_timestamp_millis(committed.unwrap_or_default())
                            .map_or_else(String::new, |c| c.to_rfc3339())
                    )));
                }
            }
        }
        let plan = delta
            .table_provider()
            .await?
            .scan(state, projection, filters, limit)
            .await?;
        cast_to(plan, &self.def.query_schema(), projection)
    }
}

/// The table that lists every commit of every curated table.
pub const HISTORY_TABLE: &str = "tokenledger_history";

/// `tokenledger_history`: one row per commit of each curated table, newest first, read afresh by
/// each query.
#[derive(Debug)]
pub struct HistoryTable {
    location: DataLocation,
    store: Arc<dyn ObjectStore>,
}

impl HistoryTable {
    /// The history of `location`'s curated tables.
    pub fn new(location: DataLocation, store: Arc<dyn ObjectStore>) -> Self {
        HistoryTable { location, store }
    }

    fn schema() -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("table_name", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("committed_at", crate::schema::timestamp_type(), true),
            Field::new("operation", DataType::Utf8, true),
            Field::new("rows_added", DataType::Int64, true),
            Field::new("files_absorbed", DataType::Int64, true),
        ]))
    }

    async fn batch(&self) -> Result<RecordBatch> {
        use arrow::array::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
        let mut table_name = StringBuilder::new();
        let mut version = Int64Builder::new();
        let mut committed = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let mut operation = StringBuilder::new();
        let mut rows_added = Int64Builder::new();
        let mut absorbed = Int64Builder::new();
        for def in crate::schema::TABLES {
            if !CuratedTraceTable::exists(&self.location, self.store.as_ref(), def.name).await {
                continue;
            }
            let mut delta = delta_table(&self.location, Arc::clone(&self.store), def.name)?;
            delta.load().await.map_err(delta_error)?;
            let latest = delta.version().unwrap_or_default() as i64;
            let commits: Vec<_> = delta
                .history(None)
                .try_collect()
                .await
                .map_err(delta_error)?;
            // Newest first, one per version.
            for (age, commit) in commits.iter().enumerate() {
                table_name.append_value(def.name);
                version.append_value(latest - age as i64);
                committed.append_option(commit.timestamp.map(|ms| ms * 1000));
                operation.append_option(commit.operation.as_deref());
                let metrics = commit.info.get("operationMetrics");
                rows_added.append_option(
                    metrics
                        .and_then(|m| m.get("num_added_rows"))
                        .and_then(serde_json::Value::as_i64),
                );
                absorbed.append_option(
                    commit
                        .info
                        .get(ABSORBED)
                        .and_then(|files| files.as_array())
                        .map(|files| files.len() as i64),
                );
            }
        }
        Ok(RecordBatch::try_new(
            Self::schema(),
            vec![
                Arc::new(table_name.finish()),
                Arc::new(version.finish()),
                Arc::new(committed.finish()),
                Arc::new(operation.finish()),
                Arc::new(rows_added.finish()),
                Arc::new(absorbed.finish()),
            ],
        )?)
    }
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for HistoryTable {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        Self::schema()
    }

    fn table_type(&self) -> datafusion::logical_expr::TableType {
        datafusion::logical_expr::TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        _filters: &[datafusion::logical_expr::Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let batch = self
            .batch()
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Self::schema(),
            projection.cloned(),
        )
        .map(|exec| exec as _)
    }
}
