//! The decision-trace model: four tables, their columns, and which file types can be read as them.
//!
//! Every table column is nullable in Arrow terms so that a file which lacks an optional column can
//! be read with nulls in its place; the columns marked `required` must be present in every file.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{EngineError, Result};

/// One column of a tokenledger table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Column name as it appears in SQL and in Parquet files.
    pub name: &'static str,
    /// The logical kind of the column; see [`ColumnType::data_type`].
    pub ty: ColumnType,
    /// A file that lacks a required column cannot be read as the table.
    pub required: bool,
    /// What the column means.
    pub doc: &'static str,
}

/// The handful of column types the trace model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    Text,
    /// 32-bit integer (attempt numbers, document counts).
    Int32,
    /// 64-bit integer (token counts, durations).
    Int64,
    /// 64-bit float (money, minutes).
    Float64,
    /// Microsecond timestamp in UTC.
    Timestamp,
    /// Open string-to-string map for attributes the model has no column for.
    TextMap,
}

impl ColumnType {
    /// The Arrow type of this column in the files tokenledger writes.
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Timestamp => timestamp_type(),
            ColumnType::TextMap => text_map_type(),
        }
    }

    /// The Arrow type queries see: text as `Utf8View`, which DataFusion filters, groups, joins and
    /// sorts about a quarter faster than `Utf8` (`benches/results/`); the Parquet bytes are the same.
    pub fn query_type(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8View,
            other => other.data_type(),
        }
    }

    /// Whether values stored in a file as `file_type` can be read as this column: losslessly,
    /// except into a double column, which also takes integers and decimals as their nearest
    /// double (exact up to 2^53 and about 15 significant digits; enough for costs in USD).
    ///
    /// Stricter than Arrow's `can_cast_types` on purpose: text in a numeric column is a broken
    /// pipeline, not something to parse at query time.
    pub fn accepts(self, file_type: &DataType) -> bool {
        use DataType::*;
        let file_type = match file_type {
            Dictionary(_, value) => value.as_ref(),
            other => other,
        };
        match self {
            ColumnType::Text => matches!(file_type, Utf8 | LargeUtf8 | Utf8View),
            ColumnType::Int32 => matches!(file_type, Int8 | Int16 | Int32 | UInt8 | UInt16),
            ColumnType::Int64 => {
                matches!(
                    file_type,
                    Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32
                )
            }
            ColumnType::Float64 => {
                file_type.is_floating() || file_type.is_integer() || file_type.is_decimal()
            }
            ColumnType::Timestamp => matches!(file_type, Timestamp(_, _)),
            ColumnType::TextMap => match file_type {
                Map(entries, _) => match entries.data_type() {
                    Struct(fields) if fields.len() == 2 => fields
                        .iter()
                        .all(|f| ColumnType::Text.accepts(f.data_type())),
                    _ => false,
                },
                _ => false,
            },
        }
    }
}

/// `Timestamp(µs, "UTC")`, the one time type of the model.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `Map<Utf8, Utf8>` with the field names Arrow's `MapBuilder` uses.
pub fn text_map_type() -> DataType {
    let entries = Field::new_struct(
        "entries",
        vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ],
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// A table of the decision-trace model.
#[derive(Debug)]
pub struct TableDef {
    /// Table name, also the directory name under the data location.
    pub name: &'static str,
    /// What one row is.
    pub doc: &'static str,
    /// The columns, in table order.
    pub columns: &'static [Column],
    /// The columns whose values name one row, as [`TableDef::doc`] promises. Not enforced (files
    /// arrive as pipelines write them): a hint for the planner, never relied on for an answer.
    pub row_key: &'static [&'static str],
}

impl TableDef {
    /// The Arrow schema of the files tokenledger writes (importers, `gen`).
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schemas().stored)
    }

    /// The Arrow schema queries see; see [`ColumnType::query_type`].
    pub fn query_schema(&self) -> SchemaRef {
        Arc::clone(&self.schemas().query)
    }

    fn schemas(&self) -> &'static Schemas {
        match self.name {
            "spans" => &SPANS_SCHEMAS,
            "outcomes" => &OUTCOMES_SCHEMAS,
            "model_prices" => &MODEL_PRICES_SCHEMAS,
            "rejected_spans" => &REJECTED_SPANS_SCHEMAS,
            _ => &BASELINES_SCHEMAS,
        }
    }

    /// Looks a column up by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Checks that a file with `file_schema` can be read as this table: every required column is
    /// present and every known column has a compatible type. Extra columns are allowed (newer
    /// writers may add them). Returns the offending column and what is wrong with it.
    pub fn check_file_schema(&self, file_schema: &Schema) -> Result<(), SchemaProblem> {
        for column in self.columns.iter().filter(|c| c.required) {
            if file_schema.field_with_name(column.name).is_err() {
                return Err(SchemaProblem {
                    column: column.name.to_string(),
                    problem: "is required but missing".to_string(),
                });
            }
        }
        for field in file_schema.fields() {
            let Some(column) = self.column(field.name()) else {
                continue;
            };
            if !column.ty.accepts(field.data_type()) {
                return Err(SchemaProblem {
                    column: column.name.to_string(),
                    problem: format!(
                        "has type {} but the table needs {}",
                        field.data_type(),
                        column.ty.data_type()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// Why a file's schema cannot be read as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// The column at fault.
    pub column: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A table's two schemas, built once.
struct Schemas {
    stored: SchemaRef,
    query: SchemaRef,
}

impl Schemas {
    fn of(columns: &[Column]) -> Self {
        let build = |ty: fn(ColumnType) -> DataType| {
            Arc::new(Schema::new(
                columns
                    .iter()
                    .map(|c| Field::new(c.name, ty(c.ty), true))
                    .collect::<Vec<_>>(),
            ))
        };
        Self {
            stored: build(ColumnType::data_type),
            query: build(ColumnType::query_type),
        }
    }
}

static SPANS_SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas::of(SPANS.columns));
static OUTCOMES_SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas::of(OUTCOMES.columns));
static MODEL_PRICES_SCHEMAS: LazyLock<Schemas> =
    LazyLock::new(|| Schemas::of(MODEL_PRICES.columns));
static BASELINES_SCHEMAS: LazyLock<Schemas> = LazyLock::new(|| Schemas::of(BASELINES.columns));
static REJECTED_SPANS_SCHEMAS: LazyLock<Schemas> =
    LazyLock::new(|| Schemas::of(REJECTED_SPANS.columns));

const fn col(name: &'static str, ty: ColumnType, required: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        required,
        doc,
    }
}

use ColumnType::{Float64, Int32, Int64, Text, TextMap, Timestamp};

/// One row per step of an agent run.
pub static SPANS: TableDef = TableDef {
    name: "spans",
    row_key: &["trace_id", "span_id"],
    doc: "one row per step of an agent run (LLM call, retrieval, tool call, human step, decision)",
    columns: &[
        col(
            "trace_id",
            Text,
            true,
            "one attempt at one work item (OTel trace id)",
        ),
        col("span_id", Text, true, "this step (OTel span id)"),
        col(
            "parent_span_id",
            Text,
            false,
            "the step that started this one; null at the root",
        ),
        col(
            "work_item_id",
            Text,
            true,
            "the business unit of work: a ticket, a claim, an invoice",
        ),
        col(
            "attempt",
            Int32,
            true,
            "1 = first try, 2.. = retries of the same work item",
        ),
        col(
            "workflow",
            Text,
            true,
            "the agent workflow (gen_ai.workflow.name)",
        ),
        col("tenant", Text, false, "the business unit that pays"),
        col(
            "kind",
            Text,
            true,
            "llm | retrieval | tool | human | decision",
        ),
        col(
            "name",
            Text,
            false,
            "span name, e.g. `chat gpt-4.1-mini`, `execute_tool lookup_policy`",
        ),
        col(
            "provider",
            Text,
            false,
            "model provider (gen_ai.provider.name)",
        ),
        col(
            "model",
            Text,
            false,
            "model that answered (gen_ai.response.model, else request.model)",
        ),
        col(
            "input_tokens",
            Int64,
            false,
            "prompt tokens, INCLUDING cached ones (gen_ai.usage.input_tokens)",
        ),
        col(
            "cached_input_tokens",
            Int64,
            false,
            "prompt tokens read from cache (gen_ai.usage.cache_read.input_tokens)",
        ),
        col(
            "output_tokens",
            Int64,
            false,
            "completion tokens, INCLUDING reasoning (gen_ai.usage.output_tokens)",
        ),
        col(
            "reasoning_tokens",
            Int64,
            false,
            "reasoning tokens (gen_ai.usage.reasoning.output_tokens)",
        ),
        col(
            "cost_usd",
            Float64,
            false,
            "cost reported by the provider or gateway; null = price later from model_prices",
        ),
        col(
            "start_time",
            Timestamp,
            true,
            "when the step started (UTC, microseconds)",
        ),
        col("duration_ms", Int64, false, "how long the step took"),
        col("status", Text, true, "ok | error"),
        col(
            "error_type",
            Text,
            false,
            "error class when status = error (error.type)",
        ),
        col(
            "docs_retrieved",
            Int32,
            false,
            "retrieval: documents fetched",
        ),
        col(
            "docs_used",
            Int32,
            false,
            "retrieval: documents the answer actually used",
        ),
        col(
            "attributes",
            TextMap,
            false,
            "every other span attribute, as strings",
        ),
        col(
            "cache_write_input_tokens",
            Int64,
            false,
            "prompt tokens written to the provider's cache, INSIDE input_tokens as cached reads are \
             (gen_ai.usage.cache_write.input_tokens); null = not reported",
        ),
        col(
            "service_tier",
            Text,
            false,
            "the tier the provider ran the call at: standard | batch | flex | priority | … \
             (null = not reported)",
        ),
        col(
            "cache_write_1h_input_tokens",
            Int64,
            false,
            "of cache_write_input_tokens, those written to a 1-hour cache (Anthropic bills them \
             higher than 5-minute writes); null = not reported",
        ),
        col(
            "cost_source",
            Text,
            false,
            "where cost_usd came from: provider (the API's response) | local (computed by the \
             app or a gateway when it recorded the call); null = not said",
        ),
    ],
};

/// One row per work item: what the business got.
pub static OUTCOMES: TableDef = TableDef {
    name: "outcomes",
    row_key: &["work_item_id"],
    doc: "one row per work item: how it ended and what it was worth",
    columns: &[
        col(
            "work_item_id",
            Text,
            true,
            "the work item (joins spans.work_item_id)",
        ),
        col("workflow", Text, true, "the workflow that handled it"),
        col("tenant", Text, false, "the business unit that pays"),
        col(
            "outcome",
            Text,
            true,
            "resolved | failed | escalated | abandoned",
        ),
        col(
            "resolved_attempt",
            Int32,
            false,
            "the attempt that succeeded; null unless resolved",
        ),
        col(
            "value_usd",
            Float64,
            false,
            "business value of the item when resolved",
        ),
        col(
            "human_minutes",
            Float64,
            false,
            "minutes people spent correcting or finishing it",
        ),
        col("human_cost_usd", Float64, false, "what those minutes cost"),
        col(
            "closed_at",
            Timestamp,
            false,
            "when the item was closed (UTC)",
        ),
    ],
};

/// Model prices over time, for as-of pricing.
pub static MODEL_PRICES: TableDef = TableDef {
    name: "model_prices",
    row_key: &["model", "service_tier", "above_input_tokens", "valid_from"],
    doc: "USD per million tokens for a model from valid_from until the next row of that model",
    columns: &[
        col("provider", Text, false, "model provider"),
        col(
            "model",
            Text,
            true,
            "model name as it appears in spans.model",
        ),
        col(
            "valid_from",
            Timestamp,
            true,
            "first instant this price applies (UTC)",
        ),
        col("input_usd_per_mtok", Float64, true, "uncached input tokens"),
        col(
            "cached_input_usd_per_mtok",
            Float64,
            false,
            "cached input tokens; null = the input price",
        ),
        col("output_usd_per_mtok", Float64, true, "output tokens"),
        col(
            "reasoning_usd_per_mtok",
            Float64,
            false,
            "reasoning tokens; null = the output price",
        ),
        col(
            "service_tier",
            Text,
            false,
            "the service tier these prices are for: standard | batch | flex | priority | …; \
             null = standard",
        ),
        col(
            "above_input_tokens",
            Int64,
            false,
            "long-context rates: these prices apply to every token of a call with more input \
             tokens than this; null = every call",
        ),
        col(
            "cache_write_usd_per_mtok",
            Float64,
            false,
            "input tokens written to cache (a 5-minute cache on Anthropic); null = the input price",
        ),
        col(
            "cache_write_1h_usd_per_mtok",
            Float64,
            false,
            "input tokens written to a 1-hour cache; null = the cache-write price",
        ),
    ],
};

/// What the work would cost without AI.
pub static BASELINES: TableDef = TableDef {
    name: "baselines",
    row_key: &["workflow", "tenant"],
    doc: "per workflow (and optionally tenant): the outsourcing and in-house price of one unit",
    columns: &[
        col("workflow", Text, true, "the workflow"),
        col("tenant", Text, false, "null = applies to every tenant"),
        col(
            "bpo_unit_price_usd",
            Float64,
            false,
            "what a BPO charges per completed unit",
        ),
        col(
            "human_unit_cost_usd",
            Float64,
            false,
            "what in-house staff cost per completed unit",
        ),
        col(
            "valid_from",
            Timestamp,
            false,
            "first instant this baseline applies (UTC)",
        ),
    ],
};

/// Spans refused at the door, kept for administrators: not part of the model (reports never read
/// it), and registered only in sessions that see every tenant.
pub static REJECTED_SPANS: TableDef = TableDef {
    name: "rejected_spans",
    row_key: &[],
    doc: "one row per span a way in refused, with the rule it broke and what it carried",
    columns: &[
        col(
            "received_at",
            Timestamp,
            true,
            "when it was refused (after a crash: when its spool segment opened)",
        ),
        col("source", Text, true, "the way in: otlp, csv or compaction"),
        col(
            "tenant",
            Text,
            false,
            "the tenant it named, if it could be read",
        ),
        col(
            "trace_id",
            Text,
            false,
            "as sent, in hex (whatever its length)",
        ),
        col("span_id", Text, false, "as sent, in hex"),
        col("name", Text, false, "span name"),
        col("start_time", Timestamp, false, "when it said it started"),
        col("rule", Text, true, "the rule broken (docs/integrity.md)"),
        col(
            "reason",
            Text,
            true,
            "what was wrong, with the offending values",
        ),
        col(
            "attributes",
            Text,
            false,
            "the span's attributes as one JSON object, as sent",
        ),
    ],
};

/// All tables, in the order they are listed to users.
pub static TABLES: [&TableDef; 4] = [&SPANS, &OUTCOMES, &MODEL_PRICES, &BASELINES];

/// A batch of `table`, each column taken by its name from `column`: the table's schema decides
/// the order, so a writer cannot fill a column from the wrong builder when the schema changes.
pub fn batch_by_name(
    table: &TableDef,
    mut column: impl FnMut(&str) -> Option<ArrayRef>,
) -> Result<RecordBatch> {
    let schema = table.schema();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            column(field.name()).ok_or_else(|| {
                EngineError::Input(format!(
                    "{} rows: the writer has no column {:?}",
                    table.name,
                    field.name()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema, columns)
        .map_err(|e| EngineError::Input(format!("{} rows: {e}", table.name)))
}

/// Looks a table up by name.
pub fn table(name: &str) -> Option<&'static TableDef> {
    TABLES.iter().copied().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_widening_but_not_text_for_numbers() {
        assert!(ColumnType::Int64.accepts(&DataType::Int32));
        assert!(ColumnType::Text.accepts(&DataType::Utf8View));
        assert!(ColumnType::Text.accepts(&DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Utf8)
        )));
        assert!(ColumnType::Timestamp.accepts(&DataType::Timestamp(TimeUnit::Nanosecond, None)));
        assert!(!ColumnType::Int64.accepts(&DataType::Utf8));
        assert!(!ColumnType::Int64.accepts(&DataType::UInt64));
        assert!(!ColumnType::Int32.accepts(&DataType::Int64));
        assert!(!ColumnType::Timestamp.accepts(&DataType::Utf8));
        assert!(ColumnType::TextMap.accepts(&text_map_type()));
    }

    #[test]
    fn check_names_the_missing_or_mistyped_column() {
        let good = SPANS.schema();
        assert_eq!(SPANS.check_file_schema(&good), Ok(()));

        let fields: Vec<Field> = good
            .fields()
            .iter()
            .filter(|f| f.name() != "workflow")
            .map(|f| f.as_ref().clone())
            .collect();
        let err = SPANS.check_file_schema(&Schema::new(fields)).unwrap_err();
        assert_eq!(err.column, "workflow");

        let fields: Vec<Field> = good
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "input_tokens" => Field::new("input_tokens", DataType::Utf8, true),
                _ => f.as_ref().clone(),
            })
            .collect();
        let err = SPANS.check_file_schema(&Schema::new(fields)).unwrap_err();
        assert_eq!(err.column, "input_tokens");
        assert!(err.problem.contains("Utf8"), "{}", err.problem);
    }

    #[test]
    fn optional_columns_may_be_absent_and_extras_are_ignored() {
        let schema = Schema::new(vec![
            Field::new("model", DataType::Utf8, false),
            Field::new("valid_from", timestamp_type(), false),
            Field::new("input_usd_per_mtok", DataType::Float64, false),
            Field::new("output_usd_per_mtok", DataType::Float64, false),
            Field::new("batch_discount", DataType::Float64, false),
        ]);
        assert_eq!(MODEL_PRICES.check_file_schema(&schema), Ok(()));
    }
}
