//! The one error type of scale-out.

use tokenledger_engine::EngineError;

/// What setting up a coordinator or a worker can fail with. Errors of queries themselves are
/// DataFusion errors, as on a single node.
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// A worker address is not a URL the coordinator can connect to.
    #[error(
        "worker address {address:?} is not usable: {reason} (expected e.g. http://10.0.0.5:50061)"
    )]
    InvalidAddress { address: String, reason: String },
    /// A worker did not answer when the coordinator started.
    #[error("worker {url} does not answer: {reason}")]
    Unreachable { url: String, reason: String },
    /// A worker runs another tokenledger build than the coordinator.
    #[error(
        "worker {url} runs tokenledger {theirs}, this node {ours}: every node of a cluster must run the same build"
    )]
    VersionMismatch {
        url: String,
        theirs: String,
        ours: String,
    },
    /// The worker's listening address could not be bound or served.
    #[error("worker on {address}: {reason}")]
    Serve { address: String, reason: String },
    /// The cluster secret is missing, too short or unreadable.
    #[error("{0}")]
    Secret(String),
    /// Worker traffic would cross the network unencrypted, or its TLS files are unusable.
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Results of scale-out.
pub type Result<T, E = DistributedError> = std::result::Result<T, E>;
