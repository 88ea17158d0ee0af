//! Writing query results as a table, CSV, JSON lines or Parquet.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use arrow::util::pretty::pretty_format_batches;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use tokenledger_engine::EngineError;

use crate::error::CliError;
use tokenledger_engine::storage::writer::seal_file;

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

/// Streams `batches` to `output` (stdout when `None`) in `format`; returns the number of rows.
/// `table` holds the whole result in memory (it needs every row to size the columns), and so
/// does `parquet` (the file is checksummed whole before it is written).
pub async fn write(
    mut batches: SendableRecordBatchStream,
    format: Format,
    output: Option<&Path>,
) -> Result<usize, CliError> {
    let schema = batches.schema();
    let mut rows = 0;
    if format == Format::Parquet {
        let path =
            output.ok_or_else(|| CliError::Usage("--format parquet needs --output FILE".into()))?;
        // Built in memory and written whole, with page and footer checksums like every file
        // tokenledger writes.
        let props = Arc::new(WriterProperties::default());
        let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some((*props).clone()))?;
        while let Some(batch) = batches.try_next().await? {
            rows += batch.num_rows();
            writer.write(&batch)?;
        }
        let file = seal_file(writer, &props)?;
        create(path)?.write_all(&file)?;
        return Ok(rows);
    }
    let mut sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(create(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match format {
        Format::Table => {
            let mut all: Vec<RecordBatch> = batches.try_collect().await?;
            rows = all.iter().map(RecordBatch::num_rows).sum();
            if rows == 0 {
                // Still show the header, so an empty result is visibly empty.
                all = vec![RecordBatch::new_empty(schema)];
            }
            writeln!(sink, "{}", pretty_format_batches(&all)?)?;
            sink.flush()?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(sink);
            while let Some(batch) = batches.try_next().await? {
                rows += batch.num_rows();
                writer.write(&nested_as_text(&batch)?)?;
            }
            writer.into_inner().flush()?;
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(sink);
            while let Some(batch) = batches.try_next().await? {
                rows += batch.num_rows();
                writer.write(&batch)?;
            }
            writer.finish()?;
            writer.into_inner().flush()?;
        }
        Format::Parquet => unreachable!("handled above"),
    }
    Ok(rows)
}

/// CSV has no nested values: render maps, structs and lists as their display text
/// (`{gen_ai.operation.name: chat}`) so `SELECT *` still works.
fn nested_as_text(batch: &RecordBatch) -> Result<RecordBatch, EngineError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let options = FormatOptions::default();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
            continue;
        }
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)?;
        let text: StringArray = (0..column.len())
            .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
            .collect();
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        columns.push(Arc::new(text));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn create(path: &Path) -> Result<File, CliError> {
    File::create(path).map_err(|e| CliError::Usage(format!("cannot write {}: {e}", path.display())))
}
