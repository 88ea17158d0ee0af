//! The Flight server's one error type, and how engine errors become gRPC statuses.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tokenledger_engine::EngineError;
use tokenledger_engine::error::{SharedError, error_chain};
use tokenledger_udfs::FunctionError;
use tonic::{Code, Status};

/// What can stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum FlightServerError {
    /// Bad settings: users file, TLS files, listen address.
    #[error("{0}")]
    Config(String),
    /// Opening the data location failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The gRPC transport failed (binding the port, TLS).
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Result with [`FlightServerError`].
pub type Result<T, E = FlightServerError> = std::result::Result<T, E>;

/// Maps a query error to the gRPC code a client can act on, by the kind of its innermost cause
/// (never by its text):
/// - the query itself is wrong (SQL, planning, a function's argument, `1/0`, a bad cast):
///   INVALID_ARGUMENT;
/// - memory or another limit ran out: RESOURCE_EXHAUSTED;
/// - storage (local disk, S3) failed: UNAVAILABLE, worth retrying;
/// - a damaged table file: DATA_LOSS (it is quarantined; the next query reads the others);
/// - a table file that cannot be read as its table, in strict mode: FAILED_PRECONDITION;
/// - anything else: INTERNAL.
pub fn status(error: DataFusionError) -> Status {
    let code = code_for(&error);
    Status::new(code, EngineError::from(error).user_message())
}

/// The gRPC status of an engine error met while planning: refusals by their kind, the rest as
/// [`status`] classifies them.
pub fn engine_status(error: EngineError) -> Status {
    match error {
        EngineError::DataFusion(e) => status(e),
        other => {
            let code = engine_kind(&other).unwrap_or(Code::Internal);
            Status::new(code, other.user_message())
        }
    }
}

fn code_for(error: &DataFusionError) -> Code {
    // The innermost layer that has a kind decides: a Context or External wrapper says less
    // than what it wraps.
    error_chain(error)
        .filter_map(kind_of)
        .last()
        .unwrap_or(Code::Internal)
}

fn kind_of(err: &(dyn std::error::Error + 'static)) -> Option<Code> {
    if let Some(e) = err.downcast_ref::<EngineError>() {
        return engine_kind(e);
    }
    if let Some(shared) = err.downcast_ref::<SharedError>() {
        return engine_kind(&shared.0);
    }
    if err.downcast_ref::<FunctionError>().is_some() {
        return Some(Code::InvalidArgument);
    }
    if err.downcast_ref::<object_store::Error>().is_some() {
        return Some(Code::Unavailable);
    }
    if let Some(e) = err.downcast_ref::<ArrowError>() {
        return match e {
            ArrowError::DivideByZero
            | ArrowError::CastError(_)
            | ArrowError::ArithmeticOverflow(_)
            | ArrowError::InvalidArgumentError(_)
            | ArrowError::ParseError(_) => Some(Code::InvalidArgument),
            _ => None,
        };
    }
    match err.downcast_ref::<DataFusionError>()? {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Some(Code::InvalidArgument),
        DataFusionError::ResourcesExhausted(_) => Some(Code::ResourceExhausted),
        DataFusionError::ExecutionJoin(_) => Some(Code::Internal),
        _ => None,
    }
}

fn engine_kind(e: &EngineError) -> Option<Code> {
    match e {
        EngineError::TableNotFound(_) => Some(Code::NotFound),
        EngineError::ReadOnly(_) | EngineError::PermissionDenied(_) => Some(Code::PermissionDenied),
        EngineError::Corrupt { .. } => Some(Code::DataLoss),
        EngineError::Schema { .. }
        | EngineError::Quarantine { .. }
        | EngineError::Settings { .. } => Some(Code::FailedPrecondition),
        EngineError::Input(_) | EngineError::Parameter(_) | EngineError::History(_) => {
            Some(Code::InvalidArgument)
        }
        EngineError::Conflict(_) => Some(Code::Aborted),
        EngineError::ObjectStore(_) | EngineError::Io(_) => Some(Code::Unavailable),
        EngineError::Panic(_) => Some(Code::Internal),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(error: DataFusionError) -> Code {
        status(error).code()
    }

    #[test]
    fn the_innermost_kind_decides() {
        let argument = FunctionError::invalid_argument("effective_cost: p = 1.5".into());
        assert_eq!(code(argument), Code::InvalidArgument);
        let wrapped = DataFusionError::Context(
            "while aggregating".into(),
            Box::new(DataFusionError::ResourcesExhausted("memory".into())),
        );
        assert_eq!(code(wrapped), Code::ResourceExhausted);
        let outage = DataFusionError::ObjectStore(Box::new(object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        }));
        assert_eq!(code(outage), Code::Unavailable);
        let corrupt = DataFusionError::External(Box::new(SharedError(std::sync::Arc::new(
            EngineError::Corrupt {
                table: "spans".into(),
                file: "/d/spans/x.parquet".into(),
                problem: "Page CRC checksum mismatch".into(),
            },
        ))));
        assert_eq!(code(corrupt), Code::DataLoss);
        assert_eq!(
            code(DataFusionError::ArrowError(
                Box::new(ArrowError::DivideByZero),
                None
            )),
            Code::InvalidArgument
        );
        assert_eq!(
            code(DataFusionError::Execution("bug".into())),
            Code::Internal
        );
    }

    #[test]
    fn refusals_have_their_own_codes() {
        let missing = engine_status(EngineError::TableNotFound("no_such_table".into()));
        assert_eq!(missing.code(), Code::NotFound);
        let write = engine_status(EngineError::ReadOnly("DDL (CreateMemoryTable)".into()));
        assert_eq!(write.code(), Code::PermissionDenied);
    }
}
