//! The receiver's one error type, each variant with the answer an exporter gets for it.

use axum::http::StatusCode;
use tokenledger_engine::EngineError;

/// What can go wrong receiving or storing spans.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Too many accepted rows wait for Parquet: try again shortly (503 / UNAVAILABLE, retried).
    #[error("the receiver is busy: too many spans wait to be written; retry shortly")]
    Busy,

    /// The spool cannot be written or read (a full or failing disk): retried too.
    #[error("spool {path}: {source}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// The body is not an OTLP export request (400 / INVALID_ARGUMENT, not retried).
    #[error("not an OTLP trace export request: {0}")]
    Decode(String),

    /// A content type or encoding the receiver does not speak (415).
    #[error("{0}")]
    UnsupportedMediaType(String),

    /// The body, or what it inflates to, is over the limit (413 / RESOURCE_EXHAUSTED).
    #[error("request too large: {0}")]
    TooLarge(String),

    /// Missing or wrong credentials (401 / UNAUTHENTICATED).
    #[error("{0}")]
    Unauthenticated(String),

    /// Too many failed logins for this user from this address (429 with `Retry-After` /
    /// RESOURCE_EXHAUSTED): the server's lockout, the same on every port.
    #[error("{message}")]
    LockedOut { message: String, retry_in_secs: u64 },

    /// The exporter's user may not write what the request holds: a tenant not theirs, or no
    /// tenant where theirs cannot be told (403 / PERMISSION_DENIED, not retried). Nothing of the
    /// request is stored.
    #[error("{0}")]
    Forbidden(String),

    /// A receiver address cannot be used.
    #[error("OTLP receiver on {address}: {reason}")]
    Listen { address: String, reason: String },

    /// Writing Parquet failed (the data location, encoding).
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// A bug: a task stopped.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// The HTTP status and the gRPC code this error is answered with, by variant: exporters
    /// retry 503/UNAVAILABLE and never retry 400.
    pub fn answer(&self) -> (StatusCode, tonic::Code) {
        match self {
            Self::Busy | Self::Spool { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
            }
            Self::Decode(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
            ),
            Self::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                tonic::Code::ResourceExhausted,
            ),
            Self::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
            Self::LockedOut { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted,
            ),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            // Storage trouble is temporary from the exporter's side: its retry will find it fixed.
            Self::Engine(_) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
            Self::Listen { .. } | Self::Internal(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
            }
        }
    }
}

/// Result with [`IngestError`].
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
