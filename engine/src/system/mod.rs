//! Tables that describe the data location rather than hold traces, each read afresh by every
//! query so an operator's change shows at once: [`files`] (`tokenledger_files`, every file
//! and whether queries read it) and [`settings`] (`report_settings`, the thresholds the
//! reports decide with); the curated tables' `tokenledger_history` is one too. Each says how
//! to make its rows ([`FreshRows`]); [`FreshTable`] is the DataFusion table around them,
//! written once.

pub mod files;
pub mod settings;

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::error::Result;

/// A table whose rows are made when a query scans it, all at once (a few thousand at most).
#[async_trait]
pub trait FreshRows: Debug + Send + Sync + 'static {
    /// The rows' schema.
    fn schema(&self) -> SchemaRef;
    /// The rows as they are now.
    async fn rows(&self) -> Result<RecordBatch>;
}

/// A [`FreshRows`] as a table queries read; shown as a view, since it stores nothing.
#[derive(Debug)]
pub struct FreshTable<T>(pub T);

#[async_trait]
impl<T: FreshRows> TableProvider for FreshTable<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .0
            .rows()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.0.schema(), projection.cloned())?;
        Ok(exec)
    }
}
