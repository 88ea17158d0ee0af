//! How tokenledger's own plan node crosses the network.

use std::sync::Arc;

use datafusion::common::{Result, internal_err, not_impl_err};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use tokenledger_engine::access::tenancy::TenantScopeExec;

/// The tag of a [`TenantScopeExec`] (it has no fields: its one input is encoded by the caller).
const TENANT_SCOPE: u8 = 1;

/// Encodes and decodes the plan nodes tokenledger adds to DataFusion's: the tenant boundary of
/// tenant-scoped sessions. Registered on coordinators and workers alike. (Curated tables are
/// scanned as plain Parquet on a coordinator, so deltalake's scan never needs a codec.)
#[derive(Debug, Default)]
pub struct TokenledgerCodec;

impl PhysicalExtensionCodec for TokenledgerCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (buf, inputs) {
            ([TENANT_SCOPE], [input]) => Ok(Arc::new(TenantScopeExec::new(Arc::clone(input)))),
            ([TENANT_SCOPE], _) => internal_err!(
                "TenantScopeExec has one input, the plan sent {}",
                inputs.len()
            ),
            _ => internal_err!("not a tokenledger plan node: {buf:?}"),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if node.downcast_ref::<TenantScopeExec>().is_some() {
            buf.push(TENANT_SCOPE);
            return Ok(());
        }
        not_impl_err!("{} cannot be sent to a worker", node.name())
    }
}
