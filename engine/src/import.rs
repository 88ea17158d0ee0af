//! Importing rows from CSV into a table's Parquet (for hand-made data sets and quick loads).

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema};
use datafusion::prelude::CsvReadOptions;
use futures::TryStreamExt;
use object_store::ObjectStore;

use crate::error::{EngineError, Result};
use crate::integrity::{Policy, rejected_rows, write_rejected};
use crate::schema::{ColumnType, MODEL_PRICES, SPANS, TableDef};
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

/// Reads a LiteLLM `model_prices_and_context_window.json` (USD per token, keyed by model) and
/// writes its chat/completion prices as `model_prices/litellm-{date}.parquet`, valid from
/// `valid_from` (micros, UTC; the file itself has no dates). Entries without both an input and
/// an output price are skipped. Returns the number of models written.
pub async fn import_litellm(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    json_path: &std::path::Path,
    valid_from: i64,
) -> Result<usize> {
    let text = std::fs::read_to_string(json_path)
        .map_err(|e| EngineError::Input(format!("{}: {e}", json_path.display())))?;
    let batch = litellm_prices(&text, valid_from)
        .map_err(|e| EngineError::Input(format!("{}: {e}", json_path.display())))?;
    let rows = batch.num_rows();
    if let DataLocation::Local(dir) = location {
        std::fs::create_dir_all(dir.join(MODEL_PRICES.name))?;
    }
    let date = chrono::DateTime::from_timestamp_micros(valid_from).map_or_else(
        || valid_from.to_string(),
        |d| d.format("%Y-%m-%d").to_string(),
    );
    let target = location
        .table_dir(MODEL_PRICES.name)
        .join(format!("litellm-{date}.parquet"));
    let schema = MODEL_PRICES.schema();
    let mut file =
        StreamingParquetFile::create(store, target, &schema, writer_properties(&schema, &[]))?;
    file.write(&batch).await?;
    file.close().await?;
    Ok(rows)
}

/// USD per token → USD per million tokens, rounded off at 1e-9 $/Mtok so 3e-6 reads as 3.0.
fn per_million(per_token: f64) -> f64 {
    (per_token * 1e15).round() / 1e9
}

/// One model's prices from LiteLLM, in USD per million tokens.
struct LiteLlmPrice<'a> {
    model: &'a str,
    provider: Option<&'a str>,
    input: f64,
    cached_input: Option<f64>,
    output: f64,
    reasoning: Option<f64>,
}

/// Parses LiteLLM's price table into `model_prices` rows, sorted by model.
fn litellm_prices(
    text: &str,
    valid_from: i64,
) -> std::result::Result<arrow::array::RecordBatch, String> {
    use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let entries = root
        .as_object()
        .ok_or("expected a JSON object keyed by model name")?;
    let mut rows: Vec<LiteLlmPrice> = entries
        .iter()
        .filter(|(model, _)| model.as_str() != "sample_spec")
        .filter_map(|(model, spec)| {
            let price = |key: &str| {
                spec.get(key)
                    .and_then(serde_json::Value::as_f64)
                    .map(per_million)
            };
            Some(LiteLlmPrice {
                model: model.as_str(),
                provider: spec
                    .get("litellm_provider")
                    .and_then(serde_json::Value::as_str),
                input: price("input_cost_per_token")?,
                cached_input: price("cache_read_input_token_cost"),
                output: price("output_cost_per_token")?,
                reasoning: price("output_cost_per_reasoning_token"),
            })
        })
        .collect();
    if rows.is_empty() {
        return Err("no model with both input_cost_per_token and output_cost_per_token".into());
    }
    rows.sort_by(|a, b| a.model.cmp(b.model));
    let columns: Vec<arrow::array::ArrayRef> = vec![
        Arc::new(rows.iter().map(|r| r.provider).collect::<StringArray>()),
        Arc::new(rows.iter().map(|r| Some(r.model)).collect::<StringArray>()),
        Arc::new(
            TimestampMicrosecondArray::from(vec![valid_from; rows.len()]).with_timezone("UTC"),
        ),
        Arc::new(rows.iter().map(|r| Some(r.input)).collect::<Float64Array>()),
        Arc::new(
            rows.iter()
                .map(|r| r.cached_input)
                .collect::<Float64Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.output))
                .collect::<Float64Array>(),
        ),
        Arc::new(rows.iter().map(|r| r.reasoning).collect::<Float64Array>()),
    ];
    arrow::array::RecordBatch::try_new(MODEL_PRICES.schema(), columns).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Float64Array};
    use arrow::datatypes::Float64Type;

    #[test]
    fn litellm_prices_are_converted_to_usd_per_million_tokens() {
        let json = r#"{
            "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0},
            "gpt-4.1-mini": {"input_cost_per_token": 4e-7, "cache_read_input_token_cost": 1e-7,
                             "output_cost_per_token": 1.6e-6, "litellm_provider": "openai", "mode": "chat"},
            "o3": {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6,
                   "output_cost_per_reasoning_token": 8e-6, "litellm_provider": "openai"},
            "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai"}
        }"#;
        let batch = litellm_prices(json, 42).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let models: Vec<&str> = batch
            .column(1)
            .as_string::<i32>()
            .iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(models, ["gpt-4.1-mini", "o3"]);
        let col = |i: usize| batch.column(i).as_primitive::<Float64Type>().clone();
        assert_eq!(col(3), Float64Array::from(vec![0.4, 2.0]));
        assert_eq!(col(4), Float64Array::from(vec![Some(0.1), None]));
        assert_eq!(col(5), Float64Array::from(vec![1.6, 8.0]));
        assert_eq!(col(6), Float64Array::from(vec![None, Some(8.0)]));
        assert!(litellm_prices("[]", 0).is_err());
        assert!(
            litellm_prices("{\"x\": {}}", 0)
                .unwrap_err()
                .contains("no model")
        );
    }
}
