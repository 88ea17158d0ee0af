//! OTLP/HTTP: `POST /v1/traces` (and Langfuse's `/api/public/otel/v1/traces`), protobuf or JSON,
//! plain or gzip. Answers as the OTLP specification says exporters expect: 200 with partial
//! success, 400 for a bad body (not retried), 413/415, 401, 403 for a tenant the exporter may not
//! write, 429 with `Retry-After` while locked out, and 503 with `Retry-After` when busy or the
//! spool cannot be written (retried). `GET /metrics` gives the receiver's counters.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::auth::{Exporter, ExporterAuth};
use crate::decode::{Decoded, decode_protobuf};
use crate::error::IngestError;
use crate::pipeline::{Accepted, Ingestor};

/// The largest request accepted, compressed or inflated (what OTLP recommends receivers take).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// The paths exporters post traces to.
pub const TRACE_PATHS: [&str; 2] = ["/v1/traces", "/api/public/otel/v1/traces"];

struct Shared {
    ingestor: Ingestor,
    auth: Option<Arc<ExporterAuth>>,
}

/// The OTLP/HTTP routes over `ingestor`; with `auth`, exporters must authenticate.
pub fn router(ingestor: Ingestor, auth: Option<Arc<ExporterAuth>>) -> Router {
    let shared = Arc::new(Shared { ingestor, auth });
    let mut router = Router::new();
    for path in TRACE_PATHS {
        router = router.route(path, post(export));
    }
    router = router.route("/metrics", get(metrics));
    router
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(shared)
}

/// How the client wrote its body, and so how it reads our answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

/// The receiver's counters, for Prometheus (counts only: no user or tenant names).
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.ingestor.counters().exposition(),
    )
        .into_response()
}

async fn export(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let format = match content_type(&headers) {
        Ok(format) => format,
        Err(e) => return error_response(Format::Protobuf, &e),
    };
    match receive(&shared, &headers, body, format, peer.ip()).await {
        Ok(accepted) => success(format, &accepted),
        Err(e) => error_response(format, &e),
    }
}

async fn receive(
    shared: &Shared,
    headers: &HeaderMap,
    body: Bytes,
    format: Format,
    peer: IpAddr,
) -> Result<Accepted, IngestError> {
    let writer = match &shared.auth {
        Some(auth) => {
            let header = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            auth.authorize(header, Some(peer))
                .await
                .inspect_err(|e| shared.ingestor.counters().count_login_refusal(e))?
        }
        None => Exporter::anonymous(),
    };
    let body = inflate(headers, body)?;
    let decoded = match format {
        Format::Protobuf => decode_protobuf(body)?,
        Format::Json => {
            // serde_json refuses input nested more than 128 levels: such a body is refused
            // whole (400). Exporters that nest deeply send protobuf, decoded span by span.
            let request: ExportTraceServiceRequest =
                serde_json::from_slice(&body).map_err(|e| IngestError::Decode(e.to_string()))?;
            Decoded {
                payload: Bytes::from(request.encode_to_vec()),
                request,
                undecodable: Vec::new(),
            }
        }
    };
    shared.ingestor.accept(decoded, &writer).await
}

fn content_type(headers: &HeaderMap) -> Result<Format, IngestError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = value.split(';').next().unwrap_or("").trim();
    match mime.to_ascii_lowercase().as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(IngestError::UnsupportedMediaType(format!(
            "content type {value:?}: send application/x-protobuf or application/json"
        ))),
    }
}

/// The body, inflated if it is gzip (at most [`MAX_REQUEST_BYTES`] inflated).
fn inflate(headers: &HeaderMap, body: Bytes) -> Result<Bytes, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body),
        "gzip" => {
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref())
                .take(MAX_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| IngestError::Decode(format!("gzip body: {e}")))?;
            if inflated.len() > MAX_REQUEST_BYTES {
                return Err(IngestError::TooLarge(format!(
                    "the body inflates to more than {MAX_REQUEST_BYTES} bytes"
                )));
            }
            Ok(Bytes::from(inflated))
        }
        other => Err(IngestError::UnsupportedMediaType(format!(
            "content encoding {other:?}: send gzip or no encoding"
        ))),
    }
}

fn success(format: Format, accepted: &Accepted) -> Response {
    let response = ExportTraceServiceResponse {
        partial_success: accepted.partial_success(),
    };
    let body = match format {
        Format::Protobuf => response.encode_to_vec(),
        Format::Json => serde_json::to_vec(&response).unwrap_or_default(),
    };
    with_type(StatusCode::OK, format, body)
}

/// `google.rpc.Status`, the body OTLP/HTTP errors carry.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error_response(format: Format, error: &IngestError) -> Response {
    let (status, code) = error.answer();
    if status.is_server_error() {
        tracing::warn!(error = %error, "OTLP request refused");
    }
    let message = error.to_string();
    let body = match format {
        Format::Protobuf => RpcStatus {
            code: code as i32,
            message,
        }
        .encode_to_vec(),
        Format::Json => serde_json::json!({"code": code as i32, "message": message})
            .to_string()
            .into_bytes(),
    };
    let mut response = with_type(status, format, body);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let IngestError::LockedOut { retry_in_secs, .. } = error {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_in_secs));
    }
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tokenledger\""),
        );
    }
    response
}

fn with_type(status: StatusCode, format: Format, body: Vec<u8>) -> Response {
    let content_type = match format {
        Format::Protobuf => "application/x-protobuf",
        Format::Json => "application/json",
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
