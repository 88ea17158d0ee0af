//! `tokenledger prices`: model prices from other sources into `model_prices`.

use std::path::PathBuf;

use clap::Subcommand;
use tokenledger_engine::DataLocation;
use tokenledger_engine::import::import_litellm;

use crate::args::DataArg;
use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum PricesCommand {
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

impl PricesCommand {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        match self {
            PricesCommand::Import {
                data,
                litellm,
                valid_from,
            } => {
                let valid_from = parse_instant(&valid_from)?;
                let location = DataLocation::parse(&data.data)?;
                let store = location.open_store(&[])?;
                let models = import_litellm(store, &location, &litellm, valid_from).await?;
                eprintln!(
                    "{}: {models} model prices into model_prices",
                    litellm.display()
                );
            }
        }
        Ok(())
    }
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
