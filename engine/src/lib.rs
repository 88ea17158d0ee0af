//! tokenledger's engine: the decision-trace tables, a catalog over local disk or S3, the session
//! every front end queries through, and the Parquet writers. The trace generator is its own
//! crate (`tokenledger-gen`), a writer like the importers.
//!
//! Data flows one way: storage ([`location`]) → catalog ([`files`], [`schema`]) → session
//! ([`session`], with the [`system`] table of files) → the CLI or the Flight SQL server.

pub mod aggregation;
pub mod checksum;
pub mod cluster;
pub mod curated;
pub mod eager_aggregation;
pub mod error;
pub mod execute;
pub mod files;
pub mod filter;
pub mod focus;
pub mod footer;
pub mod import;
pub mod limits;
pub mod location;
pub mod reports;
pub mod schema;
pub mod session;
pub mod settings;
pub mod system;
pub mod tenancy;
pub mod text_eq;
pub mod topk_threshold;
pub mod writer;

pub use error::{EngineError, Result};
pub use limits::MemoryLimits;
pub use location::DataLocation;
pub use session::{Access, SessionOptions, TraceSession};
pub use tenancy::TenantScope;
