//! Importing rows into a table's Parquet: CSV (for hand-made data sets and quick loads) and
//! model prices from LiteLLM's and genai-prices' price files.

mod genai_prices;
mod litellm;
mod prices;

pub use genai_prices::{DEFAULT_PROVIDERS, GenaiPricesImport, import_genai_prices};
pub use litellm::import_litellm;
pub use prices::PriceRow;

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema};
use datafusion::prelude::CsvReadOptions;
use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::error::{EngineError, Result};
use crate::integrity::{Policy, rejected_rows, write_rejected};
use crate::schema::{ColumnType, SPANS, TableDef};
use crate::session::{SessionOptions, new_context};
use crate::storage::location::DataLocation;
use crate::storage::writer::{StreamingParquetFile, checked_spans_properties, writer_properties};

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Imported {
    /// Rows written to the table.
    pub rows: usize,
    /// Rows of `spans` the validation policy refused, each with its CSV line and why; they are
    /// written to `rejected_spans` instead.
    pub rejected: Vec<String>,
}

/// Reads `csv_path` (with a header row naming table columns, in any order and any subset that
/// includes the required ones) and writes it as `{table}/{file_stem}.parquet` under `location`.
/// Rows of `spans` are checked against the validation policy ([`crate::integrity`]): a row that
/// breaks it is refused alone and written to `rejected_spans/csv/{file_stem}.parquet`, with the
/// rule, the reason and the row's values.
pub async fn import_csv(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    table: &'static TableDef,
    csv_path: &std::path::Path,
) -> Result<Imported> {
    let csv_schema = csv_schema(table, csv_path)?;
    let ctx = new_context(&SessionOptions::default())?;
    let path = csv_path.to_string_lossy();
    let mut batches = ctx
        .read_csv(
            path.as_ref(),
            CsvReadOptions::new().schema(&csv_schema).has_header(true),
        )
        .await?
        .execute_stream()
        .await?;
    let table_schema = table.schema();
    let stem = csv_path
        .file_stem()
        .map_or("import".into(), |s| s.to_string_lossy().into_owned());
    if let DataLocation::Local(dir) = location {
        std::fs::create_dir_all(dir.join(table.name))?;
    }
    let target = location
        .table_dir(table.name)
        .join(format!("{stem}.parquet"));
    let checked = table.name == SPANS.name;
    let properties = match checked {
        true => checked_spans_properties(&table_schema, &[]),
        false => writer_properties(&table_schema, &[]),
    };
    let mut file =
        StreamingParquetFile::create(Arc::clone(&store), target, &table_schema, properties)?;
    let policy = Policy::now();
    let mut imported = Imported::default();
    let mut refused = Vec::new();
    // The CSV's line of each row: line 1 is the header.
    let mut line = 1;
    // Batch by batch as the CSV is read: rows laid out in table order, with nulls for the
    // columns the CSV leaves out.
    while let Some(batch) = batches.try_next().await? {
        let columns = table_schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(column) => Arc::clone(column),
                None => arrow::array::new_null_array(field.data_type(), batch.num_rows()),
            })
            .collect();
        let mut aligned = RecordBatch::try_new(Arc::clone(&table_schema), columns)?;
        if checked {
            let violations = policy.check_rows(&aligned)?;
            if violations.iter().any(Option::is_some) {
                let keep: BooleanArray = violations.iter().map(|v| Some(v.is_none())).collect();
                refused.push(rejected_rows(&aligned, &violations, "csv")?);
                imported.rejected.extend(
                    violations.iter().enumerate().filter_map(|(i, v)| {
                        Some(format!("line {}: {}", line + i + 1, v.as_ref()?))
                    }),
                );
                aligned = filter_record_batch(&aligned, &keep)?;
            }
        }
        line += batch.num_rows();
        imported.rows += aligned.num_rows();
        file.write(&aligned).await?;
    }
    file.close().await?;
    if !refused.is_empty() {
        write_rejected(store, location, &["csv", &stem], &refused).await?;
    }
    Ok(imported)
}

/// The schema of a CSV file: its header's columns with the table's types.
fn csv_schema(table: &TableDef, csv_path: &std::path::Path) -> Result<Schema> {
    // The header line only: the rows are read later, batch by batch.
    let unreadable = |e: std::io::Error| EngineError::Input(format!("{}: {e}", csv_path.display()));
    let mut header = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::fs::File::open(csv_path).map_err(unreadable)?),
        &mut header,
    )
    .map_err(unreadable)?;
    let header = header.trim_end_matches(['\r', '\n']);
    let mut fields = Vec::new();
    for name in header.split(',').map(str::trim) {
        let column = table.column(name).ok_or_else(|| {
            EngineError::Input(format!(
                "{}: column {name:?} is not a column of {}",
                csv_path.display(),
                table.name
            ))
        })?;
        if column.ty == ColumnType::TextMap {
            return Err(EngineError::Input(format!(
                "{}: column {name:?} is a map and cannot be imported from CSV",
                csv_path.display()
            )));
        }
        fields.push(Field::new(name, column.ty.data_type(), true));
    }
    let schema = Schema::new(fields);
    if let Err(problem) = table.check_file_schema(&schema) {
        return Err(EngineError::Input(format!(
            "{}: column {:?} {}",
            csv_path.display(),
            problem.column,
            problem.problem
        )));
    }
    Ok(schema)
}
