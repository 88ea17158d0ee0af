//! `tokenledger collect`: the OTLP receiver alone, a separate ingest tier; `serve` starts the
//! same receiver with [`start_receiver`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokenledger_engine::{DataLocation, EngineError};
use tokenledger_flight_server::Logins;
use tokenledger_ingest::{ExporterAuth, IngestOptions, Ingestor, Receiver, ReceiverConfig};

use crate::args::{SpoolArgs, TlsArgs, load_logins};
use crate::error::CliError;

/// Receive OpenTelemetry traces (OTLP over gRPC and HTTP) into the data location, without
/// serving queries: a separate ingest tier.
#[derive(clap::Args, Debug)]
pub struct CollectArgs {
    /// Local directory or s3://bucket/prefix to write spans/ and outcomes/ files into.
    #[arg(long, env = "TOKENLEDGER_DATA")]
    data: String,
    /// OTLP/gRPC address. Anything but loopback needs --users.
    #[arg(long, default_value = tokenledger_ingest::DEFAULT_GRPC)]
    otlp_grpc: SocketAddr,
    /// OTLP/HTTP address. Anything but loopback needs --users.
    #[arg(long, default_value = tokenledger_ingest::DEFAULT_HTTP)]
    otlp_http: SocketAddr,
    /// Users file: exporters authenticate with Basic or Bearer user:password, and write only
    /// their tenants' spans. Off loopback it needs TLS or --allow-plaintext-passwords.
    #[arg(long)]
    users: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    spool: SpoolArgs,
}

impl CollectArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self {
            data,
            otlp_grpc,
            otlp_http,
            users,
            tls,
            spool,
        } = self;
        let logins = users.as_deref().map(load_logins).transpose()?;
        let receiver = start_receiver(
            &data,
            logins,
            Some(otlp_grpc),
            Some(otlp_http),
            &tls,
            &spool,
        )
        .await?;
        tokio::select! {
            result = receiver.wait() => result?,
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    }
}

/// Starts the OTLP receiver writing into `data`, exporters checked by `logins` (none: anyone,
/// on loopback only), announcing its addresses on stderr (tests read
/// the ports from there).
pub async fn start_receiver(
    data: &str,
    logins: Option<Arc<Logins>>,
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    tls: &TlsArgs,
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
    let auth = logins.map(|logins| Arc::new(ExporterAuth::new(logins)));
    let config = ReceiverConfig {
        grpc,
        http,
        auth,
        tls: tls.files(),
        allow_plaintext_passwords: tls.allow_plaintext_passwords,
    };
    let receiver = Receiver::start(ingestor, config).await?;
    let scheme = if tls.files().is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(address) = receiver.grpc {
        eprintln!("receiving OTLP/gRPC traces into {location} on {scheme}://{address}");
    }
    if let Some(address) = receiver.http {
        eprintln!("receiving OTLP/HTTP traces into {location} on {scheme}://{address}");
    }
    Ok(receiver)
}
