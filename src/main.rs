//! `tokenledger`: query agent decision traces by what they cost and what they bought.

mod error;
mod output;

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use datafusion::sql::parser::DFParser;
use indicatif::{ProgressBar, ProgressStyle};
use tokenledger_distributed::{Cluster, Startup, WorkerServer};
use tokenledger_engine::cluster::Distribution;
use tokenledger_engine::curated::{
    AsOf, CompactOptions, CompactProgress, DEFAULT_AUDIT_WINDOW, MaintainOptions,
};
use tokenledger_engine::filter::{DateRange, parse_date};
use tokenledger_engine::focus::focus_rows;
use tokenledger_engine::import::{import_csv, import_litellm};
use tokenledger_engine::reports;
use tokenledger_engine::schema::{self, TABLES};
use tokenledger_engine::{
    Access, DataLocation, EngineError, MemoryLimits, SessionOptions, TraceSession,
};
use tokenledger_flight_server::{Admission, Grant, QueryLimits, ServeOptions, Users, Weight};
use tokenledger_gen::{GenOptions, generate};
use tokenledger_ingest::{ExporterAuth, IngestOptions, Ingestor, Receiver, ReceiverConfig};
use tokenledger_web::{Gate, PageAuth};

use crate::error::CliError;
use crate::output::Format;

/// Columnar analytics over LLM agent decision traces: what each token buys.
#[derive(Parser, Debug)]
#[command(name = "tokenledger", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The data location flag shared by every reading command.
#[derive(clap::Args, Debug)]
struct DataArg {
    /// Local directory or s3://bucket/prefix holding spans/, outcomes/, model_prices/, baselines/.
    /// S3 is configured like the AWS CLI (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    /// AWS_ENDPOINT_URL, …).
    #[arg(long, env = "TOKENLEDGER_DATA", default_value = "testdata/sample")]
    data: String,
    /// Fail queries on a table file that cannot be read as its table (cut short, not Parquet,
    /// mistyped column) instead of leaving it out with a warning (see `tokenledger_files`).
    #[arg(long)]
    strict: bool,
}

/// Where the OTLP receiver listens and spools (`serve` and `collect`).
#[derive(clap::Args, Debug)]
struct SpoolArgs {
    /// Local directory where accepted spans are kept (synced) until they are in Parquet; default
    /// <data>/_ingest/spool, required for s3:// data.
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Seconds at most between a span's acknowledgement and its Parquet file.
    #[arg(long, default_value_t = 2)]
    flush_seconds: u64,
    /// Spans accepted but not yet in Parquet above which exporters are asked to retry later
    /// (HTTP 503 with Retry-After, gRPC UNAVAILABLE).
    #[arg(long, default_value_t = 2_000_000)]
    max_pending_rows: usize,
}

/// What one server lets queries use: memory, spill space, turns and time. The defaults suit a
/// 2-core, 24 GiB machine.
#[derive(clap::Args, Debug)]
struct LimitArgs {
    /// Memory all running queries may hold together (e.g. 12GiB, 512MiB). Sorts, aggregations
    /// and repartitions spill to disk past their share.
    #[arg(long, default_value = "12GiB", value_parser = parse_bytes)]
    memory_limit: usize,
    /// Memory one query may hold; a query past it fails with RESOURCE_EXHAUSTED.
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    query_memory_limit: usize,
    /// Directory for spill files (default: the system's temporary directory).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Spill files all queries may keep at once.
    #[arg(long, default_value = "16GiB", value_parser = parse_bytes)]
    spill_limit: usize,
    /// Queries reading tables that run at once; more wait their turn.
    #[arg(long, default_value_t = QueryLimits::default().max_running)]
    max_running_queries: usize,
    /// Of those, how many one user may run at once.
    #[arg(long, default_value_t = QueryLimits::default().max_running_per_user)]
    max_running_per_user: usize,
    /// Queries that may wait for a turn; past that, RESOURCE_EXHAUSTED "server busy".
    #[arg(long, default_value_t = QueryLimits::default().max_queued)]
    max_queued_queries: usize,
    /// Seconds from a query's arrival to its last batch, waiting included (DEADLINE_EXCEEDED).
    #[arg(long, default_value_t = QueryLimits::default().timeout.as_secs())]
    query_timeout: u64,
}

impl LimitArgs {
    fn memory(&self) -> MemoryLimits {
        MemoryLimits {
            pool_bytes: self.memory_limit,
            query_bytes: self.query_memory_limit.min(self.memory_limit),
            spill_dir: self.spill_dir.clone(),
            spill_bytes: self.spill_limit as u64,
        }
    }

    fn queries(&self) -> QueryLimits {
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
fn parse_bytes(text: &str) -> Result<usize, String> {
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

/// The workers that run a command's queries (`query`, `report`, `serve`).
#[derive(clap::Args, Debug)]
struct ClusterArgs {
    /// Run queries across these workers (`tokenledger worker`), comma-separated host:port: this
    /// process plans and coordinates, the workers scan and compute. Every worker must answer
    /// and run this tokenledger build. Without it queries run here.
    #[arg(long, env = "TOKENLEDGER_WORKERS", value_delimiter = ',')]
    workers: Vec<String>,
    /// With --workers: Parquet bytes one partition scans. A scan takes one task per this many
    /// bytes times the partitions per task, up to one per worker; lower spreads smaller tables
    /// over more workers.
    #[arg(long, env = "TOKENLEDGER_PARTITION_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    partition_bytes: usize,
}

impl ClusterArgs {
    /// The coordinator's part of the session options, after checking the workers.
    async fn distribution(
        &self,
        startup: Startup,
    ) -> Result<Option<Arc<dyn Distribution>>, CliError> {
        let workers = Cluster::parse_addresses(&self.workers)?;
        if workers.is_empty() {
            return Ok(None);
        }
        let cluster = Cluster::connect(workers, startup).await?;
        tracing::info!(workers = ?cluster.workers(), "coordinating");
        Ok(Some(cluster.distribution(self.partition_bytes)))
    }
}

impl DataArg {
    fn session_options(&self) -> SessionOptions {
        SessionOptions {
            strict: self.strict,
            ..SessionOptions::default()
        }
    }
}

// Parsed once per process: the size of its largest variant (`serve`) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL over the trace tables.
    Query {
        #[command(flatten)]
        data: DataArg,
        /// The SQL to run (one or more statements). Omit it to read SQL from -f or stdin.
        sql: Option<String>,
        /// Read SQL from this file.
        #[arg(short = 'f', long = "file", conflicts_with = "sql")]
        file: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write the result here instead of stdout (required for parquet).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print each statement's wall time and row count to stderr.
        #[arg(long)]
        timing: bool,
        /// Read the tables as they had been compacted by this time (YYYY-MM-DD or RFC 3339):
        /// an audit's answer, which later compactions do not change.
        #[arg(long, value_parser = parse_as_of)]
        as_of: Option<AsOf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Move settled landing files into each table's curated Delta table (`<data>/_curated/`),
    /// without losing or doubling a row; delete absorbed landing files after the grace period.
    Compact {
        #[command(flatten)]
        data: DataArg,
        /// Only this table (spans, outcomes, model_prices or baselines).
        #[arg(long)]
        table: Option<String>,
        /// Seconds a landing file must have existed before it is compacted.
        #[arg(long, default_value_t = 60)]
        min_age: u64,
        /// Seconds after its compaction a landing file is deleted; longer than any query
        /// (the server's --query-timeout is 300).
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Size of the data files written.
        #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
        target_file_size: usize,
        /// Landing bytes per commit: each commit is one step of progress.
        #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
        batch_size: usize,
        /// Days of history kept readable for audits: the table's retention and the vacuum's.
        #[arg(long, default_value_t = DEFAULT_AUDIT_WINDOW.as_secs() / 86_400)]
        audit_window_days: u64,
        /// Also rewrite the curated table's small files into files of --target-file-size.
        #[arg(long)]
        optimize: bool,
        /// Also delete data files that no version inside the audit window needs.
        #[arg(long)]
        vacuum: bool,
    },
    /// List the tables with their files, bytes and rows.
    Tables {
        #[command(flatten)]
        data: DataArg,
    },
    /// Generate a synthetic, deterministic trace data set.
    Gen {
        /// Where to write: a local directory or s3://bucket/prefix.
        #[arg(long)]
        out: String,
        /// Work items to simulate (about 14 spans each).
        #[arg(long, default_value_t = 10_000)]
        work_items: u64,
        /// Random seed: the same seed writes the same bytes.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Length of the simulated period in days.
        #[arg(long, default_value_t = 84)]
        days: u32,
    },
    /// Run a report (a view over the trace tables); without a name, list the reports.
    Report {
        #[command(flatten)]
        data: DataArg,
        /// The report to run.
        name: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write the result here instead of stdout (required for parquet).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Report on the tables as they had been compacted by this time (YYYY-MM-DD or RFC
        /// 3339).
        #[arg(long, value_parser = parse_as_of)]
        as_of: Option<AsOf>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Serve the data over Arrow Flight SQL, for BI tools (JDBC, ADBC) and drivers.
    Serve {
        #[command(flatten)]
        data: DataArg,
        /// Address to listen on. Anything but loopback needs --users.
        #[arg(long, default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Users file written by `tokenledger user add` (argon2 password hashes and each user's
        /// tenants). Off loopback it needs TLS or --allow-plaintext-passwords.
        #[arg(long)]
        users: Option<PathBuf>,
        /// Take passwords without TLS on a non-loopback address (only behind a TLS proxy).
        #[arg(long)]
        allow_plaintext_passwords: bool,
        #[command(flatten)]
        limits: LimitArgs,
        /// PEM certificate chain for TLS (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for TLS (with --tls-cert).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Seconds a table's file listing is reused before new files are looked for.
        #[arg(long, default_value_t = 10)]
        refresh: u64,
        /// Also receive OpenTelemetry traces over OTLP/gRPC here (e.g. 127.0.0.1:4317).
        #[arg(long)]
        otlp_grpc: Option<SocketAddr>,
        /// Also receive OpenTelemetry traces over OTLP/HTTP here (e.g. 127.0.0.1:4318).
        #[arg(long)]
        otlp_http: Option<SocketAddr>,
        /// Serve the report page (charts of every report) here [default: 127.0.0.1:8080, left
        /// out with a warning when that port is taken]. Off loopback it needs --users and
        /// --allow-plaintext-passwords (plain HTTP: put a TLS proxy in front).
        #[arg(long, conflicts_with = "no_http")]
        http: Option<SocketAddr>,
        /// Do not serve the report page.
        #[arg(long)]
        no_http: bool,
        #[command(flatten)]
        spool: SpoolArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run the tasks of queries that coordinators (`serve`, `query`, `report` with --workers)
    /// send: a worker of a cluster over the same data location. Its port takes no passwords:
    /// keep it on a private network that only coordinators reach.
    Worker {
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
    },
    /// Receive OpenTelemetry traces (OTLP over gRPC and HTTP) into the data location, without
    /// serving queries: a separate ingest tier.
    Collect {
        /// Local directory or s3://bucket/prefix to write spans/ and outcomes/ files into.
        #[arg(long, env = "TOKENLEDGER_DATA")]
        data: String,
        /// OTLP/gRPC address. Anything but loopback needs --users.
        #[arg(long, default_value = tokenledger_ingest::DEFAULT_GRPC)]
        otlp_grpc: SocketAddr,
        /// OTLP/HTTP address. Anything but loopback needs --users.
        #[arg(long, default_value = tokenledger_ingest::DEFAULT_HTTP)]
        otlp_http: SocketAddr,
        /// Users file: exporters authenticate with Basic or Bearer user:password.
        #[arg(long)]
        users: Option<PathBuf>,
        #[command(flatten)]
        spool: SpoolArgs,
    },
    /// Manage the users of `tokenledger serve`.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List tokenledger's SQL functions with their syntax and meaning.
    Functions,
    /// Manage model prices.
    Prices {
        #[command(subcommand)]
        command: PricesCommand,
    },
    /// Export the data for other tools.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Load a CSV file into a table (as one Parquet file named after the CSV).
    Import {
        #[command(flatten)]
        data: DataArg,
        /// Target table: spans, outcomes, model_prices or baselines.
        #[arg(long)]
        table: String,
        /// CSV files with a header row of column names.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ExportCommand {
    /// AI spend as FinOps FOCUS 1.0 cost and usage rows: one per day, provider, model,
    /// tenant, token type and pricing method (x_PricedBy says which were priced by token_cost).
    Focus {
        #[command(flatten)]
        data: DataArg,
        /// First day (UTC), YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// Last day (UTC, included), YYYY-MM-DD.
        #[arg(long)]
        to: String,
        /// File to write: .parquet or .csv.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user (or change their password and tenants); the password is read from stdin.
    Add {
        /// User name.
        name: String,
        /// The users file (created if missing).
        #[arg(long)]
        users: PathBuf,
        /// A tenant whose rows the user sees (repeat for several); '*' = every tenant, plus
        /// what only administrators see (tokenledger_files, EXPLAIN).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
    },
    /// Change a user's tenants, keeping their password.
    Grant {
        /// User name.
        name: String,
        /// The users file.
        #[arg(long)]
        users: PathBuf,
        /// The user's tenants from now on (repeat for several); '*' = every tenant.
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PricesCommand {
    /// Import prices from LiteLLM's model_prices_and_context_window.json (USD per token).
    Import {
        #[command(flatten)]
        data: DataArg,
        /// The LiteLLM JSON file.
        #[arg(long)]
        litellm: PathBuf,
        /// From when the prices apply: YYYY-MM-DD (midnight UTC) or an RFC 3339 time.
        #[arg(long)]
        valid_from: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Two TLS providers are compiled in (ring for tonic, aws-lc-rs through deltalake-core's
    // HTTP client); rustls needs one chosen before any TLS is configured. Only fails if one was
    // installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // A server logs one line per query; one-shot commands only warnings.
    let default_level = if matches!(
        cli.command,
        Command::Serve { .. } | Command::Collect { .. } | Command::Worker { .. }
    ) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOKENLEDGER_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in log files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.user_message());
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Serve {
            data,
            listen,
            users,
            allow_plaintext_passwords,
            limits,
            tls_cert,
            tls_key,
            refresh,
            otlp_grpc,
            otlp_http,
            http,
            no_http,
            spool,
            cluster,
        } => {
            let options = SessionOptions {
                listing_ttl: Some(Duration::from_secs(refresh)),
                memory: Some(limits.memory()),
                distribution: cluster.distribution(Startup::Tolerant).await?,
                ..data.session_options()
            };
            let session =
                Arc::new(TraceSession::open(DataLocation::parse(&data.data)?, &options).await?);
            let serve = ServeOptions {
                listen,
                users,
                tls: tls_cert.zip(tls_key),
                allow_plaintext_passwords,
                limits: limits.queries(),
            };
            let listener = tokenledger_flight_server::bind(&serve).await?;
            // The bound address, not the requested one: with port 0 callers learn the port here.
            let address = listener.local_addr().map_err(EngineError::from)?;
            let scheme = if serve.tls.is_some() {
                "grpc+tls"
            } else {
                "grpc"
            };
            eprintln!(
                "serving {} over Arrow Flight SQL on {scheme}://{address}",
                session.location
            );
            // One gate for Flight SQL and the report page: the limits hold for both together.
            let admission = Arc::new(Admission::new(serve.limits.clone()));
            let page = match no_http {
                true => None,
                false => start_page(http, &serve, &session, &admission).await?,
            };
            tracing::info!(
                memory_limit = limits.memory_limit,
                query_memory_limit = limits.query_memory_limit,
                spill_limit = limits.spill_limit,
                max_running_queries = limits.max_running_queries,
                max_running_per_user = limits.max_running_per_user,
                max_queued_queries = limits.max_queued_queries,
                query_timeout_s = limits.query_timeout,
                "limits"
            );
            // Kept alive while the Flight server runs; dropped (stopped) with it.
            let _receiver = match (otlp_grpc, otlp_http) {
                (None, None) => None,
                (grpc, http) => Some(
                    start_receiver(&data.data, serve.users.as_deref(), grpc, http, &spool).await?,
                ),
            };
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            tokenledger_flight_server::serve_admitting(
                session, &serve, listener, shutdown, admission,
            )
            .await?;
            if let Some(page) = page {
                page.abort();
            }
            Ok(())
        }
        Command::Worker {
            data,
            listen,
            memory_limit,
            spill_dir,
        } => {
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
        Command::Collect {
            data,
            otlp_grpc,
            otlp_http,
            users,
            spool,
        } => {
            let receiver = start_receiver(
                &data,
                users.as_deref(),
                Some(otlp_grpc),
                Some(otlp_http),
                &spool,
            )
            .await?;
            tokio::select! {
                result = receiver.wait() => result?,
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    users,
                    tenants,
                },
        } => {
            let grant = Grant::from_tenants(&tenants)?;
            let password = read_password(&name)?;
            Users::add(&users, &name, &password, &grant)?;
            eprintln!(
                "user {name} saved in {} with tenants {}",
                users.display(),
                grant.scope()
            );
            Ok(())
        }
        Command::User {
            command:
                UserCommand::Grant {
                    name,
                    users,
                    tenants,
                },
        } => {
            let grant = Grant::from_tenants(&tenants)?;
            Users::grant(&users, &name, &grant)?;
            eprintln!("user {name} now sees tenants {}", grant.scope());
            Ok(())
        }
        other => Ok(run_data_command(other).await?),
    }
}

/// Starts the OTLP receiver writing into `data`, announcing its addresses on stderr (tests read
/// the ports from there).
async fn start_receiver(
    data: &str,
    users: Option<&std::path::Path>,
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    spool: &SpoolArgs,
) -> Result<tokenledger_ingest::Receiver, CliError> {
    let location = DataLocation::parse(data)?;
    let spool_dir = spool
        .spool
        .clone()
        .or_else(|| IngestOptions::local_spool_dir(&location))
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{location} is not on local disk: give --spool DIR, a local directory where \
                 accepted spans wait (synced) until they are stored"
            ))
        })?;
    if let DataLocation::Local(dir) = &location {
        std::fs::create_dir_all(dir).map_err(EngineError::from)?;
    }
    let store = location.open_store(&[])?;
    let options = IngestOptions {
        flush_age: Duration::from_secs(spool.flush_seconds.max(1)),
        max_pending_rows: spool.max_pending_rows,
        ..IngestOptions::new(spool_dir)
    };
    let ingestor = Ingestor::start(store, location.clone(), options)?;
    let auth = match users {
        Some(path) => {
            let users = Arc::new(Users::load(path)?);
            let check: tokenledger_ingest::CheckPassword =
                Arc::new(move |name, password| users.verify(name, password).is_some());
            Some(Arc::new(ExporterAuth::new(check)))
        }
        None => None,
    };
    let receiver = Receiver::start(ingestor, ReceiverConfig { grpc, http, auth }).await?;
    if let Some(address) = receiver.grpc {
        eprintln!("receiving OTLP/gRPC traces into {location} on http://{address}");
    }
    if let Some(address) = receiver.http {
        eprintln!("receiving OTLP/HTTP traces into {location} on http://{address}");
    }
    Ok(receiver)
}

/// Reads a password from stdin, without echo when stdin is a terminal.
fn read_password(name: &str) -> Result<String, EngineError> {
    let password = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("password for {name}: "))?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    Ok(password)
}

async fn run_data_command(command: Command) -> Result<(), CliError> {
    match command {
        Command::Query {
            data,
            sql,
            file,
            format,
            output,
            timing,
            as_of,
            cluster,
        } => {
            let sql = read_sql(sql, file)?;
            let session = open_as_of(&data, as_of, &cluster).await?;
            run_sql(&session, &sql, format, output.as_deref(), timing).await
        }
        Command::Compact {
            data,
            table,
            min_age,
            grace,
            target_file_size,
            batch_size,
            audit_window_days,
            optimize,
            vacuum,
        } => {
            let session = open(&data).await?;
            let tables: Vec<&'static schema::TableDef> = match &table {
                Some(name) => vec![*TABLES.iter().find(|t| t.name == name).ok_or_else(|| {
                    CliError::Usage(format!(
                        "unknown table {name:?}: spans, outcomes, model_prices or baselines"
                    ))
                })?],
                None => TABLES.to_vec(),
            };
            let audit_window = Duration::from_secs(audit_window_days * 86_400);
            let options = CompactOptions {
                min_age: Duration::from_secs(min_age),
                grace: Duration::from_secs(grace),
                target_file_size: target_file_size as u64,
                batch_bytes: batch_size as u64,
                audit_window,
            };
            let maintain = MaintainOptions {
                optimize,
                vacuum,
                target_file_size: target_file_size as u64,
                audit_window,
            };
            for table in tables {
                let report = session
                    .compact(table, &options, &mut print_compact_progress)
                    .await?;
                if report.versions.is_empty() {
                    println!("{}: nothing to compact", table.name);
                } else {
                    println!(
                        "{}: {} landing files, {} rows -> curated versions {}",
                        table.name,
                        report.files,
                        report.rows,
                        version_range(&report.versions)
                    );
                }
                if optimize || vacuum {
                    let done = session.maintain(table, &maintain).await?;
                    if optimize {
                        match done.version {
                            Some(v) => println!(
                                "{}: optimized {} files into {} (version {v})",
                                table.name, done.files_removed, done.files_added
                            ),
                            None => println!("{}: nothing to optimize", table.name),
                        }
                    }
                    if vacuum {
                        println!(
                            "{}: vacuum deleted {} data files older than the audit window",
                            table.name, done.files_vacuumed
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Tables { data } => {
            let session = open(&data).await?;
            let summaries = session.table_summaries().await?;
            let summaries_have_quarantine = summaries.iter().any(|s| s.quarantined > 0);
            println!(
                "{:<14} {:>12} {:>7} {:>14} {:>12} {:>8}",
                "table", "rows", "files", "bytes", "quarantined", "curated"
            );
            for s in summaries {
                let curated = s
                    .curated_version
                    .map_or_else(|| "-".to_string(), |v| format!("v{v}"));
                println!(
                    "{:<14} {:>12} {:>7} {:>14} {:>12} {:>8}",
                    s.table, s.rows, s.files, s.bytes, s.quarantined, curated
                );
            }
            if summaries_have_quarantine {
                eprintln!(
                    "quarantined files are left out of queries: SELECT * FROM tokenledger_files WHERE status <> 'ok'"
                );
            }
            Ok(())
        }
        Command::Gen {
            out,
            work_items,
            seed,
            days,
        } => {
            let location = DataLocation::parse(&out)?;
            let store = location.open_store(&[])?;
            let options = GenOptions {
                work_items,
                seed,
                days,
                ..GenOptions::default()
            };
            let progress = ProgressBar::new(work_items).with_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} work items {per_sec} eta {eta}")
                    .expect("static progress template"),
            );
            let started = Instant::now();
            let bar = progress.clone();
            let summary =
                generate(store, &location, &options, Arc::new(move |n| bar.inc(n))).await?;
            progress.finish_and_clear();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "wrote {} work items, {} spans in {} files to {location} in {secs:.2} s ({:.0} spans/s)",
                summary.work_items,
                summary.spans,
                summary.files,
                summary.spans as f64 / secs
            );
            Ok(())
        }
        Command::Report { name: None, .. } => {
            for report in reports::reports() {
                println!("{:<20} {}", report.name, report.summary());
            }
            Ok(())
        }
        Command::Report {
            data,
            name: Some(name),
            format,
            output,
            as_of,
            cluster,
        } => {
            let Some(report) = reports::view(&name) else {
                let names: Vec<_> = reports::reports().map(|r| r.name).collect();
                return Err(CliError::Usage(format!(
                    "unknown report {name:?}; reports are {}",
                    names.join(", ")
                )));
            };
            let session = open_as_of(&data, as_of, &cluster).await?;
            let frame = session.report(report).await?;
            let rows = session.execute(frame).await?;
            output::write(rows, format, output.as_deref()).await?;
            Ok(())
        }
        Command::Serve { .. }
        | Command::User { .. }
        | Command::Collect { .. }
        | Command::Worker { .. } => {
            unreachable!("handled by run")
        }
        Command::Functions => {
            for (name, kind, doc) in tokenledger_udfs::catalog() {
                println!(
                    "{name} ({kind})\n  {}\n  {}\n",
                    doc.syntax_example, doc.description
                );
            }
            Ok(())
        }
        Command::Prices {
            command:
                PricesCommand::Import {
                    data,
                    litellm,
                    valid_from,
                },
        } => {
            let valid_from = parse_instant(&valid_from)?;
            let location = DataLocation::parse(&data.data)?;
            let store = location.open_store(&[])?;
            let models = import_litellm(store, &location, &litellm, valid_from).await?;
            eprintln!(
                "{}: {models} model prices into model_prices",
                litellm.display()
            );
            Ok(())
        }
        Command::Export {
            command:
                ExportCommand::Focus {
                    data,
                    from,
                    to,
                    out,
                },
        } => {
            let range = DateRange::new(parse_date("--from", &from)?, parse_date("--to", &to)?)?;
            let format = match out.extension().and_then(|e| e.to_str()) {
                Some("parquet") => Format::Parquet,
                Some("csv") => Format::Csv,
                _ => {
                    return Err(CliError::Usage(format!(
                        "--out {}: name a .parquet or .csv file",
                        out.display()
                    )));
                }
            };
            let session = open(&data).await?;
            let frame = focus_rows(&session, range).await?;
            let rows = output::write(session.execute(frame).await?, format, Some(&out)).await?;
            eprintln!(
                "{}: {rows} FOCUS rows for {} to {}",
                out.display(),
                range.from,
                range.to
            );
            Ok(())
        }
        Command::Import { data, table, files } => {
            let table = schema::table(&table).ok_or_else(|| {
                let names: Vec<_> = TABLES.iter().map(|t| t.name).collect();
                CliError::Usage(format!(
                    "unknown table {table:?}; tables are {}",
                    names.join(", ")
                ))
            })?;
            let location = DataLocation::parse(&data.data)?;
            let store = location.open_store(&[])?;
            for file in files {
                let rows = import_csv(Arc::clone(&store), &location, table, &file).await?;
                eprintln!("{}: {rows} rows into {}", file.display(), table.name);
            }
            Ok(())
        }
    }
}

/// Where the report page listens unless told otherwise.
const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// Starts the report page over `session` with `serve`'s users, on `http` or else the default
/// address (left out, with a warning, when something else holds that port).
async fn start_page(
    http: Option<SocketAddr>,
    serve: &ServeOptions,
    session: &Arc<TraceSession>,
    admission: &Arc<Admission>,
) -> Result<Option<tokio::task::JoinHandle<()>>, CliError> {
    let address = http.unwrap_or_else(|| DEFAULT_HTTP.parse().expect("a socket address"));
    if !address.ip().is_loopback() && (serve.users.is_none() || !serve.allow_plaintext_passwords) {
        return Err(CliError::Usage(format!(
            "--http {address}: off loopback the report page needs --users and \
             --allow-plaintext-passwords (it takes passwords over plain HTTP: put a TLS proxy in front)"
        )));
    }
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) if http.is_none() => {
            tracing::warn!(%address, error = %e, "report page not started: pass --http ADDR");
            eprintln!("report page not started: {address}: {e} (pass --http ADDR)");
            return Ok(None);
        }
        Err(e) => return Err(CliError::Usage(format!("--http {address}: {e}"))),
    };
    let auth = match &serve.users {
        Some(path) => {
            let users = Users::load(path)?;
            PageAuth::users(Arc::new(move |user: &str, password: &str| {
                users.verify(user, password)
            }))
        }
        None => PageAuth::Open,
    };
    // Tests read the port from this line.
    eprintln!(
        "report page on http://{}/",
        listener.local_addr().map_err(EngineError::from)?
    );
    let admission = Arc::clone(admission);
    // A page load is one query of its user: it waits for a turn like a Flight SQL query.
    let gate: Gate = Arc::new(move |user: String| {
        let admission = Arc::clone(&admission);
        Box::pin(async move {
            let deadline = Instant::now() + admission.limits().timeout;
            match admission.admit(&user, Weight::Reads, deadline).await {
                Ok(turn) => Ok(Box::new(turn) as Box<dyn Send>),
                Err(refused) => Err(refused.message().to_string()),
            }
        })
    });
    let session = Arc::clone(session);
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = tokenledger_web::serve(listener, session, auth, Some(gate)).await {
            tracing::error!(error = %e, "the report page stopped");
        }
    })))
}

/// Progress of a compaction, on stderr.
fn print_compact_progress(progress: CompactProgress) {
    match progress {
        CompactProgress::Planned {
            table,
            files,
            bytes,
            commits,
        } if files > 0 => eprintln!(
            "{table}: compacting {files} landing files ({:.1} MiB) in {commits} commits",
            bytes as f64 / (1u64 << 20) as f64
        ),
        CompactProgress::Committed {
            table,
            version,
            files,
            rows,
        } => eprintln!("{table}: version {version} committed ({files} landing files, {rows} rows)"),
        CompactProgress::Cleaned { table, files } => {
            eprintln!("{table}: deleted {files} landing files compacted more than --grace ago")
        }
        CompactProgress::Planned { .. } => {}
    }
}

/// `3` or `3-7`.
fn version_range(versions: &[u64]) -> String {
    match (versions.first(), versions.last()) {
        (Some(first), Some(last)) if first != last => format!("{first}-{last}"),
        (Some(first), _) => first.to_string(),
        _ => String::new(),
    }
}

/// `--as-of`: `YYYY-MM-DD` or an RFC 3339 time.
fn parse_as_of(text: &str) -> Result<AsOf, String> {
    AsOf::parse_time(text)
        .ok_or_else(|| format!("{text:?}: expected YYYY-MM-DD or an RFC 3339 time"))
}

async fn open_as_of(
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

async fn open(data: &DataArg) -> Result<TraceSession, EngineError> {
    TraceSession::open(DataLocation::parse(&data.data)?, &data.session_options()).await
}

/// Micros since the epoch of `YYYY-MM-DD` (midnight UTC) or an RFC 3339 time.
fn parse_instant(value: &str) -> Result<i64, CliError> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(date
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_micros());
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|_| {
            CliError::Usage(format!(
                "--valid-from {value:?}: expected YYYY-MM-DD or an RFC 3339 time"
            ))
        })
}

fn read_sql(sql: Option<String>, file: Option<PathBuf>) -> Result<String, CliError> {
    let sql = match (sql, file) {
        (Some(sql), _) if sql != "-" => sql,
        (_, Some(path)) => std::fs::read_to_string(&path).map_err(|e| {
            CliError::Usage(format!("cannot read SQL file {}: {e}", path.display()))
        })?,
        _ if std::io::stdin().is_terminal() => {
            return Err(CliError::Usage(
                "no SQL given: pass it as an argument, with -f FILE, or on stdin".into(),
            ));
        }
        _ => {
            let mut sql = String::new();
            std::io::stdin().read_to_string(&mut sql)?;
            sql
        }
    };
    if sql.trim().is_empty() {
        return Err(CliError::Usage("the SQL is empty".into()));
    }
    Ok(sql)
}

/// Runs each statement in `sql`; results are printed in order.
async fn run_sql(
    session: &TraceSession,
    sql: &str,
    format: Format,
    output: Option<&std::path::Path>,
    timing: bool,
) -> Result<(), CliError> {
    let statements = DFParser::parse_sql(sql)?;
    if statements.is_empty() {
        return Err(CliError::Usage("the SQL holds no statement".into()));
    }
    for statement in statements {
        let started = Instant::now();
        let frame = session.plan(statement, Access::ReadWrite).await?;
        let stream = session.execute(frame).await?;
        let rows = output::write(stream, format, output).await?;
        if timing {
            eprintln!(
                "{rows} rows in {:.3} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
