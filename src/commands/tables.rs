//! `tokenledger tables`: each table with its rows, files, bytes and curated version.

use crate::args::{DataArg, open};
use crate::error::CliError;

/// List the tables with their files, bytes and rows.
#[derive(clap::Args, Debug)]
pub struct TablesArgs {
    #[command(flatten)]
    data: DataArg,
}

impl TablesArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self { data } = self;
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
}
