//! The Flight server's one error type, and how engine errors become gRPC statuses.

use datafusion::error::DataFusionError;
use tokenledger_engine::EngineError;
use tonic::Status;

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

/// Maps a query error to the gRPC code a client can act on: bad SQL → INVALID_ARGUMENT (with
/// DataFusion's message), unknown table → NOT_FOUND, statements that would change anything →
/// PERMISSION_DENIED, everything else → INTERNAL.
pub fn status(error: DataFusionError) -> Status {
    let message = EngineError::from(error).user_message();
    let code = classify(&message);
    Status::new(code, message)
}

fn classify(message: &str) -> tonic::Code {
    use tonic::Code;
    if [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        Code::PermissionDenied
    } else if message.contains("table '") && message.contains("' not found") {
        Code::NotFound
    } else if message.starts_with("SQL error")
        || message.starts_with("Error during planning")
        || message.starts_with("Schema error")
        || message.starts_with("This feature is not implemented")
    {
        Code::InvalidArgument
    } else {
        Code::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn messages_map_to_codes() {
        assert_eq!(
            classify("SQL error: ParserError(\"Expected: an SQL statement\")"),
            Code::InvalidArgument
        );
        assert_eq!(
            classify("Error during planning: table 'tokenledger.public.x' not found"),
            Code::NotFound
        );
        assert_eq!(
            classify("Error during planning: DDL not supported: CreateMemoryTable"),
            Code::PermissionDenied
        );
        assert_eq!(
            classify("Error during planning: DML not supported: COPY"),
            Code::PermissionDenied
        );
        assert_eq!(
            classify("Schema error: No field named y"),
            Code::InvalidArgument
        );
        assert_eq!(
            classify("Object Store error: connection refused"),
            Code::Internal
        );
    }
}
