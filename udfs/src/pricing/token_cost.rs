//! `token_cost`: USD of one model call at the price valid when it was made.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, Int64Array, StringViewArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::book::{PriceBook, PriceSeries, SharedPrices, TierPrices};
use super::{CallTokens, PerToken, PricesHandle, STANDARD_TIER, invoke_on_rows};
use crate::TOKEN_ECONOMICS;

/// `token_cost(model, input, cached, cache_write, cache_write_1h, output, reasoning, tier, at)`,
/// and its short form `token_cost(model, input, cached, output, reasoning, at)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TokenCost {
    signature: Signature,
    prices: PricesHandle,
}

impl TokenCost {
    /// `token_cost` over `prices` (a session's copy of the `model_prices` table).
    pub fn new(prices: Arc<SharedPrices>) -> Self {
        TokenCost {
            // Stable, not Immutable: the same arguments price differently once a session
            // reloads `model_prices`. Within one query the prices do not change.
            signature: Signature::user_defined(Volatility::Stable),
            prices: PricesHandle(prices),
        }
    }
}

const FULL_FORM: &str = "token_cost(model, input_tokens, cached_input_tokens, \
     cache_write_input_tokens, cache_write_1h_input_tokens, output_tokens, reasoning_tokens, \
     service_tier, at)";
const SHORT_FORM: &str =
    "token_cost(model, input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, at)";

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        TOKEN_ECONOMICS,
        "USD for one model call as the provider bills it, priced from model_prices as of `at` \
         (the row of that model, service tier and input size with the latest valid_from <= at: \
         history can be repriced when prices change). Every token is priced once, at the rate \
         of the most specific kind it belongs to: input tokens read from cache at the cached \
         rate, written to cache at the cache-write rate (1-hour writes at theirs), the rest at \
         the input rate; reasoning tokens at the reasoning rate, the rest of output at the \
         output rate. A NULL rate is the rate of the tokens it refines. A call with more input \
         tokens than a row's above_input_tokens is billed every token at that row's rates \
         (long context). The tier is the span's service_tier: NULL or '' is standard; a tier \
         the model has no price for gives NULL (counted among unpriced calls, never billed at \
         another tier's rate). NULL also for an unknown model, no price valid at `at`, a NULL \
         model or time, no input and no output count, or counts that do not fit inside their \
         totals (cache reads + writes > input, 1-hour writes > writes, reasoning > output, a \
         negative count); other NULL counts are 0. The short form has no cache writes and the \
         standard tier. A literal model prices a what-if: this traffic on another model.",
        FULL_FORM,
    )
    .with_argument("model", "Model name as in model_prices.model.")
    .with_argument("input_tokens", "Prompt tokens, cache reads and writes included.")
    .with_argument("cached_input_tokens", "Prompt tokens read from cache.")
    .with_argument(
        "cache_write_input_tokens",
        "Prompt tokens written to cache, 1-hour writes included.",
    )
    .with_argument(
        "cache_write_1h_input_tokens",
        "Prompt tokens written to a 1-hour cache.",
    )
    .with_argument("output_tokens", "Completion tokens, reasoning included.")
    .with_argument("reasoning_tokens", "Reasoning tokens.")
    .with_argument(
        "service_tier",
        "standard | batch | flex | priority | … (NULL: standard).",
    )
    .with_argument("at", "When the call was made (timestamp).")
    .with_sql_example(
        "```sql\n> SELECT sum(coalesce(cost_usd, token_cost(model, input_tokens, cached_input_tokens, cache_write_input_tokens, cache_write_1h_input_tokens, output_tokens, reasoning_tokens, service_tier, start_time))) FROM spans;\n> SELECT sum(token_cost('gpt-4.1-mini', input_tokens, cached_input_tokens, output_tokens, reasoning_tokens, start_time)) FROM spans WHERE kind = 'llm'; -- what-if, short form\n```",
    )
    .build()
});

fn timestamp_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn is_text(t: &DataType) -> bool {
    t.is_string() || t.is_null()
}

fn is_count(t: &DataType) -> bool {
    t.is_integer() || t.is_null()
}

fn is_time(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::Null
    ) || t.is_string()
}

impl ScalarUDFImpl for TokenCost {
    fn name(&self) -> &str {
        "token_cost"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let counts = match arg_types.len() {
            6 => 1..5,
            9 => 1..7,
            _ => 0..0,
        };
        let ok = !counts.is_empty()
            && is_text(&arg_types[0])
            && arg_types[counts.clone()].iter().all(is_count)
            && (arg_types.len() == 6 || is_text(&arg_types[7]))
            && is_time(&arg_types[arg_types.len() - 1]);
        if !ok {
            return plan_err!(
                "{FULL_FORM} takes text, six integers, text and a timestamp; {SHORT_FORM} takes \
                 text, four integers and a timestamp; got {arg_types:?}"
            );
        }
        // Microsecond timestamps are taken as they are, with or without a time zone: both hold
        // microseconds since the epoch in UTC, which is what prices are looked up by. Casting
        // a timestamp without a zone to one with a zone costs a time-zone conversion per value
        // (37 ms per million rows, more than the pricing itself).
        let at = match &arg_types[arg_types.len() - 1] {
            micros @ DataType::Timestamp(TimeUnit::Microsecond, _) => micros.clone(),
            _ => timestamp_utc(),
        };
        // The tables' text type for names: no per-batch conversion of the model column.
        let mut types = vec![DataType::Utf8View];
        types.extend(counts.map(|_| DataType::Int64));
        if arg_types.len() == 9 {
            types.push(DataType::Utf8View);
        }
        types.push(at);
        Ok(types)
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let prices = self.prices.0.current();
        if let Some(reason) = prices.unavailable_reason() {
            return exec_err!("token_cost: model prices are unavailable: {reason}");
        }
        invoke_on_rows(args, |arrays, rows| {
            price_rows(&prices, &CallColumns::of(arrays), rows)
        })
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The arguments of either form; the short one has no writes (`None`: zeros) and no tiers.
struct CallColumns {
    model: ArrayRef,
    /// input, cached, cache_write, cache_write_1h, output, reasoning.
    counts: [Option<ArrayRef>; 6],
    /// `None` in the short form.
    tier: Option<ArrayRef>,
    at: ArrayRef,
}

impl CallColumns {
    fn of(arrays: &[ArrayRef]) -> Self {
        let a = |i: usize| Some(Arc::clone(&arrays[i]));
        if arrays.len() == 6 {
            CallColumns {
                model: Arc::clone(&arrays[0]),
                counts: [a(1), a(2), None, None, a(3), a(4)],
                tier: None,
                at: Arc::clone(&arrays[5]),
            }
        } else {
            CallColumns {
                model: Arc::clone(&arrays[0]),
                counts: [a(1), a(2), a(3), a(4), a(5), a(6)],
                tier: Some(Arc::clone(&arrays[7])),
                at: Arc::clone(&arrays[8]),
            }
        }
    }

    /// The NULLs of count `i` (none for an absent count).
    fn count_nulls(&self, i: usize) -> Option<NullBuffer> {
        self.counts[i].as_ref()?.logical_nulls()
    }
}

/// The per-batch loop. A row's model (and tier) is found among the batch's few by its 16-byte
/// string view: Parquet decodes a dictionary-encoded column into views that repeat for equal
/// names, so most rows match the last view without touching the string bytes or hashing, and
/// other views are told apart by length and first bytes before any comparison. Each price
/// series keeps the period it last used with the span of time that period covers, so a row
/// whose time falls in it (nearly all) skips the as-of search. Token counts are read from plain
/// slices (NULL as 0); validity is the model's, the time's and "some token count" combined once
/// per batch, plus the rows no price was found for.
fn price_rows(prices: &PriceBook, call: &CallColumns, rows: usize) -> Result<ArrayRef> {
    let model = call.model.as_string_view();
    // Old files and the short form have no tiers: every row is standard.
    let tiers = call
        .tier
        .as_ref()
        .map(|t| t.as_string_view())
        .filter(|t| t.null_count() < rows);
    let counts: Vec<Cow<'_, [i64]>> = call
        .counts
        .iter()
        .map(|a| match a {
            Some(a) => zero_for_null(a.as_primitive::<Int64Type>()),
            // Only the short form lacks counts (the writes), and its loop never reads them.
            None => Cow::Borrowed(&[][..]),
        })
        .collect();
    let at = call.at.as_primitive::<TimestampMicrosecondType>();
    let at_values = at.values();

    // Slices of exactly `rows`, so indexing them by row needs no bounds check.
    let counts: [&[i64]; 6] = std::array::from_fn(|i| &counts[i][..counts[i].len().min(rows)]);
    let mut models = BatchModels::new(prices, model, tiers);
    // Short-form calls and files without the write columns skip their terms.
    let writes = [2, 3].iter().any(|&i| {
        call.counts[i]
            .as_ref()
            .is_some_and(|c| c.logical_null_count() < rows)
    });
    // Rows without a price are rare: listed, and made NULL after the loop.
    let (values, unpriced) = if writes {
        price_loop::<true>(&mut models, counts, &at_values[..rows])
    } else {
        price_loop::<false>(&mut models, counts, &at_values[..rows])
    };
    let found = (!unpriced.is_empty()).then(|| {
        let mut found = BooleanBufferBuilder::new(rows);
        found.append_n(rows, true);
        for row in unpriced {
            found.set_bit(row, false);
        }
        NullBuffer::new(found.finish())
    });
    let input_nulls = call.count_nulls(0);
    let output_nulls = call.count_nulls(4);
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

/// Each row's cost (0 where it has none) and the rows without one.
fn price_loop<const WRITES: bool>(
    models: &mut BatchModels<'_>,
    [input, cached, write, write_1h, output, reasoning]: [&[i64]; 6],
    at: &[i64],
) -> (Vec<f64>, Vec<usize>) {
    let rows = at.len();
    let mut values = Vec::with_capacity(rows);
    let mut unpriced = Vec::new();
    for row in 0..rows {
        let tokens = CallTokens {
            input: input[row],
            cached: cached[row],
            cache_write: if WRITES { write[row] } else { 0 },
            cache_write_1h: if WRITES { write_1h[row] } else { 0 },
            output: output[row],
            reasoning: reasoning[row],
        };
        match models.cost::<WRITES>(row, &tokens, at[row]) {
            Some(cost) => values.push(cost),
            None => {
                unpriced.push(row);
                values.push(0.0);
            }
        }
    }
    (values, unpriced)
}

/// `array`'s values with NULL as 0, borrowed when it has no NULLs.
fn zero_for_null(array: &Int64Array) -> Cow<'_, [i64]> {
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => Cow::Borrowed(array.values().as_ref()),
        Some(nulls) => Cow::Owned(
            array
                .values()
                .iter()
                .zip(nulls.iter())
                .map(|(&v, ok)| if ok { v } else { 0 })
                .collect(),
        ),
    }
}

/// A name of the batch, matched by string view.
struct ViewMatch<'a> {
    name: &'a str,
    /// The low half of the name's string view (length and first four bytes): names that
    /// differ there are told apart without reading their bytes.
    head: u64,
    /// The last view that matched: dictionary-decoded columns repeat it for every row.
    last_view: u128,
}

impl<'a> ViewMatch<'a> {
    fn new(name: &'a str, view: u128) -> Self {
        ViewMatch {
            name,
            head: view as u64,
            last_view: view,
        }
    }

    /// Whether `view` (of row `row` in `names`) holds this name.
    #[inline]
    fn matches(&mut self, view: u128, names: &StringViewArray, row: usize) -> bool {
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
}

/// The models one batch has met.
struct BatchModels<'a> {
    prices: &'a PriceBook,
    names: &'a StringViewArray,
    /// The rows' tiers, `None` when no row names one.
    tiers: Option<&'a StringViewArray>,
    models: Vec<BatchModel<'a>>,
}

/// One model of the batch: its tiers met so far, and its standard one.
struct BatchModel<'a> {
    name: ViewMatch<'a>,
    all_tiers: &'a [TierPrices],
    /// Tiers named by rows, matched by view; an unknown tier is kept with no series.
    tiers: Vec<(ViewMatch<'a>, Vec<SeriesCursor<'a>>)>,
    standard: Vec<SeriesCursor<'a>>,
}

/// One price series with the period in use and the times it covers: `[from, until)`.
struct SeriesCursor<'a> {
    above_input_tokens: i64,
    periods: &'a [super::PricePeriod],
    current: Option<PerToken>,
    from: i64,
    until: i64,
}

impl<'a> SeriesCursor<'a> {
    fn all(tier: Option<&'a TierPrices>) -> Vec<Self> {
        tier.map_or(&[][..], |t| t.series.as_slice())
            .iter()
            .map(SeriesCursor::new)
            .collect()
    }

    fn new(series: &'a PriceSeries) -> Self {
        // An empty span: the first row searches.
        SeriesCursor {
            above_input_tokens: series.above_input_tokens,
            periods: &series.periods,
            current: None,
            from: i64::MAX,
            until: i64::MIN,
        }
    }

    /// Moves to the period valid at `at`; whether there is one.
    #[inline]
    fn seek(&mut self, at: i64) -> bool {
        if self.from <= at && at < self.until {
            return self.current.is_some();
        }
        let after = self.periods.partition_point(|p| p.valid_from <= at);
        let period = after.checked_sub(1).map(|i| &self.periods[i]);
        self.current = period.map(PerToken::of);
        self.from = period.map_or(i64::MIN, |p| p.valid_from);
        self.until = self.periods.get(after).map_or(i64::MAX, |p| p.valid_from);
        self.current.is_some()
    }
}

/// USD of a call with `tokens` at `at`, at the series of the highest threshold the call is
/// above that has a price then (series are ordered highest first).
#[inline]
fn cost_in<const WRITES: bool>(
    series: &mut [SeriesCursor<'_>],
    tokens: &CallTokens,
    at: i64,
) -> Option<f64> {
    // Most models have one series (no long-context rates).
    if let [only] = series {
        return if tokens.input > only.above_input_tokens && only.seek(at) {
            Some(only.current.as_ref()?.cost_of::<WRITES>(tokens))
        } else {
            None
        };
    }
    let i = series
        .iter_mut()
        .position(|s| tokens.input > s.above_input_tokens && s.seek(at))?;
    Some(series[i].current.as_ref()?.cost_of::<WRITES>(tokens))
}

impl<'a> BatchModels<'a> {
    fn new(
        prices: &'a PriceBook,
        names: &'a StringViewArray,
        tiers: Option<&'a StringViewArray>,
    ) -> Self {
        BatchModels {
            prices,
            names,
            tiers,
            models: Vec::new(),
        }
    }

    /// USD of row `row`'s call (`tokens`, made at `at`) at its tier. `None`: no price, or
    /// counts that do not fit inside their totals.
    #[inline]
    fn cost<const WRITES: bool>(
        &mut self,
        row: usize,
        tokens: &CallTokens,
        at: i64,
    ) -> Option<f64> {
        if !tokens.fits::<WRITES>() {
            return None;
        }
        let tiers = self.tiers;
        let model = self.model(row)?;
        let Some(tiers) = tiers.filter(|t| t.is_valid(row)) else {
            return cost_in::<WRITES>(&mut model.standard, tokens, at);
        };
        let view = tiers.views()[row];
        if let Some(i) = model
            .tiers
            .iter_mut()
            .position(|(name, _)| name.matches(view, tiers, row))
        {
            return cost_in::<WRITES>(&mut model.tiers[i].1, tokens, at);
        }
        let name = tiers.value(row);
        let name = if name.is_empty() { STANDARD_TIER } else { name };
        let known = model.all_tiers.iter().find(|t| t.tier == name);
        // Keyed by the book's name when it has the tier, else by the row's (a view of this
        // batch, which outlives the loop).
        let key = known.map_or(name, |t| t.tier.as_str());
        model
            .tiers
            .push((ViewMatch::new(key, view), SeriesCursor::all(known)));
        let (_, series) = model.tiers.last_mut()?;
        cost_in::<WRITES>(series, tokens, at)
    }

    /// Row `row`'s model, if it has prices.
    #[inline]
    fn model(&mut self, row: usize) -> Option<&mut BatchModel<'a>> {
        let view = self.names.views()[row];
        let names = self.names;
        if let Some(i) = self
            .models
            .iter_mut()
            .position(|m| m.name.matches(view, names, row))
        {
            return Some(&mut self.models[i]);
        }
        // A model without prices is looked up again at each of its rows (rare), as only
        // models with prices are kept. A dated name priced by its undated one is kept under
        // its own name (a view of this batch).
        let name = names.value(row);
        let (_, tiers) = self.prices.model(name)?;
        let standard = tiers.iter().find(|t| t.tier == STANDARD_TIER);
        self.models.push(BatchModel {
            name: ViewMatch::new(name, view),
            all_tiers: tiers,
            tiers: Vec::new(),
            standard: SeriesCursor::all(standard),
        });
        self.models.last_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };

    #[test]
    fn a_model_with_only_long_context_rates_prices_only_long_calls() {
        let prices = RecordBatch::try_from_iter([
            ("model", Arc::new(StringArray::from(vec!["m"])) as ArrayRef),
            (
                "valid_from",
                Arc::new(TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC")),
            ),
            (
                "input_usd_per_mtok",
                Arc::new(Float64Array::from(vec![2.0])),
            ),
            (
                "output_usd_per_mtok",
                Arc::new(Float64Array::from(vec![4.0])),
            ),
            ("above_input_tokens", Arc::new(Int64Array::from(vec![100]))),
        ])
        .unwrap();
        let book = PriceBook::from_batches(&[prices]).unwrap();
        let calls: Vec<ArrayRef> = vec![
            Arc::new(StringViewArray::from(vec!["m", "m"])),
            Arc::new(Int64Array::from(vec![100, 101])),
            Arc::new(Int64Array::from(vec![0, 0])),
            Arc::new(Int64Array::from(vec![10, 10])),
            Arc::new(Int64Array::from(vec![0, 0])),
            Arc::new(TimestampMicrosecondArray::from(vec![5, 5])),
        ];
        let cost = price_rows(&book, &CallColumns::of(&calls), 2).unwrap();
        let cost = cost.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(cost.is_null(0), "100 input tokens are not above 100");
        assert_eq!(cost.value(1), (101.0 * 2.0 + 10.0 * 4.0) / 1e6);
    }
}
