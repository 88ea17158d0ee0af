//! As-of model pricing: what a call cost at the price valid when it was made.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, RwLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, Int64Array, RecordBatch,
    StringViewArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::TOKEN_ECONOMICS;

/// One price period of a model, USD per million tokens, with defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PricePeriod {
    /// Micros since the epoch (UTC) from which this price applies.
    pub valid_from: i64,
    pub input: f64,
    /// Cached input tokens (the input price when the table leaves it NULL).
    pub cached_input: f64,
    pub output: f64,
    /// Reasoning tokens (the output price when the table leaves it NULL).
    pub reasoning: f64,
}

impl PricePeriod {
    /// USD for one call. Cached tokens are part of `input` and reasoning tokens part of `output`
    /// (OpenTelemetry's convention), so each token is priced exactly once. Counts above their
    /// total (cached > input) are capped rather than priced negative.
    pub fn cost(&self, input: i64, cached: i64, output: i64, reasoning: i64) -> f64 {
        PerToken::of(self).cost(input, cached, output, reasoning)
    }
}

/// A price period in USD per token: multiplying by it instead of dividing each call's sum by a
/// million keeps a division out of `token_cost`'s per-row loop.
#[derive(Debug, Clone, Copy)]
struct PerToken {
    input: f64,
    cached_input: f64,
    output: f64,
    reasoning: f64,
}

impl PerToken {
    fn of(period: &PricePeriod) -> Self {
        PerToken {
            input: period.input / 1e6,
            cached_input: period.cached_input / 1e6,
            output: period.output / 1e6,
            reasoning: period.reasoning / 1e6,
        }
    }

    /// USD for one call: see [`PricePeriod::cost`].
    fn cost(&self, input: i64, cached: i64, output: i64, reasoning: i64) -> f64 {
        let cached = cached.clamp(0, input.max(0));
        let reasoning = reasoning.clamp(0, output.max(0));
        (input - cached) as f64 * self.input
            + cached as f64 * self.cached_input
            + (output - reasoning) as f64 * self.output
            + reasoning as f64 * self.reasoning
    }
}

/// Every model's price periods, for as-of lookups.
#[derive(Debug, Default)]
pub struct PriceBook {
    models: HashMap<String, Vec<PricePeriod>>,
    /// Why prices could not be loaded; `token_cost` reports it instead of returning NULLs.
    unavailable: Option<String>,
}

impl PriceBook {
    /// Builds the book from `model_prices` rows (columns by name). Rows without a model, start
    /// or input/output price are skipped. When two rows share model and `valid_from`, the higher
    /// price wins, so the result does not depend on file order.
    pub fn from_batches(batches: &[RecordBatch]) -> Result<Self> {
        let mut models: HashMap<String, Vec<PricePeriod>> = HashMap::new();
        for batch in batches {
            let column = |name: &str| -> Result<ArrayRef> {
                match batch.column_by_name(name) {
                    Some(c) => Ok(Arc::clone(c)),
                    None => exec_err!("model_prices has no column {name}"),
                }
            };
            let model = cast(&column("model")?, &DataType::Utf8)?;
            let model = model.as_string::<i32>();
            let valid_from = cast(
                &column("valid_from")?,
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )?;
            let valid_from = valid_from.as_primitive::<TimestampMicrosecondType>();
            let price =
                |name| -> Result<ArrayRef> { Ok(cast(&column(name)?, &DataType::Float64)?) };
            let (input, cached, output, reasoning) = (
                price("input_usd_per_mtok")?,
                price("cached_input_usd_per_mtok")?,
                price("output_usd_per_mtok")?,
                price("reasoning_usd_per_mtok")?,
            );
            let f = |a: &ArrayRef, row: usize| {
                let a = a.as_primitive::<Float64Type>();
                a.is_valid(row).then(|| a.value(row))
            };
            for row in 0..batch.num_rows() {
                let (Some(input_price), Some(output_price)) = (f(&input, row), f(&output, row))
                else {
                    continue;
                };
                if model.is_null(row) || valid_from.is_null(row) {
                    continue;
                }
                models
                    .entry(model.value(row).to_string())
                    .or_default()
                    .push(PricePeriod {
                        valid_from: valid_from.value(row),
                        input: input_price,
                        cached_input: f(&cached, row).unwrap_or(input_price),
                        output: output_price,
                        reasoning: f(&reasoning, row).unwrap_or(output_price),
                    });
            }
        }
        for periods in models.values_mut() {
            periods.sort_by(|a, b| {
                a.valid_from
                    .cmp(&b.valid_from)
                    .then(a.input.total_cmp(&b.input))
                    .then(a.output.total_cmp(&b.output))
            });
            // Keep the last (highest) of equal starts.
            periods.reverse();
            periods.dedup_by_key(|p| p.valid_from);
            periods.reverse();
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

    /// The price periods of `model`, oldest first.
    pub fn periods(&self, model: &str) -> Option<&[PricePeriod]> {
        self.models.get(model).map(Vec::as_slice)
    }

    /// The price of `model` valid at `at` (micros, UTC): the latest period starting at or before.
    pub fn price_at(&self, model: &str, at: i64) -> Option<&PricePeriod> {
        period_at(self.periods(model)?, at)
    }

    /// Number of models with prices.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// A digest of every price in the book (FNV-1a over models in name order and their periods),
    /// the same in every process that read the same `model_prices` rows: nodes of a cluster
    /// compare it to be sure they price alike. Books that could not be loaded all share one.
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
            for period in &self.models[name] {
                hash.write(&period.valid_from.to_le_bytes());
                for price in [
                    period.input,
                    period.cached_input,
                    period.output,
                    period.reasoning,
                ] {
                    hash.write(&price.to_bits().to_le_bytes());
                }
            }
        }
        format!("{}-{:016x}", self.models.len(), hash.0)
    }
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

fn period_at(periods: &[PricePeriod], at: i64) -> Option<&PricePeriod> {
    let after = periods.partition_point(|p| p.valid_from <= at);
    after.checked_sub(1).map(|i| &periods[i])
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

/// `token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, at)`.
#[derive(Debug)]
pub struct TokenCost {
    signature: Signature,
    prices: Arc<SharedPrices>,
}

impl TokenCost {
    /// `token_cost` over `prices` (a session's copy of the `model_prices` table).
    pub fn new(prices: Arc<SharedPrices>) -> Self {
        TokenCost {
            // Stable, not Immutable: the same arguments price differently once a session
            // reloads `model_prices`. Within one query the prices do not change.
            signature: Signature::user_defined(Volatility::Stable),
            prices,
        }
    }
}

impl PartialEq for TokenCost {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.prices, &other.prices)
    }
}

impl Eq for TokenCost {}

impl Hash for TokenCost {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.prices).hash(state);
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "USD for one model call, priced from the model_prices row of that model with the latest \
         valid_from <= at (as-of pricing: history can be repriced when prices change). Cached \
         tokens are part of input_tokens and priced at the cached rate, reasoning tokens part of \
         output_tokens and priced at the reasoning rate (NULL rate = output rate): nothing is \
         counted twice. NULL for an unknown model, no price valid at `at`, a NULL model or time, \
         or no token counts; NULL cached or reasoning counts are 0. A literal model prices a \
         what-if: this traffic on another model.",
        "token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, at)",
    )
    .with_argument("model", "Model name as in model_prices.model.")
    .with_argument("input_tokens", "Prompt tokens, including cached ones.")
    .with_argument("cached_input_tokens", "Prompt tokens read from cache.")
    .with_argument("output_tokens", "Completion tokens, including reasoning ones.")
    .with_argument("reasoning_tokens", "Reasoning tokens.")
    .with_argument("at", "When the call was made (timestamp).")
    .with_sql_example(
        "```sql\n> SELECT sum(coalesce(cost_usd, token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, start_time))) FROM spans;\n> SELECT sum(token_cost('gpt-4.1-mini', input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, start_time)) FROM spans WHERE kind = 'llm'; -- what-if\n```",
    )
    .build()
});

fn timestamp_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl ScalarUDFImpl for TokenCost {
    fn name(&self) -> &str {
        "token_cost"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let ok = arg_types.len() == 6
            && (arg_types[0].is_string() || arg_types[0].is_null())
            && arg_types[1..5]
                .iter()
                .all(|t| t.is_integer() || t.is_null())
            && matches!(
                arg_types[5],
                DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null
            ) | arg_types[5].is_string();
        if !ok {
            return plan_err!(
                "token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, at) \
                 takes text, four integers and a timestamp, got {arg_types:?}"
            );
        }
        // Microsecond timestamps are taken as they are, with or without a time zone: both hold
        // microseconds since the epoch in UTC, which is what prices are looked up by. Casting
        // a timestamp without a zone to one with a zone costs a time-zone conversion per value
        // (37 ms per million rows, more than the pricing itself).
        let at = match &arg_types[5] {
            micros @ DataType::Timestamp(TimeUnit::Microsecond, _) => micros.clone(),
            _ => timestamp_utc(),
        };
        Ok(vec![
            // The tables' text type: no per-batch conversion of the model column.
            DataType::Utf8View,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            DataType::Int64,
            at,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let prices = self.prices.current();
        if let Some(reason) = &prices.unavailable {
            return exec_err!("token_cost: model prices are unavailable: {reason}");
        }
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let arrays: Vec<ArrayRef> = arrays
            .into_iter()
            .map(|a| if a.len() == rows { a } else { a.slice(0, rows) })
            .collect();
        let result = price_rows(&prices, &arrays, rows)?;
        if all_scalar {
            return Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&result, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(result))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The per-batch loop. A row's model is found among the batch's few models by its 16-byte
/// string view: Parquet decodes a dictionary-encoded column into views that repeat for equal
/// names, so most rows match their model's last view without touching the string bytes or
/// hashing, and other views are told apart by length and first bytes before any comparison.
/// Each model keeps the price period it last used with the span of time that period covers,
/// so a row whose time falls in it (nearly all) skips the as-of search. Token counts are read
/// from plain slices (NULL as 0); validity is the model's, the time's and "some token count"
/// combined once per batch, plus the rows no price was found for.
fn price_rows(prices: &PriceBook, arrays: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let model = arrays[0].as_string_view();
    let tokens: Vec<std::borrow::Cow<'_, [i64]>> = arrays[1..5]
        .iter()
        .map(|a| zero_for_null(a.as_primitive::<Int64Type>()))
        .collect();
    let (input, cached, output, reasoning) = (&tokens[0], &tokens[1], &tokens[2], &tokens[3]);
    let at = arrays[5].as_primitive::<TimestampMicrosecondType>();
    let at_values = at.values();

    let mut models = BatchModels::new(prices, model);
    // Rows without a price are rare: listed, and made NULL after the loop.
    let mut unpriced = Vec::new();
    let mut values = Vec::with_capacity(rows);
    for row in 0..rows {
        let cost = match models.price(row, at_values[row]) {
            Some(price) => price.cost(input[row], cached[row], output[row], reasoning[row]),
            None => {
                unpriced.push(row);
                0.0
            }
        };
        values.push(cost);
    }
    let found = (!unpriced.is_empty()).then(|| {
        let mut found = BooleanBufferBuilder::new(rows);
        found.append_n(rows, true);
        for row in unpriced {
            found.set_bit(row, false);
        }
        NullBuffer::new(found.finish())
    });
    let input_nulls = arrays[1].logical_nulls();
    let output_nulls = arrays[3].logical_nulls();
    // NULL when both counts are NULL: valid where either is.
    let some_tokens = match (&input_nulls, &output_nulls) {
        (Some(i), Some(o)) => Some(NullBuffer::new(i.inner() | o.inner())),
        _ => None,
    };
    let nulls = [
        model.logical_nulls(),
        at.logical_nulls(),
        some_tokens,
        found,
    ]
    .iter()
    .fold(None, |acc: Option<NullBuffer>, n| {
        NullBuffer::union(acc.as_ref(), n.as_ref())
    });
    Ok(Arc::new(Float64Array::new(values.into(), nulls)))
}

/// `array`'s values with NULL as 0, borrowed when it has no NULLs.
fn zero_for_null(array: &Int64Array) -> std::borrow::Cow<'_, [i64]> {
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => std::borrow::Cow::Borrowed(array.values().as_ref()),
        Some(nulls) => std::borrow::Cow::Owned(
            array
                .values()
                .iter()
                .zip(nulls.iter())
                .map(|(&v, ok)| if ok { v } else { 0 })
                .collect(),
        ),
    }
}

/// The models one batch has met, each with the price period it used last.
struct BatchModels<'a> {
    prices: &'a PriceBook,
    names: &'a StringViewArray,
    models: Vec<ModelPrices<'a>>,
}

/// One model's periods, and the one in use with the times it covers: `[from, until)`.
struct ModelPrices<'a> {
    name: &'a str,
    /// The low half of the model's string view (length and first four bytes): names that
    /// differ there are told apart without reading their bytes.
    head: u64,
    /// The last view that matched: dictionary-decoded columns repeat it for every row.
    last_view: u128,
    periods: &'a [PricePeriod],
    current: Option<PerToken>,
    from: i64,
    until: i64,
}

impl<'a> ModelPrices<'a> {
    fn new(name: &'a str, view: u128, periods: &'a [PricePeriod]) -> Self {
        // An empty span: the first row searches.
        ModelPrices {
            name,
            head: view as u64,
            last_view: view,
            periods,
            current: None,
            from: i64::MAX,
            until: i64::MIN,
        }
    }

    /// Whether `view` (of row `row` in `names`) holds this model's name.
    fn is_named_by(&mut self, view: u128, names: &StringViewArray, row: usize) -> bool {
        if view == self.last_view {
            return true;
        }
        if view as u64 != self.head {
            return false;
        }
        let same = names.value(row) == self.name;
        if same {
            self.last_view = view;
        }
        same
    }

    fn price_at(&mut self, at: i64) -> Option<PerToken> {
        if self.from <= at && at < self.until {
            return self.current;
        }
        let after = self.periods.partition_point(|p| p.valid_from <= at);
        let period = after.checked_sub(1).map(|i| &self.periods[i]);
        self.current = period.map(PerToken::of);
        self.from = period.map_or(i64::MIN, |p| p.valid_from);
        self.until = self.periods.get(after).map_or(i64::MAX, |p| p.valid_from);
        self.current
    }
}

impl<'a> BatchModels<'a> {
    fn new(prices: &'a PriceBook, names: &'a StringViewArray) -> Self {
        BatchModels {
            prices,
            names,
            models: Vec::new(),
        }
    }

    /// The price of row `row`'s model at `at`.
    fn price(&mut self, row: usize, at: i64) -> Option<PerToken> {
        let view = self.names.views()[row];
        let names = self.names;
        for model in self.models.iter_mut() {
            if model.is_named_by(view, names, row) {
                return model.price_at(at);
            }
        }
        // A model without prices is looked up again at each of its rows (rare), as only the
        // book's own names are kept.
        let (name, periods) = self.prices.models.get_key_value(names.value(row))?;
        self.models.push(ModelPrices::new(name, view, periods));
        self.models.last_mut()?.price_at(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn period(valid_from: i64, input: f64) -> PricePeriod {
        PricePeriod {
            valid_from,
            input,
            cached_input: input / 4.0,
            output: input * 4.0,
            reasoning: input * 4.0,
        }
    }

    #[test]
    fn as_of_lookup_takes_the_latest_start_at_or_before() {
        let periods = [period(100, 1.0), period(200, 2.0)];
        assert_eq!(period_at(&periods, 99), None);
        assert_eq!(period_at(&periods, 100).unwrap().input, 1.0);
        assert_eq!(period_at(&periods, 199).unwrap().input, 1.0);
        assert_eq!(period_at(&periods, 200).unwrap().input, 2.0);
        assert_eq!(period_at(&periods, i64::MAX).unwrap().input, 2.0);
    }

    #[test]
    fn cached_and_reasoning_tokens_are_priced_once() {
        let p = PricePeriod {
            valid_from: 0,
            input: 3.0,
            cached_input: 0.3,
            output: 15.0,
            reasoning: 15.0,
        };
        // 10,000 input of which 4,000 cached; 2,000 output of which 500 reasoning.
        let by_hand = (6_000.0 * 3.0 + 4_000.0 * 0.3 + 1_500.0 * 15.0 + 500.0 * 15.0) / 1e6;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * b.abs();
        assert!(close(p.cost(10_000, 4_000, 2_000, 500), by_hand));
        // Inconsistent counts are capped, never negative.
        assert!(close(p.cost(100, 500, 0, 0), 100.0 * 0.3 / 1e6));
    }

    fn book(models: &[(&str, Vec<PricePeriod>)]) -> PriceBook {
        PriceBook {
            models: models
                .iter()
                .map(|(m, p)| (m.to_string(), p.clone()))
                .collect(),
            unavailable: None,
        }
    }

    #[test]
    fn fingerprint_depends_on_every_price_and_not_on_insertion_order() {
        let a = book(&[("a", vec![period(1, 1.0)]), ("b", vec![period(2, 2.0)])]);
        let b = book(&[("b", vec![period(2, 2.0)]), ("a", vec![period(1, 1.0)])]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        // FNV-1a of the empty input: the published offset basis.
        assert_eq!(book(&[]).fingerprint(), "0-cbf29ce484222325");
        let mut cheaper = period(2, 2.0);
        cheaper.reasoning -= 0.01;
        let c = book(&[("a", vec![period(1, 1.0)]), ("b", vec![cheaper])]);
        assert_ne!(a.fingerprint(), c.fingerprint());
        let later = book(&[("a", vec![period(1, 1.0)]), ("b", vec![period(3, 2.0)])]);
        assert_ne!(a.fingerprint(), later.fingerprint());
        assert_eq!(
            PriceBook::unavailable("x").fingerprint(),
            PriceBook::unavailable("y").fingerprint()
        );
    }
}
