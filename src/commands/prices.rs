//! `tokenledger prices`: model prices from other sources into `model_prices`.

use std::path::PathBuf;

use clap::Subcommand;
use tokenledger_engine::DataLocation;
use tokenledger_engine::import::{import_genai_prices, import_litellm};

use crate::args::DataArg;
use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum PricesCommand {
    /// Import prices from LiteLLM's model_prices_and_context_window.json or from genai-prices'
    /// data.json: cache reads and writes, service tiers and long-context rates included.
    #[command(group(clap::ArgGroup::new("source").required(true).args(["litellm", "genai_prices"])))]
    Import {
        #[command(flatten)]
        data: DataArg,
        /// LiteLLM's JSON file (USD per token, keyed by model).
        #[arg(long)]
        litellm: Option<PathBuf>,
        /// genai-prices' data.json (github.com/pydantic/genai-prices, prices/data.json; or
        /// `python scripts/genai_prices_json.py` with the package installed).
        #[arg(long)]
        genai_prices: Option<PathBuf>,
        /// With --genai-prices: a provider whose models to import (repeatable; first wins when
        /// two list a model). Default: anthropic, openai, google, mistral, deepseek, x-ai, cohere.
        #[arg(long = "provider", requires = "genai_prices")]
        providers: Vec<String>,
        /// From when the prices apply: YYYY-MM-DD (midnight UTC) or an RFC 3339 time. Prices
        /// genai-prices dates later apply from their own date.
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
                genai_prices,
                providers,
                valid_from,
            } => {
                let valid_from = parse_instant(&valid_from)?;
                let location = DataLocation::parse(&data.data)?;
                let store = location.open_store(&[])?;
                if let Some(litellm) = litellm {
                    let rows = import_litellm(store, &location, &litellm, valid_from).await?;
                    eprintln!("{}: {rows} price rows into model_prices", litellm.display());
                } else if let Some(file) = genai_prices {
                    let report =
                        import_genai_prices(store, &location, &file, valid_from, &providers)
                            .await?;
                    eprintln!(
                        "{}: {} models, {} price rows into model_prices",
                        file.display(),
                        report.models,
                        report.rows
                    );
                    for line in report.left_out {
                        eprintln!("  left out: {line}");
                    }
                }
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
