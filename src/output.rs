//! Writing query results as a table, CSV, JSON lines or Parquet.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use tokenledger_engine::EngineError;

/// How `query` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row (JSON lines).
    Json,
    /// A Parquet file (needs --output).
    Parquet,
}

/// Streams `batches` to `output` (stdout when `None`) in `format`. Only `table` holds the whole
/// result in memory (it needs every row to size the columns).
pub async fn write(
    mut batches: SendableRecordBatchStream,
    format: Format,
    output: Option<&Path>,
) -> Result<(), EngineError> {
    let schema = batches.schema();
    if format == Format::Parquet {
        let path = output
            .ok_or_else(|| EngineError::Input("--format parquet needs --output FILE".into()))?;
        let mut writer = ArrowWriter::try_new(create(path)?, schema, None)?;
        while let Some(batch) = batches.try_next().await? {
            writer.write(&batch)?;
        }
        writer.close()?;
        return Ok(());
    }
    let sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match format {
        Format::Table => {
            let all: Vec<RecordBatch> = batches.try_collect().await?;
            let mut sink = sink;
            if all.iter().all(|b| b.num_rows() == 0) {
                let empty = RecordBatch::new_empty(schema);
                writeln!(sink, "{}", pretty_format_batches(&[empty])?)?;
            } else {
                writeln!(sink, "{}", pretty_format_batches(&all)?)?;
            }
            sink.flush()?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(sink);
            while let Some(batch) = batches.try_next().await? {
                writer.write(&batch)?;
            }
            writer.into_inner().flush()?;
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(sink);
            while let Some(batch) = batches.try_next().await? {
                writer.write(&batch)?;
            }
            writer.finish()?;
            writer.into_inner().flush()?;
        }
        Format::Parquet => unreachable!("handled above"),
    }
    Ok(())
}

fn create(path: &Path) -> Result<File, EngineError> {
    File::create(path)
        .map_err(|e| EngineError::Input(format!("cannot write {}: {e}", path.display())))
}
