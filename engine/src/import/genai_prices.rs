//! The price data of pydantic's `genai-prices` (its published `data.json`: providers, their
//! models, prices that change on dates, per-tier variants and long-context tiers).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use object_store::ObjectStore;
use serde_json::Value;

use super::prices::{PriceRow, date_text, read_text, write_prices};
use crate::error::{EngineError, Result};
use crate::storage::location::DataLocation;

/// The providers imported when none are named: the makers of the models most agents call.
/// Resellers (openrouter, aws, azure, …) list the same model names at their own prices; name
/// them with `--provider` to take theirs.
pub const DEFAULT_PROVIDERS: [&str; 7] = [
    "anthropic",
    "openai",
    "google",
    "mistral",
    "deepseek",
    "x-ai",
    "cohere",
];

/// What an import of genai-prices data wrote and what it could not represent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenaiPricesImport {
    /// Models written.
    pub models: usize,
    /// Rows of `model_prices` written.
    pub rows: usize,
    /// What was left out, one line per kind with its count and examples.
    pub left_out: Vec<String>,
}

/// genai-prices' price keys tokenledger applies, in the order of a row's rates.
const TOKEN_KEYS: [&str; 6] = [
    "input_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "output_mtok",
    "output_reasoning_mtok",
];

/// Reads genai-prices' `data.json` and writes the prices of `providers` (in that order; a model
/// name met twice keeps the first provider's prices; empty: [`DEFAULT_PROVIDERS`]) as
/// `model_prices/genai-prices-{date}.parquet`. Prices without a date apply from `valid_from`
/// (micros, UTC); dated ones from their start date (or `valid_from`, if later).
pub async fn import_genai_prices(
    store: Arc<dyn ObjectStore>,
    location: &DataLocation,
    json_path: &std::path::Path,
    valid_from: i64,
    providers: &[String],
) -> Result<GenaiPricesImport> {
    let text = read_text(json_path)?;
    let (rows, report) = genai_prices_rows(&text, valid_from, providers)
        .map_err(|e| EngineError::Input(format!("{}: {e}", json_path.display())))?;
    let file = format!("genai-prices-{}.parquet", date_text(valid_from));
    write_prices(store, location, &file, &rows).await?;
    Ok(report)
}

/// A rate in USD per million tokens: flat, or by the call's input size (genai-prices' "cliff"
/// tiers: above a tier's start, every token of the call is billed at the tier's price).
#[derive(Debug, Clone, PartialEq)]
enum Rate {
    Flat(f64),
    Tiered { base: f64, tiers: Vec<(i64, f64)> },
}

impl Rate {
    fn parse(value: &Value) -> Option<Rate> {
        if let Some(flat) = value.as_f64() {
            return Some(Rate::Flat(flat));
        }
        let base = value.get("base")?.as_f64()?;
        let mut tiers = value
            .get("tiers")?
            .as_array()?
            .iter()
            .map(|t| Some((t.get("start")?.as_i64()?, t.get("price")?.as_f64()?)))
            .collect::<Option<Vec<_>>>()?;
        tiers.sort_by_key(|t| t.0);
        Some(Rate::Tiered { base, tiers })
    }

    /// The rate of a call with more input tokens than `threshold` (and no more than the next
    /// threshold of its book); `None`: the base rate.
    fn above(&self, threshold: Option<i64>) -> f64 {
        match (self, threshold) {
            (Rate::Flat(rate), _) => *rate,
            (Rate::Tiered { base, .. }, None) => *base,
            (Rate::Tiered { base, tiers }, Some(threshold)) => tiers
                .iter()
                .rev()
                .find(|(start, _)| *start <= threshold)
                .map_or(*base, |(_, price)| *price),
        }
    }

    fn starts(&self) -> impl Iterator<Item = i64> + '_ {
        let tiers = match self {
            Rate::Flat(_) => &[][..],
            Rate::Tiered { tiers, .. } => tiers.as_slice(),
        };
        tiers.iter().map(|(start, _)| *start)
    }
}

/// One set of prices by key (only the token keys tokenledger applies).
type Prices = BTreeMap<&'static str, Rate>;

/// Prices that apply from a date (`None`: always).
struct Dated {
    start: Option<i64>,
    prices: Prices,
}

/// A tier's partial prices, from a date.
struct TierVariant {
    tier: String,
    dated: Dated,
}

/// What was left out, by kind, with a few examples each.
#[derive(Default)]
struct LeftOut(BTreeMap<&'static str, Vec<String>>);

impl LeftOut {
    fn note(&mut self, kind: &'static str, example: String) {
        self.0.entry(kind).or_default().push(example);
    }

    fn lines(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(kind, examples)| {
                let shown: Vec<&str> = examples.iter().take(3).map(String::as_str).collect();
                let more = if examples.len() > 3 { ", …" } else { "" };
                format!("{} {kind} ({}{more})", examples.len(), shown.join(", "))
            })
            .collect()
    }
}

fn parse_prices(value: &Value, model: &str, left_out: &mut LeftOut) -> Prices {
    let mut prices = Prices::new();
    let Some(object) = value.as_object() else {
        return prices;
    };
    for (key, rate) in object {
        match TOKEN_KEYS.iter().find(|k| **k == key) {
            Some(known) => {
                if let Some(rate) = Rate::parse(rate) {
                    prices.insert(known, rate);
                }
            }
            None if !rate.is_null() => {
                left_out.note(
                    "prices of other units, not applied",
                    format!("{model} {key}"),
                );
            }
            None => {}
        }
    }
    prices
}

/// Midnight UTC of a `YYYY-MM-DD` date, in micros.
fn date_micros(date: &str) -> Option<i64> {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()?
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_micros())
}

/// The start of a constraint: `Ok(None)` for none, `Err` for one tokenledger cannot represent
/// (a time of day: off-peak prices).
fn constraint_start(entry: &Value) -> std::result::Result<Option<i64>, ()> {
    match entry.get("constraint") {
        None | Some(Value::Null) => Ok(None),
        Some(c) => match c
            .get("start_date")
            .and_then(Value::as_str)
            .and_then(date_micros)
        {
            Some(start) => Ok(Some(start)),
            None => Err(()),
        },
    }
}

/// The tier a variant's `when` names, if it is one tokenledger keeps.
fn variant_tier(when: &Value) -> Option<String> {
    let when = when.as_object()?;
    if when.len() != 1 {
        return None;
    }
    let (key, value) = when.iter().next()?;
    let value = value.as_str()?.to_ascii_lowercase();
    match key.as_str() {
        "processing" if value == "batch" => Some(value),
        "service_tier" if value != "default" && value != "standard" => Some(value),
        _ => None,
    }
}

/// The rows of one model.
fn model_rows(
    provider: &str,
    model: &Value,
    valid_from: i64,
    left_out: &mut LeftOut,
) -> Option<(String, Vec<PriceRow>)> {
    let name = model.get("id")?.as_str()?.to_string();
    let mut conditional = Vec::new();
    let entries: Vec<&Value> = match model.get("prices")? {
        Value::Array(list) => list.iter().collect(),
        single => vec![single],
    };
    for entry in entries {
        let (start, prices) = match entry.get("prices") {
            Some(prices) => match constraint_start(entry) {
                Ok(start) => (start, prices),
                Err(()) => {
                    left_out.note("off-peak prices, not represented", name.clone());
                    continue;
                }
            },
            None => (None, entry),
        };
        conditional.push(Dated {
            start,
            prices: parse_prices(prices, &name, left_out),
        });
    }
    let mut variants = Vec::new();
    for variant in model
        .get("price_variants")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let when = variant.get("when").unwrap_or(&Value::Null);
        let Some(tier) = variant_tier(when) else {
            if !matches!(
                when.get("service_tier").and_then(Value::as_str),
                Some("default")
            ) {
                left_out.note(
                    "price variants, not a service tier",
                    format!("{name} {when}"),
                );
            }
            continue;
        };
        let Ok(start) = constraint_start(variant) else {
            left_out.note("off-peak prices, not represented", name.clone());
            continue;
        };
        variants.push(TierVariant {
            tier,
            dated: Dated {
                start,
                prices: parse_prices(variant.get("prices")?, &name, left_out),
            },
        });
    }
    if conditional.is_empty() {
        return None;
    }
    let rows = resolve(provider, &name, valid_from, &conditional, &variants);
    if rows.is_empty() {
        left_out.note("models without an input price", name.clone());
        return None;
    }
    Some((name, rows))
}

/// The prices in force at `at`: genai-prices' rule — the last conditional price whose start has
/// come (or that has none), else the first.
fn standard_at(conditional: &[Dated], at: i64) -> &Prices {
    let in_force = conditional
        .iter()
        .rev()
        .find(|c| c.start.is_none_or(|s| s <= at));
    &in_force.unwrap_or(&conditional[0]).prices
}

/// `tier`'s prices at `at`: the standard ones with each key the tier's variants give (the first
/// variant in force giving it wins, as in genai-prices); `None` before any variant starts.
fn tier_at(conditional: &[Dated], variants: &[TierVariant], tier: &str, at: i64) -> Option<Prices> {
    let mut prices = standard_at(conditional, at).clone();
    let mut overridden = BTreeSet::new();
    let mut any = false;
    for variant in variants
        .iter()
        .filter(|v| v.tier == tier && v.dated.start.is_none_or(|s| s <= at))
    {
        any = true;
        for (key, rate) in &variant.dated.prices {
            if overridden.insert(*key) {
                prices.insert(key, rate.clone());
            }
        }
    }
    any.then_some(prices)
}

/// Every row of one model: at each instant its prices change, a row per tier and threshold
/// (consecutive equal rows merged).
fn resolve(
    provider: &str,
    model: &str,
    valid_from: i64,
    conditional: &[Dated],
    variants: &[TierVariant],
) -> Vec<PriceRow> {
    let mut instants: BTreeSet<i64> = BTreeSet::from([valid_from]);
    let starts = conditional
        .iter()
        .chain(variants.iter().map(|v| &v.dated))
        .filter_map(|d| d.start);
    instants.extend(starts.filter(|s| *s > valid_from));
    let mut tiers: Vec<Option<&str>> = vec![None];
    for v in variants {
        if !tiers.contains(&Some(v.tier.as_str())) {
            tiers.push(Some(&v.tier));
        }
    }
    let all_prices = conditional
        .iter()
        .chain(variants.iter().map(|v| &v.dated))
        .flat_map(|d| d.prices.values());
    let thresholds: BTreeSet<i64> = all_prices.flat_map(Rate::starts).collect();
    let levels: Vec<Option<i64>> = std::iter::once(None)
        .chain(thresholds.into_iter().map(Some))
        .collect();

    let mut rows: Vec<PriceRow> = Vec::new();
    let mut last: BTreeMap<(Option<&str>, Option<i64>), PriceRow> = BTreeMap::new();
    for &at in &instants {
        for &tier in &tiers {
            let prices = match tier {
                None => Some(standard_at(conditional, at).clone()),
                Some(tier) => tier_at(conditional, variants, tier, at),
            };
            let Some(prices) = prices else { continue };
            for &level in &levels {
                let Some(row) = price_row(provider, model, at, tier, level, &prices) else {
                    continue;
                };
                let key = (tier, level);
                let same = last.get(&key).is_some_and(|prev| {
                    PriceRow {
                        valid_from: at,
                        ..prev.clone()
                    } == row
                });
                if !same {
                    last.insert(key, row.clone());
                    rows.push(row);
                }
            }
        }
    }
    rows
}

/// The row of `prices` for calls above `level` (`None`: every call). Without an input price
/// there is none; without an output price output is free (embedding models).
fn price_row(
    provider: &str,
    model: &str,
    at: i64,
    tier: Option<&str>,
    level: Option<i64>,
    prices: &Prices,
) -> Option<PriceRow> {
    let rate = |key: &str| prices.get(key).map(|r| r.above(level));
    Some(PriceRow {
        provider: Some(provider.to_string()),
        service_tier: tier.map(str::to_string),
        above_input_tokens: level,
        cached_input: rate(TOKEN_KEYS[1]),
        cache_write: rate(TOKEN_KEYS[2]),
        cache_write_1h: rate(TOKEN_KEYS[3]),
        reasoning: rate(TOKEN_KEYS[5]),
        ..PriceRow::new(
            model,
            at,
            rate(TOKEN_KEYS[0])?,
            rate(TOKEN_KEYS[4]).unwrap_or(0.0),
        )
    })
}

/// Parses the data and resolves the rows of `providers`.
fn genai_prices_rows(
    text: &str,
    valid_from: i64,
    providers: &[String],
) -> std::result::Result<(Vec<PriceRow>, GenaiPricesImport), String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let all = root
        .as_array()
        .ok_or("expected genai-prices' data.json: a JSON list of providers")?;
    let by_id: BTreeMap<&str, &Value> = all
        .iter()
        .filter_map(|p| Some((p.get("id")?.as_str()?, p)))
        .collect();
    let wanted: Vec<&str> = if providers.is_empty() {
        DEFAULT_PROVIDERS.to_vec()
    } else {
        providers.iter().map(String::as_str).collect()
    };
    let mut left_out = LeftOut::default();
    let mut rows = Vec::new();
    let mut models = BTreeSet::new();
    for id in wanted {
        let Some(provider) = by_id.get(id) else {
            if providers.is_empty() {
                continue;
            }
            let known: Vec<&str> = by_id.keys().copied().collect();
            return Err(format!(
                "no provider {id:?}; the file has {}",
                known.join(", ")
            ));
        };
        let list = provider.get("models").and_then(Value::as_array);
        for model in list.into_iter().flatten() {
            let Some((name, model_rows)) = model_rows(id, model, valid_from, &mut left_out) else {
                continue;
            };
            if !models.insert(name.clone()) {
                left_out.note(
                    "models priced by an earlier provider, kept",
                    format!("{id}/{name}"),
                );
                continue;
            }
            rows.extend(model_rows);
        }
    }
    if rows.is_empty() {
        return Err("no model with an input price among the chosen providers".into());
    }
    let report = GenaiPricesImport {
        models: models.len(),
        rows: rows.len(),
        left_out: left_out.lines(),
    };
    Ok((rows, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn tiers_dates_and_long_context_become_rows() {
        // Shaped as genai-prices publishes Claude Sonnet 4.5 (trimmed), with a price cut dated
        // 2026-03-01 and a batch variant from 2026-02-01.
        let json = r#"[{"id": "anthropic", "name": "Anthropic", "api_pattern": "x", "models": [
          {"id": "claude-sonnet-4-5", "match": {"starts_with": "claude-sonnet-4-5"},
           "prices": [
             {"prices": {"input_mtok": {"base": 3, "tiers": [{"start": 200000, "price": 6}]},
                         "cache_write_mtok": 3.75, "cache_read_mtok": 0.3, "output_mtok": 15,
                         "web_searches_kcount": 10}},
             {"constraint": {"start_date": "2026-03-01"},
              "prices": {"input_mtok": 2, "cache_read_mtok": 0.2, "output_mtok": 10}}],
           "price_variants": [
             {"when": {"processing": "batch"}, "prices": {"input_mtok": 1.5, "output_mtok": 7.5},
              "constraint": {"start_date": "2026-02-01"}},
             {"when": {"speed": "fast"}, "prices": {"input_mtok": 16}}]}]}]"#;
        let jan = date_micros("2026-01-01").unwrap();
        let (rows, report) = genai_prices_rows(json, jan, &[]).unwrap();
        let row =
            |at: i64, tier: Option<&str>, above: Option<i64>, input, output, cached, write| {
                PriceRow {
                    provider: Some("anthropic".into()),
                    service_tier: tier.map(str::to_string),
                    above_input_tokens: above,
                    cached_input: cached,
                    cache_write: write,
                    ..PriceRow::new("claude-sonnet-4-5", at, input, output)
                }
            };
        let feb = jan + 31 * DAY;
        let mar = feb + 28 * DAY;
        let long = Some(200_000);
        assert_eq!(
            rows,
            [
                row(jan, None, None, 3.0, 15.0, Some(0.3), Some(3.75)),
                row(jan, None, long, 6.0, 15.0, Some(0.3), Some(3.75)),
                // Batch from its start: its own input and output, the rest standard.
                row(feb, Some("batch"), None, 1.5, 7.5, Some(0.3), Some(3.75)),
                row(feb, Some("batch"), long, 1.5, 7.5, Some(0.3), Some(3.75)),
                // The cut: flat prices, so the long-context row falls back to them.
                row(mar, None, None, 2.0, 10.0, Some(0.2), None),
                row(mar, None, long, 2.0, 10.0, Some(0.2), None),
                row(mar, Some("batch"), None, 1.5, 7.5, Some(0.2), None),
                row(mar, Some("batch"), long, 1.5, 7.5, Some(0.2), None),
            ]
        );
        assert_eq!((report.models, report.rows), (1, 8));
        assert_eq!(
            report.left_out,
            [
                "1 price variants, not a service tier (claude-sonnet-4-5 {\"speed\":\"fast\"})",
                "1 prices of other units, not applied (claude-sonnet-4-5 web_searches_kcount)",
            ]
        );
    }

    #[test]
    fn an_unknown_provider_is_named_with_the_ones_there_are() {
        let json = r#"[{"id": "openai", "models": []}]"#;
        let e = genai_prices_rows(json, 0, &["opnai".to_string()]).unwrap_err();
        assert_eq!(e, "no provider \"opnai\"; the file has openai");
        assert!(
            genai_prices_rows("{}", 0, &[])
                .unwrap_err()
                .contains("list of providers")
        );
    }
}
