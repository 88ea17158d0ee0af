//! Every model's prices, by service tier, input size and time, read from `model_prices`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::{Result, exec_err};

use super::{PricePeriod, STANDARD_TIER};

/// One model's prices at one tier for calls above one input size, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PriceSeries {
    /// The series applies to calls with more input tokens than this; `i64::MIN` for the base
    /// rates, which apply to every call.
    pub above_input_tokens: i64,
    pub periods: Vec<PricePeriod>,
}

impl PriceSeries {
    /// The period valid at `at` (micros, UTC): the latest starting at or before.
    pub fn at(&self, at: i64) -> Option<&PricePeriod> {
        let after = self.periods.partition_point(|p| p.valid_from <= at);
        after.checked_sub(1).map(|i| &self.periods[i])
    }
}

/// One model's prices at one service tier: its series, highest threshold first.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TierPrices {
    pub tier: String,
    pub series: Vec<PriceSeries>,
}

/// Every model's prices, for as-of lookups by tier and input size.
#[derive(Debug, Default)]
pub struct PriceBook {
    pub(super) models: HashMap<String, Vec<TierPrices>>,
    /// Why prices could not be loaded; `token_cost` reports it instead of returning NULLs.
    pub(super) unavailable: Option<String>,
}

/// One `model_prices` row, read and checked.
struct PriceRow {
    model: String,
    tier: String,
    above_input_tokens: i64,
    period: PricePeriod,
}

impl PriceBook {
    /// Builds the book from `model_prices` rows (columns by name; the optional ones may be
    /// missing). A row without a model, a start, an input or an output rate, with a negative
    /// or non-finite rate or a negative threshold is an error naming the row: a price row that
    /// cannot be read must not leave its calls priced by another row. When two rows share
    /// model, tier, threshold and start, the higher price wins, so the result does not depend
    /// on file order.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self> {
        let mut rows = Vec::new();
        for batch in batches {
            read_rows(batch, &mut rows)?;
        }
        let mut models: HashMap<String, Vec<TierPrices>> = HashMap::new();
        for row in rows {
            let tiers = models.entry(row.model).or_default();
            let tier = match tiers.iter_mut().position(|t| t.tier == row.tier) {
                Some(i) => &mut tiers[i],
                None => {
                    tiers.push(TierPrices {
                        tier: row.tier,
                        series: Vec::new(),
                    });
                    tiers.last_mut().expect("just pushed")
                }
            };
            let series = match tier
                .series
                .iter_mut()
                .position(|s| s.above_input_tokens == row.above_input_tokens)
            {
                Some(i) => &mut tier.series[i],
                None => {
                    tier.series.push(PriceSeries {
                        above_input_tokens: row.above_input_tokens,
                        periods: Vec::new(),
                    });
                    tier.series.last_mut().expect("just pushed")
                }
            };
            series.periods.push(row.period);
        }
        for tiers in models.values_mut() {
            tiers.sort_by(|a, b| a.tier.cmp(&b.tier));
            for tier in tiers.iter_mut() {
                tier.series
                    .sort_by_key(|s| std::cmp::Reverse(s.above_input_tokens));
                for series in &mut tier.series {
                    keep_highest_of_equal_starts(&mut series.periods);
                }
            }
        }
        Ok(PriceBook {
            models,
            unavailable: None,
        })
    }

    /// A book that makes `token_cost` fail with `reason` (prices could not be read).
    pub fn unavailable(reason: impl Into<String>) -> Self {
        PriceBook {
            models: HashMap::new(),
            unavailable: Some(reason.into()),
        }
    }

    /// Why the book could not be loaded, if it could not.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The price of a call to `model` at `tier` (`None`: standard) with `input_tokens` input
    /// tokens, valid at `at` (micros, UTC): of the model's series at that tier, the one with
    /// the highest threshold the call is above that has a price at `at`.
    pub fn price_at(
        &self,
        model: &str,
        tier: Option<&str>,
        input_tokens: i64,
        at: i64,
    ) -> Option<&PricePeriod> {
        let tier = tier.unwrap_or(STANDARD_TIER);
        let (_, tiers) = self.model(model)?;
        let prices = tiers.iter().find(|t| t.tier == tier)?;
        prices
            .series
            .iter()
            .filter(|s| input_tokens > s.above_input_tokens)
            .find_map(|s| s.at(at))
    }

    /// The prices of `model`: its own, else, for a name ending in a release date
    /// (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`, `claude-sonnet-4-5@20250929`), those
    /// of the name without it, as price lists name most models.
    pub(super) fn model(&self, model: &str) -> Option<(&String, &Vec<TierPrices>)> {
        self.models
            .get_key_value(model)
            .or_else(|| self.models.get_key_value(undated(model)?))
    }

    /// Number of models with prices.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// A digest of every price in the book (FNV-1a over models in name order, their tiers,
    /// thresholds and periods), the same in every process that read the same `model_prices`
    /// rows: nodes of a cluster compare it to be sure they price alike. Books that could not
    /// be loaded all share one.
    pub fn fingerprint(&self) -> String {
        if self.unavailable.is_some() {
            return "unavailable".to_string();
        }
        let mut hash = Fnv1a::default();
        let mut names: Vec<&String> = self.models.keys().collect();
        names.sort();
        for name in names {
            hash.write(name.as_bytes());
            hash.write(&[0xff]);
            for tier in &self.models[name] {
                hash.write(tier.tier.as_bytes());
                hash.write(&[0xfe]);
                for series in &tier.series {
                    hash.write(&series.above_input_tokens.to_le_bytes());
                    for period in &series.periods {
                        hash.write(&period.valid_from.to_le_bytes());
                        for price in rates(period) {
                            hash.write(&price.to_bits().to_le_bytes());
                        }
                    }
                }
            }
        }
        format!("{}-{:016x}", self.models.len(), hash.0)
    }
}

fn rates(p: &PricePeriod) -> [f64; 6] {
    [
        p.input,
        p.cached_input,
        p.cache_write,
        p.cache_write_1h,
        p.output,
        p.reasoning,
    ]
}

/// `name` without a trailing release date (`-20250929`, `-2024-08-06`, `@20250929`), if it
/// has one.
fn undated(name: &str) -> Option<&str> {
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let dashed = |s: &str| {
        s.len() == 10
            && digits(&s[..4])
            && &s[4..5] == "-"
            && digits(&s[5..7])
            && &s[7..8] == "-"
            && digits(&s[8..])
    };
    let (head, tail) = name.rsplit_once(['-', '@'])?;
    if tail.len() == 8 && digits(tail) && tail.starts_with("20") {
        return Some(head);
    }
    // `-YYYY-MM-DD` splits at its last dash: look again at the whole of the last 11 bytes.
    let cut = name.len().checked_sub(11)?;
    let (head, date) = (name.get(..cut)?, name.get(cut + 1..)?);
    (name.as_bytes()[cut] == b'-' && dashed(date) && date.starts_with("20")).then_some(head)
}

/// Sorts by start and keeps, of equal starts, the highest price.
fn keep_highest_of_equal_starts(periods: &mut Vec<PricePeriod>) {
    periods.sort_by(|a, b| {
        a.valid_from
            .cmp(&b.valid_from)
            .then(a.input.total_cmp(&b.input))
            .then(a.output.total_cmp(&b.output))
    });
    periods.reverse();
    periods.dedup_by_key(|p| p.valid_from);
    periods.reverse();
}

/// Reads and checks the rows of one `model_prices` batch.
fn read_rows(batch: &RecordBatch, rows: &mut Vec<PriceRow>) -> Result<()> {
    let required = |name: &str| -> Result<ArrayRef> {
        match batch.column_by_name(name) {
            Some(c) => Ok(Arc::clone(c)),
            None => exec_err!("model_prices has no column {name}"),
        }
    };
    let optional = |name: &str, ty: &DataType| -> Result<Option<ArrayRef>> {
        batch
            .column_by_name(name)
            .map(|c| cast(c, ty))
            .transpose()
            .map_err(Into::into)
    };
    let model = cast(&required("model")?, &DataType::Utf8)?;
    let model = model.as_string::<i32>();
    let valid_from = cast(
        &required("valid_from")?,
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )?;
    let valid_from = valid_from.as_primitive::<TimestampMicrosecondType>();
    let tier = optional("service_tier", &DataType::Utf8)?;
    let tier = tier.as_ref().map(|t| t.as_string::<i32>());
    let above = optional("above_input_tokens", &DataType::Int64)?;
    let above = above.as_ref().map(|a| a.as_primitive::<Int64Type>());
    let rate_columns = [
        Some(cast(&required("input_usd_per_mtok")?, &DataType::Float64)?),
        optional("cached_input_usd_per_mtok", &DataType::Float64)?,
        optional("cache_write_usd_per_mtok", &DataType::Float64)?,
        optional("cache_write_1h_usd_per_mtok", &DataType::Float64)?,
        Some(cast(&required("output_usd_per_mtok")?, &DataType::Float64)?),
        optional("reasoning_usd_per_mtok", &DataType::Float64)?,
    ];
    const RATE_NAMES: [&str; 6] = [
        "input_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "cache_write_usd_per_mtok",
        "cache_write_1h_usd_per_mtok",
        "output_usd_per_mtok",
        "reasoning_usd_per_mtok",
    ];
    for row in 0..batch.num_rows() {
        fn text(a: Option<&StringArray>, row: usize) -> Option<&str> {
            a.filter(|a| a.is_valid(row)).map(|a| a.value(row))
        }
        let Some(model_name) = text(Some(model), row).filter(|m| !m.is_empty()) else {
            return exec_err!("model_prices has a row without a model");
        };
        let tier_name = text(tier, row)
            .filter(|t| !t.is_empty())
            .unwrap_or(STANDARD_TIER);
        let threshold = above.filter(|a| a.is_valid(row)).map(|a| a.value(row));
        let describe = || {
            let mut what = format!("model_prices row of {model_name} (tier {tier_name}");
            if let Some(t) = threshold {
                what.push_str(&format!(", above {t} input tokens"));
            }
            if valid_from.is_valid(row) {
                let start = instant_text(valid_from.value(row));
                what.push_str(&format!(", from {start}"));
            }
            what.push(')');
            what
        };
        if valid_from.is_null(row) {
            return exec_err!("{}: no valid_from", describe());
        }
        if let Some(t) = threshold.filter(|t| *t < 0) {
            return exec_err!("{}: above_input_tokens {t} is negative", describe());
        }
        let mut rates = [None; 6];
        for (i, column) in rate_columns.iter().enumerate() {
            let Some(column) = column else { continue };
            let column = column.as_primitive::<Float64Type>();
            if column.is_null(row) {
                continue;
            }
            let rate = column.value(row);
            if !(rate.is_finite() && rate >= 0.0) {
                return exec_err!(
                    "{}: {} {rate} is not a price (a finite, non-negative USD per million tokens)",
                    describe(),
                    RATE_NAMES[i]
                );
            }
            rates[i] = Some(rate);
        }
        let [input, cached, write, write_1h, output, reasoning] = rates;
        let (Some(input), Some(output)) = (input, output) else {
            let missing = if input.is_none() {
                RATE_NAMES[0]
            } else {
                RATE_NAMES[4]
            };
            return exec_err!(
                "{}: no {missing}; every price row, long-context and tier rows included, \
                 needs input and output rates",
                describe()
            );
        };
        let cache_write = write.unwrap_or(input);
        rows.push(PriceRow {
            model: model_name.to_string(),
            tier: tier_name.to_string(),
            above_input_tokens: threshold.unwrap_or(i64::MIN),
            period: PricePeriod {
                valid_from: valid_from.value(row),
                input,
                cached_input: cached.unwrap_or(input),
                cache_write,
                cache_write_1h: write_1h.unwrap_or(cache_write),
                output,
                reasoning: reasoning.unwrap_or(output),
            },
        });
    }
    Ok(())
}

/// `micros` as an RFC 3339 UTC time, for error messages.
fn instant_text(micros: i64) -> String {
    datafusion::arrow::temporal_conversions::timestamp_us_to_datetime(micros).map_or_else(
        || format!("{micros} µs"),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// 64-bit FNV-1a: stable across processes and builds, unlike `std`'s hasher.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The price book `token_cost` reads, replaced whole when a long-running session reloads
/// `model_prices` (views keep the function they were planned with, so they see the new book too).
#[derive(Debug, Default)]
pub struct SharedPrices(RwLock<Arc<PriceBook>>);

impl SharedPrices {
    /// Shares `book`.
    pub fn new(book: Arc<PriceBook>) -> Arc<Self> {
        Arc::new(SharedPrices(RwLock::new(book)))
    }

    /// The current book.
    pub fn current(&self) -> Arc<PriceBook> {
        Arc::clone(&self.0.read().expect("prices lock"))
    }

    /// Puts `book` in place of the current one; queries already running keep theirs.
    pub fn replace(&self, book: Arc<PriceBook>) {
        *self.0.write().expect("prices lock") = book;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };

    fn period(valid_from: i64, input: f64) -> PricePeriod {
        PricePeriod {
            valid_from,
            input,
            cached_input: input / 4.0,
            cache_write: input * 1.25,
            cache_write_1h: input * 2.0,
            output: input * 4.0,
            reasoning: input * 4.0,
        }
    }

    fn series(above: i64, periods: Vec<PricePeriod>) -> PriceSeries {
        PriceSeries {
            above_input_tokens: above,
            periods,
        }
    }

    fn book(models: &[(&str, &str, Vec<PriceSeries>)]) -> PriceBook {
        let mut book = PriceBook::default();
        for (model, tier, series) in models {
            book.models
                .entry(model.to_string())
                .or_default()
                .push(TierPrices {
                    tier: tier.to_string(),
                    series: series.clone(),
                });
        }
        book
    }

    #[test]
    fn as_of_lookup_takes_the_latest_start_at_or_before() {
        let s = series(i64::MIN, vec![period(100, 1.0), period(200, 2.0)]);
        assert_eq!(s.at(99), None);
        assert_eq!(s.at(100).unwrap().input, 1.0);
        assert_eq!(s.at(199).unwrap().input, 1.0);
        assert_eq!(s.at(200).unwrap().input, 2.0);
        assert_eq!(s.at(i64::MAX).unwrap().input, 2.0);
    }

    #[test]
    fn a_call_takes_its_tier_and_the_highest_threshold_it_is_above() {
        let b = book(&[
            (
                "m",
                "standard",
                vec![
                    // The long-context rate starts later than the base rate.
                    series(200_000, vec![period(150, 6.0)]),
                    series(i64::MIN, vec![period(100, 3.0)]),
                ],
            ),
            ("m", "batch", vec![series(i64::MIN, vec![period(100, 1.5)])]),
        ]);
        let price = |tier, input, at| b.price_at("m", tier, input, at).map(|p| p.input);
        assert_eq!(
            price(None, 200_000, 200),
            Some(3.0),
            "at the threshold: base"
        );
        assert_eq!(
            price(None, 200_001, 200),
            Some(6.0),
            "above it: every token"
        );
        assert_eq!(price(Some("standard"), 200_001, 200), Some(6.0));
        assert_eq!(
            price(None, 200_001, 120),
            Some(3.0),
            "before the long-context rate existed"
        );
        assert_eq!(price(Some("batch"), 300_000, 200), Some(1.5));
        assert_eq!(price(Some("flex"), 10, 200), None, "no flex price: none");
        assert_eq!(price(None, 10, 99), None);
    }

    fn prices_batch(
        tier: Option<&str>,
        above: Option<i64>,
        input: Option<f64>,
        write: Option<f64>,
    ) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("model", Arc::new(StringArray::from(vec!["m"])) as ArrayRef),
            (
                "valid_from",
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
            ),
            (
                "input_usd_per_mtok",
                Arc::new(Float64Array::from(vec![input])),
            ),
            (
                "output_usd_per_mtok",
                Arc::new(Float64Array::from(vec![15.0])),
            ),
            ("service_tier", Arc::new(StringArray::from(vec![tier]))),
            (
                "above_input_tokens",
                Arc::new(Int64Array::from(vec![above])),
            ),
            (
                "cache_write_usd_per_mtok",
                Arc::new(Float64Array::from(vec![write])),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn null_rates_are_the_rate_of_the_tokens_they_refine() {
        let b = PriceBook::from_batches(&[prices_batch(None, None, Some(3.0), None)]).unwrap();
        let p = b.price_at("m", Some("standard"), 1, 0).unwrap();
        assert_eq!(
            (p.cached_input, p.cache_write, p.cache_write_1h, p.reasoning),
            (3.0, 3.0, 3.0, 15.0)
        );
        let b =
            PriceBook::from_batches(&[prices_batch(None, None, Some(3.0), Some(3.75))]).unwrap();
        assert_eq!(b.price_at("m", None, 1, 0).unwrap().cache_write_1h, 3.75);
    }

    #[test]
    fn a_row_that_cannot_be_read_is_an_error_naming_it() {
        let error = |batch| PriceBook::from_batches(&[batch]).unwrap_err().to_string();
        let e = error(prices_batch(Some("batch"), Some(200_000), None, None));
        assert!(
            e.contains("model_prices row of m (tier batch, above 200000 input tokens, from 1970-01-01T00:00:00Z)")
                && e.contains("no input_usd_per_mtok"),
            "{e}"
        );
        let e = error(prices_batch(None, Some(-1), Some(3.0), None));
        assert!(e.contains("above_input_tokens -1 is negative"), "{e}");
        let e = error(prices_batch(None, None, Some(3.0), Some(f64::NAN)));
        assert!(
            e.contains("cache_write_usd_per_mtok NaN is not a price"),
            "{e}"
        );
    }

    #[test]
    fn a_dated_model_name_takes_the_prices_of_its_undated_one() {
        assert_eq!(
            undated("claude-sonnet-4-5-20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(
            undated("claude-sonnet-4-5@20250929"),
            Some("claude-sonnet-4-5")
        );
        assert_eq!(undated("gpt-4o-2024-08-06"), Some("gpt-4o"));
        assert_eq!(undated("gpt-4.1-mini"), None);
        assert_eq!(undated("gemini-2.5-pro-preview-05-06"), None);
        assert_eq!(undated("model-12345678"), None);
        let b = book(&[
            (
                "gpt-4o",
                "standard",
                vec![series(i64::MIN, vec![period(0, 2.5)])],
            ),
            (
                "gpt-4o-2024-05-13",
                "standard",
                vec![series(i64::MIN, vec![period(0, 5.0)])],
            ),
        ]);
        let input = |model| b.price_at(model, None, 1, 0).map(|p| p.input);
        assert_eq!(input("gpt-4o-2024-08-06"), Some(2.5));
        assert_eq!(
            input("gpt-4o-2024-05-13"),
            Some(5.0),
            "its own prices first"
        );
        assert_eq!(input("gpt-4"), None);
    }

    #[test]
    fn fingerprint_depends_on_every_price_and_not_on_insertion_order() {
        let one = |input| vec![series(i64::MIN, vec![period(1, input)])];
        let a = book(&[("a", "standard", one(1.0)), ("b", "standard", one(2.0))]);
        let b = book(&[("b", "standard", one(2.0)), ("a", "standard", one(1.0))]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // FNV-1a of the empty input: the published offset basis.
        assert_eq!(book(&[]).fingerprint(), "0-cbf29ce484222325");
        let mut cheaper = period(1, 2.0);
        cheaper.cache_write_1h -= 0.01;
        let c = book(&[
            ("a", "standard", one(1.0)),
            ("b", "standard", vec![series(i64::MIN, vec![cheaper])]),
        ]);
        assert_ne!(a.fingerprint(), c.fingerprint());
        let other_tier = book(&[("a", "standard", one(1.0)), ("b", "batch", one(2.0))]);
        assert_ne!(a.fingerprint(), other_tier.fingerprint());
        let threshold = book(&[
            ("a", "standard", one(1.0)),
            ("b", "standard", vec![series(0, vec![period(1, 2.0)])]),
        ]);
        assert_ne!(a.fingerprint(), threshold.fingerprint());
        assert_eq!(
            PriceBook::unavailable("x").fingerprint(),
            PriceBook::unavailable("y").fingerprint()
        );
    }
}
