//! Mapped rows as Arrow batches of the `spans` and `outcomes` tables, columns filled by name;
//! and a segment's batches as one batch in the order its file declares.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, MapBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use tokenledger_engine::EngineError;
use tokenledger_engine::schema::{OUTCOMES, REJECTED_SPANS, SPANS, TableDef, batch_by_name};

use crate::error::Result;
use crate::map::{OutcomeRecord, RejectedRecord, SpanRecord, write_hex};

/// `rows` as a batch of `spans` (in the order given: segments are sorted when written).
pub fn spans_batch(rows: &[SpanRecord]) -> Result<RecordBatch> {
    let text = |f: for<'r> fn(&'r SpanRecord<'r>) -> Option<&'r str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let id = |f: for<'r> fn(&'r SpanRecord<'r>) -> Option<&'r [u8]>| -> ArrayRef {
        let mut builder = StringBuilder::with_capacity(rows.len(), rows.len() * 32);
        let mut scratch = String::with_capacity(32);
        for row in rows {
            match f(row) {
                Some(id) => {
                    scratch.clear();
                    write_hex(id, &mut scratch);
                    builder.append_value(&scratch);
                }
                None => builder.append_null(),
            }
        }
        Arc::new(builder.finish())
    };
    let int = |f: fn(&SpanRecord) -> Option<i64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int64Array>())
    };
    let int32 = |f: fn(&SpanRecord) -> Option<i32>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int32Array>())
    };
    Ok(batch_by_name(&SPANS, |name| {
        Some(match name {
            "trace_id" => id(|r| Some(r.trace_id)),
            "span_id" => id(|r| Some(r.span_id)),
            "parent_span_id" => id(|r| r.parent_span_id),
            "work_item_id" => text(|r| Some(&r.work_item_id)),
            "attempt" => int32(|r| Some(r.attempt)),
            "workflow" => text(|r| Some(&r.workflow)),
            "tenant" => text(|r| r.tenant.as_deref()),
            "kind" => text(|r| Some(r.kind)),
            "name" => text(|r| Some(r.name)),
            "provider" => text(|r| r.provider.as_deref()),
            "model" => text(|r| r.model.as_deref()),
            "input_tokens" => int(|r| r.input_tokens),
            "cached_input_tokens" => int(|r| r.cached_input_tokens),
            "output_tokens" => int(|r| r.output_tokens),
            "reasoning_tokens" => int(|r| r.reasoning_tokens),
            "cost_usd" => Arc::new(rows.iter().map(|r| r.cost_usd).collect::<Float64Array>()),
            "start_time" => timestamps(rows.iter().map(|r| Some(r.start_time))),
            "duration_ms" => int(|r| r.duration_ms),
            "status" => text(|r| Some(r.status)),
            "error_type" => text(|r| r.error_type.as_deref()),
            "docs_retrieved" => int32(|r| r.docs_retrieved),
            "docs_used" => int32(|r| r.docs_used),
            "attributes" => attributes(rows),
            "cache_write_input_tokens" => int(|r| r.cache_write_input_tokens),
            "service_tier" => text(|r| r.service_tier.as_deref()),
            "cache_write_1h_input_tokens" => int(|r| r.cache_write_1h_input_tokens),
            "cost_source" => text(|r| r.cost_source.as_deref()),
            _ => return None,
        })
    })?)
}

/// `rows` as a batch of `outcomes`.
pub fn outcomes_batch(rows: &[OutcomeRecord]) -> Result<RecordBatch> {
    let text = |f: for<'r> fn(&'r OutcomeRecord<'r>) -> Option<&'r str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let float = |f: fn(&OutcomeRecord) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Float64Array>())
    };
    Ok(batch_by_name(&OUTCOMES, |name| {
        Some(match name {
            "work_item_id" => text(|r| Some(&r.work_item_id)),
            "workflow" => text(|r| Some(&r.workflow)),
            "tenant" => text(|r| r.tenant.as_deref()),
            "outcome" => text(|r| Some(&r.outcome)),
            "resolved_attempt" => Arc::new(
                rows.iter()
                    .map(|r| r.resolved_attempt)
                    .collect::<Int32Array>(),
            ),
            "value_usd" => float(|r| r.value_usd),
            "human_minutes" => float(|r| r.human_minutes),
            "human_cost_usd" => float(|r| r.human_cost_usd),
            "closed_at" => timestamps(rows.iter().map(|r| r.closed_at)),
            _ => return None,
        })
    })?)
}

/// `rows` as a batch of `rejected_spans`, refused at `received_at` (micros) by `source`.
pub fn rejected_batch(
    rows: &[RejectedRecord],
    received_at: i64,
    source: &str,
) -> Result<RecordBatch> {
    let text = |f: fn(&RejectedRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    Ok(batch_by_name(&REJECTED_SPANS, |name| {
        Some(match name {
            "received_at" => timestamps(rows.iter().map(|_| Some(received_at))),
            "source" => Arc::new(rows.iter().map(|_| Some(source)).collect::<StringArray>()),
            "tenant" => text(|r| r.tenant.as_deref()),
            "trace_id" => text(|r| Some(r.trace_id.as_str())),
            "span_id" => text(|r| Some(r.span_id.as_str())),
            "name" => text(|r| Some(r.name.as_str())),
            "start_time" => timestamps(rows.iter().map(|r| r.start_time)),
            "rule" => text(|r| Some(r.violation.rule.name())),
            "reason" => Arc::new(
                rows.iter()
                    .map(|r| Some(r.violation.detail.as_str()))
                    .collect::<StringArray>(),
            ),
            "attributes" => text(|r| Some(r.attributes.as_str())),
            _ => return None,
        })
    })?)
}

/// `batches` of `table` as one batch sorted by the columns `sorted_by` (the order its file
/// declares, so min/max statistics prune).
pub fn sorted(
    table: &TableDef,
    batches: &[RecordBatch],
    sorted_by: &[&str],
) -> Result<RecordBatch> {
    let engine = |e: arrow::error::ArrowError| EngineError::from(e);
    let batch = concat_batches(&table.schema(), batches).map_err(engine)?;
    let columns: Vec<SortColumn> = sorted_by
        .iter()
        .filter_map(|name| batch.column_by_name(name))
        .map(|values| SortColumn {
            values: Arc::clone(values),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&columns, None).map_err(engine)?;
    Ok(take_record_batch(&batch, &order).map_err(engine)?)
}

fn timestamps(micros: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(micros).with_timezone("UTC"))
}

fn attributes(rows: &[SpanRecord]) -> ArrayRef {
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for row in rows {
        for (key, value) in &row.attributes {
            map.keys().append_value(key);
            map.values().append_value(value);
        }
        map.append(true).expect("keys and values appended in pairs");
    }
    Arc::new(map.finish())
}
