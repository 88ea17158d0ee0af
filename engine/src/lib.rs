//! tokenledger's engine: the decision-trace tables, a catalog over local disk or S3, the session
//! every front end queries through, and the Parquet writers. The trace generator is its own
//! crate (`tokenledger-gen`), a writer like the importers.
//!
//! The modules follow the one way data flows (see `docs/architecture.md`):
//! - [`storage`]: where files live and how they are read and written safely (locations, file
//!   listing with quarantine, footer and page checksums, Parquet writers);
//! - [`schema`]: the four trace tables and which files can be read as them;
//! - [`integrity`]: the one validation policy every row of `spans` meets, whichever way it
//!   comes in;
//! - [`curated`]: the Delta Lake tables compaction writes, with time travel;
//! - [`session`]: a DataFusion session with every table, view and function registered,
//!   [`parse`], corrections to how the SQL parser reads some statements, and [`execute`],
//!   running plans so no file can take a query or the process down;
//! - [`optimizer`]: tokenledger's own plan rewrites, each one switchable by a setting;
//! - [`access`]: who sees which rows (tenants) and how much memory queries may hold;
//! - [`reports`]: the report views, their filters and exports;
//! - [`system`]: tables that describe the data location (`tokenledger_files`,
//!   `report_settings`), read afresh by each query;
//! - [`import`]: CSV and price-file importers, writers beside the generator.

pub mod access;
pub mod cluster;
pub mod curated;
pub mod error;
pub mod execute;
pub mod import;
pub mod integrity;
pub mod optimizer;
pub mod parse;
pub mod plan_node;
pub mod reports;
pub mod schema;
pub mod session;
pub mod storage;
pub mod system;

pub use access::limits::MemoryLimits;
pub use access::tenancy::TenantScope;
pub use error::{EngineError, Result};
pub use session::{Access, SessionOptions, TraceSession};
pub use storage::location::DataLocation;
/// The TLS library the HTTP ports use, for front ends that configure it.
pub use tokio_rustls;
