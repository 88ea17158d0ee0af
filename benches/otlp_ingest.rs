//! Sustained OTLP ingest into local Parquet: a `tokenledger collect` process (release build,
//! spool on) fed by Rust clients sending batches of 512 realistic GenAI spans over OTLP/HTTP
//! protobuf and over gRPC. Reports spans per second, the server's CPU per 1,000 spans and peak
//! RSS (from /proc), and the time from an acknowledged export to the spans being queryable.
//!
//! `cargo bench --bench otlp_ingest [-- REQUESTS]` (default 2,000 requests = 1,024,000 spans per
//! protocol).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SPANS_PER_REQUEST: usize = 512;
/// Requests in flight at once (exporters of several app processes).
const CONCURRENCY: usize = 8;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

/// Request `n`: 512 chat spans as the official GenAI instrumentation writes them, with the
/// business keys baggage puts on every span. Ids are unique across requests.
fn request(n: u64) -> ExportTraceServiceRequest {
    let start = 1_767_571_200_000_000_000u64 + n * 1_000_000_000;
    let spans = (0..SPANS_PER_REQUEST as u64)
        .map(|i| {
            let id = (n << 20) | i | 1 << 62;
            Span {
                trace_id: [id.to_be_bytes(), (n | 1).to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: (id ^ 1).to_be_bytes().to_vec(),
                name: "chat gpt-4.1-mini".into(),
                kind: 3,
                start_time_unix_nano: start + i * 1_000_000,
                end_time_unix_nano: start + i * 1_000_000 + 850_000_000,
                attributes: vec![
                    text("gen_ai.operation.name", "chat"),
                    text("gen_ai.provider.name", "openai"),
                    text("gen_ai.request.model", "gpt-4.1-mini"),
                    text("gen_ai.response.model", "gpt-4.1-mini-2025-04-14"),
                    text("gen_ai.response.id", &format!("chatcmpl-{id:x}")),
                    text("server.address", "api.openai.com"),
                    int("server.port", 443),
                    int("gen_ai.usage.input_tokens", 1_200 + (i as i64 % 700)),
                    int("gen_ai.usage.cache_read.input_tokens", 1_000),
                    int("gen_ai.usage.output_tokens", 300 + (i as i64 % 90)),
                    text(
                        "tokenledger.work_item_id",
                        &format!("TICKET-{}", n * 64 + i / 8),
                    ),
                    text("tokenledger.workflow", "support_ticket"),
                    text(
                        "tokenledger.tenant",
                        ["acme", "initech", "hooli"][i as usize % 3],
                    ),
                    text("tokenledger.attempt", "1"),
                ],
                status: Some(Status {
                    code: 1,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "support-bot"),
                    text("telemetry.sdk.language", "python"),
                    text("telemetry.sdk.version", "1.45.2"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// The `tokenledger collect` process under test.
struct Server {
    child: Child,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl Server {
    fn start(data: &Path, log: &Path) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["collect", "--data", data.to_str().unwrap()])
            .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"])
            .env("TOKENLEDGER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        // Owned by the Server from here on, so every path kills and waits for it.
        let mut server = Server {
            child,
            http: "127.0.0.1:1".parse().unwrap(),
            grpc: "127.0.0.1:1".parse().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let find = |protocol: &str| -> Option<SocketAddr> {
                text.lines()
                    .find(|l| l.contains(&format!("receiving OTLP/{protocol}")))
                    .and_then(|l| l.rsplit("http://").next())
                    .and_then(|a| a.trim().parse().ok())
            };
            if let (Some(http), Some(grpc)) = (find("HTTP"), find("gRPC")) {
                server.http = http;
                server.grpc = grpc;
                return server;
            }
            assert!(Instant::now() < deadline, "collect did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// CPU seconds (user + system) the process has used.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// Peak resident memory in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<f64>()
            .unwrap()
            / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A keep-alive HTTP/1.1 connection posting protobuf bodies (minimal, so the client's own cost
/// stays small beside the server's).
async fn post_all(
    address: SocketAddr,
    bodies: Arc<Vec<Vec<u8>>>,
    worker: usize,
) -> Result<(), BoxError> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut buffer = vec![0u8; 64 * 1024];
    for body in bodies.iter().skip(worker).step_by(CONCURRENCY) {
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        // Read one answer: headers, then Content-Length bytes.
        let mut read = 0;
        loop {
            let n = stream.read(&mut buffer[read..]).await?;
            if n == 0 {
                return Err("connection closed".into());
            }
            read += n;
            if let Some(end) = buffer[..read].windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&buffer[..end])?;
                if !head.starts_with("HTTP/1.1 200") {
                    return Err(format!("answer: {head}").into());
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while read < end + 4 + length {
                    read += stream.read(&mut buffer[read..]).await?;
                }
                break;
            }
        }
    }
    Ok(())
}

async fn run_http(server: &Server, bodies: Arc<Vec<Vec<u8>>>) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        workers.spawn(post_all(server.http, Arc::clone(&bodies), worker));
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

async fn run_grpc(
    server: &Server,
    requests: Arc<Vec<ExportTraceServiceRequest>>,
) -> Result<Duration, BoxError> {
    let client = TraceServiceClient::connect(format!("http://{}", server.grpc)).await?;
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let (mut client, requests) = (client.clone(), Arc::clone(&requests));
        workers.spawn(async move {
            for request in requests.iter().skip(worker).step_by(CONCURRENCY) {
                client.export(request.clone()).await?;
            }
            Ok::<_, BoxError>(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(started.elapsed())
}

/// Spans queryable in `data` (a fresh session each time, so new files are listed).
async fn queryable(data: &Path) -> u64 {
    let location = DataLocation::parse(data.to_str().unwrap()).unwrap();
    let session = TraceSession::open(location, &SessionOptions::default())
        .await
        .unwrap();
    let frame = session
        .plan_sql("SELECT count(*) FROM spans", Access::ReadOnly)
        .await
        .unwrap();
    let batches = frame.collect().await.unwrap();
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0) as u64
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let count: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let requests: Arc<Vec<ExportTraceServiceRequest>> = Arc::new((0..count).map(request).collect());
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(requests.iter().map(|r| r.encode_to_vec()).collect());
    let spans = count as usize * SPANS_PER_REQUEST;
    let mean_body = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len();
    println!(
        "{count} requests of {SPANS_PER_REQUEST} spans ({spans} spans, {mean_body} bytes each), {CONCURRENCY} in flight"
    );
    println!("| protocol | spans/s | server CPU per 1,000 spans | server peak RSS |");
    println!("|---|---|---|---|");
    for protocol in ["OTLP/HTTP protobuf", "OTLP/gRPC"] {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let server = Server::start(&data, &dir.path().join("collect.log"));
        let cpu_before = server.cpu_seconds();
        let elapsed = if protocol.starts_with("OTLP/HTTP") {
            run_http(&server, Arc::clone(&bodies)).await?
        } else {
            run_grpc(&server, Arc::clone(&requests)).await?
        };
        let cpu = server.cpu_seconds() - cpu_before;
        println!(
            "| {protocol} | {:.0} | {:.2} ms | {:.0} MiB |",
            spans as f64 / elapsed.as_secs_f64(),
            cpu * 1000.0 / (spans as f64 / 1000.0),
            server.peak_rss_mib()
        );
        // Everything acknowledged reaches Parquet.
        let deadline = Instant::now() + Duration::from_secs(60);
        while queryable(&data).await < spans as u64 {
            assert!(Instant::now() < deadline, "not all spans became queryable");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Export to queryable: one request acknowledged, then polled for (default flush age 2 s).
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Server::start(&data, &dir.path().join("collect.log"));
    let mut latencies = Vec::new();
    for round in 0..5u64 {
        let sent = Instant::now();
        run_http(
            &server,
            Arc::new(vec![request(1_000_000 + round).encode_to_vec()]),
        )
        .await?;
        let acknowledged = sent.elapsed();
        let expected = (round + 1) * SPANS_PER_REQUEST as u64;
        while queryable(&data).await < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push((acknowledged, sent.elapsed()));
    }
    latencies.sort_by_key(|l| l.1);
    let (ack, visible) = latencies[latencies.len() / 2];
    println!(
        "\nexport to queryable (median of 5, flush age 2 s, fresh listing): acknowledged in {:.1} ms, queryable after {:.2} s",
        ack.as_secs_f64() * 1000.0,
        visible.as_secs_f64()
    );
    Ok(())
}
