//! `tokenledger report`: one report's rows, or the list of reports.

use std::path::PathBuf;

use tokenledger_engine::curated::AsOf;
use tokenledger_engine::reports;

use crate::args::{ClusterArgs, DataArg, open_as_of, parse_as_of};
use crate::error::CliError;
use crate::output::{self, Format};

/// Run a report (a view over the trace tables); without a name, list the reports.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
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
}

impl ReportArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Some(name) = &self.name else {
            for report in reports::reports() {
                println!("{:<20} {}", report.name, report.summary());
            }
            return Ok(());
        };
        let Some(report) = reports::view(name) else {
            let names: Vec<_> = reports::reports().map(|r| r.name).collect();
            return Err(CliError::Usage(format!(
                "unknown report {name:?}; reports are {}",
                names.join(", ")
            )));
        };
        let session = open_as_of(&self.data, self.as_of, &self.cluster).await?;
        let frame = session.report(report).await?;
        let rows = session.execute(frame).await?;
        output::write(rows, self.format, self.output.as_deref()).await?;
        Ok(())
    }
}
