//! tokenledger's token-economics SQL functions for DataFusion.
//!
//! Every session tokenledger creates calls [`register_all`], so a function added here is
//! available in the CLI, over Flight SQL and in tests alike.

use datafusion::prelude::SessionContext;

/// Registers every tokenledger function on `ctx`. (The function families land with the udfs
/// issue; the hook exists so sessions are wired once.)
pub fn register_all(_ctx: &SessionContext) {}
