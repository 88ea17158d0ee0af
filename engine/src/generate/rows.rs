//! Column builders for generated spans and outcomes: rows go straight into Arrow builders, with
//! ids formatted into reused buffers so the hot loop allocates nothing per row.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, MapBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};

use super::catalog::{Model, Workflow};
use crate::error::Result;
use crate::schema::{OUTCOMES, SPANS};

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

/// One generated outcome row.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    pub item: u64,
    pub tenant: &'static str,
    pub outcome: &'static str,
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

    /// Turns the buffered rows into a batch and empties the builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.work_item_id.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.workflow_name.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.cached_input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.reasoning_tokens.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.start_time.finish()),
            Arc::new(self.duration_ms.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_type.finish()),
            Arc::new(self.docs_retrieved.finish()),
            Arc::new(self.docs_used.finish()),
            Arc::new(self.attributes.finish()),
        ];
        Ok(RecordBatch::try_new(SPANS.schema(), columns)?)
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
        self.outcome.append_value(row.outcome);
        self.resolved_attempt.append_option(row.resolved_attempt);
        self.value_usd.append_value(row.value_usd);
        self.human_minutes.append_value(row.human_minutes);
        self.human_cost_usd.append_value(row.human_cost_usd);
        self.closed_at.append_value(row.closed_at);
        self.rows += 1;
    }

    /// Turns the buffered rows into a batch and empties the builders.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.work_item_id.finish()),
            Arc::new(self.workflow_name.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.resolved_attempt.finish()),
            Arc::new(self.value_usd.finish()),
            Arc::new(self.human_minutes.finish()),
            Arc::new(self.human_cost_usd.finish()),
            Arc::new(self.closed_at.finish()),
        ];
        Ok(RecordBatch::try_new(OUTCOMES.schema(), columns)?)
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
