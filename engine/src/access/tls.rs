//! TLS for the server's HTTP ports (the report page, OTLP/HTTP), with the same certificate and
//! key as Flight SQL, so one `--tls-cert`/`--tls-key` encrypts every port.
//!
//! [`Incoming`] accepts TCP connections and runs each TLS handshake in a task of its own, with
//! a time limit: a client that stalls its handshake delays nobody else. It is a listener axum
//! serves from, as a `TcpListener` is.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::users::refuse_if_others_may_read;
use crate::error::{EngineError, Result};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection an HTTP server reads and writes: plain TCP or TLS over it.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// A server's PEM certificate chain and private key, as every port reads them (Flight SQL and
/// OTLP/gRPC hand the bytes to tonic, the HTTP ports to [`server_config`]): the key file must
/// be readable by its owner only.
pub struct PemPair {
    /// The certificate chain's PEM bytes.
    pub cert: Vec<u8>,
    /// The private key's PEM bytes.
    pub key: Vec<u8>,
}

impl PemPair {
    /// Reads `cert` and `key`, refusing a key others may read.
    pub fn read(cert: &Path, key: &Path) -> Result<Self> {
        refuse_if_others_may_read(key)?;
        let read = |path: &Path| std::fs::read(path).map_err(|e| bad_file(path, e.to_string()));
        Ok(PemPair {
            cert: read(cert)?,
            key: read(key)?,
        })
    }
}

fn bad_file(path: &Path, what: String) -> EngineError {
    EngineError::Config(format!("TLS file {}: {what}", path.display()))
}

/// The certificate chain and private key of PEM files `cert` and `key`, for a server speaking
/// the `alpn` protocols (`http/1.1`, `h2`). The key file must be readable by its owner only.
pub fn server_config(cert: &Path, key: &Path, alpn: &[&str]) -> Result<Arc<ServerConfig>> {
    let pem = PemPair::read(cert, key)?;
    let chain = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad_file(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad_file(cert, "no certificate in it".into()));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| bad_file(key, e.to_string()))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| bad_file(cert, e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// The connections a listener accepts, each past its TLS handshake when `tls` is given.
pub struct Incoming {
    connections: mpsc::Receiver<(Box<dyn Connection>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Incoming {
    /// Accepts on `listener` (on the current Tokio runtime) until dropped.
    pub fn new(listener: TcpListener, tls: Option<Arc<ServerConfig>>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, connections) = mpsc::channel(64);
        let accepting = tokio::spawn(accept(listener, tls.map(TlsAcceptor::from), sender));
        Ok(Incoming {
            connections,
            local,
            accepting,
        })
    }

    /// The next connection and its peer's address; waits forever once accepting has stopped.
    pub async fn next(&mut self) -> (Box<dyn Connection>, SocketAddr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Box<dyn Connection>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.next().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    sender: mpsc::Sender<(Box<dyn Connection>, SocketAddr)>,
) {
    while !sender.is_closed() {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, a connection reset before accept: try again soon.
                tracing::debug!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = &tls else {
            let _ = sender.send((Box::new(stream), peer)).await;
            continue;
        };
        let (acceptor, sender) = (acceptor.clone(), sender.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = sender.send((Box::new(stream), peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
