//! `tokenledger worker`: runs the tasks coordinators send, over the same data location.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokenledger_distributed::WorkerServer;
use tokenledger_engine::{DataLocation, MemoryLimits, SessionOptions};

use tokenledger_engine::access::tls::PemPair;

use crate::args::{ClusterAuthArgs, DataArg, parse_bytes};
use crate::error::CliError;

/// Run the tasks of queries that coordinators (`serve`, `query`, `report` with --workers)
/// send: a worker of a cluster over the same data location. It answers only requests signed
/// with the cluster secret, and off loopback only over TLS.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    data: DataArg,
    /// Address to listen on for coordinators (e.g. 10.0.0.5:50061).
    #[arg(long)]
    listen: SocketAddr,
    /// Memory all tasks running here may hold together; past it they spill or fail.
    #[arg(long, default_value = "12GiB", value_parser = parse_bytes)]
    memory_limit: usize,
    /// Directory for spill files (default: the system's temporary directory).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    #[command(flatten)]
    auth: ClusterAuthArgs,
    /// PEM certificate chain for TLS on the worker's port (with --tls-key); coordinators then
    /// list it as https://host:port and trust its authority with --worker-ca.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert); must be readable by its owner only.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve without TLS on a non-loopback address, and reach other workers so (every
    /// tenant's rows cross the network unencrypted: only on a network nobody else can read).
    #[arg(long)]
    allow_plaintext: bool,
}

impl WorkerArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            data,
            listen,
            memory_limit,
            spill_dir,
            auth,
            tls_cert,
            tls_key,
            allow_plaintext,
        } = self;
        let security = auth.security(allow_plaintext)?;
        let tls = match tls_cert.zip(tls_key) {
            Some((cert, key)) => Some(PemPair::read(&cert, &key)?),
            None => None,
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let options = SessionOptions {
            memory: Some(MemoryLimits {
                pool_bytes: memory_limit,
                query_bytes: memory_limit,
                spill_dir,
                spill_bytes: 16 << 30,
            }),
            ..data.session_options()
        };
        let location = DataLocation::parse(&data.data)?;
        let worker = WorkerServer::start(location.clone(), &options, listen, security, tls).await?;
        // Tests read the port from this line.
        eprintln!(
            "worker {} over {location} listening on {scheme}://{}",
            tokenledger_distributed::VERSION,
            worker.address
        );
        tokio::select! {
            result = worker.wait() => result?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    }
}
