//! From OTLP spans to rows of `spans` and `outcomes`: what each instrumentation (OTel GenAI,
//! OpenLLMetry, OpenInference, Langfuse) calls each column, with the double-counting rules of
//! `shared/notes/otlp-ingest.md`. Explicit `tokenledger.*` attributes win over every spelling.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use tokenledger_engine::integrity::{
    MAX_ATTRIBUTE_DEPTH, MAX_ATTRIBUTES, Policy, Rule, SpanValues, Violation,
};

use crate::attrs::{Attributes, Index, as_text, display, json_field, json_float, json_text};

/// One row of `spans`, borrowing from the request it came from (the batch it goes into copies
/// it once; no string is allocated per field).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord<'a> {
    /// 16 bytes.
    pub trace_id: &'a [u8],
    /// 8 bytes.
    pub span_id: &'a [u8],
    pub parent_span_id: Option<&'a [u8]>,
    pub work_item_id: Cow<'a, str>,
    pub attempt: i32,
    pub workflow: Cow<'a, str>,
    pub tenant: Option<Cow<'a, str>>,
    pub kind: &'static str,
    pub name: &'a str,
    pub provider: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    pub input_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    pub cache_write_input_tokens: Option<i64>,
    pub cache_write_1h_input_tokens: Option<i64>,
    pub service_tier: Option<Cow<'a, str>>,
    pub cost_usd: Option<f64>,
    /// `provider` (the API's response) or `local` (computed when recorded); `None`: not said.
    pub cost_source: Option<Cow<'a, str>>,
    /// Micros since the epoch.
    pub start_time: i64,
    pub duration_ms: Option<i64>,
    pub status: &'static str,
    pub error_type: Option<Cow<'a, str>>,
    pub docs_retrieved: Option<i32>,
    pub docs_used: Option<i32>,
    /// Every other span attribute, as text, in the order the span carries them.
    pub attributes: Vec<(&'a str, Cow<'a, str>)>,
}

/// One row of `outcomes`, from a span carrying `tokenledger.outcome`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeRecord<'a> {
    pub work_item_id: Cow<'a, str>,
    pub workflow: Cow<'a, str>,
    pub tenant: Option<Cow<'a, str>>,
    pub outcome: Cow<'a, str>,
    pub resolved_attempt: Option<i32>,
    pub value_usd: Option<f64>,
    pub human_minutes: Option<f64>,
    pub human_cost_usd: Option<f64>,
    /// Micros since the epoch.
    pub closed_at: Option<i64>,
}

/// A span refused alone: which one, the rule it broke, and what it carried (a row of
/// `rejected_spans`). Owned: refusals are rare, and some come from spans that never decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRecord {
    /// Hex, as sent (whatever its length).
    pub trace_id: String,
    /// Hex, as sent.
    pub span_id: String,
    pub name: String,
    pub tenant: Option<String>,
    /// Micros since the epoch, when the span had a start time.
    pub start_time: Option<i64>,
    pub violation: Violation,
    /// The span's attributes as one JSON object, values as sent.
    pub attributes: String,
}

impl RejectedRecord {
    /// The line OTLP's partial-success message and the log give for this span.
    pub fn reason(&self) -> String {
        format!(
            "span {:?} ({}/{}): {}",
            self.name, self.trace_id, self.span_id, self.violation
        )
    }
}

/// What one export request becomes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mapped<'a> {
    pub spans: Vec<SpanRecord<'a>>,
    pub outcomes: Vec<OutcomeRecord<'a>>,
    /// Spans refused one by one (OTLP partial success, the log and `rejected_spans`).
    pub rejected: Vec<RejectedRecord>,
}

/// The outcomes a work item can end in.
pub const OUTCOMES: [&str; 4] = ["resolved", "failed", "escalated", "abandoned"];

/// Maps every span of `request`, checking each against `policy`.
pub fn map_request<'a>(request: &'a ExportTraceServiceRequest, policy: &Policy) -> Mapped<'a> {
    let mut mapped = Mapped::default();
    for resource_spans in &request.resource_spans {
        let resource: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let resource = Index::new(resource);
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                match map_span(span, &resource, policy) {
                    Ok(Row::Span(row)) => mapped.spans.push(*row),
                    Ok(Row::Outcome(row)) => mapped.outcomes.push(row),
                    Err(refusal) => mapped.rejected.push(refusal.record(span)),
                }
            }
        }
    }
    crate::same_call::merge_same_calls(&mut mapped.spans);
    mapped
}

enum Row<'a> {
    Span(Box<SpanRecord<'a>>),
    Outcome(OutcomeRecord<'a>),
}

/// Why a span was refused, with the tenant it named (when it could be read), which binds the
/// refusal to its writer as a stored row would be.
struct Refusal {
    violation: Violation,
    tenant: Option<String>,
}

impl From<Violation> for Refusal {
    fn from(violation: Violation) -> Self {
        Refusal {
            violation,
            tenant: None,
        }
    }
}

impl Refusal {
    fn new(rule: Rule, detail: impl Into<String>) -> Self {
        Violation::new(rule, detail).into()
    }

    fn naming(mut self, tenant: Option<&Cow<'_, str>>) -> Self {
        self.tenant = tenant.map(|t| t.to_string());
        self
    }

    fn record(self, span: &Span) -> RejectedRecord {
        RejectedRecord {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            name: span.name.clone(),
            tenant: self.tenant,
            start_time: (span.start_time_unix_nano > 0)
                .then(|| nanos_to_micros(span.start_time_unix_nano)),
            violation: self.violation,
            attributes: attributes_json(&span.attributes),
        }
    }
}

/// Attributes as one JSON object (values as sent: arrays and maps as JSON).
pub fn attributes_json(attributes: &[KeyValue]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = attributes
        .iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .map_or(serde_json::Value::Null, |v| {
                    serde_json::Value::String(display(v).into_owned())
                });
            (kv.key.clone(), value)
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// How deeply `value` nests arrays and maps (a scalar is 1).
fn depth(value: &AnyValue) -> usize {
    match &value.value {
        Some(Value::ArrayValue(array)) => 1 + array.values.iter().map(depth).max().unwrap_or(0),
        Some(Value::KvlistValue(list)) => {
            1 + list
                .values
                .iter()
                .filter_map(|kv| kv.value.as_ref())
                .map(depth)
                .max()
                .unwrap_or(0)
        }
        _ => 1,
    }
}

/// The receiver's limits on a span's shape: how many attributes, how deeply nested.
fn check_shape(span: &Span) -> Result<(), Refusal> {
    if span.attributes.len() > MAX_ATTRIBUTES {
        return Err(Refusal::new(
            Rule::MalformedSpan,
            format!(
                "{} attributes, more than the {MAX_ATTRIBUTES} a span may carry",
                span.attributes.len()
            ),
        ));
    }
    for kv in &span.attributes {
        let nesting = kv.value.as_ref().map_or(0, depth);
        if nesting > MAX_ATTRIBUTE_DEPTH {
            return Err(Refusal::new(
                Rule::MalformedSpan,
                format!(
                    "attribute {:?} nests {nesting} levels deep, more than {MAX_ATTRIBUTE_DEPTH}",
                    kv.key
                ),
            ));
        }
    }
    Ok(())
}

/// The spellings of one of tokenledger's fields (a business key, an outcome field): ours, then
/// each framework's place for user metadata.
macro_rules! spellings {
    ($field:literal) => {
        &[
            concat!("tokenledger.", $field),
            concat!("langfuse.observation.metadata.", $field),
            concat!("langfuse.trace.metadata.", $field),
            concat!("traceloop.association.properties.", $field),
        ]
    };
}

/// The business keys of a span.
struct Keys<'a> {
    work_item_id: Cow<'a, str>,
    attempt: i32,
    workflow: Cow<'a, str>,
    tenant: Option<Cow<'a, str>>,
}

/// Where a span carries tokenledger's own fields (business keys, outcome fields): our
/// `tokenledger.*` attributes, each framework's user metadata, or OpenInference's `metadata` JSON.
struct Metadata {
    /// OpenInference puts user metadata in one JSON attribute.
    json: Option<serde_json::Value>,
}

impl Metadata {
    fn of(a: &mut Attributes) -> Self {
        Metadata {
            json: a
                .text(&["metadata"])
                .and_then(|m| serde_json::from_str(&m).ok()),
        }
    }

    /// A field as text, from the first of its `spellings` present, else from the metadata JSON
    /// (under `tokenledger.<field>` or `<field>`).
    fn text<'a>(&self, a: &mut Attributes<'a, '_>, spellings: &[&str; 4]) -> Option<Cow<'a, str>> {
        a.text(spellings).or_else(|| {
            let m = self.json.as_ref()?;
            let field = spellings[0].trim_start_matches("tokenledger.");
            json_field(m, spellings[0])
                .or_else(|| json_field(m, field))
                .and_then(|v| json_text(&v))
                .map(Cow::Owned)
        })
    }

    /// A field as a number.
    fn float(&self, a: &mut Attributes, spellings: &[&str; 4]) -> Option<f64> {
        self.text(a, spellings)?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    }
}

fn business_keys<'a>(
    a: &mut Attributes<'a, '_>,
    metadata: &Metadata,
    trace_id: &[u8],
    tenant: Option<Cow<'a, str>>,
) -> Result<Keys<'a>, String> {
    let work_item_id = metadata
        .text(a, spellings!("work_item_id"))
        .unwrap_or_else(|| Cow::Owned(hex(trace_id)));
    let attempt = match metadata.text(a, spellings!("attempt")) {
        None => 1,
        Some(text) => text
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("attempt {text:?} is not a whole number from 1"))?,
    };
    let workflow = metadata
        .text(a, spellings!("workflow"))
        .or_else(|| {
            a.text(&[
                "gen_ai.workflow.name",
                "traceloop.workflow.name",
                "langfuse.trace.name",
                "service.name",
            ])
        })
        .unwrap_or(Cow::Borrowed("unknown"));
    Ok(Keys {
        work_item_id,
        attempt,
        workflow,
        tenant,
    })
}

fn map_span<'a>(span: &'a Span, resource: &Index<'a>, policy: &Policy) -> Result<Row<'a>, Refusal> {
    check_shape(span)?;
    let mut a = Attributes::new(&span.attributes, resource);
    let metadata = Metadata::of(&mut a);
    // Read first, so a refusal names the tenant it belongs to.
    let tenant = metadata.text(&mut a, spellings!("tenant"));
    let refuse = |rule: Rule, detail: String| Refusal::new(rule, detail).naming(tenant.as_ref());
    let trace_id = valid_id(&span.trace_id, 16).ok_or_else(|| {
        refuse(
            Rule::MalformedSpan,
            "trace id must be 16 non-zero bytes".into(),
        )
    })?;
    let span_id = valid_id(&span.span_id, 8).ok_or_else(|| {
        refuse(
            Rule::MalformedSpan,
            "span id must be 8 non-zero bytes".into(),
        )
    })?;
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => valid_id(&span.parent_span_id, 8),
        _ => {
            return Err(refuse(
                Rule::MalformedSpan,
                "parent span id must be 8 bytes".into(),
            ));
        }
    };
    if span.start_time_unix_nano == 0 {
        return Err(refuse(Rule::MalformedSpan, "no start time".into()));
    }
    let start_time = nanos_to_micros(span.start_time_unix_nano);
    let end_time = match span.end_time_unix_nano {
        0 => None,
        end if end < span.start_time_unix_nano => {
            return Err(refuse(
                Rule::DurationOutOfRange,
                format!(
                    "ends at {end} ns, before it starts at {} ns",
                    span.start_time_unix_nano
                ),
            ));
        }
        end => Some(nanos_to_micros(end)),
    };
    let keys = business_keys(&mut a, &metadata, trace_id, tenant.clone())
        .map_err(|e| refuse(Rule::MalformedSpan, e))?;

    if let Some(outcome) = metadata.text(&mut a, spellings!("outcome")) {
        if !OUTCOMES.contains(&outcome.as_ref()) {
            return Err(refuse(
                Rule::MalformedSpan,
                format!("outcome {outcome:?} is not one of {}", OUTCOMES.join(", ")),
            ));
        }
        return Ok(Row::Outcome(OutcomeRecord {
            work_item_id: keys.work_item_id,
            workflow: keys.workflow,
            tenant: keys.tenant,
            outcome,
            resolved_attempt: metadata
                .float(&mut a, spellings!("resolved_attempt"))
                .filter(|n| n.fract() == 0.0 && (1.0..=f64::from(i32::MAX)).contains(n))
                .map(|n| n as i32),
            value_usd: metadata.float(&mut a, spellings!("value_usd")),
            human_minutes: metadata.float(&mut a, spellings!("human_minutes")),
            human_cost_usd: metadata.float(&mut a, spellings!("human_cost_usd")),
            closed_at: end_time.or(Some(start_time)),
        }));
    }

    let kind = kind(&mut a);
    let usage = if kind == "llm" {
        usage(&mut a).map_err(|e| refuse(Rule::TokensOutOfRange, e))?
    } else {
        Usage::default()
    };
    let cost = cost(&mut a).map_err(|e| refuse(Rule::CostOutOfRange, e))?;
    let cost_source = cost.and_then(|_| cost_source(&mut a));
    let docs_retrieved =
        docs(&mut a, "tokenledger.docs_retrieved").map_err(|e| refuse(Rule::DocsOutOfRange, e))?;
    let docs_used =
        docs(&mut a, "tokenledger.docs_used").map_err(|e| refuse(Rule::DocsOutOfRange, e))?;
    let duration_ms = end_time.map(|end| (end - start_time) / 1_000);
    policy
        .check(&SpanValues {
            input_tokens: usage.input,
            cached_input_tokens: usage.cached,
            output_tokens: usage.output,
            reasoning_tokens: usage.reasoning,
            cache_write_input_tokens: usage.cache_write,
            cache_write_1h_input_tokens: usage.cache_write_1h,
            cost_usd: cost,
            start_time: Some(start_time),
            duration_ms,
            docs_retrieved,
            docs_used,
        })
        .map_err(|violation| Refusal::from(violation).naming(tenant.as_ref()))?;
    let level_error = a
        .text(&["langfuse.observation.level"])
        .is_some_and(|l| l.eq_ignore_ascii_case("error"));
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32)
        || level_error;
    let error_type = failed.then(|| error_type(&mut a, span));
    let row = SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        work_item_id: keys.work_item_id,
        attempt: keys.attempt,
        workflow: keys.workflow,
        tenant: keys.tenant,
        kind,
        name: &span.name,
        provider: a.text(&[
            "tokenledger.provider",
            "gen_ai.provider.name",
            "gen_ai.system",
            "llm.provider",
            "llm.system",
        ]),
        model: a
            .text(&[
                "tokenledger.model",
                "gen_ai.response.model",
                "gen_ai.request.model",
                "llm.model_name",
                "langfuse.observation.model.name",
            ])
            .or_else(|| invocation_model(&mut a)),
        input_tokens: usage.input,
        cached_input_tokens: usage.cached,
        output_tokens: usage.output,
        reasoning_tokens: usage.reasoning,
        cache_write_input_tokens: usage.cache_write,
        cache_write_1h_input_tokens: usage.cache_write_1h,
        service_tier: service_tier(&mut a),
        cost_usd: cost,
        cost_source,
        start_time,
        duration_ms,
        status: if failed { "error" } else { "ok" },
        error_type,
        docs_retrieved,
        docs_used,
        attributes: Vec::new(),
    };
    Ok(Row::Span(Box::new(SpanRecord {
        attributes: a.unused(),
        ..row
    })))
}

/// A document count: a whole number within 32 bits, when present.
fn docs(a: &mut Attributes, key: &'static str) -> Result<Option<i32>, String> {
    match a.whole(&[key])? {
        None => Ok(None),
        Some(n) => i32::try_from(n)
            .map(Some)
            .map_err(|_| format!("{key} {n} is not a document count")),
    }
}

/// llm | retrieval | tool | human | decision, from whichever convention the span follows. The
/// attributes it reads stay in `attributes` (chat and embeddings are both `llm`).
fn kind(a: &mut Attributes) -> &'static str {
    if let Some(kind) = a.text(&["tokenledger.kind"]) {
        for known in ["llm", "retrieval", "tool", "human", "decision"] {
            if kind.eq_ignore_ascii_case(known) {
                return known;
            }
        }
    }
    if let Some(op) = a.peek_text(&["gen_ai.operation.name"]) {
        match op.as_ref() {
            "chat" | "text_completion" | "generate_content" | "embeddings" => return "llm",
            "retrieval" => return "retrieval",
            "execute_tool" => return "tool",
            _ => return "decision",
        }
    }
    if let Some(kind) = a.peek_text(&["openinference.span.kind"]) {
        return match kind.to_ascii_uppercase().as_str() {
            "LLM" | "EMBEDDING" => "llm",
            "RETRIEVER" | "RERANKER" => "retrieval",
            "TOOL" => "tool",
            _ => "decision",
        };
    }
    if let Some(kind) = a.peek_text(&["langfuse.observation.type"]) {
        return match kind.to_ascii_lowercase().as_str() {
            "generation" | "embedding" => "llm",
            "retriever" => "retrieval",
            "tool" => "tool",
            _ => "decision",
        };
    }
    if let Some(kind) = a.peek_text(&["traceloop.span.kind"]) {
        return match kind.as_ref() {
            "tool" => "tool",
            _ => "decision",
        };
    }
    "decision"
}

/// Token counts, input including cached reads and cache writes, output including reasoning;
/// NULL when not reported.
#[derive(Debug, Default)]
struct Usage {
    input: Option<i64>,
    cached: Option<i64>,
    output: Option<i64>,
    reasoning: Option<i64>,
    cache_write: Option<i64>,
    /// Of `cache_write`, the writes to a 1-hour cache.
    cache_write_1h: Option<i64>,
}

/// The service tier the provider reports having run the call at, in tokenledger's words:
/// OpenAI's `default` is `standard`; other tiers (`batch`, `flex`, `priority`, `scale`) as
/// reported, lower-cased.
fn service_tier<'a>(a: &mut Attributes<'a, '_>) -> Option<Cow<'a, str>> {
    let tier = a.text(&[
        "tokenledger.service_tier",
        "openai.response.service_tier",
        "gen_ai.openai.response.service_tier",
        "gen_ai.response.service_tier",
        "anthropic.response.service_tier",
    ])?;
    let tier = tier.trim();
    Some(match tier.to_ascii_lowercase().as_str() {
        "default" | "standard" => Cow::Borrowed("standard"),
        "batch" => Cow::Borrowed("batch"),
        "flex" => Cow::Borrowed("flex"),
        "priority" => Cow::Borrowed("priority"),
        other => Cow::Owned(other.to_string()),
    })
}

fn usage(a: &mut Attributes) -> Result<Usage, String> {
    let mut usage = Usage {
        input: a.whole(&[
            "tokenledger.input_tokens",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        ])?,
        cached: a.whole(&[
            "tokenledger.cached_input_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ])?,
        output: a.whole(&[
            "tokenledger.output_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ])?,
        reasoning: a.whole(&[
            "tokenledger.reasoning_tokens",
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "llm.token_count.completion_details.reasoning",
        ])?,
        // The convention's current name, its older one (emitters use both), OpenInference's.
        cache_write: a.whole(&[
            "tokenledger.cache_write_input_tokens",
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "llm.token_count.prompt_details.cache_write",
        ])?,
        // Anthropic's usage.cache_creation.ephemeral_1h_input_tokens, as anthropic-python's own
        // tracing spells it.
        cache_write_1h: a.whole(&[
            "tokenledger.cache_write_1h_input_tokens",
            "gen_ai.usage.cache_write_1h.input_tokens",
            "anthropic.usage.cache_creation.ephemeral_1h_input_tokens",
        ])?,
    };
    if usage.input.is_none()
        && usage.output.is_none()
        && let Some(details) = a
            .text(&["langfuse.observation.usage_details"])
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
    {
        usage = langfuse_usage(&details)?;
    }
    Ok(usage)
}

/// Langfuse's usage details: OpenAI's spelling (prompt includes cached, completion includes
/// reasoning) or Langfuse's own separate buckets (`input` excludes `input_cached_tokens` and the
/// cache writes, `output` excludes `output_reasoning_tokens`), added up to our inclusive columns.
fn langfuse_usage(details: &serde_json::Value) -> Result<Usage, String> {
    let int = |path: &str| -> Result<Option<i64>, String> {
        let Some(value) = json_field(details, path) else {
            return Ok(None);
        };
        json_float(&value)
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
            .map(|f| Some(f as i64))
            .ok_or_else(|| format!("langfuse usage {path} {value} is not a whole number"))
    };
    let sum = |a: Option<i64>, b: Option<i64>, what: &str| -> Result<Option<i64>, String> {
        match (a, b) {
            (Some(a), b) => a
                .checked_add(b.unwrap_or(0))
                .map(Some)
                .ok_or_else(|| format!("langfuse usage {what} does not fit 64 bits")),
            (None, _) => Ok(None),
        }
    };
    if int("prompt_tokens")?.is_some() || int("completion_tokens")?.is_some() {
        return Ok(Usage {
            input: int("prompt_tokens")?,
            cached: int("prompt_tokens_details.cached_tokens")?,
            output: int("completion_tokens")?,
            reasoning: int("completion_tokens_details.reasoning_tokens")?,
            cache_write: None,
            cache_write_1h: None,
        });
    }
    let cached = match int("input_cached_tokens")? {
        Some(cached) => Some(cached),
        None => int("cache_read_input_tokens")?,
    };
    let cache_write = match int("input_cache_creation")? {
        Some(written) => Some(written),
        None => int("cache_creation_input_tokens")?,
    };
    let reasoning = int("output_reasoning_tokens")?;
    let cache = match (cached, cache_write) {
        (None, None) => None,
        (read, written) => Some(
            read.unwrap_or(0)
                .checked_add(written.unwrap_or(0))
                .ok_or_else(|| "langfuse usage cache tokens do not fit 64 bits".to_string())?,
        ),
    };
    Ok(Usage {
        input: sum(int("input")?, cache, "input")?,
        cached,
        output: sum(int("output")?, reasoning, "output")?,
        reasoning,
        cache_write,
        cache_write_1h: None,
    })
}

/// The model named in OpenInference's invocation parameters, when `llm.model_name` is absent.
fn invocation_model<'a>(a: &mut Attributes<'a, '_>) -> Option<Cow<'a, str>> {
    let parameters = a.text(&["llm.invocation_parameters"])?;
    let json: serde_json::Value = serde_json::from_str(&parameters).ok()?;
    json.get("model").and_then(json_text).map(Cow::Owned)
}

/// Reported cost in USD: ours, the proposed GenAI attribute (USD only), OpenInference's, or
/// Langfuse's cost details (their total, else the sum of their parts).
fn cost(a: &mut Attributes) -> Result<Option<f64>, String> {
    if let Some(cost) = a.finite(&["tokenledger.cost_usd", "llm.cost.total"])? {
        return Ok(Some(cost));
    }
    let currency = a.text(&["gen_ai.usage.cost.currency"]);
    if currency
        .as_deref()
        .is_none_or(|c| c.eq_ignore_ascii_case("usd"))
        && let Some(cost) = a.finite(&["gen_ai.usage.cost.amount"])?
    {
        return Ok(Some(cost));
    }
    let Some(details) = a
        .text(&["langfuse.observation.cost_details"])
        .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
    else {
        return Ok(None);
    };
    if let Some(total) = details.get("total").and_then(json_float) {
        return Ok(Some(total));
    }
    let Some(parts) = details.as_object() else {
        return Ok(None);
    };
    let parts: Vec<f64> = parts.values().filter_map(json_float).collect();
    Ok((!parts.is_empty()).then(|| parts.iter().sum()))
}

/// Where a reported cost came from (`gen_ai.usage.cost.source`): `provider` when the API's
/// response carried it, `local` when the app or a gateway computed it; other values as sent,
/// lower-cased.
fn cost_source<'a>(a: &mut Attributes<'a, '_>) -> Option<Cow<'a, str>> {
    let source = a.text(&["tokenledger.cost_source", "gen_ai.usage.cost.source"])?;
    let source = source.trim().to_ascii_lowercase();
    Some(match source.as_str() {
        "provider" => Cow::Borrowed("provider"),
        "local" => Cow::Borrowed("local"),
        _ => Cow::Owned(source),
    })
}

/// The error class of a failed span: `error.type` (Python's `<class 'openai.X'>` becomes `X`),
/// else the `exception` event's `exception.type`, else `error`.
fn error_type<'a>(a: &mut Attributes<'a, '_>, span: &'a Span) -> Cow<'a, str> {
    let raw = a.text(&["error.type"]).or_else(|| {
        span.events
            .iter()
            .filter(|e| e.name == "exception")
            .flat_map(|e| e.attributes.iter())
            .find(|kv| kv.key == "exception.type")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .and_then(as_text)
    });
    match raw {
        None => Cow::Borrowed("error"),
        Some(Cow::Borrowed(raw)) => Cow::Borrowed(short_class(raw)),
        Some(Cow::Owned(raw)) => Cow::Owned(short_class(&raw).to_string()),
    }
}

fn short_class(raw: &str) -> &str {
    let inner = raw
        .strip_prefix("<class '")
        .and_then(|r| r.strip_suffix("'>"))
        .unwrap_or(raw);
    inner.rsplit('.').next().unwrap_or(inner)
}

/// Lower-case hex of an id of `len` bytes; `None` if it has another length or is all zeros.
/// `id` if it has `len` bytes and is not all zeros.
fn valid_id(id: &[u8], len: usize) -> Option<&[u8]> {
    (id.len() == len && id.iter().any(|b| *b != 0)).then_some(id)
}

/// Lower-case hex of an id.
pub fn hex(id: &[u8]) -> String {
    let mut out = String::with_capacity(2 * id.len());
    write_hex(id, &mut out);
    out
}

/// Appends the lower-case hex of `id` to `out`.
pub fn write_hex(id: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in id {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// OTLP's nanoseconds as the microseconds our timestamps hold.
pub(crate) fn nanos_to_micros(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..KeyValue::default()
        }
    }

    /// One request of one span per case: (name, attributes, start, end), ids from the position.
    fn request(cases: &[(&str, Vec<KeyValue>, u64, u64)]) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let spans = cases
            .iter()
            .enumerate()
            .map(|(i, (name, attributes, start, end))| Span {
                trace_id: vec![9; 16],
                span_id: vec![i as u8 + 1; 8],
                name: name.to_string(),
                start_time_unix_nano: *start,
                end_time_unix_nano: *end,
                attributes: attributes.clone(),
                ..Span::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    #[test]
    fn each_way_a_span_breaks_the_policy_is_named_and_the_good_one_kept() {
        const T: u64 = 1_767_571_200_000_000_000; // 2026-01-05
        let llm = || text("gen_ai.operation.name", "chat");
        let sent = request(&[
            (
                "good",
                vec![llm(), text("gen_ai.usage.input_tokens", "12")],
                T,
                T + 1_000_000,
            ),
            ("ends before it starts", vec![llm()], T, T - 1),
            (
                "uses more documents than it found",
                vec![
                    text("tokenledger.kind", "retrieval"),
                    text("tokenledger.docs_retrieved", "2"),
                    text("tokenledger.docs_used", "3"),
                ],
                T,
                T,
            ),
            (
                "fractional tokens",
                vec![llm(), text("gen_ai.usage.output_tokens", "2.5")],
                T,
                T,
            ),
            (
                "cost in words",
                vec![llm(), text("tokenledger.cost_usd", "cheap")],
                T,
                T,
            ),
            ("attempt zero", vec![text("tokenledger.attempt", "0")], T, T),
            (
                "lasted two months",
                vec![llm()],
                T,
                T + 60 * 86_400_000_000_000,
            ),
        ]);
        let mapped = map_request(&sent, &Policy::at(1_780_000_000_000_000));
        let kept: Vec<&str> = mapped.spans.iter().map(|s| s.name).collect();
        assert_eq!(kept, ["good"]);
        let refused: Vec<(&str, Rule, &str)> = mapped
            .rejected
            .iter()
            .map(|r| {
                (
                    r.name.as_str(),
                    r.violation.rule,
                    r.violation.detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            refused,
            [
                (
                    "ends before it starts",
                    Rule::DurationOutOfRange,
                    "ends at 1767571199999999999 ns, before it starts at 1767571200000000000 ns"
                ),
                (
                    "uses more documents than it found",
                    Rule::DocsOutOfRange,
                    "docs_used 3 > docs_retrieved 2"
                ),
                (
                    "fractional tokens",
                    Rule::TokensOutOfRange,
                    "gen_ai.usage.output_tokens \"2.5\" is not a whole number"
                ),
                (
                    "cost in words",
                    Rule::CostOutOfRange,
                    "tokenledger.cost_usd \"cheap\" is not a finite number"
                ),
                (
                    "attempt zero",
                    Rule::MalformedSpan,
                    "attempt \"0\" is not a whole number from 1"
                ),
                (
                    "lasted two months",
                    Rule::DurationOutOfRange,
                    "duration_ms 5184000000 is outside 0..=2678400000 (31 days)"
                ),
            ]
        );
    }

    #[test]
    fn cache_writes_under_each_name_and_the_service_tier_get_columns() {
        const T: u64 = 1_767_571_200_000_000_000;
        let call = |cache_key: &str, tier: Option<(&str, &str)>| {
            let mut attributes = vec![
                text("gen_ai.operation.name", "chat"),
                text("gen_ai.usage.input_tokens", "7000"),
                text("gen_ai.usage.cache_read.input_tokens", "2000"),
                text(cache_key, "4000"),
            ];
            attributes.extend(tier.map(|(key, value)| text(key, value)));
            attributes
        };
        let sent = request(&[
            (
                "current name",
                call(
                    "gen_ai.usage.cache_write.input_tokens",
                    Some(("openai.response.service_tier", "default")),
                ),
                T,
                T,
            ),
            (
                "older name",
                call(
                    "gen_ai.usage.cache_creation.input_tokens",
                    Some(("tokenledger.service_tier", "Batch")),
                ),
                T,
                T,
            ),
            (
                "openinference",
                call("llm.token_count.prompt_details.cache_write", None),
                T,
                T,
            ),
        ]);
        let mapped = map_request(&sent, &Policy::at(1_780_000_000_000_000));
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        let columns: Vec<_> = mapped
            .spans
            .iter()
            .map(|s| {
                (
                    s.input_tokens,
                    s.cached_input_tokens,
                    s.cache_write_input_tokens,
                    s.service_tier.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            columns,
            [
                (Some(7000), Some(2000), Some(4000), Some("standard")),
                (Some(7000), Some(2000), Some(4000), Some("batch")),
                (Some(7000), Some(2000), Some(4000), None),
            ]
        );
        // None of them is left in the attributes column.
        assert!(
            mapped
                .spans
                .iter()
                .all(|s| s.attributes.iter().all(|(k, _)| !k.contains("cache")))
        );
        // Writes and reads together above input: refused.
        let too_many = request(&[(
            "more cache than input",
            vec![
                text("gen_ai.operation.name", "chat"),
                text("gen_ai.usage.input_tokens", "5000"),
                text("gen_ai.usage.cache_read.input_tokens", "2000"),
                text("gen_ai.usage.cache_write.input_tokens", "4000"),
            ],
            T,
            T,
        )]);
        let mapped = map_request(&too_many, &Policy::at(1_780_000_000_000_000));
        assert_eq!(mapped.rejected[0].violation.rule, Rule::CachedAboveInput);
    }

    #[test]
    fn langfuse_cache_writes_are_added_to_input_like_reads() {
        let native = serde_json::json!({"input": 1000, "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 4000, "output": 300});
        let u = langfuse_usage(&native).unwrap();
        assert_eq!(
            (u.input, u.cached, u.cache_write, u.output),
            (Some(7000), Some(2000), Some(4000), Some(300))
        );
    }

    #[test]
    fn python_class_names_are_shortened() {
        assert_eq!(
            short_class("<class 'openai.InternalServerError'>"),
            "InternalServerError"
        );
        assert_eq!(short_class("openai.RateLimitError"), "RateLimitError");
        assert_eq!(short_class("timeout"), "timeout");
    }

    #[test]
    fn langfuse_buckets_are_added_up_and_openai_spelling_is_not() {
        let native = serde_json::json!({"input": 200, "input_cached_tokens": 1000, "output": 100, "output_reasoning_tokens": 200});
        let u = langfuse_usage(&native).unwrap();
        assert_eq!(
            (u.input, u.cached, u.output, u.reasoning),
            (Some(1200), Some(1000), Some(300), Some(200))
        );
        let openai = serde_json::json!({"prompt_tokens": 1200, "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1000}, "completion_tokens_details.reasoning_tokens": 200});
        let u = langfuse_usage(&openai).unwrap();
        assert_eq!(
            (u.input, u.cached, u.output, u.reasoning),
            (Some(1200), Some(1000), Some(300), Some(200))
        );
    }
}
