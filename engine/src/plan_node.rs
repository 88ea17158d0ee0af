//! Plumbing every one of tokenledger's own physical plan nodes shares (the optimizer's
//! [`crate::optimizer`] nodes and the tenant boundary [`crate::access::tenancy::TenantScopeExec`]
//! each wrap one input): written once here instead of in each node.

use std::sync::Arc;

use datafusion::common::{Result, assert_eq_or_internal_err};
use datafusion::physical_plan::ExecutionPlan;

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
