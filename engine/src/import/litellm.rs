//! LiteLLM's `model_prices_and_context_window.json` (USD per token, keyed by model).

use std::sync::Arc;

use object_store::ObjectStore;
use serde_json::{Map, Value};

use super::prices::{PriceRow, date_text, per_million, read_text, write_prices};
use crate::error::{EngineError, Result};
use crate::storage::location::DataLocation;

/// Reads a LiteLLM price file and writes its chat/completion prices as
/// `model_prices/litellm-{date}.parquet`, valid from `valid_from` (micros, UTC; the file
/// itself has no dates). Entries without both an input and an output price are skipped. Besides
/// the standard rates it maps cache reads and writes (`cache_creation_input_token_cost`, and
/// `…_above_1hr` for 1-hour writes), the batch, flex and priority tiers (`*_batches`, `*_flex`,
/// `*_priority`) and long-context rates (`*_above_{N}k_tokens`). Returns the rows written.
pub async fn import_litellm(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    json_path: &std::path::Path,
    valid_from: i64,
) -> Result<usize> {
    let text = read_text(json_path)?;
    let rows = litellm_prices(&text, valid_from)
        .map_err(|e| EngineError::Input(format!("{}: {e}", json_path.display())))?;
    let file = format!("litellm-{}.parquet", date_text(valid_from));
    write_prices(store, location, &file, &rows).await?;
    Ok(rows.len())
}

/// A LiteLLM key's rate in USD per million tokens.
fn rate(spec: &Map<String, Value>, key: &str) -> Option<f64> {
    spec.get(key).and_then(Value::as_f64).map(per_million)
}

/// The token kinds of a row and LiteLLM's names for them, before any suffix.
const KINDS: [&str; 6] = [
    "input_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_token",
    "output_cost_per_reasoning_token",
];

/// The six rates of a row (`KINDS` order) under `suffix` ("", "_priority", "_above_200k_tokens").
fn rates(spec: &Map<String, Value>, suffix: &str) -> [Option<f64>; 6] {
    KINDS.map(|kind| rate(spec, &format!("{kind}{suffix}")))
}

/// The thresholds of `*_above_{N}k_tokens` keys in `spec`, in tokens (`_above_1hr` is not one).
fn thresholds(spec: &Map<String, Value>) -> Vec<i64> {
    let mut found: Vec<i64> = spec
        .keys()
        .filter_map(|key| {
            let (_, rest) = key.rsplit_once("_above_")?;
            let thousands = rest.strip_suffix("k_tokens")?;
            thousands.parse::<i64>().ok().map(|k| k * 1000)
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// A tier's or a threshold's row from the rates LiteLLM gives for it. What it leaves out
/// follows the standard row: cache rates scaled as the input rate is (batch halves cache reads
/// and writes too, long context doubles them: Anthropic's and OpenAI's rule), a missing input
/// or output rate the standard one, reasoning at the row's output rate unless given.
fn variant(standard: &PriceRow, given: [Option<f64>; 6]) -> PriceRow {
    let input = given[0].unwrap_or(standard.input);
    let scale = if standard.input > 0.0 {
        input / standard.input
    } else {
        1.0
    };
    let scaled = |given: Option<f64>, standard: Option<f64>| given.or(standard.map(|r| r * scale));
    PriceRow {
        input,
        cached_input: scaled(given[1], standard.cached_input),
        cache_write: scaled(given[2], standard.cache_write),
        cache_write_1h: scaled(given[3], standard.cache_write_1h),
        output: given[4].unwrap_or(standard.output),
        reasoning: given[5],
        ..standard.clone()
    }
}

/// One model's rows: standard, the tiers LiteLLM gives (`*_batches`, `*_flex`, `*_priority`)
/// and long-context rows (`*_above_{N}k_tokens`).
fn model_rows(model: &str, spec: &Map<String, Value>, valid_from: i64) -> Vec<PriceRow> {
    let r = rates(spec, "");
    let (Some(input), Some(output)) = (r[0], r[4]) else {
        return Vec::new();
    };
    let standard = PriceRow {
        provider: spec
            .get("litellm_provider")
            .and_then(Value::as_str)
            .map(str::to_string),
        cached_input: r[1],
        cache_write: r[2],
        cache_write_1h: r[3],
        reasoning: r[5],
        ..PriceRow::new(model, valid_from, input, output)
    };
    let mut rows = vec![standard.clone()];
    for (suffix, tier) in [
        ("_flex", "flex"),
        ("_priority", "priority"),
        ("_batches", "batch"),
    ] {
        let given = rates(spec, suffix);
        if given[0].is_some() || given[4].is_some() {
            rows.push(PriceRow {
                service_tier: Some(tier.to_string()),
                ..variant(&standard, given)
            });
        }
    }
    for threshold in thresholds(spec) {
        let given = rates(spec, &format!("_above_{}k_tokens", threshold / 1000));
        rows.push(PriceRow {
            above_input_tokens: Some(threshold),
            ..variant(&standard, given)
        });
    }
    rows
}

/// Parses LiteLLM's price table into `model_prices` rows, sorted by model.
fn litellm_prices(text: &str, valid_from: i64) -> std::result::Result<Vec<PriceRow>, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let entries = root
        .as_object()
        .ok_or("expected a JSON object keyed by model name")?;
    let mut models: Vec<(&String, &Map<String, Value>)> = entries
        .iter()
        .filter(|(model, _)| model.as_str() != "sample_spec")
        .filter_map(|(model, spec)| Some((model, spec.as_object()?)))
        .collect();
    models.sort_by(|a, b| a.0.cmp(b.0));
    let rows: Vec<PriceRow> = models
        .into_iter()
        .flat_map(|(model, spec)| model_rows(model, spec, valid_from))
        .collect();
    if rows.is_empty() {
        return Err("no model with both input_cost_per_token and output_cost_per_token".into());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let rows = litellm_prices(json, 42).unwrap();
        let mini = PriceRow {
            provider: Some("openai".into()),
            cached_input: Some(0.1),
            ..PriceRow::new("gpt-4.1-mini", 42, 0.4, 1.6)
        };
        let o3 = PriceRow {
            provider: Some("openai".into()),
            reasoning: Some(8.0),
            ..PriceRow::new("o3", 42, 2.0, 8.0)
        };
        assert_eq!(rows, [mini, o3]);
        assert!(litellm_prices("[]", 0).is_err());
        assert!(
            litellm_prices("{\"x\": {}}", 0)
                .unwrap_err()
                .contains("no model")
        );
    }

    #[test]
    fn cache_writes_tiers_and_long_context_rates_get_rows() {
        // Claude Sonnet 4.5 as LiteLLM lists it.
        let json = r#"{"claude-sonnet-4-5": {
            "litellm_provider": "anthropic",
            "input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5,
            "cache_read_input_token_cost": 3e-7, "cache_creation_input_token_cost": 3.75e-6,
            "cache_creation_input_token_cost_above_1hr": 6e-6,
            "input_cost_per_token_batches": 1.5e-6, "output_cost_per_token_batches": 7.5e-6,
            "input_cost_per_token_priority": 5.4e-6, "output_cost_per_token_priority": 2.7e-5,
            "input_cost_per_token_above_200k_tokens": 6e-6,
            "output_cost_per_token_above_200k_tokens": 2.25e-5,
            "cache_read_input_token_cost_above_200k_tokens": 6e-7,
            "cache_creation_input_token_cost_above_200k_tokens": 7.5e-6
        }}"#;
        let rows = litellm_prices(json, 0).unwrap();
        let standard = PriceRow {
            provider: Some("anthropic".into()),
            cached_input: Some(0.3),
            cache_write: Some(3.75),
            cache_write_1h: Some(6.0),
            ..PriceRow::new("claude-sonnet-4-5", 0, 3.0, 15.0)
        };
        // No cache rates at priority: scaled as input is.
        let scale = 5.4 / 3.0;
        let priority = PriceRow {
            service_tier: Some("priority".into()),
            input: 5.4,
            output: 27.0,
            cached_input: Some(0.3 * scale),
            cache_write: Some(3.75 * scale),
            cache_write_1h: Some(6.0 * scale),
            ..standard.clone()
        };
        let batch = PriceRow {
            service_tier: Some("batch".into()),
            input: 1.5,
            output: 7.5,
            cached_input: Some(0.15),
            cache_write: Some(1.875),
            cache_write_1h: Some(3.0),
            ..standard.clone()
        };
        let long = PriceRow {
            above_input_tokens: Some(200_000),
            input: 6.0,
            output: 22.5,
            cached_input: Some(0.6),
            cache_write: Some(7.5),
            cache_write_1h: Some(12.0),
            ..standard.clone()
        };
        assert_eq!(rows, [standard, priority, batch, long]);
    }
}
