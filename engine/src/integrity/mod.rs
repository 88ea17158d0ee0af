//! The one validation policy for rows of `spans`, whichever way they come in (OTLP, CSV import,
//! the generator, files pipelines drop): the limits a value must keep to be a plausible record of
//! one step of an agent run. A row that breaks one is refused whole, with the rule and the
//! offending value named; nothing is clamped or corrected. `docs/integrity.md` lists the rules
//! for users.
//!
//! The limits are generous on purpose: they are there to stop values no provider bills (negative
//! tokens, a trillion tokens in one call, a cost of 1e308), not to second-guess real traffic.

mod filter;
mod rejected;

use std::fmt;

pub use filter::{CHECKED_COLUMNS, ValidRows};
pub use rejected::{rejected_rows, write_rejected};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};

use crate::schema::timestamp_type;

/// The most tokens of one kind one step may report: a thousand times the largest context
/// window sold today, and small enough that 9 billion such rows still sum inside 64 bits.
pub const MAX_TOKENS: i64 = 1_000_000_000;
/// The most one step may cost, in USD.
pub const MAX_COST_USD: f64 = 1_000_000.0;
/// The earliest plausible start of a step: 2000-01-01T00:00:00Z, in microseconds. Spans from
/// 1970 are clocks that were never set.
pub const EARLIEST_START_MICROS: i64 = 946_684_800_000_000;
/// How far past the checker's clock a step may start (clock skew between hosts): one day.
pub const MAX_FUTURE_MICROS: i64 = 86_400_000_000;
/// The longest plausible step: 31 days (a human review can take weeks; a model call cannot).
pub const MAX_DURATION_MS: i64 = 31 * 86_400_000;
/// The most attributes one OTLP span may carry (the OpenTelemetry SDKs' default limit is 128).
pub const MAX_ATTRIBUTES: usize = 1024;
/// How deeply an OTLP attribute value may nest arrays and maps.
pub const MAX_ATTRIBUTE_DEPTH: usize = 16;

/// The footer key-value entry by which tokenledger's writers (the OTLP receiver, CSV import,
/// the generator) say every row of a `spans` file met the policy when written; files without it
/// are checked when first listed.
pub const VALUES_CHECKED_KEY: &str = "tokenledger.values_checked";
/// The policy's version, the value of [`VALUES_CHECKED_KEY`]: rules tightened later would
/// bump it.
pub const POLICY_VERSION: &str = "1";

/// A rule a row of `spans` can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A token count is negative, above [`MAX_TOKENS`], or not a whole number.
    TokensOutOfRange,
    /// More cached input tokens (reads and writes together) than input tokens (input includes
    /// both), or more 1-hour cache writes than cache writes.
    CachedAboveInput,
    /// More reasoning tokens than output tokens (output includes reasoning).
    ReasoningAboveOutput,
    /// A cost that is negative, not finite, or above [`MAX_COST_USD`].
    CostOutOfRange,
    /// A start before 2000 or more than a day past the checker's clock.
    StartOutsideWindow,
    /// A negative duration, or one above [`MAX_DURATION_MS`].
    DurationOutOfRange,
    /// Negative document counts, or more documents used than retrieved.
    DocsOutOfRange,
    /// An OTLP span with ids, attributes or nesting beyond what the receiver takes.
    MalformedSpan,
}

impl Rule {
    /// The rules a row's values are checked against (all but [`Rule::MalformedSpan`], which
    /// only OTLP can break), in the order they are reported.
    pub const VALUE_RULES: [Rule; 7] = [
        Rule::TokensOutOfRange,
        Rule::CachedAboveInput,
        Rule::ReasoningAboveOutput,
        Rule::CostOutOfRange,
        Rule::StartOutsideWindow,
        Rule::DurationOutOfRange,
        Rule::DocsOutOfRange,
    ];

    /// The rule's name, as `rejected_spans.rule` and `tokenledger_files` show it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::TokensOutOfRange => "tokens_out_of_range",
            Rule::CachedAboveInput => "cached_above_input",
            Rule::ReasoningAboveOutput => "reasoning_above_output",
            Rule::CostOutOfRange => "cost_out_of_range",
            Rule::StartOutsideWindow => "start_outside_window",
            Rule::DurationOutOfRange => "duration_out_of_range",
            Rule::DocsOutOfRange => "docs_out_of_range",
            Rule::MalformedSpan => "malformed_span",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a row was refused: the rule and the offending values.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// What was wrong, with the values (`cached_input_tokens 1000 > input_tokens 10`).
    pub detail: String,
}

impl Violation {
    /// A violation of `rule`.
    pub fn new(rule: Rule, detail: impl Into<String>) -> Self {
        Violation {
            rule,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

/// The checked values of one row of `spans`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanValues {
    pub input_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub cache_write_input_tokens: Option<i64>,
    /// Of the cache writes, those to a 1-hour cache.
    pub cache_write_1h_input_tokens: Option<i64>,
    pub cost_usd: Option<f64>,
    /// Microseconds since the epoch.
    pub start_time: Option<i64>,
    pub duration_ms: Option<i64>,
    pub docs_retrieved: Option<i32>,
    pub docs_used: Option<i32>,
}

/// The policy at one moment: "now" is fixed once per request or check, so every row of it is
/// judged by the same clock.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    latest_start: i64,
}

impl Policy {
    /// The policy with the checker's clock at `now_micros`.
    pub fn at(now_micros: i64) -> Self {
        Policy {
            latest_start: now_micros.saturating_add(MAX_FUTURE_MICROS),
        }
    }

    /// The policy now.
    pub fn now() -> Self {
        Policy::at(chrono::Utc::now().timestamp_micros())
    }

    /// The first rule `row` breaks, if any.
    pub fn check(&self, row: &SpanValues) -> Result<(), Violation> {
        for rule in Rule::VALUE_RULES {
            if let Some(detail) = self.broken(rule, row) {
                return Err(Violation::new(rule, detail));
            }
        }
        Ok(())
    }

    /// What is wrong with `row` under `rule`, if it breaks it.
    fn broken(&self, rule: Rule, row: &SpanValues) -> Option<String> {
        match rule {
            Rule::TokensOutOfRange => [
                ("input_tokens", row.input_tokens),
                ("cached_input_tokens", row.cached_input_tokens),
                ("output_tokens", row.output_tokens),
                ("reasoning_tokens", row.reasoning_tokens),
                ("cache_write_input_tokens", row.cache_write_input_tokens),
                (
                    "cache_write_1h_input_tokens",
                    row.cache_write_1h_input_tokens,
                ),
            ]
            .into_iter()
            .find_map(|(column, value)| {
                let value = value?;
                (!(0..=MAX_TOKENS).contains(&value))
                    .then(|| format!("{column} {value} is outside 0..={MAX_TOKENS}"))
            }),
            Rule::CachedAboveInput => {
                if let (Some(hour), Some(written)) = (
                    row.cache_write_1h_input_tokens,
                    row.cache_write_input_tokens,
                ) && hour > written
                {
                    return Some(format!(
                        "cache_write_1h_input_tokens {hour} > cache_write_input_tokens {written} \
                         (cache writes include 1-hour ones)"
                    ));
                }
                let input = row.input_tokens?;
                match (row.cached_input_tokens, row.cache_write_input_tokens) {
                    (Some(cached), None) if cached > input => Some(format!(
                        "cached_input_tokens {cached} > input_tokens {input} (input includes cached)"
                    )),
                    (None, Some(written)) if written > input => Some(format!(
                        "cache_write_input_tokens {written} > input_tokens {input} (input includes \
                         cache writes)"
                    )),
                    (Some(cached), Some(written))
                        if i128::from(cached) + i128::from(written) > i128::from(input) =>
                    {
                        Some(format!(
                            "cached_input_tokens {cached} + cache_write_input_tokens {written} > \
                             input_tokens {input} (input includes both)"
                        ))
                    }
                    _ => None,
                }
            }
            Rule::ReasoningAboveOutput => match (row.reasoning_tokens, row.output_tokens) {
                (Some(reasoning), Some(output)) if reasoning > output => Some(format!(
                    "reasoning_tokens {reasoning} > output_tokens {output} (output includes reasoning)"
                )),
                _ => None,
            },
            Rule::CostOutOfRange => row.cost_usd.and_then(|cost| {
                (!(0.0..=MAX_COST_USD).contains(&cost))
                    .then(|| format!("cost_usd {cost} is outside 0..={MAX_COST_USD}"))
            }),
            Rule::StartOutsideWindow => row.start_time.and_then(|start| {
                (!(EARLIEST_START_MICROS..=self.latest_start).contains(&start)).then(|| {
                    format!(
                        "start_time {} is before 2000-01-01 or more than a day ahead of the \
                         receiver's clock",
                        micros_text(start)
                    )
                })
            }),
            Rule::DurationOutOfRange => row.duration_ms.and_then(|ms| {
                (!(0..=MAX_DURATION_MS).contains(&ms))
                    .then(|| format!("duration_ms {ms} is outside 0..={MAX_DURATION_MS} (31 days)"))
            }),
            Rule::DocsOutOfRange => match (row.docs_retrieved, row.docs_used) {
                (Some(retrieved), _) if retrieved < 0 => {
                    Some(format!("docs_retrieved {retrieved} is negative"))
                }
                (_, Some(used)) if used < 0 => Some(format!("docs_used {used} is negative")),
                (Some(retrieved), Some(used)) if used > retrieved => {
                    Some(format!("docs_used {used} > docs_retrieved {retrieved}"))
                }
                _ => None,
            },
            Rule::MalformedSpan => None,
        }
    }

    /// Checks every row of `batch`, a batch of `spans` as some file holds it (columns it lacks
    /// are absent values; narrower types are widened first). Rows are counted under every rule
    /// they break, so one row can count twice.
    pub fn check_batch(&self, batch: &RecordBatch) -> arrow::error::Result<BatchCheck> {
        let mut check = BatchCheck {
            rows: batch.num_rows() as u64,
            ..BatchCheck::default()
        };
        for row in span_values(batch)? {
            let mut failed = false;
            for (rule, count) in &mut check.by_rule {
                if self.broken(*rule, &row).is_some() {
                    *count += 1;
                    failed = true;
                }
            }
            check.failing_rows += u64::from(failed);
        }
        Ok(check)
    }

    /// The first rule each row of `batch` breaks (`None` for rows that meet the policy).
    pub fn check_rows(&self, batch: &RecordBatch) -> arrow::error::Result<Vec<Option<Violation>>> {
        Ok(span_values(batch)?
            .map(|row| self.check(&row).err())
            .collect())
    }
}

/// The checked values of each row of `batch`, a batch of `spans` as some file holds it (columns
/// it lacks are absent values; narrower types are widened first).
fn span_values(
    batch: &RecordBatch,
) -> arrow::error::Result<impl Iterator<Item = SpanValues> + use<>> {
    let int64 = |name| column_as::<Int64Type>(batch, name, &DataType::Int64);
    let int32 = |name| column_as::<Int32Type>(batch, name, &DataType::Int32);
    let input = int64("input_tokens")?;
    let cached = int64("cached_input_tokens")?;
    let output = int64("output_tokens")?;
    let reasoning = int64("reasoning_tokens")?;
    let cache_write = int64("cache_write_input_tokens")?;
    let cache_write_1h = int64("cache_write_1h_input_tokens")?;
    let cost = column_as::<Float64Type>(batch, "cost_usd", &DataType::Float64)?;
    let start = column_as::<TimestampMicrosecondType>(batch, "start_time", &timestamp_type())?;
    let duration = int64("duration_ms")?;
    let retrieved = int32("docs_retrieved")?;
    let used = int32("docs_used")?;
    Ok((0..batch.num_rows()).map(move |i| SpanValues {
        input_tokens: value_at(&input, i),
        cached_input_tokens: value_at(&cached, i),
        output_tokens: value_at(&output, i),
        reasoning_tokens: value_at(&reasoning, i),
        cache_write_input_tokens: value_at(&cache_write, i),
        cache_write_1h_input_tokens: value_at(&cache_write_1h, i),
        cost_usd: value_at(&cost, i),
        start_time: value_at(&start, i),
        duration_ms: value_at(&duration, i),
        docs_retrieved: value_at(&retrieved, i),
        docs_used: value_at(&used, i),
    }))
}

/// What [`Policy::check_batch`] found in a batch or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCheck {
    /// Rows checked.
    pub rows: u64,
    /// Rows that broke at least one rule.
    pub failing_rows: u64,
    /// Rows breaking each rule, in [`Rule::VALUE_RULES`] order.
    pub by_rule: [(Rule, u64); 7],
}

impl BatchCheck {
    /// Adds `other`'s counts (a file checked batch by batch).
    pub fn add(&mut self, other: &BatchCheck) {
        self.rows += other.rows;
        self.failing_rows += other.failing_rows;
        for ((_, count), (_, more)) in self.by_rule.iter_mut().zip(&other.by_rule) {
            *count += more;
        }
    }

    /// The rules broken and how often, as `tokenledger_files` shows them
    /// (`cached_above_input: 2, tokens_out_of_range: 1`); empty when none was.
    pub fn summary(&self) -> String {
        self.by_rule
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(rule, count)| format!("{rule}: {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Default for BatchCheck {
    fn default() -> Self {
        BatchCheck {
            rows: 0,
            failing_rows: 0,
            by_rule: Rule::VALUE_RULES.map(|rule| (rule, 0)),
        }
    }
}

/// Column `name` of `batch` cast to `ty`, if the batch has it.
fn column_as<T: arrow::datatypes::ArrowPrimitiveType>(
    batch: &RecordBatch,
    name: &str,
    ty: &DataType,
) -> arrow::error::Result<Option<arrow::array::PrimitiveArray<T>>> {
    let Some(column) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let cast = cast(column, ty)?;
    Ok(Some(cast.as_primitive::<T>().clone()))
}

fn value_at<T: arrow::datatypes::ArrowPrimitiveType>(
    column: &Option<arrow::array::PrimitiveArray<T>>,
    i: usize,
) -> Option<T::Native> {
    let column = column.as_ref()?;
    column.is_valid(i).then(|| column.value(i))
}

fn micros_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map_or_else(|| format!("{micros} µs"), |t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000_000; // 2026-05-28

    fn good() -> SpanValues {
        SpanValues {
            input_tokens: Some(1200),
            cached_input_tokens: Some(1000),
            output_tokens: Some(300),
            reasoning_tokens: Some(200),
            cache_write_input_tokens: Some(100),
            cache_write_1h_input_tokens: Some(40),
            cost_usd: Some(0.0042),
            start_time: Some(NOW - 5_000_000),
            duration_ms: Some(900),
            docs_retrieved: Some(8),
            docs_used: Some(3),
        }
    }

    fn rule_of(row: SpanValues) -> Option<Rule> {
        Policy::at(NOW).check(&row).err().map(|v| v.rule)
    }

    #[test]
    fn a_plausible_row_and_one_with_nothing_reported_pass() {
        assert_eq!(rule_of(good()), None);
        let bare = SpanValues {
            start_time: Some(NOW),
            ..SpanValues::default()
        };
        assert_eq!(rule_of(bare), None);
        let edges = SpanValues {
            input_tokens: Some(MAX_TOKENS),
            cached_input_tokens: Some(MAX_TOKENS),
            output_tokens: Some(0),
            reasoning_tokens: Some(0),
            cost_usd: Some(0.0),
            start_time: Some(EARLIEST_START_MICROS),
            duration_ms: Some(MAX_DURATION_MS),
            ..SpanValues::default()
        };
        assert_eq!(rule_of(edges), None);
    }

    #[test]
    fn each_rule_names_the_offending_values() {
        let cases: [(SpanValues, Rule, &str); 14] = [
            (
                SpanValues {
                    cached_input_tokens: Some(0),
                    cache_write_input_tokens: Some(100),
                    cache_write_1h_input_tokens: Some(101),
                    ..good()
                },
                Rule::CachedAboveInput,
                "cache_write_1h_input_tokens 101 > cache_write_input_tokens 100",
            ),
            (
                SpanValues {
                    cache_write_input_tokens: Some(300),
                    ..good()
                },
                Rule::CachedAboveInput,
                "cached_input_tokens 1000 + cache_write_input_tokens 300 > input_tokens 1200",
            ),
            (
                SpanValues {
                    cached_input_tokens: None,
                    cache_write_input_tokens: Some(1201),
                    ..good()
                },
                Rule::CachedAboveInput,
                "cache_write_input_tokens 1201 > input_tokens 1200",
            ),
            (
                SpanValues {
                    cache_write_input_tokens: Some(-1),
                    ..good()
                },
                Rule::TokensOutOfRange,
                "cache_write_input_tokens -1",
            ),
            (
                SpanValues {
                    input_tokens: Some(-5),
                    ..good()
                },
                Rule::TokensOutOfRange,
                "input_tokens -5",
            ),
            (
                SpanValues {
                    output_tokens: Some(i64::MAX),
                    reasoning_tokens: None,
                    ..good()
                },
                Rule::TokensOutOfRange,
                "output_tokens 9223372036854775807",
            ),
            (
                SpanValues {
                    input_tokens: Some(10),
                    ..good()
                },
                Rule::CachedAboveInput,
                "cached_input_tokens 1000 + cache_write_input_tokens 100 > input_tokens 10",
            ),
            (
                SpanValues {
                    output_tokens: Some(100),
                    ..good()
                },
                Rule::ReasoningAboveOutput,
                "reasoning_tokens 200 > output_tokens 100",
            ),
            (
                SpanValues {
                    cost_usd: Some(-3.0),
                    ..good()
                },
                Rule::CostOutOfRange,
                "cost_usd -3",
            ),
            (
                SpanValues {
                    cost_usd: Some(1e308),
                    ..good()
                },
                Rule::CostOutOfRange,
                "cost_usd 1",
            ),
            (
                SpanValues {
                    cost_usd: Some(f64::NAN),
                    ..good()
                },
                Rule::CostOutOfRange,
                "NaN",
            ),
            (
                SpanValues {
                    start_time: Some(0),
                    ..good()
                },
                Rule::StartOutsideWindow,
                "1970-01-01",
            ),
            (
                SpanValues {
                    start_time: Some(NOW + MAX_FUTURE_MICROS + 1),
                    ..good()
                },
                Rule::StartOutsideWindow,
                "2026-05-29",
            ),
            (
                SpanValues {
                    docs_used: Some(9),
                    ..good()
                },
                Rule::DocsOutOfRange,
                "docs_used 9 > docs_retrieved 8",
            ),
        ];
        for (row, rule, detail) in cases {
            let violation = Policy::at(NOW).check(&row).unwrap_err();
            assert_eq!(violation.rule, rule, "{row:?}");
            assert!(violation.detail.contains(detail), "{violation}");
        }
        let negative = SpanValues {
            duration_ms: Some(-1),
            ..good()
        };
        assert_eq!(rule_of(negative), Some(Rule::DurationOutOfRange));
    }

    #[test]
    fn a_batch_is_counted_per_rule_and_a_row_breaking_two_counts_once_as_failing() {
        use arrow::array::{Float64Array, Int64Array};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("input_tokens", DataType::Int64, true),
            Field::new("cached_input_tokens", DataType::Int64, true),
            Field::new("cost_usd", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![Some(10), Some(-1), None, Some(5)])),
                Arc::new(Int64Array::from(vec![Some(1000), None, None, Some(5)])),
                Arc::new(Float64Array::from(vec![
                    Some(0.1),
                    Some(-2.0),
                    None,
                    Some(0.2),
                ])),
            ],
        )
        .unwrap();
        let check = Policy::at(NOW).check_batch(&batch).unwrap();
        assert_eq!((check.rows, check.failing_rows), (4, 2));
        assert_eq!(
            check.summary(),
            "tokens_out_of_range: 1, cached_above_input: 1, cost_out_of_range: 1"
        );
    }
}
