//! `tokenledger serve`: Arrow Flight SQL, the report page and, on request, the OTLP receiver,
//! all over one session and one set of query limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenledger_distributed::Startup;
use tokenledger_engine::access::tls::server_config;
use tokenledger_engine::{DataLocation, EngineError, SessionOptions, TraceSession};
use tokenledger_flight_server::{Admission, ServeOptions, Weight};
use tokenledger_web::{Gate, PageAuth};

use crate::args::{ClusterArgs, DataArg, LimitArgs, SpoolArgs, TlsArgs, load_logins};
use crate::commands::collect::start_receiver;
use crate::error::CliError;

/// Serve the data over Arrow Flight SQL, for BI tools (JDBC, ADBC) and drivers.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataArg,
    /// Address to listen on. Anything but loopback needs --users.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Users file written by `tokenledger user add` (argon2 password hashes and each user's
    /// tenants). Off loopback it needs TLS or --allow-plaintext-passwords.
    #[arg(long)]
    users: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    limits: LimitArgs,
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
    /// out with a warning when that port is taken]. HTTPS with --tls-cert. Off loopback it
    /// needs --users, and TLS or --allow-plaintext-passwords.
    #[arg(long, conflicts_with = "no_http")]
    http: Option<SocketAddr>,
    /// Do not serve the report page.
    #[arg(long)]
    no_http: bool,
    #[command(flatten)]
    spool: SpoolArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl ServeArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            data,
            listen,
            users,
            tls,
            limits,
            refresh,
            otlp_grpc,
            otlp_http,
            http,
            no_http,
            spool,
            cluster,
        } = self;
        // One login policy for Flight SQL, the page and the OTLP receiver: a lockout on one
        // port holds on all. Loaded first, so a bad users file stops the server before it opens
        // anything.
        let logins = users.as_deref().map(load_logins).transpose()?;
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
            logins: logins.clone(),
            tls: tls.files(),
            allow_plaintext_passwords: tls.allow_plaintext_passwords,
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
            (grpc, http) => {
                Some(start_receiver(&data.data, logins.clone(), grpc, http, &tls, &spool).await?)
            }
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tokenledger_flight_server::serve_admitting(session, &serve, listener, shutdown, admission)
            .await?;
        if let Some(page) = page {
            page.abort();
        }
        Ok(())
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
    let encrypted = serve.tls.is_some() || serve.allow_plaintext_passwords;
    if !address.ip().is_loopback() && (serve.logins.is_none() || !encrypted) {
        return Err(CliError::Usage(format!(
            "--http {address}: off loopback the report page needs --users, and --tls-cert and \
             --tls-key (or --allow-plaintext-passwords behind a TLS proxy)"
        )));
    }
    // The page speaks HTTP/1.1 only.
    let tls = match &serve.tls {
        Some((cert, key)) => Some(server_config(cert, key, &["http/1.1"])?),
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) if http.is_none() => {
            tracing::warn!(%address, error = %e, "report page not started: pass --http ADDR");
            eprintln!("report page not started: {address}: {e} (pass --http ADDR)");
            return Ok(None);
        }
        Err(e) => return Err(CliError::Usage(format!("--http {address}: {e}"))),
    };
    let auth = match &serve.logins {
        Some(logins) => PageAuth::users(Arc::clone(logins)),
        None => PageAuth::Open,
    };
    // Tests read the port from this line.
    eprintln!(
        "report page on {}://{}/",
        if tls.is_some() { "https" } else { "http" },
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
        if let Err(e) = tokenledger_web::serve(listener, session, auth, Some(gate), tls).await {
            tracing::error!(error = %e, "the report page stopped");
        }
    })))
}
