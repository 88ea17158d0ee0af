//! Scale-out for tokenledger: the same SQL, reports and Flight clients over several nodes, on
//! [datafusion-distributed](https://github.com/datafusion-contrib/datafusion-distributed).
//!
//! A **coordinator** is an ordinary tokenledger session (CLI `query`/`report`, or `serve`) given
//! a list of workers ([`Cluster::connect`], [`Cluster::distribution`]): it lists, checks and
//! quarantines files, expands views and plans every query as before; datafusion-distributed then
//! cuts the physical plan into stages and sends each stage's tasks to the workers. A
//! **worker** ([`WorkerServer`]) runs those tasks over the same data location, with
//! tokenledger's functions and codec.
//!
//! What the plan cannot carry is checked instead of trusted:
//!
//! - every node must run the same tokenledger build ([`VERSION`]): the coordinator refuses a
//!   worker that reports another one;
//! - functions travel by name, so `token_cost` would silently price with each node's own
//!   `model_prices`. Each query carries the fingerprint of the coordinator's prices; a worker
//!   whose prices differ reads `model_prices` again, and if they still differ the query fails
//!   with both fingerprints ([`worker`]).
//!
//! and what a plan may do is checked on the worker:
//!
//! - every request between nodes is signed with the cluster's shared secret, and refused when
//!   unsigned, altered, stale or replayed; `https://` workers are reached over TLS
//!   ([`security`]);
//! - a worker runs no plan that reads outside its data location or writes anything, and builds
//!   every tenant filter again from the query's signed scope ([`guard`]).

pub mod codec;
pub mod coordinator;
pub mod error;
pub mod guard;
mod planning;
pub mod security;
pub mod worker;

pub use coordinator::{Cluster, Startup};
pub use error::{DistributedError, Result};
pub use security::{ClusterKey, ClusterSecurity};
pub use worker::WorkerServer;

/// The build every node of a cluster must run: the crate version plus, when the build sets
/// `TOKENLEDGER_BUILD` (e.g. a commit hash), that too.
pub const VERSION: &str = match option_env!("TOKENLEDGER_BUILD") {
    Some(build) => build,
    None => env!("CARGO_PKG_VERSION"),
};
