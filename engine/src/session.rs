//! Sessions: a DataFusion `SessionContext` with the trace tables of one data location registered,
//! and tokenledger's functions. Every front end (CLI, Flight) gets its session from here.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::config::{ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement;
use object_store::ObjectStore;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use tokenledger_udfs::{CheckedSum, PriceBook, SharedPrices, UtcDateTrunc};

use crate::access::limits::MemoryLimits;
use crate::access::tenancy::{TENANT_COLUMN, TenantScope, TenantTable, untenanted_rows_of};
use crate::cluster::{ClusterQuery, Distribution};
use crate::curated::{
    AsOf, AsOfFunction, AsOfTable, CompactOptions, CompactProgress, CompactReport, Curated,
    HISTORY_TABLE, HistoryTable, MaintainOptions, Maintenance, TraceTable,
};
use crate::error::{EngineError, Result};
use crate::integrity::ValidRows;
use crate::optimizer::{self, OptimizerOptions};
use crate::schema::{MODEL_PRICES, REJECTED_SPANS, SPANS, TABLES, TableDef};
use crate::storage::files::{FileCheck, TableFileStore};
use crate::storage::location::{DataLocation, S3Overrides};
use crate::system::FreshTable;
use crate::system::files::{FILES_TABLE, FilesTable};
use crate::system::settings::{SETTINGS_FILE, SETTINGS_TABLE, SettingsTable};

/// The catalog and schema that hold the trace tables (what BI tools show).
pub const CATALOG: &str = "tokenledger";
/// See [`CATALOG`].
pub const SCHEMA: &str = "public";

/// How to open a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Settings applied over the `AWS_*` environment for S3 locations.
    pub s3: S3Overrides,
    /// Query parallelism; `None` = number of cores.
    pub target_partitions: Option<usize>,
    /// How long a table's file listing may be reused before the store is listed again.
    /// `None` keeps it for the life of the session (fine for one-shot CLI queries).
    pub listing_ttl: Option<Duration>,
    /// Fail queries on a table file that cannot be read as its table, instead of leaving the
    /// file out (quarantine) and answering from the others.
    pub strict: bool,
    /// DataFusion settings (`datafusion.execution.parquet.pruning` = `false`, …) applied over
    /// tokenledger's defaults, after the `DATAFUSION_*` variables. They reach the tables too.
    pub settings: Vec<(String, String)>,
    /// The server's memory pool, each query's cap and the spill directory; `None` = no limit
    /// (one-shot CLI commands).
    pub memory: Option<MemoryLimits>,
    /// Read every trace table as its curated table was at this point (`--as-of`): what had
    /// been compacted by then. `None` reads the latest curated snapshot plus landing.
    pub as_of: Option<AsOf>,
    /// Run queries across a cluster: every context becomes a coordinator (see
    /// [`crate::cluster`]). `None` runs them on this node.
    pub distribution: Option<Arc<dyn Distribution>>,
}

/// A session over one data location, showing every tenant's rows or, from
/// [`TraceSession::for_scope`], only some tenants' (see [`crate::access::tenancy`]).
pub struct TraceSession {
    /// The DataFusion context with tables and functions registered. Private: front ends plan
    /// through [`TraceSession::plan`], which refreshes what must be fresh first.
    ctx: SessionContext,
    /// Whose rows this session shows.
    scope: TenantScope,
    /// Where the data lives.
    pub location: DataLocation,
    shared: Arc<Shared>,
}

/// What every scope of a session shares: files, prices, memory, and the scoped contexts made
/// so far.
struct Shared {
    /// The unrestricted context: prices are read and scoped contexts are built from it.
    admin: SessionContext,
    options: SessionOptions,
    runtime: Arc<RuntimeEnv>,
    store: Arc<TableFileStore>,
    /// `token_cost`'s prices, reloaded by [`TraceSession::refresh_prices`].
    prices: Arc<SharedPrices>,
    /// When the prices were last loaded, and how long they may be reused (the listing lifetime).
    prices_loaded: Mutex<Instant>,
    /// One context per set of tenants, built on first use.
    scoped: Mutex<HashMap<BTreeSet<String>, SessionContext>>,
}

impl TraceSession {
    /// Opens `location` for reading: checks it exists, connects the object store and registers
    /// the four trace tables (an absent table directory reads as an empty table).
    pub async fn open(location: DataLocation, options: &SessionOptions) -> Result<Self> {
        location.require_exists()?;
        let raw_store = location.open_store(&options.s3)?;
        let table_dirs = TABLES
            .iter()
            .copied()
            .chain(std::iter::once(&REJECTED_SPANS))
            .map(|t| (location.table_dir(t.name), t))
            .collect();
        let runtime = new_runtime(options)?;
        let ctx = context_with_runtime(options, Arc::clone(&runtime))?;
        let footer_cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
        let settings = SettingsTable::new(
            Arc::clone(&raw_store),
            location.root().join(SETTINGS_FILE),
            format!(
                "{}{}",
                location.display_prefix(),
                location.root().join(SETTINGS_FILE)
            ),
        );
        let curated_store = Arc::clone(&raw_store);
        let store = Arc::new(TableFileStore::new(
            raw_store,
            table_dirs,
            Some(footer_cache),
            &location.display_prefix(),
            options.strict,
        ));
        ctx.register_object_store(
            location.store_url().as_ref(),
            Arc::clone(&store) as Arc<dyn ObjectStore>,
        );
        let mut curated_tables = Vec::new();
        for table in TABLES {
            let curated = Curated::new(table, location.clone(), Arc::clone(&curated_store));
            let provider: Arc<dyn TableProvider> = match options.as_of {
                Some(as_of) => Arc::new(AsOfTable::new(curated.clone(), as_of)),
                None => Arc::new(TraceTable::new(
                    curated.clone(),
                    Arc::new(landing_table(&ctx, &location, table)?),
                    Arc::clone(&store),
                )),
            };
            // Rows of dropped files that break the validation policy are left out of `spans`.
            let provider: Arc<dyn TableProvider> = match table.name == SPANS.name {
                true => Arc::new(ValidRows::new(provider, Arc::clone(&store))),
                false => provider,
            };
            ctx.register_table(table.name, provider)?;
            ctx.register_udtf(
                &format!("{}_at", table.name),
                Arc::new(AsOfFunction::new(curated.clone(), Ok)),
            );
            curated_tables.push(curated);
        }
        // Refused spans: administrators only (scoped sessions never register it), read as
        // landed, never compacted.
        ctx.register_table(
            REJECTED_SPANS.name,
            Arc::new(landing_table(&ctx, &location, &REJECTED_SPANS)?),
        )?;
        ctx.register_table(
            FILES_TABLE,
            Arc::new(FreshTable(FilesTable::new(Arc::clone(&store)))),
        )?;
        ctx.register_table(
            HISTORY_TABLE,
            Arc::new(FreshTable(HistoryTable::new(curated_tables))),
        )?;
        ctx.register_table(SETTINGS_TABLE, Arc::new(FreshTable(settings)))?;
        let prices = SharedPrices::new(load_prices(&ctx, &store).await);
        tokenledger_udfs::register_all(&ctx, Arc::clone(&prices));
        // A session decision, not a function of ours: `date_trunc` is replaced by one that gives
        // the built-in's answers without its per-value time-zone arithmetic on UTC columns.
        ctx.register_udf(ScalarUDF::from(UtcDateTrunc::default()));
        // Likewise `sum`: the same answers, but a sum of 64-bit integers that leaves their range
        // is an error, never a wrapped (negative) total.
        ctx.register_udaf(AggregateUDF::from(CheckedSum::default()));
        crate::reports::register_views(&ctx).await?;
        Ok(TraceSession {
            ctx: ctx.clone(),
            scope: TenantScope::All,
            location,
            shared: Arc::new(Shared {
                admin: ctx,
                options: options.clone(),
                runtime,
                store,
                prices,
                prices_loaded: Mutex::new(Instant::now()),
                scoped: Mutex::default(),
            }),
        })
    }

    /// This session seen by `scope`: the same files, prices and memory pool, with the trace
    /// tables and report views showing only `scope`'s rows. Contexts are built once per set of
    /// tenants and shared by every user with that set.
    pub async fn for_scope(&self, scope: &TenantScope) -> Result<TraceSession> {
        let ctx = match scope {
            TenantScope::All => self.shared.admin.clone(),
            TenantScope::Only(tenants) => self.scoped_context(tenants).await?,
        };
        Ok(TraceSession {
            ctx,
            scope: scope.clone(),
            location: self.location.clone(),
            shared: Arc::clone(&self.shared),
        })
    }

    /// Whose rows this session shows.
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    async fn scoped_context(&self, tenants: &BTreeSet<String>) -> Result<SessionContext> {
        if let Some(ctx) = self.shared.scoped.lock().expect("scoped lock").get(tenants) {
            return Ok(ctx.clone());
        }
        let shared = &self.shared;
        let ctx = context_with_runtime(&shared.options, Arc::clone(&shared.runtime))?;
        // Functions as the unrestricted session has them (tokenledger's share their prices).
        self.functions().register(&mut ctx.state_ref().write())?;
        for table in TABLES {
            let provider = shared
                .admin
                .table_provider(table.name)
                .await
                .map_err(EngineError::from)?;
            let scoped: Arc<dyn TableProvider> =
                if provider.schema().index_of(TENANT_COLUMN).is_ok() {
                    Arc::new(TenantTable::new(
                        provider,
                        tenants.clone(),
                        untenanted_rows_of(table.name),
                    )?)
                } else {
                    provider
                };
            ctx.register_table(table.name, scoped)?;
        }
        // Time travel, filtered as the tables are. `tokenledger_history` counts every tenant's
        // rows: administrators only, like `tokenledger_files`.
        for table in TABLES {
            let curated = Curated::new(
                table,
                self.location.clone(),
                Arc::clone(shared.store.inner()),
            );
            let tenants = tenants.clone();
            let untenanted = untenanted_rows_of(table.name);
            let scope = move |table: Arc<dyn TableProvider>| -> datafusion::error::Result<Arc<dyn TableProvider>> {
                if table.schema().index_of(TENANT_COLUMN).is_err() {
                    return Ok(table);
                }
                let scoped = TenantTable::new(table, tenants.clone(), untenanted)
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
                Ok(Arc::new(scoped))
            };
            ctx.register_udtf(
                &format!("{}_at", table.name),
                Arc::new(AsOfFunction::new(curated, scope)),
            );
        }
        let settings = shared.admin.table_provider(SETTINGS_TABLE).await?;
        ctx.register_table(SETTINGS_TABLE, settings)?;
        crate::reports::register_views(&ctx).await?;
        let mut scoped = shared.scoped.lock().expect("scoped lock");
        Ok(scoped.entry(tenants.clone()).or_insert(ctx).clone())
    }

    /// Reloads `token_cost`'s prices from `model_prices` when they are older than the listing
    /// lifetime, so a long-running server prices with the files a pipeline added, as its
    /// `SELECT * FROM model_prices` already shows them. Servers call it before each query;
    /// without a lifetime (one-shot commands) it does nothing.
    pub async fn refresh_prices(&self) {
        let shared = &self.shared;
        let Some(ttl) = shared.options.listing_ttl else {
            return;
        };
        {
            let mut loaded = shared.prices_loaded.lock().expect("prices clock lock");
            if loaded.elapsed() < ttl {
                return;
            }
            // Claimed by this caller: concurrent queries keep the current prices meanwhile.
            *loaded = Instant::now();
        }
        shared
            .prices
            .replace(load_prices(&shared.admin, &shared.store).await);
    }

    /// Plans one SQL statement the way every front end must: `token_cost`'s prices refreshed
    /// first; a statement that names a table that does not exist is
    /// [`EngineError::TableNotFound`]; with [`Access::ReadOnly`], a plan that would change
    /// anything (DDL, DML, `COPY`, `SET`) is [`EngineError::ReadOnly`]. Both are decided by kind
    /// (the catalog, the plan's node types), never by an error's text.
    pub async fn plan(&self, mut statement: Statement, access: Access) -> Result<DataFrame> {
        crate::parse::correct(&mut statement);
        self.refresh_prices().await;
        let state = self.ctx.state();
        let references = state.resolve_table_references(&statement)?;
        if !self.scope.is_admin()
            && let Some(table) = references
                .iter()
                .find(|t| [FILES_TABLE, HISTORY_TABLE, REJECTED_SPANS.name].contains(&t.table()))
        {
            return Err(EngineError::PermissionDenied(format!(
                "{table} holds what every tenant sent (files, row counts, refused spans): \
                 administrators only"
            )));
        }
        let plan = match state.statement_to_plan(statement).await {
            Ok(plan) => plan,
            Err(e) => {
                // Table functions (generate_series) are references too, but they plan: only a
                // statement that failed to plan is checked for missing tables.
                for table in references {
                    if !self.ctx.table_exist(table.clone())? {
                        let catalog = &state.config().options().catalog;
                        let name = table.resolve(&catalog.default_catalog, &catalog.default_schema);
                        return Err(EngineError::TableNotFound(name.to_string()));
                    }
                }
                return Err(e.into());
            }
        };
        if access == Access::ReadOnly
            && let Some(write) = first_write(&plan)
        {
            return Err(EngineError::ReadOnly(write));
        }
        if !self.scope.is_admin() && explains(&plan) {
            return Err(EngineError::PermissionDenied(
                "EXPLAIN shows file paths and row counts of every tenant: administrators only"
                    .into(),
            ));
        }
        Ok(self.with_cluster_stamp(self.ctx.execute_logical_plan(plan).await?))
    }

    /// A report's rows in the order every front end shows them (`reports::ordered`),
    /// planned after the same refresh as [`TraceSession::plan`].
    pub async fn report(&self, report: &crate::reports::Report) -> Result<DataFrame> {
        self.refresh_prices().await;
        let frame = crate::reports::ordered(&self.ctx, report).await?;
        Ok(self.with_cluster_stamp(frame))
    }

    /// Every table and view the session can query, sorted by catalog, schema and name: what
    /// catalog browsers (Flight SQL `GetTables`) list.
    pub async fn tables(&self) -> Result<Vec<TableEntry>> {
        let mut out = Vec::new();
        for (catalog_name, schema_name) in self.schemas() {
            let Some(schema) = self
                .ctx
                .catalog(&catalog_name)
                .and_then(|c| c.schema(&schema_name))
            else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(provider) = schema.table(&name).await? {
                    out.push(TableEntry {
                        catalog: catalog_name.clone(),
                        schema: schema_name.clone(),
                        name,
                        table_type: provider.table_type(),
                        columns: provider.schema(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every (catalog, schema) pair, sorted.
    pub fn schemas(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .ctx
            .catalog_names()
            .into_iter()
            .filter_map(|name| self.ctx.catalog(&name).map(|c| (name, c)))
            .flat_map(|(name, catalog)| {
                catalog
                    .schema_names()
                    .into_iter()
                    .map(move |schema| (name.clone(), schema))
            })
            .collect();
        out.sort();
        out
    }

    /// Adds a function to the session, beside tokenledger's: how a program embedding the engine
    /// extends it. Tenant-scoped sessions made after this ([`TraceSession::for_scope`]) have it
    /// too; register functions before serving.
    pub fn register_udf(&self, function: ScalarUDF) {
        self.ctx.register_udf(function);
    }

    /// Adds a table to the session (an embedding program's own data beside the trace tables).
    /// Tenant-scoped sessions do not get it: only the trace tables are filtered by tenant.
    pub fn register_table(&self, name: &str, table: Arc<dyn TableProvider>) -> Result<()> {
        self.ctx.register_table(name, table)?;
        Ok(())
    }

    /// Parses `sql` (one statement) and plans it as [`TraceSession::plan`] does.
    pub async fn plan_sql(&self, sql: &str, access: Access) -> Result<DataFrame> {
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect)?;
        self.plan(statement, access).await
    }

    /// Plans and runs a query: its batches as execution produces them. Every front end runs
    /// queries through here, so a damaged file fails the query with an error naming it (and is
    /// quarantined), and a panic anywhere below fails the query, never the process.
    pub async fn execute(
        &self,
        frame: DataFrame,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let limits = self.shared.options.memory.as_ref();
        crate::execute::execute(Arc::clone(&self.shared.store), frame, limits).await
    }

    /// `frame` with the fingerprint of the current prices and this session's tenant scope in
    /// its [`ClusterQuery`], which the workers check before they run any of it: set when a
    /// query is planned, so every way of running the frame carries them. Unchanged on a
    /// single node.
    fn with_cluster_stamp(&self, frame: DataFrame) -> DataFrame {
        if self.shared.options.distribution.is_none() {
            return frame;
        }
        let (mut state, plan) = frame.into_parts();
        let options = state.config_mut().options_mut();
        if let Some(cluster) = options.extensions.get_mut::<ClusterQuery>() {
            cluster.prices = self.prices_fingerprint();
            cluster.set_scope(&self.scope);
        }
        DataFrame::new(state, plan)
    }

    /// [`tokenledger_udfs::PriceBook::fingerprint`] of the prices `token_cost` uses now.
    pub fn prices_fingerprint(&self) -> String {
        self.shared.prices.current().fingerprint()
    }

    /// Reads `model_prices` again now, whatever the listing lifetime (a worker does when a
    /// coordinator's prices differ from its own), and returns the new fingerprint.
    pub async fn reload_prices(&self) -> String {
        let shared = &self.shared;
        *shared.prices_loaded.lock().expect("prices clock lock") = Instant::now();
        let book = load_prices(&shared.admin, &shared.store).await;
        let fingerprint = book.fingerprint();
        shared.prices.replace(book);
        fingerprint
    }

    /// The runtime this session's queries run in: memory pool, spill directory, and the data
    /// location's object store. Workers run the tasks sent to them in it.
    pub fn runtime_env(&self) -> Arc<RuntimeEnv> {
        Arc::clone(&self.shared.runtime)
    }

    /// The functions this session's queries call (DataFusion's, tokenledger's pricing with
    /// this session's prices, and the `date_trunc` it uses), for a worker to run plans that
    /// name them. `token_cost` keeps reading this session's prices as they are reloaded.
    pub fn functions(&self) -> SessionFunctions {
        let admin = self.shared.admin.state();
        SessionFunctions {
            scalar: admin.scalar_functions().values().cloned().collect(),
            aggregate: admin.aggregate_functions().values().cloned().collect(),
            window: admin.window_functions().values().cloned().collect(),
        }
    }

    /// tokenledger's settings and the session's (as its own contexts get them) over a
    /// worker's `config`.
    pub fn apply_settings(&self, config: &mut ConfigOptions) -> Result<()> {
        let options = &self.shared.options;
        set_defaults(options, config);
        apply_settings(options, config)
    }

    /// Moves `table`'s settled landing files into its curated Delta table and deletes the
    /// landing files absorbed more than the grace period ago (see [`crate::curated`]).
    /// `progress` hears of each step.
    pub async fn compact(
        &self,
        table: &'static TableDef,
        options: &CompactOptions,
        progress: &mut (dyn FnMut(CompactProgress) + Send),
    ) -> Result<CompactReport> {
        let curated = self.curated(table);
        crate::curated::compact::compact(
            &self.shared.admin,
            &self.shared.store,
            &curated,
            options,
            progress,
        )
        .await
    }

    /// Optimizes and/or vacuums `table`'s curated table.
    pub async fn maintain(
        &self,
        table: &'static TableDef,
        options: &MaintainOptions,
    ) -> Result<Maintenance> {
        let curated = self.curated(table);
        crate::curated::compact::maintain(&self.shared.admin, &curated, options).await
    }

    /// `table`'s curated table, over the session's store (no second S3 client).
    fn curated(&self, table: &'static TableDef) -> Curated {
        let store = Arc::clone(self.shared.store.inner());
        Curated::new(table, self.location.clone(), store)
    }

    /// Files, bytes and rows of each table, in [`TABLES`] order, from the file footers; and
    /// how many files are quarantined.
    pub async fn table_summaries(&self) -> Result<Vec<TableSummary>> {
        let report = self.shared.store.file_report().await?;
        let mut summaries = Vec::new();
        for table in TABLES {
            let curated = self.curated(table).summary().await?;
            let mut summary = TableSummary {
                table: table.name,
                files: 0,
                bytes: 0,
                rows: 0,
                quarantined: 0,
                curated_version: curated.as_ref().map(|c| c.version),
            };
            if let Some(curated) = &curated {
                summary.files += curated.files;
                summary.bytes += curated.bytes;
                summary.rows += curated.rows;
            }
            let prefix = self.location.display_prefix();
            let root = format!("{}/", self.location.root());
            for file in report.iter().filter(|f| f.table == table.name) {
                // Landing files the curated table absorbed are counted there.
                let key = file.path.strip_prefix(&prefix).unwrap_or(&file.path);
                let key = key.strip_prefix(&root).unwrap_or(key);
                if curated.as_ref().is_some_and(|c| c.absorbed.contains(key)) {
                    continue;
                }
                match file.check {
                    FileCheck::Ok { rows, .. } => {
                        summary.files += 1;
                        summary.bytes += file.size;
                        summary.rows += rows;
                    }
                    FileCheck::Quarantined(_) => summary.quarantined += 1,
                }
            }
            summaries.push(summary);
        }
        Ok(summaries)
    }
}

/// A session's functions, from [`TraceSession::functions`].
#[derive(Debug, Clone)]
pub struct SessionFunctions {
    scalar: Vec<Arc<ScalarUDF>>,
    aggregate: Vec<Arc<AggregateUDF>>,
    window: Vec<Arc<datafusion::logical_expr::WindowUDF>>,
}

impl SessionFunctions {
    /// Registers them in `state`, one by one over its own: replacing its function list would
    /// drop DataFusion's built-ins.
    pub fn register(&self, state: &mut SessionState) -> Result<()> {
        use datafusion::execution::FunctionRegistry;
        for function in &self.scalar {
            state.register_udf(Arc::clone(function))?;
        }
        for function in &self.aggregate {
            state.register_udaf(Arc::clone(function))?;
        }
        for function in &self.window {
            state.register_udwf(Arc::clone(function))?;
        }
        Ok(())
    }
}

/// One table or view of a session, as catalog browsers list it.
#[derive(Debug, Clone)]
pub struct TableEntry {
    /// Catalog name.
    pub catalog: String,
    /// Schema name.
    pub schema: String,
    /// Table or view name.
    pub name: String,
    /// Base table, view or temporary table.
    pub table_type: TableType,
    /// Its columns.
    pub columns: SchemaRef,
}

/// What a front end lets a statement do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Queries only (the Flight SQL server: shared by many users).
    ReadOnly,
    /// Also statements that change the session, e.g. `CREATE VIEW` in a CLI script.
    ReadWrite,
}

/// The first part of `plan` that would change something (DDL, DML, `COPY`, a statement such as
/// `SET`), named as the user wrote it; `None` for a read-only plan.
fn first_write(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        found = match node {
            LogicalPlan::Ddl(ddl) => Some(format!("DDL ({})", ddl.name())),
            LogicalPlan::Dml(dml) => Some(format!("DML ({})", dml.op)),
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            LogicalPlan::Statement(statement) => Some(format!("{} statement", statement.name())),
            _ => None,
        };
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Whether `plan` is an `EXPLAIN` or `EXPLAIN ANALYZE`.
fn explains(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(
            node,
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
        ))
    })
    .unwrap_or(true)
}

/// Reads `model_prices` for `token_cost`. A broken prices table must not stop every other query,
/// so the error is kept and reported by `token_cost` itself (logged at debug level only: queries
/// that read the table report it anyway).
async fn load_prices(ctx: &SessionContext, store: &Arc<TableFileStore>) -> Arc<PriceBook> {
    let batches = async {
        // Read here, never on a cluster's workers: they check each query against these very
        // prices, and the table is small.
        let table = ctx.table_provider(MODEL_PRICES.name).await?;
        let frame = this_node_only(ctx).read_table(table)?;
        let batches = crate::execute::execute(Arc::clone(store), frame, None).await?;
        datafusion::physical_plan::common::collect(batches).await
    }
    .await;
    let book = batches
        .map_err(|e| EngineError::from(e).user_message())
        .and_then(|b| PriceBook::from_batches(&b).map_err(|e| e.to_string()));
    Arc::new(book.unwrap_or_else(|reason| {
        tracing::debug!("model prices unavailable: {reason}");
        PriceBook::unavailable(reason)
    }))
}

/// A context with `ctx`'s settings and runtime (none of its tables or functions) whose
/// queries run on this node, whatever `ctx`'s planner would distribute.
fn this_node_only(ctx: &SessionContext) -> SessionContext {
    let state = SessionStateBuilder::new()
        .with_config(ctx.copied_config())
        .with_runtime_env(ctx.runtime_env())
        .with_default_features()
        .build();
    SessionContext::new_with_state(state)
}

/// Size of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    /// Table name.
    pub table: &'static str,
    /// Parquet files read.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Rows across them.
    pub rows: u64,
    /// Files left out of queries (see `tokenledger_files`).
    pub quarantined: usize,
    /// The latest version of its curated table, once compacted; files, bytes and rows above
    /// count the curated table's data files plus the landing files it has not absorbed.
    pub curated_version: Option<u64>,
}

/// A context with tokenledger's settings and no tables; used by [`TraceSession::open`] and by
/// anything that needs to run SQL outside a data location (importers, tests).
pub fn new_context(options: &SessionOptions) -> Result<SessionContext> {
    context_with_runtime(options, new_runtime(options)?)
}

/// The runtime every context of a session shares: file listing cache, memory pool, spill
/// directory.
fn new_runtime(options: &SessionOptions) -> Result<Arc<RuntimeEnv>> {
    let mut runtime = RuntimeEnvBuilder::new().with_object_list_cache_ttl(options.listing_ttl);
    if let Some(limits) = &options.memory {
        runtime = limits.apply(runtime);
    }
    Ok(runtime.build_arc()?)
}

fn context_with_runtime(
    options: &SessionOptions,
    runtime: Arc<RuntimeEnv>,
) -> Result<SessionContext> {
    let builder = SessionStateBuilder::new()
        .with_config(base_config(options))
        .with_runtime_env(runtime)
        .with_default_features();
    let mut state = match &options.distribution {
        Some(distribution) => distribution.coordinate(builder),
        // Workers could not decode the replaced comparisons or scans, so only for plans run here.
        None => optimizer::with_rules(builder),
    }
    .build();
    if options.distribution.is_none() {
        state
            .config_mut()
            .options_mut()
            .extensions
            .insert(OptimizerOptions::for_query_cap(
                options.memory.as_ref().map(|limits| limits.query_bytes),
            ));
    }
    // After the planner is added, so settings may name its options (`distributed.*`) too.
    apply_settings(options, state.config_mut().options_mut())?;
    Ok(SessionContext::new_with_state(state))
}

/// tokenledger's DataFusion settings, before the environment and [`SessionOptions::settings`].
fn base_config(options: &SessionOptions) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, SCHEMA)
        .with_create_default_catalog_and_schema(true);
    set_defaults(options, config.options_mut());
    config
}

/// The settings tokenledger changes from DataFusion's defaults.
fn set_defaults(options: &SessionOptions, config: &mut ConfigOptions) {
    if let Some(partitions) = options.target_partitions {
        // 0 = DataFusion's default (the number of cores), as `with_target_partitions` has it.
        if partitions > 0 {
            config.execution.target_partitions = partitions;
        }
    }
    // Pipelines choose their own sub-folders (dates, hosts): read files at any depth.
    config.execution.listing_table_ignore_subdirectory = false;
    let parquet = &mut config.execution.parquet;
    // Text is read as Utf8View (the table schemas say so; see `ColumnType::query_type`).
    parquet.schema_force_view_types = true;
    // Filters are not evaluated while decoding: on the reports and the ad-hoc benchmark queries
    // that made every query slower, a join's dynamic filter by 1.8x (benches/results/).
    parquet.pushdown_filters = false;
}

/// The `DATAFUSION_*` variables, then [`SessionOptions::settings`], over `config`.
fn apply_settings(options: &SessionOptions, config: &mut ConfigOptions) -> Result<()> {
    apply_env_overrides(config)?;
    for (key, value) in &options.settings {
        config
            .set(key, value)
            .map_err(|e| EngineError::Config(format!("DataFusion setting {key}={value:?}: {e}")))?;
    }
    Ok(())
}

/// Applies `DATAFUSION_*` environment variables over tokenledger's settings, named as
/// datafusion-cli names them (`datafusion.execution.parquet.pushdown_filters` is
/// `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS`), so a setting can be tried without a rebuild.
/// DataFusion's own and tokenledger's [`OptimizerOptions`]
/// (`TOKENLEDGER_OPTIMIZER_FINAL_FAN_OUT`); other extensions list their keys without their
/// prefix, so theirs would be read from variables such as `PRICES`.
fn apply_env_overrides(options: &mut ConfigOptions) -> Result<()> {
    let optimizer = options.extensions.get::<OptimizerOptions>().map(|ext| {
        ext.entries()
            .into_iter()
            .map(|e| format!("{}.{}", OptimizerOptions::PREFIX, e.key))
            .collect::<Vec<_>>()
    });
    let keys: Vec<String> = options
        .entries()
        .into_iter()
        .map(|e| e.key)
        .filter(|key| key.starts_with("datafusion."))
        .chain(optimizer.into_iter().flatten())
        .collect();
    for key in keys {
        let variable = key.to_uppercase().replace('.', "_");
        if let Ok(value) = std::env::var(&variable) {
            options.set(&key, &value).map_err(|e| {
                EngineError::Config(format!("environment variable {variable}={value:?}: {e}"))
            })?;
            tracing::info!(setting = %key, %value, "DataFusion setting from the environment");
        }
    }
    Ok(())
}

/// `table`'s landing directory as a ListingTable: the table until its first compaction.
fn landing_table(
    ctx: &SessionContext,
    location: &DataLocation,
    table: &'static TableDef,
) -> Result<ListingTable> {
    // The session's Parquet settings (`datafusion.execution.parquet.*`, from tokenledger's
    // defaults, DATAFUSION_* variables and `SessionOptions::settings`): a format built with
    // `ParquetFormat::default()` would scan with DataFusion's defaults instead.
    let parquet = ctx.state().default_table_options().parquet;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_options(parquet)))
        .with_file_extension(".parquet");
    let config = ListingTableConfig::new(location.table_url(table.name)?)
        .with_listing_options(options)
        .with_schema(table.query_schema());
    Ok(ListingTable::try_new(config)?)
}
