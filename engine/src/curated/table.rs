//! How queries read a trace table: its curated snapshot plus the landing files that snapshot has
//! not absorbed, fixed once per query.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use deltalake_core::DeltaTable;
use object_store::ObjectMeta;

use super::{Curated, absorbed_in_landing};
use crate::cluster::ClusterQuery;
use crate::error::EngineError;
use crate::schema::TableDef;
use crate::storage::files::TableFileStore;

/// What one query reads of a table with a curated table: one snapshot and the landing files
/// it had not absorbed.
#[derive(Clone)]
struct Pinned {
    /// The query it belongs to (DataFusion's start time of the query).
    query: Option<chrono::DateTime<chrono::Utc>>,
    delta: DeltaTable,
    landing: Vec<ObjectMeta>,
}

/// A trace table: the files in its landing directory until its first compaction, then the
/// curated Delta snapshot plus the landing files that snapshot has not absorbed. Both are fixed
/// when a query plans its first scan of the table, and every other scan of the same query
/// reads the same ones, so no row is counted twice or missed while a compaction commits or
/// landing files are deleted.
pub struct TraceTable {
    curated: Curated,
    /// The table before its first compaction: the landing directory, listed as usual.
    landing: Arc<ListingTable>,
    files: Arc<TableFileStore>,
    /// Set once the curated table exists (it is never removed).
    has_curated: std::sync::atomic::AtomicBool,
    /// The latest snapshot loaded, updated incrementally, with its absorbed-file list.
    latest: tokio::sync::Mutex<Option<(DeltaTable, Arc<HashSet<String>>)>>,
    /// The last query's choice, reused by that query's other scans.
    pinned: Mutex<Option<Pinned>>,
}

impl std::fmt::Debug for TraceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceTable")
            .field("table", &self.curated.def.name)
            .finish_non_exhaustive()
    }
}

impl TraceTable {
    /// `curated`'s table, reading landing files through `files` (quarantine applies) and,
    /// before the first compaction, through `landing`.
    pub(crate) fn new(
        curated: Curated,
        landing: Arc<ListingTable>,
        files: Arc<TableFileStore>,
    ) -> Self {
        TraceTable {
            curated,
            landing,
            files,
            has_curated: false.into(),
            latest: tokio::sync::Mutex::new(None),
            pinned: Mutex::new(None),
        }
    }

    /// The newest snapshot and its absorbed list, loading only the commits since the last call.
    async fn latest(&self) -> Result<(DeltaTable, Arc<HashSet<String>>), EngineError> {
        let mut latest = self.latest.lock().await;
        let (mut delta, absorbed) = match latest.take() {
            Some(cached) => cached,
            None => (self.curated.open()?, Arc::new(HashSet::new())),
        };
        let before = delta.version();
        delta
            .update_incremental(None)
            .await
            .map_err(super::delta_error)?;
        let absorbed = if delta.version() == before && before.is_some() {
            absorbed
        } else {
            Arc::new(absorbed_in_landing(&self.curated, &delta).await?)
        };
        *latest = Some((delta.clone(), Arc::clone(&absorbed)));
        Ok((delta, absorbed))
    }

    /// The snapshot and landing files `query` reads.
    async fn pin(
        &self,
        query: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Pinned, EngineError> {
        if let Some(pinned) = self.pinned.lock().expect("pin lock").as_ref()
            && query.is_some()
            && pinned.query == query
        {
            return Ok(pinned.clone());
        }
        // The snapshot first: a landing file it absorbed may be deleted (after the grace
        // period) at any time from now on, and is left out below.
        let (delta, absorbed) = self.latest().await?;
        let present = self.files.list_visible(&self.curated.landing_dir()).await?;
        let unabsorbed = present
            .into_iter()
            .filter(|m| !absorbed.contains(&self.curated.landing_key(&m.location)))
            .collect();
        let landing = self.files.admit_all(unabsorbed).await?;
        let pinned = Pinned {
            query,
            delta,
            landing,
        };
        *self.pinned.lock().expect("pin lock") = Some(pinned.clone());
        Ok(pinned)
    }

    async fn curated_exists(&self) -> Result<bool, EngineError> {
        use std::sync::atomic::Ordering;
        if self.has_curated.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let exists = self.curated.exists().await?;
        self.has_curated.store(exists, Ordering::Relaxed);
        Ok(exists)
    }
}

fn external(e: EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl TableProvider for TraceTable {
    fn schema(&self) -> SchemaRef {
        self.curated.def.query_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !self.curated_exists().await.map_err(external)? {
            return self.landing.scan(state, projection, filters, limit).await;
        }
        let query = state.execution_props().query_execution_start_time;
        let pinned = self.pin(query).await.map_err(external)?;
        let mut inputs = Vec::new();
        if !pinned.landing.is_empty() {
            let landing = LandingFiles::new(
                self.curated.def,
                self.curated.location.store_url(),
                pinned.landing,
            );
            inputs.push(landing.scan(state, projection, filters, limit).await?);
        }
        inputs.push(
            scan_delta(
                &pinned.delta,
                &self.curated,
                state,
                projection,
                filters,
                limit,
            )
            .await?,
        );
        if inputs.len() == 1 {
            return Ok(inputs.remove(0));
        }
        UnionExec::try_new(inputs)
    }
}

/// A scan of `delta`, a snapshot of `curated`, with its table's columns and types (the Delta
/// side reads text as Utf8). A coordinator reads the snapshot's data files as plain Parquet
/// instead, which workers can run (see [`crate::cluster`]).
pub(crate) async fn scan_delta(
    delta: &DeltaTable,
    curated: &Curated,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    if ClusterQuery::is_distributed(state) {
        let files = snapshot_files(delta, curated)?;
        let plain = LandingFiles::new(curated.def, curated.location.store_url(), files);
        return plain.scan(state, projection, filters, limit).await;
    }
    let provider = delta.table_provider().await?;
    let plan = provider.scan(state, projection, filters, limit).await?;
    cast_to(plan, &curated.def.query_schema(), projection)
}

/// The data files of `delta`'s snapshot, as objects of the location's store.
fn snapshot_files(delta: &DeltaTable, curated: &Curated) -> DfResult<Vec<ObjectMeta>> {
    let snapshot = delta
        .snapshot()
        .map_err(|e| external(super::delta_error(e)))?;
    let root = curated.table_dir();
    Ok(snapshot
        .log_data()
        .iter()
        .map(|file| ObjectMeta {
            location: file
                .object_store_path()
                .parts()
                .fold(root.clone(), |path, part| path.join(part)),
            last_modified: chrono::DateTime::from_timestamp_millis(file.modification_time())
                .unwrap_or_default(),
            size: file.size().max(0) as u64,
            e_tag: None,
            version: None,
        })
        .collect())
}

/// `plan`'s columns cast to the types of `schema` (projected).
fn cast_to(
    plan: Arc<dyn ExecutionPlan>,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_expr::PhysicalExpr;
    use datafusion::physical_expr::expressions::{CastExpr, Column};
    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let input = plan.schema();
    if wanted
        .iter()
        .enumerate()
        .all(|(at, &index)| input.field(at).data_type() == schema.field(index).data_type())
    {
        return Ok(plan);
    }
    let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = wanted
        .iter()
        .enumerate()
        .map(|(at, &index)| {
            let field = schema.field(index);
            let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(input.field(at).name(), at));
            let expr: Arc<dyn PhysicalExpr> = if input.field(at).data_type() == field.data_type() {
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

/// Exactly these landing files, read as `def` (no listing: the caller listed and checked them).
#[derive(Debug)]
pub(crate) struct LandingFiles {
    def: &'static TableDef,
    store: ObjectStoreUrl,
    files: Vec<ObjectMeta>,
    /// Whether rows carry [`DELIVERY_COLUMN`].
    delivery: bool,
}

/// The column [`LandingFiles::with_delivery_order`] adds: the rank of a row's file in the order
/// files were delivered (modification time, then path), from 0.
pub(crate) const DELIVERY_COLUMN: &str = "_delivery";

impl LandingFiles {
    pub fn new(def: &'static TableDef, store: ObjectStoreUrl, files: Vec<ObjectMeta>) -> Self {
        LandingFiles {
            def,
            store,
            files,
            delivery: false,
        }
    }

    /// Rows with [`DELIVERY_COLUMN`], so copies of one row can be told apart by arrival.
    pub fn with_delivery_order(mut self) -> Self {
        self.files
            .sort_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)));
        self.delivery = true;
        self
    }

    fn delivery_field(&self) -> Option<FieldRef> {
        self.delivery
            .then(|| Arc::new(Field::new(DELIVERY_COLUMN, DataType::Int64, false)))
    }
}

#[async_trait]
impl TableProvider for LandingFiles {
    fn schema(&self) -> SchemaRef {
        let schema = self.def.query_schema();
        match self.delivery_field() {
            None => schema,
            Some(field) => {
                let mut fields = schema.fields().to_vec();
                fields.push(field);
                Arc::new(Schema::new(fields))
            }
        }
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        if self.files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // The session's Parquet settings, as the landing ListingTable has them. Filters reach
        // the Parquet scan through DataFusion's physical filter pushdown.
        let parquet = state.table_options().parquet.clone();
        let format = ParquetFormat::default().with_options(parquet);
        let partitions = state.config_options().execution.target_partitions.max(1);
        let files: Vec<PartitionedFile> = self
            .files
            .iter()
            .enumerate()
            .map(|(rank, meta)| {
                let file = PartitionedFile::from(meta.clone());
                match self.delivery {
                    true => file.with_partition_values(vec![ScalarValue::Int64(Some(rank as i64))]),
                    false => file,
                }
            })
            .collect();
        let groups = FileGroup::new(files).split_files(partitions);
        let table_schema = TableSchema::builder(self.def.query_schema())
            .with_table_partition_cols(self.delivery_field().into_iter().collect::<Vec<_>>())
            .build();
        let config =
            FileScanConfigBuilder::new(self.store.clone(), format.file_source(table_schema))
                .with_file_groups(groups)
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
        format.create_physical_plan(state, config).await
    }
}
