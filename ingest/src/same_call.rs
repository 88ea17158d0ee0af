//! One model call, one row: when two LLM spans of a request describe the same call, they are
//! merged. anthropic-python (2.x) traces each call itself, so an app that also runs an
//! instrumentation (OpenLLMetry, OpenInference) exports every Anthropic call twice — as siblings
//! carrying the same `gen_ai.response.id` (OpenLLMetry) or with the SDK's span inside the
//! instrumentation's (OpenInference). Stored as two rows, the call would be billed twice.
//!
//! Two spans of one trace are the same call when both are `llm` and either they carry the same
//! response id, or one is the other's child with the same input and output token counts. The
//! first one in the request is kept, with each field it lacks taken from the other (the SDK's span
//! alone reports 1-hour cache writes and the service tier), and the other's attributes it lacks;
//! `tokenledger.same_call_span_ids` names the spans merged into it. Spans exported in different
//! requests are not merged (both SDKs' batch processors export a call's spans together, as they
//! end within microseconds of each other).

use std::borrow::Cow;
use std::collections::HashMap;

use crate::map::{SpanRecord, hex};

/// The attribute naming the spans merged into a row.
pub const MERGED_ATTRIBUTE: &str = "tokenledger.same_call_span_ids";

fn response_id<'a>(span: &'a SpanRecord<'_>) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|(key, _)| *key == "gen_ai.response.id")
        .map(|(_, value)| value.as_ref())
        .filter(|id| !id.is_empty())
}

/// Whether `a` and `b` describe the same model call.
fn same_call(a: &SpanRecord<'_>, b: &SpanRecord<'_>) -> bool {
    if a.kind != "llm" || b.kind != "llm" || a.trace_id != b.trace_id {
        return false;
    }
    if let (Some(x), Some(y)) = (response_id(a), response_id(b)) {
        return x == y;
    }
    let nested = a.parent_span_id == Some(b.span_id) || b.parent_span_id == Some(a.span_id);
    nested
        && a.input_tokens.is_some()
        && a.input_tokens == b.input_tokens
        && a.output_tokens == b.output_tokens
}

/// Fills what `kept` lacks from `other`.
fn merge<'a>(kept: &mut SpanRecord<'a>, other: SpanRecord<'a>) {
    fn fill<T>(field: &mut Option<T>, other: Option<T>) {
        if field.is_none() {
            *field = other;
        }
    }
    fill(&mut kept.provider, other.provider);
    fill(&mut kept.model, other.model);
    fill(&mut kept.input_tokens, other.input_tokens);
    fill(&mut kept.cached_input_tokens, other.cached_input_tokens);
    fill(&mut kept.output_tokens, other.output_tokens);
    fill(&mut kept.reasoning_tokens, other.reasoning_tokens);
    fill(
        &mut kept.cache_write_input_tokens,
        other.cache_write_input_tokens,
    );
    fill(
        &mut kept.cache_write_1h_input_tokens,
        other.cache_write_1h_input_tokens,
    );
    fill(&mut kept.service_tier, other.service_tier);
    if kept.cost_usd.is_none() {
        kept.cost_usd = other.cost_usd;
        kept.cost_source = other.cost_source;
    }
    fill(&mut kept.error_type, other.error_type);
    for (key, value) in other.attributes {
        if !kept.attributes.iter().any(|(k, _)| *k == key) {
            kept.attributes.push((key, value));
        }
    }
    let id = hex(other.span_id);
    match kept
        .attributes
        .iter_mut()
        .find(|(k, _)| *k == MERGED_ATTRIBUTE)
    {
        Some((_, ids)) => *ids = Cow::Owned(format!("{ids},{id}")),
        None => kept.attributes.push((MERGED_ATTRIBUTE, Cow::Owned(id))),
    }
}

/// Merges the spans of `spans` that describe one call into one row each (the first of them),
/// keeping the others' order. Returns how many were merged away. Only LLM spans of one trace are
/// compared, pairwise: a trace holds few.
pub fn merge_same_calls(spans: &mut Vec<SpanRecord<'_>>) -> usize {
    let mut by_trace: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, span) in spans.iter().enumerate().filter(|(_, s)| s.kind == "llm") {
        by_trace.entry(span.trace_id).or_default().push(i);
    }
    // (kept, merged into it), the kept one always the earlier.
    let mut pairs = Vec::new();
    for calls in by_trace.values().filter(|c| c.len() > 1) {
        let mut merged = vec![false; calls.len()];
        for later in 1..calls.len() {
            let kept = (0..later).find(|&earlier| {
                !merged[earlier] && same_call(&spans[calls[earlier]], &spans[calls[later]])
            });
            if let Some(kept) = kept {
                merged[later] = true;
                pairs.push((calls[kept], calls[later]));
            }
        }
    }
    if pairs.is_empty() {
        return 0;
    }
    pairs.sort_unstable();
    let mut slots: Vec<Option<SpanRecord<'_>>> =
        std::mem::take(spans).into_iter().map(Some).collect();
    for &(kept, other) in &pairs {
        let other = slots[other].take().expect("each span is merged once");
        merge(
            slots[kept]
                .as_mut()
                .expect("a kept span is never merged away"),
            other,
        );
    }
    spans.extend(slots.into_iter().flatten());
    pairs.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: [u8; 16] = [7; 16];
    const OTHER_TRACE: [u8; 16] = [8; 16];
    const IDS: [[u8; 8]; 6] = [[1; 8], [2; 8], [3; 8], [4; 8], [5; 8], [6; 8]];

    fn call(
        trace: &'static [u8],
        id: usize,
        parent: Option<usize>,
        response: Option<&'static str>,
        input: i64,
    ) -> SpanRecord<'static> {
        SpanRecord {
            trace_id: trace,
            span_id: &IDS[id],
            parent_span_id: parent.map(|p| &IDS[p][..]),
            work_item_id: Cow::Borrowed("W"),
            attempt: 1,
            workflow: Cow::Borrowed("wf"),
            tenant: None,
            kind: "llm",
            name: "chat",
            provider: None,
            model: Some(Cow::Borrowed("claude-sonnet-4-5")),
            input_tokens: Some(input),
            cached_input_tokens: None,
            output_tokens: Some(300),
            reasoning_tokens: None,
            cache_write_input_tokens: None,
            cache_write_1h_input_tokens: None,
            service_tier: None,
            cost_usd: None,
            cost_source: None,
            start_time: 0,
            duration_ms: None,
            status: "ok",
            error_type: None,
            docs_retrieved: None,
            docs_used: None,
            attributes: response
                .map(|r| ("gen_ai.response.id", Cow::Borrowed(r)))
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn siblings_with_one_response_id_and_a_nested_twin_are_one_call() {
        let mut sdk = call(&TRACE, 1, Some(0), Some("msg_1"), 7000);
        sdk.cache_write_1h_input_tokens = Some(1000);
        sdk.service_tier = Some(Cow::Borrowed("standard"));
        let mut spans = vec![
            call(&TRACE, 0, None, Some("msg_1"), 7000),
            sdk,
            // Nested, same tokens, no response ids: one call.
            call(&TRACE, 2, None, None, 500),
            call(&TRACE, 3, Some(2), None, 500),
            // Nested with other tokens: a call of its own (an agent step calling a model).
            call(&TRACE, 4, Some(2), None, 501),
            // The same response id in another trace: another call.
            call(&OTHER_TRACE, 5, None, Some("msg_1"), 7000),
        ];
        assert_eq!(merge_same_calls(&mut spans), 2);
        let ids: Vec<u8> = spans.iter().map(|s| s.span_id[0]).collect();
        assert_eq!(ids, [1, 3, 5, 6]);
        let kept = &spans[0];
        assert_eq!(kept.cache_write_1h_input_tokens, Some(1000));
        assert_eq!(kept.service_tier.as_deref(), Some("standard"));
        assert!(
            kept.attributes
                .contains(&(MERGED_ATTRIBUTE, Cow::Owned("0202020202020202".into())))
        );
    }

    #[test]
    fn different_response_ids_are_different_calls_even_nested() {
        let mut spans = vec![
            call(&TRACE, 0, None, Some("msg_1"), 7000),
            call(&TRACE, 1, Some(0), Some("msg_2"), 7000),
        ];
        assert_eq!(merge_same_calls(&mut spans), 0);
        assert_eq!(spans.len(), 2);
    }
}
