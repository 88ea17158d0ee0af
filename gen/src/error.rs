//! The generator's one error type.

use tokenledger_engine::EngineError;

/// What can stop a generator run.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Writing a file failed (encoding, checksums, the object store), or the location is bad.
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// A generator worker stopped before finishing its files (it panicked or was cancelled).
    #[error("generator worker failed: {0}")]
    Worker(String),

    /// A simulated span broke the validation policy (a bug in the simulation, or a period
    /// ending more than a day from now): nothing of that segment is written.
    #[error("the generator made spans the validation policy refuses: {0}")]
    Invalid(String),
}

/// Result with [`GenError`].
pub type Result<T, E = GenError> = std::result::Result<T, E>;

impl From<arrow::error::ArrowError> for GenError {
    fn from(e: arrow::error::ArrowError) -> Self {
        GenError::Engine(e.into())
    }
}

impl From<object_store::Error> for GenError {
    fn from(e: object_store::Error) -> Self {
        GenError::Engine(e.into())
    }
}

impl From<std::io::Error> for GenError {
    fn from(e: std::io::Error) -> Self {
        GenError::Engine(e.into())
    }
}
