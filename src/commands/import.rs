//! `tokenledger import`: CSV files into a table as Parquet.

use std::path::PathBuf;
use std::sync::Arc;

use tokenledger_engine::DataLocation;
use tokenledger_engine::import::import_csv;
use tokenledger_engine::schema::{self, TABLES};

use crate::args::DataArg;
use crate::error::CliError;

/// Load a CSV file into a table (as one Parquet file named after the CSV).
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    data: DataArg,
    /// Target table: spans, outcomes, model_prices or baselines.
    #[arg(long)]
    table: String,
    /// CSV files with a header row of column names.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

impl ImportArgs {
    /// Runs the command.
    pub async fn run(self) -> Result<(), CliError> {
        let Self { data, table, files } = self;
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
            let imported = import_csv(Arc::clone(&store), &location, table, &file).await?;
            eprintln!(
                "{}: {} rows into {}",
                file.display(),
                imported.rows,
                table.name
            );
            if !imported.rejected.is_empty() {
                eprintln!(
                    "{}: {} rows refused by the validation policy, written to rejected_spans:",
                    file.display(),
                    imported.rejected.len()
                );
                for reason in &imported.rejected {
                    eprintln!("  {reason}");
                }
            }
        }
        Ok(())
    }
}
