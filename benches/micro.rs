//! Criterion micro-benchmarks: the token-economics functions against the same arithmetic written
//! inline or the nearest built-in, the pieces of a Flight SQL stream, and what page and footer
//! checksums cost to write and to verify.
//!
//! `cargo bench --bench micro` (release; reports land in target/criterion/). Self-contained: the
//! functions run on 1 M in-memory rows on one core, so the figures measure the functions rather
//! than Parquet; the Flight group generates ~100 k spans with `gen` into a temporary directory.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::client::FlightSqlServiceClient;
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use tokenledger_engine::storage::checksum;
use tokenledger_engine::storage::writer::writer_properties;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};
use tokenledger_flight_server::{ServeOptions, bind, client_schema, serve_on, to_client_batch};
use tokenledger_gen::{GenOptions, generate};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

const FUNCTION_ROWS: u64 = 1_000_000;

/// Each function beside its baseline: (name, SQL). Every statement reduces to one row, so the
/// time is the function's, not the output's.
const FUNCTIONS: &[(&str, &str)] = &[
    ("inline_division", "SELECT sum(cost / p) FROM t"),
    (
        "effective_cost",
        "SELECT sum(effective_cost(cost, p)) FROM t",
    ),
    (
        "break_even_rate",
        "SELECT sum(break_even_rate(cost, p)) FROM t",
    ),
    (
        "inline_square",
        "SELECT sum((cost / p) * (cost / p)) FROM t",
    ),
    (
        "attention_cost_ratio",
        "SELECT sum(attention_cost_ratio(cost, p)) FROM t",
    ),
    (
        "inline_price",
        "SELECT sum((input_tokens * 3.0 + output_tokens * 15.0) / 1e6) FROM t",
    ),
    (
        "inline_token_cost",
        "SELECT sum(((input_tokens - cached_input_tokens) * 3.0 + cached_input_tokens * 0.3 \
         + (output_tokens - reasoning_tokens) * 15.0 + reasoning_tokens * 15.0) / 1e6) FROM t",
    ),
    (
        "token_cost",
        "SELECT sum(token_cost(model, input_tokens, cached_input_tokens, output_tokens, \
         reasoning_tokens, at)) FROM t_from_parquet",
    ),
    (
        "token_cost_full",
        "SELECT sum(token_cost(model, input_tokens, cached_input_tokens, \
         cache_write_input_tokens, cache_write_1h_input_tokens, output_tokens, reasoning_tokens, \
         service_tier, at)) FROM t_from_parquet",
    ),
    (
        "token_cost_distinct_views",
        "SELECT sum(token_cost(model, input_tokens, cached_input_tokens, output_tokens, \
         reasoning_tokens, at)) FROM t",
    ),
    (
        "inline_cost_per_success",
        "SELECT sum(s) FROM (SELECT sum(cost) / nullif(sum(CASE WHEN p > 0.5 THEN 1 ELSE 0 END), 0) \
         AS s FROM t GROUP BY g)",
    ),
    (
        "cost_per_outcome",
        "SELECT sum(s) FROM (SELECT cost_per_outcome(cost, p > 0.5) AS s FROM t GROUP BY g)",
    ),
    (
        "regr_slope",
        "SELECT sum(s) FROM (SELECT regr_slope(value, cost) AS s FROM t GROUP BY g)",
    ),
    (
        "marginal_token_utility",
        "SELECT sum(s) FROM (SELECT marginal_token_utility(value, cost) AS s FROM t GROUP BY g)",
    ),
];

fn functions(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let session = runtime.block_on(async {
        // The hand-made data set brings model prices for token_cost.
        let options = SessionOptions {
            target_partitions: Some(1),
            ..SessionOptions::default()
        };
        let location =
            DataLocation::parse(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/handmade"))
                .expect("testdata location");
        let session = TraceSession::open(location, &options)
            .await
            .expect("session");
        let table = format!(
            "CREATE TABLE t AS SELECT value % 1000 AS g, (value % 977) * 0.001 + 0.01 AS cost, \
             (value % 89) / 100.0 + 0.1 AS p, (value % 1013) * 0.01 AS value, \
             arrow_cast(CASE value % 3 WHEN 0 THEN 'gpt-4.1-mini' WHEN 1 THEN 'claude-sonnet-4-5' \
             ELSE 'claude-opus-4-1' END, 'Utf8View') AS model, 1000 + value % 20000 AS input_tokens, \
             value % 500 AS cached_input_tokens, 100 + value % 900 AS output_tokens, \
             value % 50 AS reasoning_tokens, \
             to_timestamp_micros((1767225600 + value % 8000000) * 1000000) AS at, \
             value % 200 AS cache_write_input_tokens, value % 50 AS cache_write_1h_input_tokens, \
             arrow_cast(CASE WHEN value % 10 = 0 THEN 'batch' END, 'Utf8View') AS service_tier \
             FROM range({FUNCTION_ROWS})"
        );
        // The same rows as a scan gives them: written to Parquet and read back, the model
        // column is dictionary-decoded into string views that repeat for equal names.
        let parquet = tempfile::tempdir().expect("temp dir");
        let file = parquet.path().join("t.parquet");
        let file = file.to_str().expect("utf-8 path");
        for statement in [
            table,
            format!("COPY t TO '{file}' STORED AS PARQUET"),
            format!("CREATE EXTERNAL TABLE t_file STORED AS PARQUET LOCATION '{file}'"),
            "CREATE TABLE t_from_parquet AS SELECT * FROM t_file".to_string(),
        ] {
            session
                .plan_sql(&statement, Access::ReadWrite)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        session
    });
    let mut group = c.benchmark_group("functions");
    group.throughput(Throughput::Elements(FUNCTION_ROWS));
    for (name, sql) in FUNCTIONS {
        group.bench_function(*name, |b| {
            b.iter(|| runtime.block_on(collect(&session, sql)));
        });
    }
    group.finish();
}

/// A ~100 k-span data set, a server on a free loopback port and a client with bulk-transfer
/// windows, for the Flight group.
struct FlightFixture {
    _dir: tempfile::TempDir,
    session: Arc<TraceSession>,
    client: FlightSqlServiceClient<Channel>,
    rows: u64,
}

const STREAM_SQL: &str = "SELECT trace_id, span_id, workflow, model, input_tokens, output_tokens, \
                          cost_usd, start_time FROM spans";

/// A `gen` data set of `work_items` work items in a temporary directory.
async fn generated(work_items: u64) -> (tempfile::TempDir, DataLocation) {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = DataLocation::parse(dir.path().to_str().expect("utf-8 path")).expect("location");
    let options = GenOptions {
        work_items,
        ..GenOptions::default()
    };
    let store = location.open_store(&[]).expect("store");
    generate(store, &location, &options, tokenledger_gen::silent())
        .await
        .expect("gen");
    (dir, location)
}

async fn flight_fixture() -> FlightFixture {
    let (dir, location) = generated(9_000).await;
    let session = Arc::new(
        TraceSession::open(location, &SessionOptions::default())
            .await
            .expect("session"),
    );
    let serve = ServeOptions {
        listen: "127.0.0.1:0".parse().expect("address"),
        logins: None,
        tls: None,
        allow_plaintext_passwords: false,
        limits: Default::default(),
    };
    let listener = bind(&serve).await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let served = Arc::clone(&session);
    tokio::spawn(async move { serve_on(served, &serve, listener, std::future::pending()).await });
    let channel = Channel::from_shared(address)
        .expect("uri")
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .connect()
        .await
        .expect("connect");
    let rows = collect(&session, STREAM_SQL)
        .await
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum();
    FlightFixture {
        _dir: dir,
        session,
        client: FlightSqlServiceClient::new(channel),
        rows,
    }
}

fn flight(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let fixture = runtime.block_on(flight_fixture());
    let batches = runtime.block_on(collect(&fixture.session, STREAM_SQL));
    let client_types = Arc::new(client_schema(&batches[0].schema()));
    let to_client = |batches: &[RecordBatch]| -> Vec<RecordBatch> {
        batches
            .iter()
            .map(|b| to_client_batch(b, &client_types).expect("cast"))
            .collect()
    };
    let sent = to_client(&batches);
    let mut group = c.benchmark_group("flight");
    group.throughput(Throughput::Elements(fixture.rows));
    group.bench_function("collect_in_process", |b| {
        b.iter(|| runtime.block_on(collect(&fixture.session, STREAM_SQL)));
    });
    // Text is Utf8View in queries and Utf8 on the wire (what BI drivers read).
    group.bench_function("cast_to_client_types", |b| b.iter(|| to_client(&batches)));
    group.bench_function("ipc_encode", |b| {
        b.iter(|| runtime.block_on(encode(sent.clone())));
    });
    stream_over_flight(&mut group, &runtime, &fixture);
    group.finish();
}

fn stream_over_flight(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    fixture: &FlightFixture,
) {
    group.bench_function("do_get_over_loopback", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut client = fixture.client.clone();
                let info = client
                    .execute(STREAM_SQL.into(), None)
                    .await
                    .expect("execute");
                let ticket = info.endpoint[0].ticket.clone().expect("ticket");
                let stream = client.do_get(ticket).await.expect("do_get");
                let rows: usize = stream
                    .map_ok(|batch| batch.num_rows())
                    .try_fold(0, |sum, n| async move { Ok(sum + n) })
                    .await
                    .expect("stream");
                assert_eq!(rows as u64, fixture.rows);
            })
        });
    });
}

async fn collect(session: &TraceSession, sql: &str) -> Vec<RecordBatch> {
    let frame = session
        .plan_sql(sql, Access::ReadWrite)
        .await
        .expect("plan");
    frame.collect().await.expect("execute")
}

/// The IPC messages a DoGet would send for `batches`, built in memory: the server's encoding
/// cost without the transport.
async fn encode(batches: Vec<RecordBatch>) -> usize {
    let input = futures::stream::iter(batches.into_iter().map(Ok));
    FlightDataEncoderBuilder::new()
        .build(input)
        .map_ok(|data| data.data_body.len())
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await
        .expect("encode")
}

/// The largest spans file of a ~1 M-span data set: its batches, and the file as the writer
/// encodes it before and after checksums are added.
struct ChecksumFixture {
    batches: Vec<RecordBatch>,
    props: Arc<WriterProperties>,
    unsealed: Bytes,
    sealed: Bytes,
}

async fn checksum_fixture() -> ChecksumFixture {
    let (dir, _) = generated(90_000).await;
    let largest = walk(&dir.path().join("spans"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).expect("file").len())
        .expect("a spans file");
    let sealed = Bytes::from(std::fs::read(largest).expect("read"));
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(sealed.clone())
        .and_then(|b| b.build())
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("decode");
    let schema = batches[0].schema();
    let props = Arc::new(writer_properties(&schema, &["workflow", "start_time"]));
    let unsealed = encode_parquet(&batches, &props);
    ChecksumFixture {
        batches,
        props,
        unsealed,
        sealed,
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("dir")
        .flat_map(|e| {
            let path = e.expect("entry").path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

fn encode_parquet(batches: &[RecordBatch], props: &Arc<WriterProperties>) -> Bytes {
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some((**props).clone())).expect("w");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    Bytes::from(writer.into_inner().expect("close"))
}

fn decode_all(file: &Bytes) -> usize {
    ParquetRecordBatchReaderBuilder::try_new(file.clone())
        .and_then(|b| b.build())
        .expect("reader")
        .map(|b| b.expect("decode").num_rows())
        .sum()
}

/// Writing a file (encode + compress), adding its checksums, and decoding it with and without
/// page checksums to verify (the reader checks a page's CRC only where the file has one).
fn checksums(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let fixture = runtime.block_on(checksum_fixture());
    let mut group = c.benchmark_group("checksums");
    group.throughput(Throughput::Bytes(fixture.unsealed.len() as u64));
    group.bench_function("encode_file", |b| {
        b.iter(|| encode_parquet(&fixture.batches, &fixture.props))
    });
    group.bench_function("seal_file", |b| {
        b.iter(|| checksum::seal(&fixture.unsealed, &fixture.props).expect("seal"))
    });
    group.bench_function("decode_without_checksums", |b| {
        b.iter(|| decode_all(&fixture.unsealed))
    });
    group.bench_function("decode_verifying_checksums", |b| {
        b.iter(|| decode_all(&fixture.sealed))
    });
    group.finish();
}

criterion_group!(
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = functions, flight, checksums
);
criterion_main!(benches);
