//! As-of model pricing: what a call cost at the price valid when it was made, the way providers
//! bill it — cached reads, cache writes (5-minute and 1-hour), reasoning tokens, service tiers
//! (batch, flex, priority) and long-context rates.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs};

mod book;
mod token_cost;
mod token_price;

pub use book::{PriceBook, SharedPrices};
pub use token_cost::TokenCost;
pub use token_price::TokenPrice;

/// A session's prices as a function holds them: two functions are equal when they read the same
/// book (DataFusion compares functions when it deduplicates expressions).
#[derive(Debug, Clone)]
struct PricesHandle(Arc<SharedPrices>);

impl PartialEq for PricesHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for PricesHandle {}

impl Hash for PricesHandle {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

/// Calls `price` with the arguments as arrays of the batch's rows (one row when all are
/// scalars, answered as a scalar).
fn invoke_on_rows(
    args: ScalarFunctionArgs,
    price: impl FnOnce(&[ArrayRef], usize) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let all_scalar = args
        .args
        .iter()
        .all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let rows = if all_scalar { 1 } else { args.number_rows };
    let arrays: Vec<ArrayRef> = ColumnarValue::values_to_arrays(&args.args)?
        .into_iter()
        .map(|a| if a.len() == rows { a } else { a.slice(0, rows) })
        .collect();
    let result = price(&arrays, rows)?;
    if all_scalar {
        return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
            &result, 0,
        )?));
    }
    Ok(ColumnarValue::Array(result))
}

/// The tier a call runs at when its span or price row names none.
pub const STANDARD_TIER: &str = "standard";

/// One price period of a model at one tier and input size, USD per million tokens, with the
/// defaults resolved (a NULL rate in `model_prices` is the rate of the tokens it is part of).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PricePeriod {
    /// Micros since the epoch (UTC) from which this price applies.
    pub valid_from: i64,
    /// Input tokens neither read from nor written to cache.
    pub input: f64,
    /// Input tokens read from cache (NULL: the input rate).
    pub cached_input: f64,
    /// Input tokens written to cache, a 5-minute one on Anthropic (NULL: the input rate).
    pub cache_write: f64,
    /// Input tokens written to a 1-hour cache (NULL: the cache-write rate).
    pub cache_write_1h: f64,
    /// Output tokens that are not reasoning.
    pub output: f64,
    /// Reasoning tokens (NULL: the output rate).
    pub reasoning: f64,
}

/// The token counts of one call. Each count is inside the one it refines, as OpenTelemetry and
/// the providers report them: cache reads and writes inside `input`, 1-hour writes inside
/// `cache_write`, reasoning inside `output`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallTokens {
    pub input: i64,
    pub cached: i64,
    pub cache_write: i64,
    pub cache_write_1h: i64,
    pub output: i64,
    pub reasoning: i64,
}

impl CallTokens {
    /// A call without cache writes.
    pub fn new(input: i64, cached: i64, output: i64, reasoning: i64) -> Self {
        CallTokens {
            input,
            cached,
            output,
            reasoning,
            ..CallTokens::default()
        }
    }

    /// Whether every count is non-negative and inside the one it refines. Inconsistent counts
    /// have no price: capping them would bill a guess.
    pub fn is_consistent(&self) -> bool {
        self.fits::<true>()
    }

    /// [`CallTokens::is_consistent`], for calls known to have no cache writes when `!WRITES`.
    #[inline]
    fn fits<const WRITES: bool>(&self) -> bool {
        let c = self;
        if !WRITES {
            return (c.cached | c.reasoning) >= 0 && c.cached <= c.input && c.reasoning <= c.output;
        }
        // Non-negative first, so the sum of two counts fits in u64.
        (c.cached | c.cache_write | c.cache_write_1h | c.reasoning) >= 0
            && (c.cached as u64 + c.cache_write as u64) <= c.input.max(0) as u64
            && c.cache_write_1h <= c.cache_write
            && c.reasoning <= c.output
    }
}

impl PricePeriod {
    /// USD for one call: every token priced exactly once, at the rate of the most specific
    /// kind it belongs to. `None` for inconsistent counts ([`CallTokens::is_consistent`]).
    pub fn cost(&self, tokens: &CallTokens) -> Option<f64> {
        tokens
            .is_consistent()
            .then(|| PerToken::of(self).cost(tokens))
    }
}

/// A price period in USD per token: multiplying by it instead of dividing each call's sum by a
/// million keeps a division out of `token_cost`'s per-row loop.
#[derive(Debug, Clone, Copy)]
struct PerToken {
    input: f64,
    cached_input: f64,
    cache_write: f64,
    cache_write_1h: f64,
    output: f64,
    reasoning: f64,
}

impl PerToken {
    fn of(period: &PricePeriod) -> Self {
        PerToken {
            input: period.input / 1e6,
            cached_input: period.cached_input / 1e6,
            cache_write: period.cache_write / 1e6,
            cache_write_1h: period.cache_write_1h / 1e6,
            output: period.output / 1e6,
            reasoning: period.reasoning / 1e6,
        }
    }

    /// USD for consistent counts: see [`PricePeriod::cost`].
    #[inline]
    fn cost(&self, t: &CallTokens) -> f64 {
        self.cost_of::<true>(t)
    }

    /// [`PerToken::cost`], for calls known to have no cache writes when `!WRITES` (the short
    /// form and files without the columns: two fewer terms per row).
    #[inline]
    fn cost_of<const WRITES: bool>(&self, t: &CallTokens) -> f64 {
        let reads_and_outputs = t.cached as f64 * self.cached_input
            + (t.output - t.reasoning) as f64 * self.output
            + t.reasoning as f64 * self.reasoning;
        if !WRITES {
            return (t.input - t.cached) as f64 * self.input + reads_and_outputs;
        }
        (t.input - t.cached - t.cache_write) as f64 * self.input
            + reads_and_outputs
            + (t.cache_write - t.cache_write_1h) as f64 * self.cache_write
            + t.cache_write_1h as f64 * self.cache_write_1h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> PricePeriod {
        PricePeriod {
            valid_from: 0,
            input: 3.0,
            cached_input: 0.3,
            cache_write: 3.75,
            cache_write_1h: 6.0,
            output: 15.0,
            reasoning: 15.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs()
    }

    #[test]
    fn each_token_is_priced_once_at_its_most_specific_rate() {
        // 10,000 input: 2,000 read from cache, 4,000 written (1,000 of them to a 1-hour cache),
        // 4,000 plain; 2,000 output of which 500 reasoning.
        let tokens = CallTokens {
            input: 10_000,
            cached: 2_000,
            cache_write: 4_000,
            cache_write_1h: 1_000,
            output: 2_000,
            reasoning: 500,
        };
        let by_hand = (4_000.0 * 3.0
            + 2_000.0 * 0.3
            + 3_000.0 * 3.75
            + 1_000.0 * 6.0
            + 1_500.0 * 15.0
            + 500.0 * 15.0)
            / 1e6;
        assert!(close(sonnet().cost(&tokens).unwrap(), by_hand));
    }

    #[test]
    fn the_issue_example_bills_cache_writes_above_plain_input() {
        // 1,000 input + 4,000 cache writes + 2,000 cache reads = 7,000 input; 300 output, on
        // claude-sonnet-4-5 prices: $0.0231, not the $0.0201 of writes priced as plain input.
        let tokens = CallTokens {
            input: 7_000,
            cached: 2_000,
            cache_write: 4_000,
            output: 300,
            ..CallTokens::default()
        };
        assert!(close(sonnet().cost(&tokens).unwrap(), 0.0231));
    }

    #[test]
    fn inconsistent_counts_have_no_price() {
        let p = sonnet();
        for tokens in [
            CallTokens::new(100, 101, 0, 0),
            CallTokens::new(100, 0, 10, 11),
            CallTokens::new(100, -1, 0, 0),
            CallTokens {
                input: 100,
                cached: 60,
                cache_write: 41,
                ..CallTokens::default()
            },
            CallTokens {
                input: 100,
                cache_write: 10,
                cache_write_1h: 11,
                ..CallTokens::default()
            },
            CallTokens {
                input: i64::MAX,
                cached: i64::MAX,
                cache_write: i64::MAX,
                ..CallTokens::default()
            },
        ] {
            assert_eq!(p.cost(&tokens), None, "{tokens:?}");
        }
        let all_cached = p.cost(&CallTokens::new(100, 100, 10, 10)).unwrap();
        assert!(close(all_cached, (100.0 * 0.3 + 10.0 * 15.0) / 1e6));
    }
}
