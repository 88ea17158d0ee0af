//! What the engine does differently when its queries run across several nodes.
//!
//! The engine does not distribute anything itself: `tokenledger-distributed` implements
//! [`Distribution`] (the datafusion-distributed planner, its worker list and codecs) and
//! passes it in [`crate::SessionOptions::distribution`]. The engine then
//!
//! - builds every context of the session through it, so each becomes a coordinator;
//! - adds a [`ClusterQuery`] to each context's configuration, which travels with every task to
//!   the workers. It carries the fingerprint of the prices `token_cost` used to plan the query
//!   (stamped on each query by [`crate::TraceSession::plan`] and `report`): functions cross
//!   the network by name only, so a worker compares this with its own prices before it runs
//!   anything. It also carries the query's tenant scope, from which a worker builds every
//!   tenant filter again instead of trusting the plan's ([`ClusterQuery::scope`]);
//! - reads curated tables as plain Parquet scans of their snapshot's files instead of
//!   deltalake's scan node, which has no codec and cannot be sent to a worker. The two read
//!   the same rows: curated tables are written by tokenledger alone, without partition
//!   columns, deletion vectors or column mapping (see [`crate::curated`]).

use std::collections::BTreeSet;
use std::fmt::Debug;

use datafusion::catalog::Session;
use datafusion::common::{Result, exec_datafusion_err, extensions_options};
use datafusion::config::{ConfigExtension, ConfigOptions};
use datafusion::execution::SessionStateBuilder;

use crate::access::tenancy::TenantScope;

extensions_options! {
    /// Present in the configuration of a coordinator's contexts, and sent with each task.
    pub struct ClusterQuery {
        /// [`tokenledger_udfs::PriceBook::fingerprint`] of the prices the query was planned with.
        pub prices: String, default = String::new()
        /// Whose rows the query may read, as [`ClusterQuery::set_scope`] writes it: `*` for
        /// every tenant, else the hex of a JSON list of names (header-safe whatever the names).
        pub tenants: String, default = String::new()
    }
}

impl ConfigExtension for ClusterQuery {
    const PREFIX: &'static str = "tokenledger_cluster";
}

impl ClusterQuery {
    /// The cluster settings of a context's configuration; `None` when it runs on one node.
    pub fn of(options: &ConfigOptions) -> Option<&ClusterQuery> {
        options.extensions.get::<ClusterQuery>()
    }

    /// Records whose rows the query may read.
    pub fn set_scope(&mut self, scope: &TenantScope) {
        self.tenants = match scope {
            TenantScope::All => "*".to_string(),
            TenantScope::Only(tenants) => {
                let json = serde_json::to_string(tenants).expect("names serialize");
                json.bytes().map(|b| format!("{b:02x}")).collect()
            }
        };
    }

    /// Whose rows the query may read; an error when the coordinator did not say (an old or
    /// foreign coordinator) or said it in another form.
    pub fn scope(&self) -> Result<TenantScope> {
        let bad = |why: &str| exec_datafusion_err!("the query's tenant scope {why}");
        match self.tenants.as_str() {
            "" => Err(bad(
                "is missing: the coordinator must be tokenledger of this version",
            )),
            "*" => Ok(TenantScope::All),
            hex => {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|b| u8::from_str_radix(b, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| bad("is not hex"))?;
                let names: BTreeSet<String> =
                    serde_json::from_slice(&bytes).map_err(|_| bad("is not a list of names"))?;
                Ok(TenantScope::Only(names))
            }
        }
    }

    /// Whether `state` belongs to a coordinator, whose plans must be sendable to workers.
    pub fn is_distributed(state: &dyn Session) -> bool {
        Self::of(state.config_options()).is_some()
    }
}

/// Turns a session's contexts into coordinators of a cluster.
pub trait Distribution: Send + Sync + Debug {
    /// Adds the distributed planner, the workers and the codecs to a context being built. It
    /// must also register [`ClusterQuery`] so that it reaches the workers.
    fn coordinate(&self, state: SessionStateBuilder) -> SessionStateBuilder;
}
