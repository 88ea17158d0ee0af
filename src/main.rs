//! `tokenledger`: query agent decision traces by what they cost and what they bought.
//!
//! This file parses the command line and hands each command to its module under
//! `commands/`; argument groups several commands share are in `args.rs`.

mod args;
mod commands;
mod error;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    collect, compact, export, functions, generate, import, prices, query, report, serve, tables,
    user, worker,
};
use crate::error::CliError;

/// Columnar analytics over LLM agent decision traces: what each token buys.
#[derive(Parser, Debug)]
#[command(name = "tokenledger", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands, each described by its arguments' documentation.
// Parsed once per process: the size of its largest variant (`serve`) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    Query(query::QueryArgs),
    Compact(compact::CompactArgs),
    Tables(tables::TablesArgs),
    Gen(generate::GenArgs),
    Report(report::ReportArgs),
    Serve(serve::ServeArgs),
    Worker(worker::WorkerArgs),
    Collect(collect::CollectArgs),
    /// Manage the users of `tokenledger serve`.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// List tokenledger's SQL functions with their syntax and meaning.
    Functions,
    /// Manage model prices.
    Prices {
        #[command(subcommand)]
        command: prices::PricesCommand,
    },
    /// Export the data for other tools.
    Export {
        #[command(subcommand)]
        command: export::ExportCommand,
    },
    Import(import::ImportArgs),
}

impl Command {
    async fn run(self) -> Result<(), CliError> {
        match self {
            Command::Query(args) => args.run().await,
            Command::Compact(args) => args.run().await,
            Command::Tables(args) => args.run().await,
            Command::Gen(args) => args.run().await,
            Command::Report(args) => args.run().await,
            Command::Serve(args) => args.run().await,
            Command::Worker(args) => args.run().await,
            Command::Collect(args) => args.run().await,
            Command::User { command } => command.run(),
            Command::Functions => functions::run(),
            Command::Prices { command } => command.run().await,
            Command::Export { command } => command.run().await,
            Command::Import(args) => args.run().await,
        }
    }
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
        Command::Serve(_) | Command::Collect(_) | Command::Worker(_)
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
    match cli.command.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.user_message());
            ExitCode::FAILURE
        }
    }
}
