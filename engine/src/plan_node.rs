//! Plumbing every one of tokenledger's own physical plan nodes shares (the optimizer's
//! [`crate::optimizer`] nodes and the tenant boundary [`crate::access::tenancy::TenantScopeExec`]
//! each wrap one input), and the filtered scan the tables that read through a predicate share
//! (tenants, the validation policy): written once here instead of in each.

use std::sync::Arc;

use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, Result, assert_eq_or_internal_err};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

/// `inner`'s scan of `projection` under `predicate`: the columns the predicate reads
/// (`needed`) are scanned too and dropped above the filter, and `limit` applies above it (the
/// first rows read may be ones it leaves out). `pushed` go to the scan, where they only prune.
pub async fn filtered_scan(
    inner: &dyn TableProvider,
    state: &dyn Session,
    projection: Option<&Vec<usize>>,
    needed: &[usize],
    predicate: Expr,
    pushed: &[Expr],
    limit: Option<usize>,
) -> Result<FilterExec> {
    let wanted: Vec<usize> = match projection {
        Some(columns) => columns.clone(),
        None => (0..inner.schema().fields().len()).collect(),
    };
    let mut scanned = wanted.clone();
    for index in needed {
        if !scanned.contains(index) {
            scanned.push(*index);
        }
    }
    let scan = inner.scan(state, Some(&scanned), pushed, None).await?;
    let scan_schema = DFSchema::try_from(scan.schema().as_ref().clone())?;
    let physical = state.create_physical_expr(predicate, &scan_schema)?;
    FilterExecBuilder::new(physical, scan)
        .apply_projection(Some((0..wanted.len()).collect()))?
        .with_fetch(limit)
        .build()
}

/// The one input of a plan node that has exactly one (`with_new_children`'s argument), or an
/// internal error naming `node`.
pub fn only_child(
    mut children: Vec<Arc<dyn ExecutionPlan>>,
    node: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    assert_eq_or_internal_err!(children.len(), 1, "{node} has one input");
    Ok(children.swap_remove(0))
}

/// The `ExecutionPlan` methods every one-input tokenledger node writes the same way: its name,
/// its one child (the field named), and no expressions of its own to show optimizers.
macro_rules! one_input_node {
    ($name:literal, $input:ident) => {
        fn name(&self) -> &str {
            $name
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![&self.$input]
        }

        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_expr::PhysicalExpr>,
            ) -> datafusion::common::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::common::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }
    };
}
pub(crate) use one_input_node;
