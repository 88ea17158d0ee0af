//! From OTLP spans to rows of `spans` and `outcomes`: what each instrumentation (OTel GenAI,
//! OpenLLMetry, OpenInference, Langfuse) calls each column, with the double-counting rules of
//! `shared/notes/otlp-ingest.md`. Explicit `tokenledger.*` attributes win over every spelling.

use std::borrow::Cow;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::attrs::{Attributes, Index, as_text, json_field, json_float, json_text};

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
    pub cost_usd: Option<f64>,
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

/// What one export request becomes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mapped<'a> {
    pub spans: Vec<SpanRecord<'a>>,
    pub outcomes: Vec<OutcomeRecord<'a>>,
    /// Spans left out, each with why (for OTLP partial success and the log).
    pub rejected: Vec<String>,
}

/// The outcomes a work item can end in.
pub const OUTCOMES: [&str; 4] = ["resolved", "failed", "escalated", "abandoned"];

/// Maps every span of `request`.
pub fn map_request(request: &ExportTraceServiceRequest) -> Mapped<'_> {
    let mut mapped = Mapped::default();
    for resource_spans in &request.resource_spans {
        let resource: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |r| r.attributes.as_slice());
        let resource = Index::new(resource);
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                match map_span(span, &resource) {
                    Ok(Row::Span(row)) => mapped.spans.push(*row),
                    Ok(Row::Outcome(row)) => mapped.outcomes.push(row),
                    Err(reason) => mapped.rejected.push(reason),
                }
            }
        }
    }
    mapped
}

enum Row<'a> {
    Span(Box<SpanRecord<'a>>),
    Outcome(OutcomeRecord<'a>),
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
    let tenant = metadata.text(a, spellings!("tenant"));
    Ok(Keys {
        work_item_id,
        attempt,
        workflow,
        tenant,
    })
}

fn map_span<'a>(span: &'a Span, resource: &Index<'a>) -> Result<Row<'a>, String> {
    let trace_id = valid_id(&span.trace_id, 16)
        .ok_or_else(|| format!("span {:?}: trace id must be 16 non-zero bytes", span.name))?;
    let span_id = valid_id(&span.span_id, 8)
        .ok_or_else(|| format!("span {:?}: span id must be 8 non-zero bytes", span.name))?;
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => valid_id(&span.parent_span_id, 8),
        _ => {
            return Err(format!(
                "span {:?}: parent span id must be 8 bytes",
                span.name
            ));
        }
    };
    if span.start_time_unix_nano == 0 {
        return Err(format!("span {:?} has no start time", span.name));
    }
    let start_time = nanos_to_micros(span.start_time_unix_nano);
    let end_time = (span.end_time_unix_nano >= span.start_time_unix_nano
        && span.end_time_unix_nano > 0)
        .then(|| nanos_to_micros(span.end_time_unix_nano));
    let mut a = Attributes::new(&span.attributes, resource);
    let metadata = Metadata::of(&mut a);
    let keys = business_keys(&mut a, &metadata, trace_id)
        .map_err(|e| format!("span {:?}: {e}", span.name))?;

    if let Some(outcome) = metadata.text(&mut a, spellings!("outcome")) {
        if !OUTCOMES.contains(&outcome.as_ref()) {
            return Err(format!(
                "span {:?}: outcome {outcome:?} is not one of {}",
                span.name,
                OUTCOMES.join(", ")
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
        usage(&mut a)
    } else {
        Usage::default()
    };
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
        cost_usd: cost(&mut a),
        start_time,
        duration_ms: end_time.map(|end| (end - start_time) / 1_000),
        status: if failed { "error" } else { "ok" },
        error_type,
        docs_retrieved: a
            .int(&["tokenledger.docs_retrieved"])
            .and_then(|n| i32::try_from(n).ok()),
        docs_used: a
            .int(&["tokenledger.docs_used"])
            .and_then(|n| i32::try_from(n).ok()),
        attributes: Vec::new(),
    };
    Ok(Row::Span(Box::new(SpanRecord {
        attributes: a.unused(),
        ..row
    })))
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

/// Token counts, input including cached and output including reasoning; NULL when not reported.
#[derive(Debug, Default)]
struct Usage {
    input: Option<i64>,
    cached: Option<i64>,
    output: Option<i64>,
    reasoning: Option<i64>,
}

fn usage(a: &mut Attributes) -> Usage {
    let mut usage = Usage {
        input: a.int(&[
            "tokenledger.input_tokens",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
        ]),
        cached: a.int(&[
            "tokenledger.cached_input_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "llm.token_count.prompt_details.cache_read",
        ]),
        output: a.int(&[
            "tokenledger.output_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
        ]),
        reasoning: a.int(&[
            "tokenledger.reasoning_tokens",
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "llm.token_count.completion_details.reasoning",
        ]),
    };
    if usage.input.is_none()
        && usage.output.is_none()
        && let Some(details) = a
            .text(&["langfuse.observation.usage_details"])
            .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
    {
        usage = langfuse_usage(&details);
    }
    usage
}

/// Langfuse's usage details: OpenAI's spelling (prompt includes cached, completion includes
/// reasoning) or Langfuse's own separate buckets (`input` excludes `input_cached_tokens`,
/// `output` excludes `output_reasoning_tokens`), added up to our inclusive columns.
fn langfuse_usage(details: &serde_json::Value) -> Usage {
    let int = |path: &str| {
        json_field(details, path)
            .and_then(|v| json_float(&v))
            .map(|f| f as i64)
    };
    if int("prompt_tokens").is_some() || int("completion_tokens").is_some() {
        return Usage {
            input: int("prompt_tokens"),
            cached: int("prompt_tokens_details.cached_tokens"),
            output: int("completion_tokens"),
            reasoning: int("completion_tokens_details.reasoning_tokens"),
        };
    }
    let cached = int("input_cached_tokens").or_else(|| int("cache_read_input_tokens"));
    let reasoning = int("output_reasoning_tokens");
    Usage {
        input: int("input").map(|i| i + cached.unwrap_or(0)),
        cached,
        output: int("output").map(|o| o + reasoning.unwrap_or(0)),
        reasoning,
    }
}

/// The model named in OpenInference's invocation parameters, when `llm.model_name` is absent.
fn invocation_model<'a>(a: &mut Attributes<'a, '_>) -> Option<Cow<'a, str>> {
    let parameters = a.text(&["llm.invocation_parameters"])?;
    let json: serde_json::Value = serde_json::from_str(&parameters).ok()?;
    json.get("model").and_then(json_text).map(Cow::Owned)
}

/// Reported cost in USD: ours, the proposed GenAI attribute (USD only), OpenInference's, or
/// Langfuse's cost details (their total, else the sum of their parts).
fn cost(a: &mut Attributes) -> Option<f64> {
    if let Some(cost) = a.float(&["tokenledger.cost_usd", "llm.cost.total"]) {
        return Some(cost);
    }
    let currency = a.text(&["gen_ai.usage.cost.currency"]);
    if currency
        .as_deref()
        .is_none_or(|c| c.eq_ignore_ascii_case("usd"))
        && let Some(cost) = a.float(&["gen_ai.usage.cost.amount"])
    {
        return Some(cost);
    }
    let details: serde_json::Value =
        serde_json::from_str(&a.text(&["langfuse.observation.cost_details"])?).ok()?;
    if let Some(total) = details.get("total").and_then(json_float) {
        return Some(total);
    }
    let parts: Vec<f64> = details
        .as_object()?
        .values()
        .filter_map(json_float)
        .collect();
    (!parts.is_empty()).then(|| parts.iter().sum())
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

fn nanos_to_micros(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let u = langfuse_usage(&native);
        assert_eq!(
            (u.input, u.cached, u.output, u.reasoning),
            (Some(1200), Some(1000), Some(300), Some(200))
        );
        let openai = serde_json::json!({"prompt_tokens": 1200, "completion_tokens": 300,
            "prompt_tokens_details": {"cached_tokens": 1000}, "completion_tokens_details.reasoning_tokens": 200});
        let u = langfuse_usage(&openai);
        assert_eq!(
            (u.input, u.cached, u.output, u.reasoning),
            (Some(1200), Some(1000), Some(300), Some(200))
        );
    }
}
