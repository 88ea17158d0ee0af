//! Mapped rows as Arrow batches of the `spans` and `outcomes` tables, columns filled by name.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, MapBuilder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use tokenledger_engine::schema::{OUTCOMES, SPANS, batch_by_name};

use crate::error::Result;
use crate::map::{OutcomeRecord, SpanRecord};

/// `rows` as a batch of `spans`, sorted by workflow and start time (the order the files declare).
pub fn spans_batch(rows: &[SpanRecord]) -> Result<RecordBatch> {
    // Sorted as indices by (workflow's rank, start time): comparing workflow names, and moving
    // whole records, made the sort a tenth of the receiver's time.
    let mut workflows: Vec<&str> = rows.iter().map(|r| r.workflow.as_str()).collect();
    workflows.sort_unstable();
    workflows.dedup();
    let rank = |r: &SpanRecord| workflows.binary_search(&r.workflow.as_str()).unwrap_or(0);
    let mut keys: Vec<(usize, i64, usize)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (rank(r), r.start_time, i))
        .collect();
    keys.sort_unstable();
    let sorted: Vec<&SpanRecord> = keys.iter().map(|k| &rows[k.2]).collect();
    let text = |f: fn(&SpanRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(sorted.iter().map(|r| f(r)).collect::<StringArray>())
    };
    let int = |f: fn(&SpanRecord) -> Option<i64>| -> ArrayRef {
        Arc::new(sorted.iter().map(|r| f(r)).collect::<Int64Array>())
    };
    let int32 = |f: fn(&SpanRecord) -> Option<i32>| -> ArrayRef {
        Arc::new(sorted.iter().map(|r| f(r)).collect::<Int32Array>())
    };
    Ok(batch_by_name(&SPANS, |name| {
        Some(match name {
            "trace_id" => text(|r| Some(&r.trace_id)),
            "span_id" => text(|r| Some(&r.span_id)),
            "parent_span_id" => text(|r| r.parent_span_id.as_deref()),
            "work_item_id" => text(|r| Some(&r.work_item_id)),
            "attempt" => int32(|r| Some(r.attempt)),
            "workflow" => text(|r| Some(&r.workflow)),
            "tenant" => text(|r| r.tenant.as_deref()),
            "kind" => text(|r| Some(r.kind)),
            "name" => text(|r| Some(&r.name)),
            "provider" => text(|r| r.provider.as_deref()),
            "model" => text(|r| r.model.as_deref()),
            "input_tokens" => int(|r| r.input_tokens),
            "cached_input_tokens" => int(|r| r.cached_input_tokens),
            "output_tokens" => int(|r| r.output_tokens),
            "reasoning_tokens" => int(|r| r.reasoning_tokens),
            "cost_usd" => Arc::new(sorted.iter().map(|r| r.cost_usd).collect::<Float64Array>()),
            "start_time" => timestamps(sorted.iter().map(|r| Some(r.start_time))),
            "duration_ms" => int(|r| r.duration_ms),
            "status" => text(|r| Some(r.status)),
            "error_type" => text(|r| r.error_type.as_deref()),
            "docs_retrieved" => int32(|r| r.docs_retrieved),
            "docs_used" => int32(|r| r.docs_used),
            "attributes" => attributes(&sorted),
            _ => return None,
        })
    })?)
}

/// `rows` as a batch of `outcomes`, sorted by workflow.
pub fn outcomes_batch(rows: &mut [OutcomeRecord]) -> Result<RecordBatch> {
    rows.sort_by(|a, b| a.workflow.cmp(&b.workflow));
    let text = |f: fn(&OutcomeRecord) -> Option<&str>| -> ArrayRef {
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

fn timestamps(micros: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter(micros).with_timezone("UTC"))
}

fn attributes(rows: &[&SpanRecord]) -> ArrayRef {
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
