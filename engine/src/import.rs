//! Importing rows from CSV into a table's Parquet (for hand-made data sets and quick loads).

use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use datafusion::prelude::CsvReadOptions;
use object_store::ObjectStore;

use crate::error::{EngineError, Result};
use crate::location::DataLocation;
use crate::schema::{ColumnType, TableDef};
use crate::session::{SessionOptions, new_context};
use crate::writer::{StreamingParquetFile, writer_properties};

/// Reads `csv_path` (with a header row naming table columns, in any order and any subset that
/// includes the required ones) and writes it as `{table}/{file_stem}.parquet` under `location`.
/// Returns the number of rows written.
pub async fn import_csv(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    table: &'static TableDef,
    csv_path: &std::path::Path,
) -> Result<usize> {
    let csv_schema = csv_schema(table, csv_path)?;
    let ctx = new_context(&SessionOptions::default())?;
    let path = csv_path.to_string_lossy();
    let batches = ctx
        .read_csv(
            path.as_ref(),
            CsvReadOptions::new().schema(&csv_schema).has_header(true),
        )
        .await?
        .collect()
        .await?;
    // Lay the rows out in table order, with nulls for columns the CSV leaves out.
    let table_schema = table.schema();
    let mut aligned = Vec::with_capacity(batches.len());
    for batch in &batches {
        let columns = table_schema
            .fields()
            .iter()
            .map(|field| match batch.column_by_name(field.name()) {
                Some(column) => Arc::clone(column),
                None => arrow::array::new_null_array(field.data_type(), batch.num_rows()),
            })
            .collect();
        aligned.push(arrow::array::RecordBatch::try_new(
            Arc::clone(&table_schema),
            columns,
        )?);
    }
    let stem = csv_path
        .file_stem()
        .map_or("import".into(), |s| s.to_string_lossy().into_owned());
    if let DataLocation::Local(dir) = location {
        std::fs::create_dir_all(dir.join(table.name))?;
    }
    let target = location
        .table_dir(table.name)
        .join(format!("{stem}.parquet"));
    let mut file = StreamingParquetFile::create(
        store,
        target,
        &table_schema,
        writer_properties(&table_schema, &[]),
    )?;
    for batch in &aligned {
        file.write(batch).await?;
    }
    file.close().await?;
    Ok(aligned.iter().map(|b| b.num_rows()).sum())
}

/// The schema of a CSV file: its header's columns with the table's types.
fn csv_schema(table: &TableDef, csv_path: &std::path::Path) -> Result<Schema> {
    let text = std::fs::read_to_string(csv_path)
        .map_err(|e| EngineError::Input(format!("{}: {e}", csv_path.display())))?;
    let header = text.lines().next().unwrap_or_default();
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
