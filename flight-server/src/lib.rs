//! tokenledger's Arrow Flight SQL front end: what BI tools (Superset, Tableau, Power BI, DBeaver
//! through the Flight SQL JDBC driver or ADBC) and drivers connect to.
//!
//! This crate speaks the protocol only. Planning and execution belong to the session the engine
//! opens; every table, view and function of the engine and udfs crates is visible through it.

mod admission;
mod auth;
mod error;
mod executor;
mod frames;
mod handle;
mod ipc;
mod metadata;
mod outgoing;
mod placeholders;
mod planned;
mod service;
mod sql_info;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokenledger_engine::TraceSession;
use tokenledger_engine::access::tls::PemPair;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

pub use admission::{Admission, QueryLimits, Weight};
pub use auth::{Auth, Caller};
pub use error::{FlightServerError, Result};
pub use executor::QueryExecutor;
pub use frames::FlightSqlServer;
pub use metadata::{client_schema, to_client_batch};
pub use placeholders::number_placeholders;
pub use service::TokenledgerFlightSql;
pub use tokenledger_engine::access::logins::Logins;
pub use tokenledger_engine::access::users::{Grant, Users};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The login policy over the users file (`tokenledger user add`), shared with the server's
    /// other ports; without one, only loopback addresses are allowed.
    pub logins: Option<Arc<Logins>>,
    /// PEM certificate chain and private key for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Accept passwords over plaintext on a non-loopback address (behind a TLS-terminating
    /// proxy, say). Without it, `users` off loopback needs `tls`.
    pub allow_plaintext_passwords: bool,
    /// How many queries run and wait at once, and for how long.
    pub limits: QueryLimits,
}

/// Binds `options.listen` (port 0 picks a free port; the listener tells which). Refuses first,
/// before anything listens or is announced, what [`serve_on`] would refuse: a non-loopback
/// address without users, or with users but without TLS, or a users file that cannot be read.
pub async fn bind(options: &ServeOptions) -> Result<tokio::net::TcpListener> {
    auth_for(options)?;
    tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| FlightServerError::Config(format!("cannot listen on {}: {e}", options.listen)))
}

/// Who may connect: the users file's users; without one, anyone, but only on loopback.
fn auth_for(options: &ServeOptions) -> Result<Auth> {
    let loopback = options.listen.ip().is_loopback();
    match &options.logins {
        Some(_) if !loopback && options.tls.is_none() && !options.allow_plaintext_passwords => {
            Err(FlightServerError::Config(format!(
                "refusing to take passwords in plaintext on {}: give --tls-cert and --tls-key, \
                 or --allow-plaintext-passwords if a TLS proxy in front of the server encrypts them",
                options.listen
            )))
        }
        Some(logins) => Ok(Auth::with_logins(Arc::clone(logins))),
        None if loopback => Ok(Auth::Open),
        None => Err(FlightServerError::Config(format!(
            "refusing to listen on {} without --users: anyone on the network could read the data \
             (add users with `tokenledger user add NAME --users FILE`, or listen on 127.0.0.1)",
            options.listen
        ))),
    }
}

/// Serves `session` over Flight SQL on a listener from [`bind`] until `shutdown` resolves.
pub async fn serve_on(
    session: Arc<TraceSession>,
    options: &ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let admission = Arc::new(Admission::new(options.limits.clone()));
    serve_admitting(session, options, listener, shutdown, admission).await
}

/// [`serve_on`], with queries admitted by `admission`: a gate other front ends of the same
/// server (the report page) pass through too, so the limits hold for all of them together.
pub async fn serve_admitting(
    session: Arc<TraceSession>,
    options: &ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    admission: Arc<Admission>,
) -> Result<()> {
    let auth = auth_for(options)?;
    let executor = QueryExecutor::new()
        .map_err(|e| FlightServerError::Config(format!("starting the query threads: {e}")))?;
    let service = TokenledgerFlightSql::new(session, Arc::new(auth), admission, Arc::new(executor));
    let mut server = Server::builder();
    if let Some((cert, key)) = &options.tls {
        let pem = PemPair::read(cert, key)?;
        let identity = Identity::from_pem(pem.cert, pem.key);
        server = server.tls_config(ServerTlsConfig::new().identity(identity))?;
    }
    server
        .add_service(FlightSqlServer::new(service, 64 * 1024 * 1024))
        // Without TCP_NODELAY, Nagle holds back a response's last small frame until the client's
        // delayed ACK: tens of milliseconds on every small query.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
