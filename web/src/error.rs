//! The page's one error type, classified by what went wrong (each kind has its HTTP status).

use axum::http::StatusCode;
use tokenledger_engine::EngineError;

/// Why a page or SQL request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// A URL parameter was not usable (the page says which and why).
    #[error("{0}")]
    BadRequest(String),
    /// The user asked for rows they may not see.
    #[error("{0}")]
    Forbidden(String),
    /// The server's query limits refused the page for now (server busy, waited too long).
    #[error("{0}")]
    Busy(String),
    /// No such page or report.
    #[error("{0}")]
    NotFound(String),
    /// Planning or running a report failed.
    #[error("{}", .0.user_message())]
    Engine(#[from] EngineError),
    /// A chart could not be drawn.
    #[error("drawing a chart failed: {0}")]
    Chart(String),
    /// The listening socket.
    #[error("report page: {0}")]
    Io(#[from] std::io::Error),
}

/// Results of this crate.
pub type Result<T, E = WebError> = std::result::Result<T, E>;

impl From<datafusion::error::DataFusionError> for WebError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        WebError::Engine(EngineError::from(e))
    }
}

impl From<arrow::error::ArrowError> for WebError {
    fn from(e: arrow::error::ArrowError) -> Self {
        WebError::Engine(EngineError::from(e))
    }
}

impl WebError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Engine(e) => match e {
                EngineError::Parameter(_) | EngineError::Input(_) => StatusCode::BAD_REQUEST,
                EngineError::PermissionDenied(_) => StatusCode::FORBIDDEN,
                EngineError::ObjectStore(_) | EngineError::Io(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            WebError::Chart(_) | WebError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}
