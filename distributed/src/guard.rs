//! What a worker checks in every plan it is sent, after the request's signature and before it
//! runs anything: a signed plan comes from a node that holds the cluster secret, but a worker
//! still answers only for its own data location and its tenants' boundaries.
//!
//! - **Reads stay inside the data location.** Every file a scan names must be in the worker's
//!   object store, under its location's root; a plan naming `/etc/passwd`, another directory
//!   or another bucket is refused before anything is read.
//! - **Nothing is written.** Queries never write through workers: a plan with a sink is refused.
//! - **Tenant filters are built here.** For a tenant-scoped query (the scope travels signed in
//!   the query's settings, [`ClusterQuery::scope`]) every scan of a table with a `tenant`
//!   column must sit under a tenant boundary ([`TenantScopeExec`]), and the filter below each
//!   boundary is replaced by one the worker builds from the scope and the table the files
//!   belong to. A plan whose filter was dropped or widened reads only the scope's rows anyway.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::{DFSchema, Result, exec_datafusion_err, exec_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::create_physical_expr;
use datafusion::physical_expr::execution_props::ExecutionProps;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion_distributed::{
    DistributedLeafExec, WorkerPlanRewriteEvent, WorkerPlanRewriteEventResponse,
    WorkerPlanRewriteHandler,
};
use object_store::path::Path;
use tokenledger_engine::DataLocation;
use tokenledger_engine::TenantScope;
use tokenledger_engine::access::tenancy::{
    TENANT_COLUMN, TenantScopeExec, tenant_predicate, untenanted_rows_of,
};
use tokenledger_engine::cluster::ClusterQuery;
use tokenledger_engine::curated::CURATED_DIR;

/// The checks of the module documentation, for a worker over `location`.
pub(crate) struct PlanGuard {
    store: ObjectStoreUrl,
    root: Path,
    /// How the root is shown in errors.
    shown_root: String,
}

impl PlanGuard {
    pub(crate) fn new(location: &DataLocation) -> Self {
        PlanGuard {
            store: location.store_url(),
            root: location.root(),
            shown_root: location.to_string(),
        }
    }

    /// Refuses sinks and reads outside the location, anywhere in `plan`.
    fn check_access(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        if plan.is::<DataSinkExec>() {
            return exec_err!(
                "worker refused a plan that writes ({}): queries only read",
                plan.name()
            );
        }
        for scan in file_scans(plan) {
            if scan.object_store_url != self.store {
                return exec_err!(
                    "worker refused a plan that reads {}, outside its data location {}",
                    scan.object_store_url.as_str(),
                    self.shown_root
                );
            }
            for file in scan.file_groups.iter().flat_map(|group| group.iter()) {
                let path = &file.object_meta.location;
                if !path.prefix_matches(&self.root) {
                    return exec_err!(
                        "worker refused a plan that reads /{path}, outside its data location {}",
                        self.shown_root
                    );
                }
            }
        }
        for child in plan.children() {
            self.check_access(child)?;
        }
        Ok(())
    }

    /// The table a file belongs to: the first directory under the root (the second for
    /// curated tables' files).
    fn table_of(&self, path: &Path) -> Option<String> {
        let mut parts = path.prefix_match(&self.root)?;
        let first = parts.next()?;
        let table = if first.as_ref() == CURATED_DIR {
            parts.next()?
        } else {
            first
        };
        Some(table.as_ref().to_string())
    }

    /// `plan` with every tenant boundary's filter built from `tenants`; an error when a scan of
    /// a tenant-bearing table is not under a boundary, or a boundary is not over a filter.
    fn rescope(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        tenants: &BTreeSet<String>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if plan.is::<TenantScopeExec>() {
            let [filter] = plan.children()[..] else {
                return exec_err!("a tenant boundary has one input");
            };
            let filter = filter.downcast_ref::<FilterExec>().ok_or_else(|| {
                exec_datafusion_err!(
                    "worker refused a plan whose tenant boundary is over {}, not a tenant filter",
                    filter.name()
                )
            })?;
            let rebuilt = self.tenant_filter(filter, tenants)?;
            return replace_children(plan, vec![rebuilt]);
        }
        for scan in file_scans(&plan) {
            if scan.file_schema().index_of(TENANT_COLUMN).is_ok() {
                let table = first_file(scan).and_then(|path| self.table_of(path));
                return exec_err!(
                    "worker refused a tenant-scoped plan that reads {} without a tenant filter",
                    table.as_deref().unwrap_or("a table with tenants")
                );
            }
        }
        let children: Vec<Arc<dyn ExecutionPlan>> = plan.children().into_iter().cloned().collect();
        if children.is_empty() {
            return Ok(plan);
        }
        let children = children
            .into_iter()
            .map(|child| self.rescope(child, tenants))
            .collect::<Result<Vec<_>>>()?;
        replace_children(plan, children)
    }

    /// The worker's own tenant filter in place of `planned`: the same input and projection,
    /// the predicate built from `tenants` for the table the input's files belong to.
    fn tenant_filter(
        &self,
        planned: &FilterExec,
        tenants: &BTreeSet<String>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = Arc::clone(planned.input());
        let tables: BTreeSet<String> = all_file_scans(&input)
            .iter()
            .flat_map(|scan| scan.file_groups.iter().flat_map(|g| g.iter()))
            .filter_map(|file| self.table_of(&file.object_meta.location))
            .collect();
        if tables.len() > 1 {
            return exec_err!(
                "worker refused a plan whose tenant filter spans several tables: {tables:?}"
            );
        }
        // No files (an empty table) read nothing; the stricter rule then costs nothing.
        let untenanted = untenanted_rows_of(tables.first().map_or("", String::as_str));
        let schema = input.schema();
        let column_type = schema.field_with_name(TENANT_COLUMN)?.data_type().clone();
        let predicate = tenant_predicate(tenants, untenanted, &column_type)?;
        let physical = create_physical_expr(
            &predicate,
            &DFSchema::try_from(schema.as_ref().clone())?,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )?;
        let projection = planned.projection().as_ref().map(|p| p.to_vec());
        let filter = FilterExecBuilder::new(physical, input)
            .apply_projection(projection)?
            .build()?;
        Ok(Arc::new(filter))
    }
}

impl WorkerPlanRewriteHandler for PlanGuard {
    fn rewrite_worker_plan(
        &self,
        event: WorkerPlanRewriteEvent,
    ) -> Result<WorkerPlanRewriteEventResponse> {
        let scope = ClusterQuery::of(event.session_config.options())
            .ok_or_else(|| exec_datafusion_err!("the query carries no tokenledger settings"))?
            .scope()?;
        self.check_access(&event.plan)?;
        let plan = match scope {
            TenantScope::All => event.plan,
            TenantScope::Only(tenants) => self.rescope(event.plan, &tenants)?,
        };
        Ok(WorkerPlanRewriteEventResponse::new(plan))
    }
}

/// The file scans `plan` itself is or holds: a `DataSourceExec` over files, or the scans a
/// `DistributedLeafExec` (which has no children) runs for each task.
fn file_scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<&FileScanConfig> {
    match plan.downcast_ref::<DistributedLeafExec>() {
        Some(leaf) => std::iter::once(leaf.original())
            .chain(leaf.variants())
            .filter_map(file_scan)
            .collect(),
        None => file_scan(plan).into_iter().collect(),
    }
}

/// The files `node` scans, when it is a `DataSourceExec` over files.
fn file_scan(node: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    node.downcast_ref::<DataSourceExec>()?
        .data_source()
        .downcast_ref::<FileScanConfig>()
}

/// `plan` over `children`, its properties computed again (a rebuilt filter keeps its input's).
fn replace_children(
    plan: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// Every file scan in `plan`, at any depth.
fn all_file_scans(plan: &Arc<dyn ExecutionPlan>) -> Vec<&FileScanConfig> {
    let mut scans = file_scans(plan);
    for child in plan.children() {
        scans.extend(all_file_scans(child));
    }
    scans
}

fn first_file(scan: &FileScanConfig) -> Option<&Path> {
    scan.file_groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|file| &file.object_meta.location)
        .next()
}
