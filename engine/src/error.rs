//! The engine's one error type.

use std::fmt;
use std::sync::Arc;

use datafusion::error::DataFusionError;

/// Everything that can go wrong opening, reading or writing a tokenledger data location.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The `--data` value is neither a directory nor an `s3://bucket/prefix` URL, or does not exist.
    #[error("data location {location:?}: {reason}")]
    Location { location: String, reason: String },

    /// A Parquet file cannot be read as the table it sits under.
    #[error("{table} file {file}: column {column:?} {problem}")]
    Schema {
        table: String,
        file: String,
        column: String,
        problem: String,
    },

    /// A table file whose footer passed the check turned out damaged when read: a page
    /// checksum mismatch, an undecodable page, a decoder panic. It is quarantined.
    #[error("{table} file {file}: corrupt, left out of queries from now on: {problem}")]
    Corrupt {
        table: String,
        file: String,
        problem: String,
    },

    /// Code tokenledger depends on panicked while running a query; the query fails, the
    /// process goes on.
    #[error("internal error while {0}")]
    Panic(String),

    /// A table file left out of queries, and why in a user's words: it cannot be read as
    /// Parquet, its schema has no Arrow equivalent, or it is not named `*.parquet`.
    #[error("{table} file {file}: {reason}")]
    Quarantine {
        table: String,
        file: String,
        reason: String,
    },

    /// A statement names a table that does not exist.
    #[error("table '{0}' not found")]
    TableNotFound(String),

    /// A statement would change something (DDL, DML, `COPY`, `SET`) where only queries are
    /// allowed.
    #[error("{0} is not allowed: the server is read-only")]
    ReadOnly(String),

    /// The user may not see what the statement asks for (another tenant's files, a plan's
    /// row counts).
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// A setting that cannot be applied: a DataFusion setting, an environment variable.
    #[error("{0}")]
    Config(String),

    /// The data location's `report_settings.csv` cannot be used (the line and what is wrong).
    #[error("report settings {file}: {reason}")]
    Settings { file: String, reason: String },

    /// A report view's SQL does not compile against the tables and functions.
    #[error("report view {name} does not compile: {reason}")]
    View { name: String, reason: String },

    /// A curated (Delta Lake) table could not be read or written.
    #[error("curated table: {0}")]
    Curated(String),

    /// Another writer committed to a curated table first (two compactions at once); nothing
    /// was committed by this one.
    #[error(
        "another compaction committed first; nothing was written by this one (run it again to compact what is left): {0}"
    )]
    Conflict(String),

    /// A point in a curated table's history that does not exist: a version not yet written, a
    /// time before its first commit.
    #[error("{0}")]
    History(String),

    /// Input handed to a writer or importer was not usable.
    #[error("{0}")]
    Input(String),

    /// A parameter a user gave (a date, a filter) was not usable.
    #[error("{0}")]
    Parameter(String),

    /// Planning or execution failed inside DataFusion (bad SQL, unknown table, …).
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    /// The object store (local disk or S3) failed.
    #[error(transparent)]
    ObjectStore(#[from] object_store::Error),

    /// Writing or reading Parquet failed.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Building Arrow arrays failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    /// Local I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Strips DataFusion's wrapping ("External error: ", "Object Store error: ", context) so a
    /// user sees the one sentence that says what was wrong, on one line.
    pub fn user_message(&self) -> String {
        let message = match self {
            EngineError::DataFusion(e) => datafusion_message(e),
            other => other.to_string(),
        };
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

fn datafusion_message(e: &DataFusionError) -> String {
    // A schema problem found while listing arrives wrapped in ObjectStore/External layers;
    // report our own message, not the layers around it.
    if let Some(inner) = find_engine_error(e) {
        return inner.to_string();
    }
    if let Some(function) =
        error_chain(e).find_map(|err| err.downcast_ref::<tokenledger_udfs::FunctionError>())
    {
        return function.to_string();
    }
    // Layers of context say where the root happened (which worker of a cluster, …).
    let mut contexts = Vec::new();
    let mut layer = e;
    loop {
        match layer {
            DataFusionError::Context(context, inner) => {
                contexts.push(context.as_str());
                layer = inner;
            }
            DataFusionError::Shared(inner) => layer = inner,
            _ => break,
        }
    }
    contexts.push("");
    format!("{}{}", contexts.join(": "), e.find_root())
}

/// The tokenledger error inside `e`, if a layer of it is one.
pub fn find_engine_error(e: &DataFusionError) -> Option<&EngineError> {
    error_chain(e).find_map(|err| {
        err.downcast_ref::<EngineError>().or_else(|| {
            err.downcast_ref::<SharedError>()
                .map(|shared| shared.0.as_ref())
        })
    })
}

/// An [`EngineError`] shared between the file check cache and the queries that meet it, so it can
/// travel inside a DataFusion or object_store error.
#[derive(Debug)]
pub struct SharedError(pub Arc<EngineError>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {}

/// `e` and its sources, outermost first.
pub fn error_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |err| err.source())
}
