//! The command line's one error type.

use datafusion::error::DataFusionError;
use tokenledger_distributed::DistributedError;
use tokenledger_engine::EngineError;
use tokenledger_flight_server::FlightServerError;
use tokenledger_gen::GenError;
use tokenledger_ingest::IngestError;

/// What a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line or its input is not usable (no SQL, an unknown report or table, a
    /// missing `--output`, an unreadable SQL file).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Flight(#[from] FlightServerError),
    #[error(transparent)]
    Generator(#[from] GenError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Distributed(#[from] DistributedError),
}

/// The engine's sources of error, met directly by the CLI's output writers.
macro_rules! through_engine_error {
    ($($source:ty),*) => {
        $(impl From<$source> for CliError {
            fn from(e: $source) -> Self {
                CliError::Engine(e.into())
            }
        })*
    };
}
through_engine_error!(
    DataFusionError,
    std::io::Error,
    parquet::errors::ParquetError,
    arrow::error::ArrowError
);

impl CliError {
    /// The one line a user sees.
    pub fn user_message(&self) -> String {
        match self {
            CliError::Engine(e)
            | CliError::Flight(FlightServerError::Engine(e))
            | CliError::Generator(GenError::Engine(e))
            | CliError::Ingest(IngestError::Engine(e))
            | CliError::Distributed(DistributedError::Engine(e)) => e.user_message(),
            CliError::Usage(message) => message.clone(),
            CliError::Flight(e) => e.to_string(),
            CliError::Generator(e) => e.to_string(),
            CliError::Ingest(e) => e.to_string(),
            CliError::Distributed(e) => e.to_string(),
        }
    }
}
