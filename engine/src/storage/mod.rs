//! The storage layer: where a data location's files are, which of them a table may read, and
//! how they are read and written so that damaged bytes fail loudly instead of changing an
//! answer.
//!
//! - [`location`]: a local directory or an S3 prefix, opened through object_store;
//! - [`files`]: the object store every table reads through, listing only files whose footers
//!   check out and quarantining the rest;
//! - [`footer`]: reading a footer without trusting a byte of it;
//! - [`checksum`]: page and footer checksums in the files tokenledger writes;
//! - [`writer`]: the Parquet layout every writer (generator, importers, ingest) uses.

pub mod checksum;
pub mod files;
pub mod footer;
pub mod location;
pub mod writer;
