//! `model_prices` rows as the price importers make them, and writing them.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use object_store::ObjectStore;

use crate::error::{EngineError, Result};
use crate::schema::{MODEL_PRICES, batch_by_name};
use crate::storage::location::DataLocation;
use crate::storage::writer::{StreamingParquetFile, writer_properties};

/// One row of `model_prices`: a model's rates at one service tier, above one input size, from
/// one instant (USD per million tokens; `None` rates are the rate of the tokens they refine).
#[derive(Debug, Clone, PartialEq)]
pub struct PriceRow {
    pub provider: Option<String>,
    pub model: String,
    /// Micros since the epoch, UTC.
    pub valid_from: i64,
    /// `None`: standard.
    pub service_tier: Option<String>,
    /// Long-context rates: for calls with more input tokens than this. `None`: every call.
    pub above_input_tokens: Option<i64>,
    pub input: f64,
    pub cached_input: Option<f64>,
    pub cache_write: Option<f64>,
    pub cache_write_1h: Option<f64>,
    pub output: f64,
    pub reasoning: Option<f64>,
}

impl PriceRow {
    /// The standard, every-call rates of `model` from `valid_from`.
    pub fn new(model: &str, valid_from: i64, input: f64, output: f64) -> Self {
        PriceRow {
            provider: None,
            model: model.to_string(),
            valid_from,
            service_tier: None,
            above_input_tokens: None,
            input,
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
            output,
            reasoning: None,
        }
    }
}

/// `rows` as a batch of `model_prices`.
pub(super) fn price_batch(rows: &[PriceRow]) -> Result<RecordBatch> {
    let rates = |rate: fn(&PriceRow) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(rate).collect::<Float64Array>())
    };
    batch_by_name(&MODEL_PRICES, |name| {
        Some(match name {
            "provider" => Arc::new(
                rows.iter()
                    .map(|r| r.provider.as_deref())
                    .collect::<StringArray>(),
            ),
            "model" => Arc::new(
                rows.iter()
                    .map(|r| Some(r.model.as_str()))
                    .collect::<StringArray>(),
            ),
            "valid_from" => Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.valid_from))
                    .with_timezone("UTC"),
            ),
            "service_tier" => Arc::new(
                rows.iter()
                    .map(|r| r.service_tier.as_deref())
                    .collect::<StringArray>(),
            ),
            "above_input_tokens" => Arc::new(
                rows.iter()
                    .map(|r| r.above_input_tokens)
                    .collect::<Int64Array>(),
            ),
            "input_usd_per_mtok" => rates(|r| Some(r.input)),
            "cached_input_usd_per_mtok" => rates(|r| r.cached_input),
            "cache_write_usd_per_mtok" => rates(|r| r.cache_write),
            "cache_write_1h_usd_per_mtok" => rates(|r| r.cache_write_1h),
            "output_usd_per_mtok" => rates(|r| Some(r.output)),
            "reasoning_usd_per_mtok" => rates(|r| r.reasoning),
            _ => return None,
        })
    })
}

/// Writes `rows` as `model_prices/{file_name}` under `location`.
pub(super) async fn write_prices(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    file_name: &str,
    rows: &[PriceRow],
) -> Result<()> {
    let batch = price_batch(rows)?;
    if let DataLocation::Local(dir) = location {
        std::fs::create_dir_all(dir.join(MODEL_PRICES.name))?;
    }
    let target = location.table_dir(MODEL_PRICES.name).join(file_name);
    let schema = MODEL_PRICES.schema();
    let mut file =
        StreamingParquetFile::create(store, target, &schema, writer_properties(&schema, &[]))?;
    file.write(&batch).await?;
    file.close().await?;
    Ok(())
}

/// USD per token → USD per million tokens, rounded off at 1e-9 $/Mtok so 3e-6 reads as 3.0.
pub(super) fn per_million(per_token: f64) -> f64 {
    (per_token * 1e15).round() / 1e9
}

/// `micros` as `YYYY-MM-DD`, for file names.
pub(super) fn date_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map_or_else(|| micros.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

/// Reads a price file for an importer: its text, or an input error naming it.
pub(super) fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| EngineError::Input(format!("{}: {e}", path.display())))
}
