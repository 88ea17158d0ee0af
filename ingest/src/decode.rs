//! Decoding an OTLP export request so that one bad span cannot sink the rest.
//!
//! prost decodes a whole request or nothing: one attribute nested deeper than its recursion limit
//! (100 messages) fails every span of the request. So a request that does not decode is decoded
//! again one level at a time — resources, scopes, then each span on its own — and the spans (or
//! resources, scopes) that still fail are refused alone, as [`RejectedRecord`]s, while the rest
//! are stored. The request spooled is then the one rebuilt from what decoded.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokenledger_engine::integrity::{MAX_ATTRIBUTE_DEPTH, Rule, Violation};

use crate::error::IngestError;
use crate::map::{RejectedRecord, hex, nanos_to_micros};

/// A request as decoded: what will be mapped, the bytes the spool keeps, and the spans that
/// could not be decoded at all.
pub struct Decoded {
    /// The spans that decoded.
    pub request: ExportTraceServiceRequest,
    /// `request` encoded (the received bytes themselves when everything decoded).
    pub payload: Bytes,
    /// Spans refused because they (or their resource or scope) did not decode.
    pub undecodable: Vec<RejectedRecord>,
}

/// Decodes a protobuf export request, span by span if it must. An error only when not even its
/// outline (resources, scopes, spans as bytes) decodes: that body is not an OTLP request.
pub fn decode_protobuf(body: Bytes) -> Result<Decoded, IngestError> {
    match ExportTraceServiceRequest::decode(body.clone()) {
        Ok(request) => Ok(Decoded {
            request,
            payload: body,
            undecodable: Vec::new(),
        }),
        Err(whole) => {
            let outline = Outline::decode(body)
                .map_err(|_| IngestError::Decode(format!("not an OTLP trace request: {whole}")))?;
            Ok(outline.decode_parts())
        }
    }
}

/// A request whose resources, scopes and spans are kept as bytes: the same wire format as
/// `ExportTraceServiceRequest`, read without descending into any span.
#[derive(Clone, PartialEq, prost::Message)]
struct Outline {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<OutlineResource>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OutlineResource {
    #[prost(bytes = "bytes", optional, tag = "1")]
    resource: Option<Bytes>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<OutlineScope>,
    #[prost(string, tag = "3")]
    schema_url: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OutlineScope {
    #[prost(bytes = "bytes", optional, tag = "1")]
    scope: Option<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
    #[prost(string, tag = "3")]
    schema_url: String,
}

/// What names a span in a refusal, read without its attributes (unknown fields are skipped
/// unread, so this decodes whatever the attributes hold).
#[derive(Clone, PartialEq, prost::Message)]
struct SpanName {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
}

impl Outline {
    fn decode_parts(self) -> Decoded {
        let mut request = ExportTraceServiceRequest::default();
        let mut undecodable = Vec::new();
        for outline in self.resource_spans {
            let resource = match decode_optional::<Resource>(outline.resource) {
                Ok(resource) => resource,
                Err(e) => {
                    let spans = outline.scope_spans.iter().flat_map(|s| &s.spans);
                    undecodable.extend(spans.map(|span| refused(span, "its resource", &e)));
                    continue;
                }
            };
            let mut resource_spans = ResourceSpans {
                resource,
                scope_spans: Vec::new(),
                schema_url: outline.schema_url,
            };
            for scope_outline in outline.scope_spans {
                let scope = match decode_optional::<InstrumentationScope>(scope_outline.scope) {
                    Ok(scope) => scope,
                    Err(e) => {
                        let spans = scope_outline.spans.iter();
                        undecodable.extend(spans.map(|span| refused(span, "its scope", &e)));
                        continue;
                    }
                };
                let mut scope_spans = ScopeSpans {
                    scope,
                    spans: Vec::new(),
                    schema_url: scope_outline.schema_url,
                };
                for bytes in scope_outline.spans {
                    match Span::decode(bytes.clone()) {
                        Ok(span) => scope_spans.spans.push(span),
                        Err(e) => undecodable.push(refused(&bytes, "the span", &e)),
                    }
                }
                resource_spans.scope_spans.push(scope_spans);
            }
            request.resource_spans.push(resource_spans);
        }
        let payload = Bytes::from(request.encode_to_vec());
        Decoded {
            request,
            payload,
            undecodable,
        }
    }
}

fn decode_optional<M: Message + Default>(
    bytes: Option<Bytes>,
) -> Result<Option<M>, prost::DecodeError> {
    bytes.map(M::decode).transpose()
}

/// The refusal of the span in `bytes` because `what` did not decode.
fn refused(bytes: &Bytes, what: &str, error: &prost::DecodeError) -> RejectedRecord {
    let name = SpanName::decode(bytes.clone()).unwrap_or_default();
    RejectedRecord {
        trace_id: hex(&name.trace_id),
        span_id: hex(&name.span_id),
        name: name.name,
        tenant: None,
        start_time: (name.start_time_unix_nano > 0)
            .then(|| nanos_to_micros(name.start_time_unix_nano)),
        violation: Violation::new(
            Rule::MalformedSpan,
            format!(
                "{what} could not be decoded ({error}); attribute values may nest at most \
                 {MAX_ATTRIBUTE_DEPTH} levels"
            ),
        ),
        attributes: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList};

    /// A value nesting `levels` maps deep.
    fn nested(levels: usize) -> AnyValue {
        let mut value = AnyValue {
            value: Some(Value::StringValue("bottom".into())),
        };
        for _ in 0..levels {
            value = AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "k".into(),
                        value: Some(value),
                        ..Default::default()
                    }],
                })),
            };
        }
        value
    }

    fn span(id: u8, attribute: Option<AnyValue>) -> Span {
        Span {
            trace_id: vec![id; 16],
            span_id: vec![id; 8],
            name: format!("span {id}"),
            start_time_unix_nano: 1_767_571_200_000_000_000,
            attributes: attribute
                .map(|value| KeyValue {
                    key: "deep".into(),
                    value: Some(value),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_span_too_deep_to_decode_is_refused_alone_and_its_neighbours_decode() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, None), span(2, Some(nested(48))), span(3, None)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = Bytes::from(request.encode_to_vec());
        assert!(ExportTraceServiceRequest::decode(body.clone()).is_err());
        let decoded = decode_protobuf(body).unwrap();
        let names: Vec<&str> = decoded.request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["span 1", "span 3"]);
        let [refused] = decoded.undecodable.as_slice() else {
            panic!("one span refused: {:?}", decoded.undecodable);
        };
        assert_eq!(
            (refused.name.as_str(), refused.span_id.as_str()),
            ("span 2", "0202020202020202")
        );
        assert_eq!(refused.violation.rule, Rule::MalformedSpan);
        assert!(
            refused.violation.detail.contains("recursion limit"),
            "{}",
            refused.violation
        );
        // The spooled payload is the request rebuilt from what decoded.
        let again = ExportTraceServiceRequest::decode(decoded.payload).unwrap();
        assert_eq!(again, decoded.request);
    }

    #[test]
    fn a_request_that_decodes_keeps_its_bytes_and_garbage_is_an_error() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1, Some(nested(3)))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = Bytes::from(request.encode_to_vec());
        let decoded = decode_protobuf(body.clone()).unwrap();
        assert_eq!(decoded.payload, body);
        assert!(decoded.undecodable.is_empty());
        assert!(matches!(
            decode_protobuf(Bytes::from_static(b"\xff\xff\xff not protobuf")),
            Err(IngestError::Decode(_))
        ));
    }
}
