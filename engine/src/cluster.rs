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
//!   anything;
//! - reads curated tables as plain Parquet scans of their snapshot's files instead of
//!   deltalake's scan node, which has no codec and cannot be sent to a worker. The two read
//!   the same rows: curated tables are written by tokenledger alone, without partition
//!   columns, deletion vectors or column mapping (see [`crate::curated`]).

use std::fmt::Debug;

use datafusion::catalog::Session;
use datafusion::common::extensions_options;
use datafusion::config::{ConfigExtension, ConfigOptions};
use datafusion::execution::SessionStateBuilder;

extensions_options! {
    /// Present in the configuration of a coordinator's contexts, and sent with each task.
    pub struct ClusterQuery {
        /// [`tokenledger_udfs::PriceBook::fingerprint`] of the prices the query was planned with.
        pub prices: String, default = String::new()
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
