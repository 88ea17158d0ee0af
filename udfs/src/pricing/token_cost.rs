//! `token_cost`: USD of one model call at the price valid when it was made.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, Float64Array, Int64Array, StringViewArray,
    new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::book::{PriceBook, PriceSeries, SharedPrices, TierPrices};
use super::{CallTokens, PerToken, STANDARD_TIER};
use crate::TOKEN_ECONOMICS;

/// `token_cost(model, input, cached, cache_write, cache_write_1h, output, reasoning, tier, at)`,
/// and its short form `token_cost(model, input, cached, output, reasoning, at)`.
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
        let prices = self.prices.current();
        if let Some(reason) = prices.unavailable_reason() {
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
        let result = price_rows(&prices, &CallColumns::of(&arrays, rows), rows)?;
        if all_scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?));
        }
        Ok(ColumnarValue::Array(result))
    }

    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The arguments of either form, the short one completed with NULL writes and tiers.
struct CallColumns {
    model: ArrayRef,
    /// input, cached, cache_write, cache_write_1h, output, reasoning.
    counts: [ArrayRef; 6],
    tier: ArrayRef,
    at: ArrayRef,
}

impl CallColumns {
    fn of(arrays: &[ArrayRef], rows: usize) -> Self {
        let no_counts = || new_null_array(&DataType::Int64, rows);
        let a = |i: usize| Arc::clone(&arrays[i]);
        if arrays.len() == 6 {
            CallColumns {
                model: a(0),
                counts: [a(1), a(2), no_counts(), no_counts(), a(3), a(4)],
                tier: new_null_array(&DataType::Utf8View, rows),
                at: a(5),
            }
        } else {
            CallColumns {
                model: a(0),
                counts: [a(1), a(2), a(3), a(4), a(5), a(6)],
                tier: a(7),
                at: a(8),
            }
        }
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
    let tier = call.tier.as_string_view();
    let counts: Vec<Cow<'_, [i64]>> = call
        .counts
        .iter()
        .map(|a| zero_for_null(a.as_primitive::<Int64Type>()))
        .collect();
    let at = call.at.as_primitive::<TimestampMicrosecondType>();
    let at_values = at.values();
    // Old files and the short form have no tiers: every row is standard.
    let tiered = tier.null_count() < rows;

    let mut models = BatchModels::new(prices, model, tier);
    // Rows without a price are rare: listed, and made NULL after the loop.
    let mut unpriced = Vec::new();
    let mut values = Vec::with_capacity(rows);
    for row in 0..rows {
        let tokens = CallTokens {
            input: counts[0][row],
            cached: counts[1][row],
            cache_write: counts[2][row],
            cache_write_1h: counts[3][row],
            output: counts[4][row],
            reasoning: counts[5][row],
        };
        let price = models.price(row, tiered, tokens.input, at_values[row]);
        match price {
            Some(price) if tokens.is_consistent() => values.push(price.cost(&tokens)),
            _ => {
                unpriced.push(row);
                values.push(0.0);
            }
        }
    }
    let found = (!unpriced.is_empty()).then(|| {
        let mut found = BooleanBufferBuilder::new(rows);
        found.append_n(rows, true);
        for row in unpriced {
            found.set_bit(row, false);
        }
        NullBuffer::new(found.finish())
    });
    let input_nulls = call.counts[0].logical_nulls();
    let output_nulls = call.counts[4].logical_nulls();
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
    tiers: &'a StringViewArray,
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

    #[inline]
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

/// The price of a call with `input` tokens at `at`: the series of the highest threshold the
/// call is above that has a price then (series are ordered highest first).
#[inline]
fn price_in(series: &mut [SeriesCursor<'_>], input: i64, at: i64) -> Option<PerToken> {
    series
        .iter_mut()
        .filter(|s| input > s.above_input_tokens)
        .find_map(|s| s.price_at(at))
}

impl<'a> BatchModels<'a> {
    fn new(prices: &'a PriceBook, names: &'a StringViewArray, tiers: &'a StringViewArray) -> Self {
        BatchModels {
            prices,
            names,
            tiers,
            models: Vec::new(),
        }
    }

    /// The price of row `row` (with `input` tokens, made at `at`); `tiered`: whether rows
    /// may name a tier.
    #[inline]
    fn price(&mut self, row: usize, tiered: bool, input: i64, at: i64) -> Option<PerToken> {
        let tiers = self.tiers;
        let model = self.model(row)?;
        if !tiered || tiers.is_null(row) {
            return price_in(&mut model.standard, input, at);
        }
        let view = tiers.views()[row];
        if let Some(i) = model
            .tiers
            .iter_mut()
            .position(|(name, _)| name.matches(view, tiers, row))
        {
            return price_in(&mut model.tiers[i].1, input, at);
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
        price_in(series, input, at)
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
