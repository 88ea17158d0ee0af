//! Argument groups several commands share, and the helpers that turn them into sessions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokenledger_distributed::{Cluster, ClusterKey, ClusterSecurity, Startup};
use tokenledger_engine::cluster::Distribution;
use tokenledger_engine::curated::AsOf;
use tokenledger_engine::{DataLocation, EngineError, MemoryLimits, SessionOptions, TraceSession};
use tokenledger_flight_server::{Logins, QueryLimits, Users};

use crate::error::CliError;

/// The data location flag shared by every reading command.
#[derive(clap::Args, Debug)]
pub struct DataArg {
    /// Local directory or s3://bucket/prefix holding spans/, outcomes/, model_prices/, baselines/.
    /// S3 is configured like the AWS CLI (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL, …).
    #[arg(long, env = "TOKENLEDGER_DATA", default_value = "testdata/sample")]
    pub data: String,
    /// Fail queries on a table file that cannot be read as its table (cut short, not Parquet,
    /// mistyped column) instead of leaving it out with a warning (see `tokenledger_files`).
    #[arg(long)]
    pub strict: bool,
}

/// Where the OTLP receiver listens and spools (`serve` and `collect`).
#[derive(clap::Args, Debug)]
pub struct SpoolArgs {
    /// Local directory where accepted spans are kept (synced) until they are in Parquet; default
    /// _ingest/spool inside the --data directory; required for s3:// data.
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// Seconds at most between a span's acknowledgement and its Parquet file.
    #[arg(long, default_value_t = 2)]
    pub flush_seconds: u64,
    /// Spans accepted but not yet in Parquet above which exporters are asked to retry later
    /// (HTTP 503 with Retry-After, gRPC UNAVAILABLE).
    #[arg(long, default_value_t = 2_000_000)]
    pub max_pending_rows: usize,
}

/// What one server lets queries use: memory, spill space, turns and time. The defaults suit a
/// 2-core, 24 GiB machine.
#[derive(clap::Args, Debug)]
pub struct LimitArgs {
    /// Memory all running queries may hold together (e.g. 12GiB, 512MiB). Sorts, aggregations
    /// and repartitions spill to disk past their share.
    #[arg(long, default_value = "12GiB", value_parser = parse_bytes)]
    pub memory_limit: usize,
    /// Memory one query may hold; a query past it fails with RESOURCE_EXHAUSTED.
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    pub query_memory_limit: usize,
    /// Directory for spill files (default: the system's temporary directory).
    #[arg(long)]
    pub spill_dir: Option<PathBuf>,
    /// Spill files all queries may keep at once.
    #[arg(long, default_value = "16GiB", value_parser = parse_bytes)]
    pub spill_limit: usize,
    /// Queries reading tables that run at once; more wait their turn.
    #[arg(long, default_value_t = QueryLimits::default().max_running)]
    pub max_running_queries: usize,
    /// Of those, how many one user may run at once.
    #[arg(long, default_value_t = QueryLimits::default().max_running_per_user)]
    pub max_running_per_user: usize,
    /// Queries that may wait for a turn; past that, RESOURCE_EXHAUSTED "server busy".
    #[arg(long, default_value_t = QueryLimits::default().max_queued)]
    pub max_queued_queries: usize,
    /// Seconds from a query's arrival to its last batch, waiting included (DEADLINE_EXCEEDED).
    #[arg(long, default_value_t = QueryLimits::default().timeout.as_secs())]
    pub query_timeout: u64,
}

impl LimitArgs {
    pub fn memory(&self) -> MemoryLimits {
        MemoryLimits {
            pool_bytes: self.memory_limit,
            query_bytes: self.query_memory_limit.min(self.memory_limit),
            spill_dir: self.spill_dir.clone(),
            spill_bytes: self.spill_limit as u64,
        }
    }

    pub fn queries(&self) -> QueryLimits {
        QueryLimits {
            max_running: self.max_running_queries,
            max_running_per_user: self.max_running_per_user,
            max_queued: self.max_queued_queries,
            timeout: Duration::from_secs(self.query_timeout.max(1)),
        }
    }
}

/// Reads a size: a number of bytes, or a number with KiB, MiB, GiB, TiB (or K, M, G, T,
/// KB, MB, GB, TB: all powers of 1024).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB or 12GiB"))?;
    let power = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    Ok((number * 1024f64.powi(power)) as usize)
}

/// TLS for every port a command opens (Flight SQL, the report page, OTLP over HTTP and gRPC),
/// and the one rule for passwords: never in plain text off loopback unless explicitly allowed.
#[derive(clap::Args, Debug)]
pub struct TlsArgs {
    /// PEM certificate chain for TLS on every port (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS (with --tls-cert); must be readable by its owner only.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Take passwords without TLS on a non-loopback address (only behind a TLS proxy).
    #[arg(long)]
    pub allow_plaintext_passwords: bool,
}

impl TlsArgs {
    /// The certificate and key files, when given.
    pub fn files(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.clone().zip(self.tls_key.clone())
    }
}

/// The workers that run a command's queries (`query`, `report`, `serve`).
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Run queries across these workers (`tokenledger worker`), comma-separated host:port: this
    /// process plans and coordinates, the workers scan and compute. Every worker must answer
    /// and run this tokenledger build. Without it queries run here.
    #[arg(long, env = "TOKENLEDGER_WORKERS", value_delimiter = ',')]
    pub workers: Vec<String>,
    #[command(flatten)]
    pub auth: ClusterAuthArgs,
    /// With --workers: reach http:// workers off loopback in plain text (every tenant's rows
    /// cross the network unencrypted: only on a network nobody else can read).
    #[arg(long)]
    pub allow_plaintext_workers: bool,
    /// With --workers: Parquet bytes one partition scans. A scan takes one task per this many
    /// bytes times the partitions per task, up to one per worker; lower spreads smaller tables
    /// over more workers.
    #[arg(long, env = "TOKENLEDGER_PARTITION_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub partition_bytes: usize,
}

impl ClusterArgs {
    /// The coordinator's part of the session options, after checking the workers.
    pub async fn distribution(
        &self,
        startup: Startup,
    ) -> Result<Option<Arc<dyn Distribution>>, CliError> {
        let workers = Cluster::parse_addresses(&self.workers)?;
        if workers.is_empty() {
            return Ok(None);
        }
        let security = self.auth.security(self.allow_plaintext_workers)?;
        let cluster = Cluster::connect(workers, startup, security).await?;
        tracing::info!(workers = ?cluster.workers(), "coordinating");
        Ok(Some(cluster.distribution(self.partition_bytes)))
    }
}

/// How the nodes of a cluster know each other (coordinators and `worker`).
#[derive(clap::Args, Debug)]
pub struct ClusterAuthArgs {
    /// File holding the secret every node of the cluster shares (32 bytes or more, readable by
    /// its owner only; e.g. `openssl rand -hex 32`). Requests between nodes are signed with it;
    /// it never crosses the network. Or set TOKENLEDGER_CLUSTER_SECRET to the secret itself.
    #[arg(long, env = "TOKENLEDGER_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// PEM certificate of the authority that signed the workers' TLS certificates, for workers
    /// listed as https://host:port.
    #[arg(long, env = "TOKENLEDGER_WORKER_CA")]
    pub worker_ca: Option<PathBuf>,
}

/// The variable that may hold the cluster secret itself.
const CLUSTER_SECRET_VARIABLE: &str = "TOKENLEDGER_CLUSTER_SECRET";

impl ClusterAuthArgs {
    /// The secret and certificate authority these flags name; the secret is required.
    pub fn security(&self, allow_plaintext: bool) -> Result<ClusterSecurity, CliError> {
        let key = match (
            &self.cluster_secret_file,
            std::env::var_os(CLUSTER_SECRET_VARIABLE),
        ) {
            (Some(file), _) => ClusterKey::from_file(file)?,
            (None, Some(secret)) => ClusterKey::from_secret(secret.as_encoded_bytes())?,
            (None, None) => {
                return Err(CliError::Usage(format!(
                    "a cluster needs a shared secret: --cluster-secret-file FILE or \
                     {CLUSTER_SECRET_VARIABLE} (the same on every node)"
                )));
            }
        };
        let worker_ca = match &self.worker_ca {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| CliError::Usage(format!("--worker-ca {}: {e}", path.display())))?,
            ),
            None => None,
        };
        Ok(ClusterSecurity {
            worker_ca,
            allow_plaintext,
            ..ClusterSecurity::new(key)
        })
    }
}

impl DataArg {
    /// The session options these flags ask for.
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            strict: self.strict,
            ..SessionOptions::default()
        }
    }
}

/// `--as-of`: `YYYY-MM-DD` or an RFC 3339 time.
pub fn parse_as_of(text: &str) -> Result<AsOf, String> {
    AsOf::parse_time(text)
        .ok_or_else(|| format!("{text:?}: expected YYYY-MM-DD or an RFC 3339 time"))
}

/// A session over `data` as of `as_of`, its queries run on `cluster`'s workers if any.
pub async fn open_as_of(
    data: &DataArg,
    as_of: Option<AsOf>,
    cluster: &ClusterArgs,
) -> Result<TraceSession, CliError> {
    let options = SessionOptions {
        as_of,
        distribution: cluster.distribution(Startup::AllWorkers).await?,
        ..data.session_options()
    };
    Ok(TraceSession::open(DataLocation::parse(&data.data)?, &options).await?)
}

/// A session over `data`.
pub async fn open(data: &DataArg) -> Result<TraceSession, EngineError> {
    TraceSession::open(DataLocation::parse(&data.data)?, &data.session_options()).await
}

/// The login policy over the users file at `path`, shared by every port of one process (so a
/// lockout on one holds on all). Warns about users whose lines predate tenancy.
pub fn load_logins(path: &std::path::Path) -> Result<Arc<Logins>, CliError> {
    let users = Users::load(path)?;
    let without = users.without_tenants();
    if !without.is_empty() {
        tracing::warn!(
            users = %without.join(", "),
            "users without tenants (lines from before tenancy) see no tenant's rows: \
             give them tenants with `tokenledger user grant NAME --tenant T`"
        );
    }
    Ok(Arc::new(Logins::new(users)))
}
