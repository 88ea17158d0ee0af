//! The kind of error a function reports, so front ends can classify it without reading its text.

use datafusion::error::DataFusionError;

/// What a token-economics function refuses.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// An argument outside the function's domain, e.g. `effective_cost(1, 1.5)` (a success
    /// rate above 1). The message names the function and the value.
    #[error("{0}")]
    InvalidArgument(String),
}

impl FunctionError {
    /// `message` as an invalid-argument error DataFusion can carry to the front end.
    pub fn invalid_argument(message: String) -> DataFusionError {
        DataFusionError::External(Box::new(FunctionError::InvalidArgument(message)))
    }
}
