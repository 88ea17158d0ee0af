//! The worker's side: a gRPC service that runs the stages coordinators send it, over the same
//! data location, with tokenledger's functions. It answers only requests signed with the
//! cluster secret ([`crate::security`]), over TLS when it has a certificate, and checks every
//! plan before it runs it ([`crate::guard`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::{DataFusionError, exec_err};
use datafusion::execution::SessionState;
use datafusion_distributed::{
    DistributedExt, Worker, WorkerPlanRewriteHandler, WorkerQueryContext, WorkerSessionBuilder,
};
use tokenledger_engine::access::tls::PemPair;
use tokenledger_engine::cluster::ClusterQuery;
use tokenledger_engine::session::SessionFunctions;
use tokenledger_engine::{DataLocation, SessionOptions, TraceSession};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::VERSION;
use crate::codec::TokenledgerCodec;
use crate::coordinator::Channels;
use crate::error::{DistributedError, Result};
use crate::guard::PlanGuard;
use crate::security::{ClusterSecurity, Verifier, VerifyLayer};

/// A running worker.
pub struct WorkerServer {
    /// The address it listens on (the bound one: with port 0, the port chosen).
    pub address: SocketAddr,
    served: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl WorkerServer {
    /// Opens `location` (its object store, functions and `model_prices`) with `options` and
    /// serves the worker on `listen`: over TLS with `tls`, answering only requests signed with
    /// `security`'s secret, which also signs its own requests to other workers. Without TLS
    /// it listens only on loopback, unless `security` allows plain text.
    pub async fn start(
        location: DataLocation,
        options: &SessionOptions,
        listen: SocketAddr,
        security: ClusterSecurity,
        tls: Option<PemPair>,
    ) -> Result<WorkerServer> {
        if tls.is_none() && !listen.ip().is_loopback() && !security.allow_plaintext {
            return Err(DistributedError::Tls(format!(
                "worker on {listen}: every tenant's rows would leave this port unencrypted; \
                 give it --tls-cert/--tls-key, or pass --allow-plaintext on a network nobody \
                 else can read"
            )));
        }
        // No listing is kept: a worker lists only `model_prices`, and only when a coordinator's
        // prices differ from its own, which is when it must see the newest files.
        let options = SessionOptions {
            listing_ttl: Some(Duration::ZERO),
            ..options.clone()
        };
        let guard = Arc::new(PlanGuard::new(&location));
        let session = TraceSession::open(location, &options).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| serve_error(listen, e))?;
        let address = listener.local_addr().map_err(|e| serve_error(listen, e))?;
        let runtime = session.runtime_env();
        let sessions = WorkerSessions {
            functions: session.functions(),
            guard,
            session,
            address,
            reload: tokio::sync::Mutex::new(()),
            peers: Channels::new(security.clone()),
        };
        let worker = Worker::from_session_builder(sessions)
            .with_runtime_env(runtime)
            .with_version(VERSION);
        let mut server = Server::builder();
        if let Some(pem) = tls {
            let identity = Identity::from_pem(pem.cert, pem.key);
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(|e| DistributedError::Tls(format!("worker TLS: {e}")))?;
        }
        let verifier = Arc::new(Verifier::new(Arc::clone(&security.key)));
        let served = tokio::spawn(
            server
                .layer(VerifyLayer(verifier))
                .add_service(worker.into_worker_server())
                .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
        );
        Ok(WorkerServer { address, served })
    }

    /// Runs until the server fails (it does not stop by itself).
    pub async fn wait(mut self) -> Result<()> {
        let address = self.address;
        match (&mut self.served).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(serve_error(address, e)),
            Err(e) => Err(serve_error(address, e)),
        }
    }
}

impl Drop for WorkerServer {
    fn drop(&mut self) {
        self.served.abort();
    }
}

fn serve_error(address: SocketAddr, e: impl std::fmt::Display) -> DistributedError {
    DistributedError::Serve {
        address: address.to_string(),
        reason: e.to_string(),
    }
}

/// Builds the session each task runs in: tokenledger's settings, codec and functions, once
/// the coordinator's prices are known to be ours.
struct WorkerSessions {
    session: TraceSession,
    /// The session's functions, registered in each task's state.
    functions: SessionFunctions,
    address: SocketAddr,
    /// One reload of `model_prices` at a time.
    reload: tokio::sync::Mutex<()>,
    /// Checks each plan before it is registered.
    guard: Arc<dyn WorkerPlanRewriteHandler>,
    /// Signed connections to the other workers a task reads from.
    peers: Channels,
}

impl WorkerSessions {
    /// Makes sure this worker prices as the coordinator that planned the query: on a
    /// difference it reads `model_prices` again (the coordinator may have seen newer files),
    /// and fails the task if they still differ.
    async fn check_prices(&self, cluster: Option<&ClusterQuery>) -> Result<(), DataFusionError> {
        let Some(wanted) = cluster.map(|c| c.prices.as_str()).filter(|p| !p.is_empty()) else {
            return exec_err!(
                "worker {}: the coordinator sent no price fingerprint (is it tokenledger {VERSION}?)",
                self.address
            );
        };
        if self.session.prices_fingerprint() == wanted {
            return Ok(());
        }
        let _one_at_a_time = self.reload.lock().await;
        let mut ours = self.session.prices_fingerprint();
        if ours != wanted {
            ours = self.session.reload_prices().await;
            tracing::info!(prices = %ours, coordinator = %wanted, "model_prices read again");
        }
        if ours != wanted {
            return exec_err!(
                "worker {} prices token_cost with model_prices {ours}, the coordinator with \
                 {wanted}: both must read the same model_prices files",
                self.address
            );
        }
        Ok(())
    }
}

#[async_trait]
impl WorkerSessionBuilder for WorkerSessions {
    async fn build_session_state(
        &self,
        ctx: WorkerQueryContext,
    ) -> std::result::Result<SessionState, DataFusionError> {
        let mut state = ctx
            .builder
            .with_distributed_option_extension_from_headers::<ClusterQuery>(&ctx.headers)?
            .with_distributed_user_codec(TokenledgerCodec)
            .with_distributed_channel_resolver(self.peers.clone())
            .with_distributed_worker_plan_rewrite_handler(Arc::clone(&self.guard))
            .build();
        self.check_prices(ClusterQuery::of(state.config().options()))
            .await?;
        let external = |e: tokenledger_engine::EngineError| DataFusionError::External(Box::new(e));
        self.session
            .apply_settings(state.config_mut().options_mut())
            .map_err(external)?;
        self.functions.register(&mut state).map_err(external)?;
        Ok(state)
    }
}
