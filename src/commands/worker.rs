//! `tokenledger worker`: runs the tasks coordinators send, over the same data location.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokenledger_distributed::WorkerServer;
use tokenledger_engine::{DataLocation, MemoryLimits, SessionOptions};

use crate::args::{DataArg, parse_bytes};
use crate::error::CliError;

/// Run the tasks of queries that coordinators (`serve`, `query`, `report` with --workers)
/// send: a worker of a cluster over the same data location. Its port takes no passwords:
/// keep it on a private network that only coordinators reach.
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
}

impl WorkerArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            data,
            listen,
            memory_limit,
            spill_dir,
        } = self;
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
        if !listen.ip().is_loopback() {
            tracing::warn!(
                %listen,
                "a worker's port takes no passwords and no TLS: keep it reachable by the \
                 coordinators only (a private network, a firewall rule)"
            );
        }
        let worker = WorkerServer::start(location.clone(), &options, listen).await?;
        // Tests read the port from this line.
        eprintln!(
            "worker {} over {location} listening on http://{}",
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
