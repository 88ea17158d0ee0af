//! Many analysts at once: a `tokenledger serve` process (release build, memory pool and query
//! limits on) under 1, 4, 16 and 64 Flight SQL clients, each logged in as one of four users
//! (one administrator, three with one or two tenants) and running a mix: a point filter, an
//! aggregate, a report and a prepared statement. A separate client runs `SELECT 1` ten times a
//! second throughout (the canary). Reports throughput, p50/p95/p99 per query, errors by gRPC
//! code, peak server RSS, and wrong answers.
//!
//! Expected answers of the point filter, the aggregate and the prepared statement come from the
//! Parquet files read with the parquet crate, filtered to each user's tenants. The report's
//! expected answer is what the same user got with no load (its SQL is checked against DuckDB by
//! benches/duckdb_reports.py).
//!
//! `cargo bench --bench load -- DATA_DIR [SECONDS_PER_LEVEL] [tls]` (default
//! benches/data/gen-90000, ≈1 M spans, made by `benches/run.sh --sizes 1m`; 20 s per level).
//! With `tls`, the server gets a certificate from a test authority and every client connects
//! over TLS, each on its own connection (so each pays a handshake).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use arrow_flight::sql::client::{FlightSqlServiceClient, PreparedStatement};
use futures::TryStreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Client = FlightSqlServiceClient<Channel>;

const POOL: &str = "2GiB";
const POOL_MIB: f64 = 2048.0;
const QUERY_CAP: &str = "1GiB";
const LEVELS: [usize; 4] = [1, 4, 16, 64];
const PASSWORD: &str = "load test password";

/// The four users: name and tenants (`*` = every tenant).
const USERS: [(&str, &[&str]); 4] = [
    ("admin", &["*"]),
    ("acme", &["acme-retail"]),
    ("two", &["globex-insurance", "hooli-devices"]),
    ("legal", &["umbrella-legal"]),
];

const MIX: [&str; 4] = ["point filter", "aggregate", "report", "prepared"];

/// Columns of the spans the expected answers need.
struct Spans {
    tenant: Vec<String>,
    workflow: Vec<String>,
    work_item: Vec<String>,
    model: Vec<String>,
    input_tokens: Vec<Option<i64>>,
}

fn read_spans(data: &Path) -> Spans {
    let mut spans = Spans {
        tenant: vec![],
        workflow: vec![],
        work_item: vec![],
        model: vec![],
        input_tokens: vec![],
    };
    let mut files = Vec::new();
    let mut dirs = vec![data.join("spans")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    for file in files {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
        let names = [
            "tenant",
            "workflow",
            "work_item_id",
            "model",
            "input_tokens",
        ];
        let mask = ProjectionMask::columns(builder.parquet_schema(), names);
        for batch in builder.with_projection(mask).build().unwrap() {
            let batch = batch.unwrap();
            let text = |name: &str| -> Vec<String> {
                let column = batch.column_by_name(name).unwrap().as_string::<i32>();
                (0..column.len())
                    .map(|i| column.value(i).to_string())
                    .collect()
            };
            spans.tenant.extend(text("tenant"));
            spans.workflow.extend(text("workflow"));
            spans.work_item.extend(text("work_item_id"));
            spans.model.extend(text("model"));
            let tokens = batch
                .column_by_name("input_tokens")
                .unwrap()
                .as_primitive::<Int64Type>();
            spans
                .input_tokens
                .extend((0..tokens.len()).map(|i| tokens.is_valid(i).then(|| tokens.value(i))));
        }
    }
    spans
}

fn sees(tenants: &[&str], tenant: &str) -> bool {
    tenants == ["*"] || tenants.contains(&tenant)
}

/// `count(*)|count(input_tokens)|coalesce(sum(input_tokens), 0)` of the rows `keep` selects.
fn totals(spans: &Spans, keep: impl Fn(usize) -> bool) -> String {
    let (mut rows, mut counted, mut sum) = (0i64, 0i64, 0i64);
    for i in (0..spans.tenant.len()).filter(|&i| keep(i)) {
        rows += 1;
        if let Some(t) = spans.input_tokens[i] {
            counted += 1;
            sum += t;
        }
    }
    format!("{rows}|{counted}|{sum}")
}

/// One user's queries with their expected answers.
struct Workload {
    point: Vec<(String, Vec<String>)>,
    aggregate: (String, Vec<String>),
    prepared: Vec<((String, i64), Vec<String>)>,
}

const PREPARED_SQL: &str = "SELECT count(*), count(input_tokens), coalesce(sum(input_tokens), 0) \
                            FROM spans WHERE model = ? AND input_tokens > ?";
const REPORT_SQL: &str = "SELECT * FROM cost_per_outcome";

fn workload(spans: &Spans, tenants: &[&str]) -> Workload {
    let items: BTreeSet<&str> = spans
        .work_item
        .iter()
        .step_by(spans.work_item.len() / 40)
        .map(String::as_str)
        .collect();
    let point = items
        .into_iter()
        .map(|item| {
            let sql = format!(
                "SELECT count(*), count(input_tokens), coalesce(sum(input_tokens), 0) \
                 FROM spans WHERE work_item_id = '{item}'"
            );
            let expected = totals(spans, |i| {
                spans.work_item[i] == item && sees(tenants, &spans.tenant[i])
            });
            (sql, vec![expected])
        })
        .collect();
    let workflows: BTreeSet<&str> = spans.workflow.iter().map(String::as_str).collect();
    let mut by_workflow: Vec<String> = workflows
        .into_iter()
        .filter_map(|w| {
            let keep = |i: usize| spans.workflow[i] == w && sees(tenants, &spans.tenant[i]);
            let line = totals(spans, keep);
            (!line.starts_with("0|")).then(|| format!("{w}|{line}"))
        })
        .collect();
    by_workflow.sort();
    let aggregate = (
        "SELECT workflow, count(*), count(input_tokens), coalesce(sum(input_tokens), 0) \
         FROM spans GROUP BY workflow"
            .to_string(),
        by_workflow,
    );
    let models: BTreeSet<&str> = spans.model.iter().map(String::as_str).collect();
    let prepared = models
        .into_iter()
        .take(6)
        .flat_map(|model| [500i64, 4000].map(move |min| (model.to_string(), min)))
        .map(|(model, min)| {
            let expected = totals(spans, |i| {
                spans.model[i] == model
                    && spans.input_tokens[i].is_some_and(|t| t > min)
                    && sees(tenants, &spans.tenant[i])
            });
            ((model, min), vec![expected])
        })
        .collect();
    Workload {
        point,
        aggregate,
        prepared,
    }
}

/// The `tokenledger serve` process under test.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(data: &Path, tls: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let tls_args: Vec<String> = if tls {
            let (cert, key) = test_certificate(dir.path());
            vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ]
        } else {
            Vec::new()
        };
        let users = dir.path().join("users");
        for (name, tenants) in USERS {
            let mut add = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
            add.args(["user", "add", name, "--users", users.to_str().unwrap()]);
            for tenant in tenants {
                add.args(["--tenant", tenant]);
            }
            let mut child = add
                .stdin(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
            assert!(child.wait().unwrap().success());
        }
        let log = dir.path().join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .args(["serve", "--data", data.to_str().unwrap()])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--users",
                users.to_str().unwrap(),
            ])
            .args(["--memory-limit", POOL, "--query-memory-limit", QUERY_CAP])
            .args(&tls_args)
            .env("TOKENLEDGER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Server {
            child,
            port: 0,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.port == 0 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text
                .lines()
                .find(|l| l.contains("over Arrow Flight SQL on"))
            {
                server.port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "serve did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Resident memory now, in MiB.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test authority's certificate when the run is over TLS.
static TLS_ROOT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// A test authority and a certificate for 127.0.0.1 signed by it, in `dir`: (cert, key) files;
/// the authority's certificate goes to [`TLS_ROOT`].
fn test_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "load test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "load test server");
    let cert = server.signed_by(&key, &issuer).unwrap();
    TLS_ROOT.set(ca_cert.pem().into_bytes()).unwrap();
    let files = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&files.0, cert.pem()).unwrap();
    std::fs::write(&files.1, key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&files.1, std::fs::Permissions::from_mode(0o600)).unwrap();
    files
}

/// A new connection to the server: over TLS when the run is.
async fn connect(port: u16) -> Result<Channel, BoxError> {
    let channel = match TLS_ROOT.get() {
        Some(root) => {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(root));
            Channel::from_shared(format!("https://127.0.0.1:{port}"))?.tls_config(tls)?
        }
        None => Channel::from_shared(format!("http://127.0.0.1:{port}"))?,
    };
    Ok(channel.connect().await?)
}

async fn login(port: u16, user: &str) -> Result<Client, BoxError> {
    let channel = connect(port).await?;
    let mut client = FlightSqlServiceClient::new(channel);
    // Many clients logging in at once may be told to retry (RESOURCE_EXHAUSTED), as BI tools'
    // connection pools do after a server restart.
    let mut attempts = 0;
    while let Err(refused) = client.handshake(user, PASSWORD).await {
        attempts += 1;
        if attempts == 20 || !refused.to_string().contains("exhausted") {
            return Err(refused.into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(client)
}

/// Rows as `a|b|c` text, sorted (as flight-server/tests/it/support.rs shows them).
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::util::display::ArrayFormatter::try_new(
                    c.as_ref(),
                    &arrow::util::display::FormatOptions::default().with_null("NULL"),
                )
                .unwrap()
            })
            .collect();
        for row in 0..batch.num_rows() {
            // Doubles to 12 significant digits: sums taken in another order (partitions finish
            // in any order) differ in their last bits.
            let cells: Vec<String> = formatters
                .iter()
                .zip(batch.columns())
                .map(
                    |(f, column)| match column.as_primitive_opt::<Float64Type>() {
                        Some(values) if values.is_valid(row) => {
                            format!("{:.11e}", values.value(row))
                        }
                        _ => f.value(row).to_string(),
                    },
                )
                .collect();
            out.push(cells.join("|"));
        }
    }
    out.sort();
    out
}

fn code(error: &arrow_flight::error::FlightError) -> String {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => format!("{:?}", status.code()),
        other => format!("client: {other}"),
    }
}

async fn fetch(
    client: &mut Client,
    info: arrow_flight::FlightInfo,
) -> Result<Vec<RecordBatch>, arrow_flight::error::FlightError> {
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    client.do_get(ticket).await?.try_collect().await
}

async fn statement(client: &mut Client, sql: &str) -> Result<Vec<String>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| code(&e))?;
    fetch(client, info)
        .await
        .map(|b| rows(&b))
        .map_err(|e| code(&e))
}

async fn prepared(
    client: &mut Client,
    statement: &mut PreparedStatement<Channel>,
    (model, min): &(String, i64),
) -> Result<Vec<String>, String> {
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Utf8, true),
            Field::new("$2", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec![model.as_str()])),
            Arc::new(arrow::array::Int64Array::from(vec![*min])),
        ],
    )
    .map_err(|e| e.to_string())?;
    statement.set_parameters(params).map_err(|e| code(&e))?;
    let info = statement.execute().await.map_err(|e| code(&e))?;
    fetch(client, info)
        .await
        .map(|b| rows(&b))
        .map_err(|e| code(&e))
}

/// Latencies per query kind, errors by code, wrong answers.
#[derive(Default)]
struct Tally {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    errors: BTreeMap<String, usize>,
    wrong: usize,
    completed: usize,
}

impl Tally {
    fn record(&mut self, kind: &'static str, took: Duration, answer: Result<bool, String>) {
        match answer {
            Ok(right) => {
                self.latencies.entry(kind).or_default().push(took);
                self.completed += 1;
                if !right {
                    self.wrong += 1;
                }
            }
            Err(code) => *self.errors.entry(format!("{kind}: {code}")).or_default() += 1,
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn client_loop(
    port: u16,
    index: usize,
    workloads: Arc<HashMap<&'static str, Workload>>,
    reports: Arc<HashMap<&'static str, Vec<String>>>,
    until: Instant,
    tally: Arc<Mutex<Tally>>,
) -> Result<(), BoxError> {
    let (user, _) = USERS[index % USERS.len()];
    let mut client = login(port, user).await?;
    let mut statement_handle = client.prepare(PREPARED_SQL.to_string(), None).await?;
    let work = &workloads[user];
    let mut turn = index;
    while Instant::now() < until {
        let kind = MIX[turn % MIX.len()];
        let pick = turn / MIX.len();
        turn += 1;
        let started = Instant::now();
        let answer = match kind {
            "point filter" => {
                let (sql, expected) = &work.point[pick % work.point.len()];
                statement(&mut client, sql)
                    .await
                    .map(|got| check(kind, &got, expected))
            }
            "aggregate" => {
                let (sql, expected) = &work.aggregate;
                statement(&mut client, sql)
                    .await
                    .map(|got| check(kind, &got, expected))
            }
            "report" => statement(&mut client, REPORT_SQL)
                .await
                .map(|got| check(kind, &got, &reports[user])),
            _ => {
                let (params, expected) = &work.prepared[pick % work.prepared.len()];
                prepared(&mut client, &mut statement_handle, params)
                    .await
                    .map(|got| check(kind, &got, expected))
            }
        };
        let took = started.elapsed();
        tally.lock().unwrap().record(kind, took, answer);
    }
    Ok(())
}

/// Whether `got` is `expected`; a wrong answer is shown on stderr.
fn check(kind: &str, got: &[String], expected: &[String]) -> bool {
    let right = got == expected;
    if !right {
        let differing: Vec<_> = got
            .iter()
            .zip(expected)
            .filter(|(g, e)| g != e)
            .take(2)
            .collect();
        eprintln!(
            "wrong {kind}: {} rows, expected {}; first differences {differing:?}",
            got.len(),
            expected.len()
        );
    }
    right
}

/// `SELECT 1` ten times a second until `until`: its latencies.
async fn canary(port: u16, until: Instant) -> Result<Vec<Duration>, BoxError> {
    let mut client = login(port, "admin").await?;
    let mut latencies = Vec::new();
    while Instant::now() < until {
        let started = Instant::now();
        let got = statement(&mut client, "SELECT 1").await;
        latencies.push(started.elapsed());
        assert_eq!(got, Ok(vec!["1".to_string()]), "canary answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    Ok(latencies)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let data = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "benches/data/gen-90000".to_string()),
    );
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let tls = args.next().as_deref() == Some("tls");
    assert!(
        data.join("spans").is_dir(),
        "no data at {}: run benches/run.sh --sizes 1m first",
        data.display()
    );
    let spans = read_spans(&data);
    let workloads: Arc<HashMap<&'static str, Workload>> = Arc::new(
        USERS
            .iter()
            .map(|(user, tenants)| (*user, workload(&spans, tenants)))
            .collect(),
    );
    println!(
        "{} spans; pool {POOL}, query cap {QUERY_CAP}, default turns (4 running, 2 per user); \
         {seconds} s per level{}",
        spans.tenant.len(),
        if tls { ", over TLS" } else { "" }
    );
    let server = Server::start(&data, tls);
    let port = server.port;

    // The report each user gets with no load, and a check of the other expected answers.
    let mut reports = HashMap::new();
    for (user, _) in USERS {
        let mut client = login(port, user).await?;
        reports.insert(user, statement(&mut client, REPORT_SQL).await?);
        let (sql, expected) = &workloads[user].aggregate;
        assert_eq!(
            &statement(&mut client, sql).await?,
            expected,
            "{user} aggregate"
        );
    }
    let reports = Arc::new(reports);

    println!(
        "| clients | queries/s | kind | p50 ms | p95 ms | p99 ms | p99/p50 | errors | wrong | peak RSS MiB | canary p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut throughput = BTreeMap::new();
    for clients in LEVELS {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for index in 0..clients {
            tasks.push(tokio::spawn(client_loop(
                port,
                index,
                Arc::clone(&workloads),
                Arc::clone(&reports),
                until,
                Arc::clone(&tally),
            )));
        }
        let canary_task = tokio::spawn(canary(port, until));
        let started = Instant::now();
        let mut peak_rss: f64 = 0.0;
        while Instant::now() < until {
            peak_rss = peak_rss.max(server.rss_mib());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for task in tasks {
            task.await??;
        }
        let canary = canary_task.await??;
        let elapsed = started.elapsed().as_secs_f64();
        let tally = tally.lock().unwrap();
        let qps = tally.completed as f64 / elapsed;
        throughput.insert(clients, qps);
        let errors: usize = tally.errors.values().sum();
        let error_text = if tally.errors.is_empty() {
            "0".to_string()
        } else {
            format!("{errors} ({:?})", tally.errors)
        };
        for (i, (kind, latencies)) in tally.latencies.iter().enumerate() {
            let mut sorted = latencies.clone();
            sorted.sort();
            let (p50, p95, p99) = (
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.95),
                percentile(&sorted, 0.99),
            );
            let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
            let first = i == 0;
            println!(
                "| {} | {} | {kind} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
                if first {
                    clients.to_string()
                } else {
                    String::new()
                },
                if first {
                    format!("{qps:.1}")
                } else {
                    String::new()
                },
                ms(p50),
                ms(p95),
                ms(p99),
                p99.as_secs_f64() / p50.as_secs_f64(),
                if first {
                    error_text.clone()
                } else {
                    String::new()
                },
                if first {
                    tally.wrong.to_string()
                } else {
                    String::new()
                },
                if first {
                    format!("{peak_rss:.0}")
                } else {
                    String::new()
                },
                if first {
                    ms(percentile(&canary, 0.99))
                } else {
                    String::new()
                },
            );
        }
    }
    let ratio = throughput[&16] / throughput[&4];
    println!(
        "\nthroughput at 16 clients / at 4: {ratio:.2} (target ≥ 0.80); pool {POOL_MIB:.0} MiB \
         + 512 MiB = {:.0} MiB RSS allowed",
        POOL_MIB + 512.0
    );
    Ok(())
}
