//! `tokenledger export`: the data for other tools (FinOps FOCUS).

use std::path::PathBuf;

use clap::Subcommand;
use tokenledger_engine::reports::filter::{DateRange, parse_date};
use tokenledger_engine::reports::focus::focus_rows;

use crate::args::{DataArg, open};
use crate::error::CliError;
use crate::output::{self, Format};

#[derive(Subcommand, Debug)]
pub enum ExportCommand {
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

impl ExportCommand {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        match self {
            ExportCommand::Focus {
                data,
                from,
                to,
                out,
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
            }
        }
        Ok(())
    }
}
