//! Rows of `spans` the policy refused, as rows of `rejected_spans`: how CSV import and
//! compaction keep what they leave out (the OTLP receiver builds its own from the spans it
//! decoded, with their attributes).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use object_store::ObjectStore;

use super::Violation;
use crate::error::Result;
use crate::schema::{REJECTED_SPANS, batch_by_name};
use crate::storage::location::DataLocation;
use crate::storage::writer::{StreamingParquetFile, writer_properties};

/// The rows of `batch` (a batch of `spans`) that have a violation, as rows of `rejected_spans`
/// refused now by `source`; `attributes` holds each row's values as one JSON object.
pub fn rejected_rows(
    batch: &RecordBatch,
    violations: &[Option<Violation>],
    source: &str,
) -> Result<RecordBatch> {
    let refused: Vec<(usize, &Violation)> = violations
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, v.as_ref()?)))
        .collect();
    let indices = UInt32Array::from_iter_values(refused.iter().map(|(i, _)| *i as u32));
    let rows = take_record_batch(batch, &indices)?;
    let count = rows.num_rows();
    let text = |name: &str| -> Option<ArrayRef> {
        match rows.column_by_name(name) {
            Some(column) => cast(column, &DataType::Utf8).ok(),
            None => Some(arrow::array::new_null_array(&DataType::Utf8, count)),
        }
    };
    let attributes: StringArray = (0..count).map(|row| Some(row_json(&rows, row))).collect();
    let received_at = chrono::Utc::now().timestamp_micros();
    batch_by_name(&REJECTED_SPANS, |name| {
        Some(match name {
            "received_at" => Arc::new(
                TimestampMicrosecondArray::from_value(received_at, count).with_timezone("UTC"),
            ) as ArrayRef,
            "source" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                source, count,
            ))),
            "tenant" | "trace_id" | "span_id" | "name" => text(name)?,
            "start_time" => cast(
                rows.column_by_name("start_time")?,
                &crate::schema::timestamp_type(),
            )
            .ok()?,
            "rule" => Arc::new(StringArray::from_iter_values(
                refused.iter().map(|(_, v)| v.rule.name()),
            )),
            "reason" => Arc::new(StringArray::from_iter_values(
                refused.iter().map(|(_, v)| v.detail.as_str()),
            )),
            "attributes" => Arc::new(attributes.clone()),
            _ => return None,
        })
    })
}

/// Every column of one row, as a JSON object of text values (NULLs left out).
fn row_json(batch: &RecordBatch, row: usize) -> String {
    let options = FormatOptions::default();
    let object: serde_json::Map<String, serde_json::Value> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .filter(|(_, column)| column.is_valid(row))
        .filter_map(|(field, column)| {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &options).ok()?;
            Some((
                field.name().clone(),
                serde_json::Value::String(formatter.value(row).to_string()),
            ))
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// Writes rows of `rejected_spans` as `rejected_spans/<parts…>.parquet` under `location` (the
/// last part is the file's name without its extension).
pub async fn write_rejected(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    parts: &[&str],
    batches: &[RecordBatch],
) -> Result<()> {
    let schema = REJECTED_SPANS.schema();
    let (name, folders) = parts.split_last().expect("a file name");
    let target = folders
        .iter()
        .fold(location.table_dir(REJECTED_SPANS.name), |path, part| {
            path.join(*part)
        })
        .join(format!("{name}.parquet"));
    let mut file =
        StreamingParquetFile::create(store, target, &schema, writer_properties(&schema, &[]))?;
    for batch in batches {
        file.write(batch).await?;
    }
    file.close().await
}
