//! Column builders for generated spans and outcomes: rows go straight into Arrow builders, with
//! ids formatted into reused buffers so the hot loop allocates nothing per row.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};

use tokenledger_engine::schema::{OUTCOMES, SPANS, batch_by_name};

use crate::catalog::{Model, Workflow};
use crate::error::Result;

/// Token counts of one model call (cached inside input, reasoning inside output).
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    pub input: i64,
    pub cached: i64,
    pub output: i64,
    pub reasoning: i64,
}

/// The open attributes a span carries, named as OpenTelemetry GenAI does.
#[derive(Debug, Clone, Copy)]
pub enum Attrs {
    Agent,
    Chat { finish_reason: &'static str },
    Retrieval { index: &'static str },
    Tool { tool: &'static str },
    Validate,
    Human { role: &'static str },
}

/// One generated span, kept as plain values until it is written in start-time order.
#[derive(Debug, Clone)]
pub struct SpanRow {
    pub start: i64,
    /// Generation order, to break start-time ties deterministically.
    pub seq: u64,
    pub trace: u128,
    pub span: u64,
    /// 0 = root.
    pub parent: u64,
    pub item: u64,
    pub attempt: i32,
    pub tenant: &'static str,
    pub kind: &'static str,
    pub name: &'static str,
    pub model: Option<&'static Model>,
    pub tokens: Option<Tokens>,
    pub cost: Option<f64>,
    pub duration_ms: i64,
    pub error: Option<&'static str>,
    pub docs: Option<(i32, i32)>,
    pub attrs: Attrs,
}

/// How a work item ended (the `outcome` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An attempt got it right.
    Resolved,
    /// The agent handed it to a person after a failed attempt.
    Escalated,
    /// The requester gave up waiting after repeated failures.
    Abandoned,
    /// Every attempt failed.
    Failed,
}

impl Outcome {
    /// The value stored in `outcomes.outcome`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Resolved => "resolved",
            Outcome::Escalated => "escalated",
            Outcome::Abandoned => "abandoned",
            Outcome::Failed => "failed",
        }
    }
}

/// One generated outcome row.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    pub item: u64,
    pub tenant: &'static str,
    pub outcome: Outcome,
    pub resolved_attempt: Option<i32>,
    pub value_usd: f64,
    pub human_minutes: f64,
    pub human_cost_usd: f64,
    pub closed_at: i64,
}

/// The low `digits` hex digits of `value`, formatted without `fmt` machinery (this runs three
/// times per generated span).
fn hex(value: u128, digits: usize, out: &mut [u8; 32]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out[..digits].iter_mut().rev().enumerate() {
        *byte = HEX[((value >> (4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(&out[..digits]).expect("hex digits are ASCII")
}

fn work_item_id(buf: &mut String, workflow: &Workflow, item: u64) {
    buf.clear();
    let _ = write!(buf, "{}-{item:08}", workflow.id_prefix);
}

/// Arrow builders for the `spans` table of one workflow.
pub struct SpanColumns {
    workflow: &'static Workflow,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    work_item_id: StringBuilder,
    attempt: Int32Builder,
    workflow_name: StringBuilder,
    tenant: StringBuilder,
    kind: StringBuilder,
    name: StringBuilder,
    provider: StringBuilder,
    model: StringBuilder,
    input_tokens: Int64Builder,
    cached_input_tokens: Int64Builder,
    output_tokens: Int64Builder,
    reasoning_tokens: Int64Builder,
    cost_usd: Float64Builder,
    start_time: TimestampMicrosecondBuilder,
    duration_ms: Int64Builder,
    status: StringBuilder,
    error_type: StringBuilder,
    docs_retrieved: Int32Builder,
    docs_used: Int32Builder,
    cache_write_input_tokens: Int64Builder,
    service_tier: StringBuilder,
    cache_write_1h_input_tokens: Int64Builder,
    cost_source: StringBuilder,
    attributes: MapBuilder<StringBuilder, StringBuilder>,
    /// The formatted id of `scratch_item` (consecutive spans often share their work item).
    scratch: String,
    scratch_item: Option<u64>,
    rows: usize,
}

impl SpanColumns {
    /// Empty builders for spans of `workflow`.
    pub fn new(workflow: &'static Workflow) -> Self {
        SpanColumns {
            workflow,
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            work_item_id: StringBuilder::new(),
            attempt: Int32Builder::new(),
            workflow_name: StringBuilder::new(),
            tenant: StringBuilder::new(),
            kind: StringBuilder::new(),
            name: StringBuilder::new(),
            provider: StringBuilder::new(),
            model: StringBuilder::new(),
            input_tokens: Int64Builder::new(),
            cached_input_tokens: Int64Builder::new(),
            output_tokens: Int64Builder::new(),
            reasoning_tokens: Int64Builder::new(),
            cost_usd: Float64Builder::new(),
            start_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            duration_ms: Int64Builder::new(),
            status: StringBuilder::new(),
            error_type: StringBuilder::new(),
            docs_retrieved: Int32Builder::new(),
            docs_used: Int32Builder::new(),
            // The simulation writes no cache and runs every call at the standard tier.
            cache_write_input_tokens: Int64Builder::new(),
            service_tier: StringBuilder::new(),
            cache_write_1h_input_tokens: Int64Builder::new(),
            cost_source: StringBuilder::new(),
            attributes: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            scratch: String::with_capacity(32),
            scratch_item: None,
            rows: 0,
        }
    }

    /// Rows appended since the last [`SpanColumns::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one span.
    pub fn append(&mut self, row: &SpanRow) -> Result<()> {
        let mut digits = [0u8; 32];
        self.trace_id.append_value(hex(row.trace, 32, &mut digits));
        self.span_id
            .append_value(hex(u128::from(row.span), 16, &mut digits));
        if row.parent == 0 {
            self.parent_span_id.append_null();
        } else {
            self.parent_span_id
                .append_value(hex(u128::from(row.parent), 16, &mut digits));
        }
        if self.scratch_item != Some(row.item) {
            work_item_id(&mut self.scratch, self.workflow, row.item);
            self.scratch_item = Some(row.item);
        }
        self.work_item_id.append_value(&self.scratch);
        self.attempt.append_value(row.attempt);
        self.workflow_name.append_value(self.workflow.name);
        self.tenant.append_value(row.tenant);
        self.kind.append_value(row.kind);
        self.name.append_value(row.name);
        self.provider.append_option(row.model.map(|m| m.provider));
        self.model.append_option(row.model.map(|m| m.name));
        let t = row.tokens;
        self.input_tokens.append_option(t.map(|t| t.input));
        self.cached_input_tokens.append_option(t.map(|t| t.cached));
        self.output_tokens.append_option(t.map(|t| t.output));
        self.reasoning_tokens.append_option(t.map(|t| t.reasoning));
        self.cost_usd.append_option(row.cost);
        self.start_time.append_value(row.start);
        self.duration_ms.append_value(row.duration_ms);
        self.status
            .append_value(if row.error.is_some() { "error" } else { "ok" });
        self.error_type.append_option(row.error);
        self.docs_retrieved.append_option(row.docs.map(|d| d.0));
        self.docs_used.append_option(row.docs.map(|d| d.1));
        self.cache_write_input_tokens.append_null();
        self.service_tier.append_null();
        self.cache_write_1h_input_tokens.append_null();
        self.cost_source.append_null();
        self.append_attributes(row.attrs)?;
        self.rows += 1;
        Ok(())
    }

    fn append_attributes(&mut self, attrs: Attrs) -> Result<()> {
        let pairs: [(&str, &str); 2] = match attrs {
            Attrs::Agent => [
                ("gen_ai.operation.name", "invoke_agent"),
                ("gen_ai.agent.name", self.workflow.agent),
            ],
            Attrs::Chat { finish_reason } => [
                ("gen_ai.operation.name", "chat"),
                ("gen_ai.response.finish_reasons", finish_reason),
            ],
            Attrs::Retrieval { index } => [
                ("gen_ai.operation.name", "retrieval"),
                ("gen_ai.data_source.id", index),
            ],
            Attrs::Tool { tool } => [
                ("gen_ai.operation.name", "execute_tool"),
                ("gen_ai.tool.name", tool),
            ],
            Attrs::Validate => [
                ("tokenledger.step", "validate"),
                ("tokenledger.check", "business_rules"),
            ],
            Attrs::Human { role } => [("tokenledger.step", "human_review"), ("human.role", role)],
        };
        for (key, value) in pairs {
            self.attributes.keys().append_value(key);
            self.attributes.values().append_value(value);
        }
        self.attributes.append(true)?;
        Ok(())
    }

    /// The finished column `name` of the `spans` table, `None` for a column the generator
    /// does not know.
    fn column(&mut self, name: &str) -> Option<ArrayRef> {
        Some(match name {
            "trace_id" => Arc::new(self.trace_id.finish()),
            "span_id" => Arc::new(self.span_id.finish()),
            "parent_span_id" => Arc::new(self.parent_span_id.finish()),
            "work_item_id" => Arc::new(self.work_item_id.finish()),
            "attempt" => Arc::new(self.attempt.finish()),
            "workflow" => Arc::new(self.workflow_name.finish()),
            "tenant" => Arc::new(self.tenant.finish()),
            "kind" => Arc::new(self.kind.finish()),
            "name" => Arc::new(self.name.finish()),
            "provider" => Arc::new(self.provider.finish()),
            "model" => Arc::new(self.model.finish()),
            "input_tokens" => Arc::new(self.input_tokens.finish()),
            "cached_input_tokens" => Arc::new(self.cached_input_tokens.finish()),
            "output_tokens" => Arc::new(self.output_tokens.finish()),
            "reasoning_tokens" => Arc::new(self.reasoning_tokens.finish()),
            "cost_usd" => Arc::new(self.cost_usd.finish()),
            "start_time" => Arc::new(self.start_time.finish()),
            "duration_ms" => Arc::new(self.duration_ms.finish()),
            "status" => Arc::new(self.status.finish()),
            "error_type" => Arc::new(self.error_type.finish()),
            "docs_retrieved" => Arc::new(self.docs_retrieved.finish()),
            "docs_used" => Arc::new(self.docs_used.finish()),
            "attributes" => Arc::new(self.attributes.finish()),
            "cache_write_input_tokens" => Arc::new(self.cache_write_input_tokens.finish()),
            "service_tier" => Arc::new(self.service_tier.finish()),
            "cache_write_1h_input_tokens" => Arc::new(self.cache_write_1h_input_tokens.finish()),
            "cost_source" => Arc::new(self.cost_source.finish()),
            _ => return None,
        })
    }

    /// Turns the buffered rows into a batch and empties the builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        Ok(batch_by_name(&SPANS, |name| self.column(name))?)
    }
}

/// Arrow builders for the `outcomes` table of one workflow.
pub struct OutcomeColumns {
    workflow: &'static Workflow,
    work_item_id: StringBuilder,
    workflow_name: StringBuilder,
    tenant: StringBuilder,
    outcome: StringBuilder,
    resolved_attempt: Int32Builder,
    value_usd: Float64Builder,
    human_minutes: Float64Builder,
    human_cost_usd: Float64Builder,
    closed_at: TimestampMicrosecondBuilder,
    scratch: String,
    rows: usize,
}

impl OutcomeColumns {
    /// Empty builders for outcomes of `workflow`.
    pub fn new(workflow: &'static Workflow) -> Self {
        OutcomeColumns {
            workflow,
            work_item_id: StringBuilder::new(),
            workflow_name: StringBuilder::new(),
            tenant: StringBuilder::new(),
            outcome: StringBuilder::new(),
            resolved_attempt: Int32Builder::new(),
            value_usd: Float64Builder::new(),
            human_minutes: Float64Builder::new(),
            human_cost_usd: Float64Builder::new(),
            closed_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            scratch: String::with_capacity(16),
            rows: 0,
        }
    }

    /// Rows appended since the last [`OutcomeColumns::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are buffered.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one outcome.
    pub fn append(&mut self, row: &OutcomeRow) {
        work_item_id(&mut self.scratch, self.workflow, row.item);
        self.work_item_id.append_value(&self.scratch);
        self.workflow_name.append_value(self.workflow.name);
        self.tenant.append_value(row.tenant);
        self.outcome.append_value(row.outcome.as_str());
        self.resolved_attempt.append_option(row.resolved_attempt);
        self.value_usd.append_value(row.value_usd);
        self.human_minutes.append_value(row.human_minutes);
        self.human_cost_usd.append_value(row.human_cost_usd);
        self.closed_at.append_value(row.closed_at);
        self.rows += 1;
    }

    /// The finished column `name` of the `outcomes` table, `None` for a column the generator
    /// does not know.
    fn column(&mut self, name: &str) -> Option<ArrayRef> {
        Some(match name {
            "work_item_id" => Arc::new(self.work_item_id.finish()),
            "workflow" => Arc::new(self.workflow_name.finish()),
            "tenant" => Arc::new(self.tenant.finish()),
            "outcome" => Arc::new(self.outcome.finish()),
            "resolved_attempt" => Arc::new(self.resolved_attempt.finish()),
            "value_usd" => Arc::new(self.value_usd.finish()),
            "human_minutes" => Arc::new(self.human_minutes.finish()),
            "human_cost_usd" => Arc::new(self.human_cost_usd.finish()),
            "closed_at" => Arc::new(self.closed_at.finish()),
            _ => return None,
        })
    }

    /// Turns the buffered rows into a batch and empties the builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        Ok(batch_by_name(&OUTCOMES, |name| self.column(name))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_pads_to_the_width() {
        let mut buf = [0u8; 32];
        assert_eq!(hex(0xab, 16, &mut buf), "00000000000000ab");
        assert_eq!(
            hex(u128::MAX, 32, &mut buf),
            "ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(
            hex(0x0123_4567_89ab_cdef, 16, &mut buf),
            format!("{:016x}", 0x0123_4567_89ab_cdef_u64)
        );
    }
}
