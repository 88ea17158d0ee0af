//! Tenant isolation: a session that shows only some tenants' rows.
//!
//! A scoped session registers each tenant-bearing table as a [`TenantTable`]: the trace table
//! read through a filter on `tenant` that sits below everything a user's query can add. Three
//! DataFusion behaviours decide the design, and each is defended here:
//!
//! - **Filters move.** The optimizer merges a query's predicates and pushes them down to scans.
//!   Were the tenant filter an ordinary predicate, `WHERE CASE WHEN tenant = 'other' THEN 1/0
//!   END` could be evaluated on another tenant's rows, and its error would tell they exist. So
//!   the table accepts no pushed filters and no limit, and its plan ends in a
//!   [`TenantScopeExec`], a node that passes no filter, limit, projection or sort from above to
//!   what is below it. Every row a user expression sees has passed the tenant filter.
//! - **Statistics answer queries.** `count(*)`, `min` and `max` can be answered from the files'
//!   exact statistics without reading a row. [`TenantScopeExec`] reports unknown statistics,
//!   so nothing is answered from the unfiltered files.
//! - **Views keep their tables.** A view is planned against the tables it was created over. The
//!   report views of a scoped session are created in that session, over its filtered tables.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType, col, lit};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

use crate::plan_node::{filtered_scan, one_input_node, only_child};

/// The column that says which tenant a row belongs to.
pub const TENANT_COLUMN: &str = "tenant";

/// Which tenants' rows a session shows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantScope {
    /// Every row, and the objects only administrators see (`tokenledger_files`, `EXPLAIN`).
    All,
    /// Rows of these tenants only (possibly none).
    Only(BTreeSet<String>),
}

impl TenantScope {
    /// Rows of `tenants` only.
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(tenants: I) -> Self {
        TenantScope::Only(tenants.into_iter().map(Into::into).collect())
    }

    /// Whether this scope sees everything, administrators' objects included.
    pub fn is_admin(&self) -> bool {
        matches!(self, TenantScope::All)
    }
}

impl fmt::Display for TenantScope {
    /// `*` for every tenant, otherwise the tenants joined by commas (empty for none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantScope::All => f.write_str("*"),
            TenantScope::Only(tenants) => {
                let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// Which rows without a tenant a scoped user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntenantedRows {
    /// Shared by every tenant (baselines: a row with no tenant applies to every tenant).
    Shared,
    /// Nobody's: only administrators see them (spans and outcomes that lack a tenant).
    AdminOnly,
}

/// A trace table seen through a tenant filter. See the module documentation.
#[derive(Debug)]
pub struct TenantTable {
    inner: Arc<dyn TableProvider>,
    tenants: BTreeSet<String>,
    untenanted: UntenantedRows,
    tenant_index: usize,
}

impl TenantTable {
    /// `inner` restricted to rows of `tenants` (and, if `untenanted` is shared, rows without a
    /// tenant). `inner` must have a `tenant` column.
    pub fn new(
        inner: Arc<dyn TableProvider>,
        tenants: BTreeSet<String>,
        untenanted: UntenantedRows,
    ) -> Result<Self> {
        let tenant_index = inner.schema().index_of(TENANT_COLUMN)?;
        Ok(TenantTable {
            inner,
            tenants,
            untenanted,
            tenant_index,
        })
    }

    /// The filter this table reads through ([`tenant_predicate`]).
    fn predicate(&self) -> Result<Expr> {
        let column_type = self
            .inner
            .schema()
            .field(self.tenant_index)
            .data_type()
            .clone();
        tenant_predicate(&self.tenants, self.untenanted, &column_type)
    }
}

/// Which rows without a tenant a scoped user sees in table `name`: everyone's for baselines
/// (they apply to every tenant), nobody's but administrators' for the rest.
pub fn untenanted_rows_of(name: &str) -> UntenantedRows {
    if name == crate::schema::BASELINES.name {
        UntenantedRows::Shared
    } else {
        UntenantedRows::AdminOnly
    }
}

/// The tenant filter: `tenant IN (…)`, `OR tenant IS NULL` for shared rows, `false` for no
/// tenants at all; the names cast to the column's type. Coordinators plan it, and workers
/// build it again from the query's scope rather than trust the plan's copy.
pub fn tenant_predicate(
    tenants: &BTreeSet<String>,
    untenanted: UntenantedRows,
    column_type: &DataType,
) -> Result<Expr> {
    let tenants = tenants
        .iter()
        .map(|t| {
            ScalarValue::Utf8(Some(t.clone()))
                .cast_to(column_type)
                .map(lit)
        })
        .collect::<Result<Vec<_>>>()?;
    let listed = if tenants.is_empty() {
        lit(false)
    } else {
        col(TENANT_COLUMN).in_list(tenants, false)
    };
    Ok(match untenanted {
        UntenantedRows::Shared => listed.or(col(TENANT_COLUMN).is_null()),
        UntenantedRows::AdminOnly => listed,
    })
}

#[async_trait]
impl TableProvider for TenantTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// None: a user's predicate must not run below the tenant filter.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    /// Scans the columns asked for plus `tenant`, keeps the scope's rows, then drops `tenant`
    /// if it was not asked for. The limit is not passed down: the first rows of the files may
    /// all be another tenant's.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The tenant predicate goes to the scan too, where it only prunes files and row groups
        // by their statistics; the filter is what decides.
        let predicate = self.predicate()?;
        let filtered = filtered_scan(
            self.inner.as_ref(),
            state,
            projection,
            &[self.tenant_index],
            predicate.clone(),
            std::slice::from_ref(&predicate),
            None,
        )
        .await?;
        Ok(Arc::new(TenantScopeExec::new(Arc::new(filtered))))
    }
}

/// The boundary between a tenant filter and the query above it: it runs its input unchanged,
/// and lets no optimizer move anything across it (filters, limits, projections and sorts stay
/// above; statistics are unknown). See the module documentation.
#[derive(Debug)]
pub struct TenantScopeExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl TenantScopeExec {
    /// The boundary over `input` (the tenant filter). Public for the codec that sends it to
    /// workers.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::clone(input.properties());
        TenantScopeExec { input, properties }
    }
}

impl DisplayAs for TenantScopeExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TenantScopeExec")
    }
}

impl ExecutionPlan for TenantScopeExec {
    one_input_node!("TenantScopeExec", input);

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(TenantScopeExec::new(only_child(
            children,
            self.name(),
        )?)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }
}
