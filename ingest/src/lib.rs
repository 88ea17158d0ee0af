//! tokenledger's OTLP trace receiver: an LLM app's OpenTelemetry exporter points at it, and its
//! spans become rows of the `spans` and `outcomes` tables, as Parquet files in the data location
//! that every query, report and Flight SQL client reads like any other.
//!
//! Request path: [`http`] or [`grpc`] decodes the export request ([`decode`], span by span when
//! one span does not decode); [`pipeline`] maps its spans ([`map`]) and checks each against the
//! validation policy (`tokenledger_engine::integrity`: a span that breaks it is refused alone,
//! named in the partial-success answer and kept in `rejected_spans`); it appends the request to
//! the [`spool`] and syncs it (one sync for every request waiting) before answering; segments of
//! the spool become Parquet ([`records`]) by rows, bytes or age, named after the segment so a
//! replay after a crash rewrites the same files.

pub mod attrs;
pub mod auth;
pub mod decode;
pub mod error;
pub mod grpc;
pub mod http;
pub mod map;
pub mod pipeline;
pub mod records;
pub mod same_call;
pub mod spool;
pub mod tenants;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokenledger_engine::access::tls::{Incoming, PemPair, server_config};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use auth::{Exporter, ExporterAuth};
pub use error::{IngestError, Result};
pub use pipeline::{IngestOptions, Ingestor};

/// Default OTLP ports, on loopback.
pub const DEFAULT_GRPC: &str = "127.0.0.1:4317";
/// See [`DEFAULT_GRPC`].
pub const DEFAULT_HTTP: &str = "127.0.0.1:4318";

/// Where the receiver listens, and who may send.
#[derive(Clone, Default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC address.
    pub grpc: Option<SocketAddr>,
    /// OTLP/HTTP address.
    pub http: Option<SocketAddr>,
    /// Exporters' credentials; without them only loopback addresses are allowed.
    pub auth: Option<Arc<ExporterAuth>>,
    /// PEM certificate chain and private key: both ports then speak TLS only.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Take passwords without TLS on a non-loopback address (only behind a TLS proxy).
    pub allow_plaintext_passwords: bool,
}

/// A running receiver: its bound addresses; dropping it stops the listeners.
pub struct Receiver {
    /// Where OTLP/gRPC listens.
    pub grpc: Option<SocketAddr>,
    /// Where OTLP/HTTP listens.
    pub http: Option<SocketAddr>,
    tasks: JoinSet<Result<()>>,
}

impl Receiver {
    /// Binds the configured addresses (refusing a non-loopback one without credentials, as the
    /// Flight SQL server does) and starts serving `ingestor` on them.
    pub async fn start(ingestor: Ingestor, config: ReceiverConfig) -> Result<Self> {
        let mut tasks = JoinSet::new();
        let mut receiver = Receiver {
            grpc: None,
            http: None,
            tasks: JoinSet::new(),
        };
        if let Some(address) = config.grpc {
            let listener = bind(address, &config).await?;
            receiver.grpc = Some(local_address(&listener)?);
            let service = grpc::service(ingestor.clone(), config.auth.clone());
            let mut server = Server::builder();
            if let Some((cert, key)) = &config.tls {
                let pem = PemPair::read(cert, key)?;
                let identity = Identity::from_pem(pem.cert, pem.key);
                server = server
                    .tls_config(ServerTlsConfig::new().identity(identity))
                    .map_err(|e| IngestError::Listen {
                        address: address.to_string(),
                        reason: format!("TLS: {e}"),
                    })?;
            }
            tasks.spawn(async move {
                server
                    .add_service(service)
                    .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
                    .await
                    .map_err(|e| IngestError::Internal(format!("OTLP/gRPC server: {e}")))
            });
        }
        if let Some(address) = config.http {
            let listener = bind(address, &config).await?;
            receiver.http = Some(local_address(&listener)?);
            let router = http::router(ingestor.clone(), config.auth.clone());
            let tls = match &config.tls {
                Some((cert, key)) => Some(server_config(cert, key, &["h2", "http/1.1"])?),
                None => None,
            };
            let incoming = Incoming::new(listener, tls).map_err(|e| IngestError::Listen {
                address: address.to_string(),
                reason: e.to_string(),
            })?;
            tasks.spawn(async move {
                // `tap_io` lets axum take the peer address of a listener of ours.
                axum::serve(
                    incoming.tap_io(|_| ()),
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .await
                .map_err(|e| IngestError::Internal(format!("OTLP/HTTP server: {e}")))
            });
        }
        receiver.tasks = tasks;
        for (protocol, address) in [("gRPC", receiver.grpc), ("HTTP", receiver.http)] {
            if let Some(address) = address {
                tracing::info!("OTLP/{protocol} receiver listening on {address}");
            }
        }
        Ok(receiver)
    }

    /// Runs until a listener fails (they do not stop on their own).
    pub async fn wait(mut self) -> Result<()> {
        while let Some(done) = self.tasks.join_next().await {
            done.map_err(|e| IngestError::Internal(e.to_string()))??;
        }
        Ok(())
    }
}

/// Binds `address`, refusing first what would expose data or passwords off loopback: no users,
/// or users whose passwords would travel in plain text (no TLS, not explicitly allowed).
async fn bind(address: SocketAddr, config: &ReceiverConfig) -> Result<TcpListener> {
    let loopback = address.ip().is_loopback();
    if config.auth.is_some()
        && !loopback
        && config.tls.is_none()
        && !config.allow_plaintext_passwords
    {
        return Err(IngestError::Listen {
            address: address.to_string(),
            reason: "refusing to take passwords in plain text off loopback: give --tls-cert and \
                     --tls-key, or --allow-plaintext-passwords if a TLS proxy in front encrypts them"
                .into(),
        });
    }
    if config.auth.is_none() && !loopback {
        return Err(IngestError::Listen {
            address: address.to_string(),
            reason: "refusing a non-loopback address without --users: anyone on the network \
                     could write spans (add users with `tokenledger user add`, or listen on 127.0.0.1)"
                .into(),
        });
    }
    TcpListener::bind(address)
        .await
        .map_err(|e| IngestError::Listen {
            address: address.to_string(),
            reason: e.to_string(),
        })
}

fn local_address(listener: &TcpListener) -> Result<SocketAddr> {
    listener.local_addr().map_err(|e| IngestError::Listen {
        address: "?".into(),
        reason: e.to_string(),
    })
}
