//! Scale-out: a coordinator with workers on 127.0.0.1 (each a `tokenledger worker` process)
//! gives the single-node answers, on local disk and on S3 with a quarantined file, fails
//! cleanly when a worker dies, and refuses workers that would answer differently.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use tokenledger_distributed::{Cluster, ClusterKey, ClusterSecurity, DistributedError, Startup};
use tokenledger_engine::reports;
use tokenledger_engine::{Access, DataLocation, SessionOptions, TraceSession};

use crate::peers::{S3Server, ok, repo_root, tokenledger};

#[path = "../../engine/tests/it/slt_db.rs"]
#[allow(dead_code)]
pub(crate) mod slt_db;

/// The cluster secret of the tests' workers and coordinators.
pub(crate) const TEST_CLUSTER_SECRET: &str = "a test cluster's secret, 32 bytes or more";

/// How the tests' coordinators reach their workers (on loopback, signed with the test secret).
pub(crate) fn test_security() -> ClusterSecurity {
    ClusterSecurity::new(ClusterKey::from_secret(TEST_CLUSTER_SECRET.as_bytes()).unwrap())
}

/// A `tokenledger worker` process, killed when dropped.
pub(crate) struct WorkerProcess {
    child: Child,
    pub(crate) address: String,
    /// Everything it has written to standard error so far.
    log: Arc<std::sync::Mutex<String>>,
}

impl WorkerProcess {
    /// A worker over `data` on a free loopback port, with the test secret unless `env` sets
    /// another.
    pub(crate) fn start(data: &str, env: &[(&str, String)]) -> WorkerProcess {
        Self::start_with(data, &[], env).expect("worker starts")
    }

    /// A worker given `extra` arguments; its error output when it exits instead of listening.
    pub(crate) fn start_with(
        data: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Result<WorkerProcess, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tokenledger"));
        command
            .args(["worker", "--data", data, "--listen", "127.0.0.1:0"])
            .args(extra)
            .current_dir(repo_root())
            .env_remove("TOKENLEDGER_DATA")
            .env("TOKENLEDGER_CLUSTER_SECRET", TEST_CLUSTER_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("worker starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = String::new();
        let address = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                return Err(said);
            };
            let line = line.unwrap();
            if let Some((_, address)) = line.split_once(" listening on ") {
                break address.trim().to_string();
            }
            said.push_str(&line);
            said.push('\n');
        };
        // Keep draining its log so it never blocks on a full pipe.
        let log = Arc::new(std::sync::Mutex::new(said));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Ok(WorkerProcess {
            child,
            address,
            log,
        })
    }

    /// What it has written to standard error so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_workers(n: usize, data: &str, env: &[(&str, String)]) -> Vec<WorkerProcess> {
    (0..n).map(|_| WorkerProcess::start(data, env)).collect()
}

pub(crate) fn addresses(workers: &[WorkerProcess]) -> Vec<String> {
    workers.iter().map(|w| w.address.clone()).collect()
}

/// A coordinator's options over `workers`: one byte per partition, so every scan is spread
/// over every worker and every stage crosses the network.
async fn coordinator(workers: &[WorkerProcess], base: SessionOptions) -> SessionOptions {
    coordinator_and_cluster(workers, base).await.0
}

async fn coordinator_and_cluster(
    workers: &[WorkerProcess],
    base: SessionOptions,
) -> (SessionOptions, Arc<Cluster>) {
    let urls = Cluster::parse_addresses(&addresses(workers)).unwrap();
    let cluster = Cluster::connect(urls, Startup::AllWorkers, test_security())
        .await
        .expect("workers answer");
    let options = SessionOptions {
        distribution: Some(cluster.distribution(1)),
        ..base
    };
    (options, cluster)
}

pub(crate) async fn open(data: &str, options: &SessionOptions) -> TraceSession {
    TraceSession::open(DataLocation::parse(data).unwrap(), options)
        .await
        .expect("session opens")
}

pub(crate) async fn rows(session: &TraceSession, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let frame = session
        .plan_sql(sql, Access::ReadOnly)
        .await
        .map_err(|e| e.user_message())?;
    let stream = session.execute(frame).await.map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = datafusion::physical_plan::common::collect(stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(slt_db::stringify(&batches))
}

async fn report_rows(session: &TraceSession, name: &str) -> Vec<Vec<String>> {
    let frame = session.report(reports::view(name).unwrap()).await.unwrap();
    let stream = session.execute(frame).await.unwrap();
    let batches = datafusion::physical_plan::common::collect(stream)
        .await
        .unwrap();
    slt_db::stringify(&batches)
}

/// Same rows in the same order; numbers that are not integers may differ by 1e-9 relative
/// (sums add up in another order across workers).
pub(crate) fn assert_same_rows(what: &str, single: &[Vec<String>], distributed: &[Vec<String>]) {
    assert_eq!(
        single.len(),
        distributed.len(),
        "{what}: {} rows on one node, {} through the workers",
        single.len(),
        distributed.len()
    );
    assert!(!single.is_empty(), "{what}: no rows to compare");
    for (row, (a, b)) in single.iter().zip(distributed).enumerate() {
        for (column, (x, y)) in a.iter().zip(b).enumerate() {
            if x == y {
                continue;
            }
            let close = match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                _ => false,
            };
            assert!(
                close,
                "{what}: row {row} column {column}: {x} on one node, {y} through the workers"
            );
        }
    }
}

/// The coordinator's EXPLAIN of `sql`, as text.
async fn explain(session: &TraceSession, sql: &str) -> String {
    let plan = rows(session, &format!("EXPLAIN {sql}")).await.unwrap();
    plan.iter().map(|r| r.join(" ") + "\n").collect()
}

/// The tasks of each stage of `sql`'s plan (from the coordinator's EXPLAIN).
async fn stage_tasks(session: &TraceSession, sql: &str) -> Vec<usize> {
    let text = explain(session, sql).await;
    let stages: Vec<usize> = text
        .lines()
        .filter_map(|line| line.split_once("tasks=").map(|(_, rest)| rest))
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        text.contains("DistributedExec"),
        "{sql} is not distributed:\n{text}"
    );
    stages
}

fn generate(dir: &Path, work_items: u32) -> String {
    let data = dir.to_str().unwrap().to_string();
    ok(tokenledger(
        &[
            "gen",
            "--out",
            &data,
            "--work-items",
            &work_items.to_string(),
            "--seed",
            "7",
        ],
        &[],
    ));
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slt_suite_and_every_report_match_one_node_through_three_workers() {
    // The .slt suite over the hand-made data, planned by a coordinator.
    let handmade = repo_root().join("testdata/handmade");
    let handmade = handmade.to_str().unwrap().to_string();
    let workers = start_workers(3, &handmade, &[]);
    let options = coordinator(&workers, SessionOptions::default()).await;
    let session = open(&handmade, &options).await;
    let tasks = stage_tasks(&session, "SELECT workflow, count(*) FROM spans GROUP BY 1").await;
    assert!(
        tasks.contains(&3),
        "the scan is not spread over 3 workers: {tasks:?}"
    );
    let data = handmade.clone();
    let failures = slt_db::run_slt_files(&repo_root(), move || {
        let (data, options) = (data.clone(), options.clone());
        async move { open(&data, &options).await }
    })
    .await;
    assert!(
        failures.is_empty(),
        "through the workers:\n{}",
        failures.join("\n")
    );
    drop(workers);

    // Every report over generated data, against the same session on one node.
    let dir = tempfile::tempdir().unwrap();
    let data = generate(dir.path(), 2_000);
    let workers = start_workers(3, &data, &[]);
    let single = open(&data, &SessionOptions::default()).await;
    let distributed = open(
        &data,
        &coordinator(&workers, SessionOptions::default()).await,
    )
    .await;
    for report in reports::reports() {
        let sql = format!("SELECT * FROM {}", report.name);
        let tasks = stage_tasks(&distributed, &sql).await;
        assert!(
            tasks.iter().any(|&t| t > 1),
            "{}: no stage runs on several workers: {tasks:?}",
            report.name
        );
        let expected = report_rows(&single, report.name).await;
        let got = report_rows(&distributed, report.name).await;
        assert_same_rows(report.name, &expected, &got);
    }

    // ORDER BY across workers: a total order, a top-k and a window over a shuffle come back
    // in exactly the single-node order.
    for sql in [
        "SELECT trace_id, span_id, cost_usd FROM spans ORDER BY cost_usd DESC NULLS LAST, trace_id, span_id",
        "SELECT trace_id, span_id FROM spans ORDER BY start_time DESC, trace_id, span_id LIMIT 37",
        "SELECT workflow, trace_id, sum(cost_usd) OVER (PARTITION BY workflow ORDER BY start_time, trace_id, span_id) AS running \
         FROM spans ORDER BY workflow, start_time, trace_id, span_id",
    ] {
        let expected = rows(&single, sql).await.unwrap();
        let got = rows(&distributed, sql).await.unwrap();
        assert_same_rows(sql, &expected, &got);
    }

    // Compacted: the curated Delta table is read as plain Parquet of its snapshot's files (its
    // own scan node cannot be sent to a worker), now and as of a time.
    ok(tokenledger(
        &["compact", "--data", &data, "--min-age", "0"],
        &[],
    ));
    let single = open(&data, &SessionOptions::default()).await;
    let distributed = open(
        &data,
        &coordinator(&workers, SessionOptions::default()).await,
    )
    .await;
    for sql in [
        "SELECT workflow, count(*), sum(cost_usd) FROM spans GROUP BY 1 ORDER BY 1",
        "SELECT model, count(*), sum(input_tokens) FROM spans_at('2999-01-01') GROUP BY 1 ORDER BY 1",
    ] {
        let plan = explain(&distributed, sql).await;
        assert!(
            plan.contains("_curated/spans"),
            "{sql} does not read the curated files:\n{plan}"
        );
        let expected = rows(&single, sql).await.unwrap();
        assert_same_rows(sql, &expected, &rows(&distributed, sql).await.unwrap());
    }
}

#[test]
fn reports_on_s3_with_a_quarantined_file_match_one_node() {
    let Some(server) = S3Server::start("cluster") else {
        return;
    };
    let env = server.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = "s3://cluster/lake";
    ok(tokenledger(
        &["gen", "--out", data, "--work-items", "1500", "--seed", "3"],
        &env_refs,
    ));
    // A file cut short: quarantined by the coordinator, left out everywhere.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use object_store::ObjectStoreExt;
        let location = DataLocation::parse(data).unwrap();
        let store = location.open_store(&server.overrides()).unwrap();
        let good = store
            .get(&object_store::path::Path::from(
                "lake/spans/invoice/part-00000.parquet",
            ))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let cut = good.slice(..good.len() / 2);
        store
            .put(
                &object_store::path::Path::from("lake/spans/late/cut.parquet"),
                cut.into(),
            )
            .await
            .unwrap();
    });
    // The .slt suite over the hand-made data on S3, a cut file beside it: the same answers.
    let handmade = "s3://cluster/handmade";
    runtime.block_on(async {
        use object_store::ObjectStoreExt;
        let location = DataLocation::parse(handmade).unwrap();
        let store = location.open_store(&server.overrides()).unwrap();
        let root = repo_root().join("testdata/handmade");
        for table in ["spans", "outcomes", "model_prices", "baselines"] {
            let file = root.join(table).join(format!("{table}.parquet"));
            let bytes = std::fs::read(&file).unwrap();
            let key = format!("handmade/{table}/{table}.parquet");
            store
                .put(&object_store::path::Path::from(key), bytes.into())
                .await
                .unwrap();
        }
        let spans = std::fs::read(root.join("spans/spans.parquet")).unwrap();
        let cut = spans[..spans.len() / 2].to_vec();
        let key = object_store::path::Path::from("handmade/spans/late/cut.parquet");
        store.put(&key, cut.into()).await.unwrap();
    });
    let slt_workers = start_workers(3, handmade, &env);
    let overrides = server.overrides();
    let failures = runtime.block_on(async {
        let base = SessionOptions {
            s3: overrides,
            ..SessionOptions::default()
        };
        let options = coordinator(&slt_workers, base).await;
        let session = open(handmade, &options).await;
        let tasks = stage_tasks(&session, "SELECT workflow, count(*) FROM spans GROUP BY 1").await;
        assert!(
            tasks.contains(&3),
            "the scan is not spread over 3 workers: {tasks:?}"
        );
        slt_db::run_slt_files(&repo_root(), move || {
            let options = options.clone();
            async move { open(handmade, &options).await }
        })
        .await
    });
    assert!(
        failures.is_empty(),
        "on S3 through the workers:\n{}",
        failures.join("\n")
    );
    drop(slt_workers);

    let workers = start_workers(3, data, &env);
    let list = addresses(&workers).join(",");
    let mut cluster_env = env_refs.clone();
    cluster_env.push(("TOKENLEDGER_WORKERS", &list));
    cluster_env.push(("TOKENLEDGER_PARTITION_BYTES", "1"));
    cluster_env.push(("TOKENLEDGER_CLUSTER_SECRET", TEST_CLUSTER_SECRET));
    for report in reports::reports() {
        let args = ["report", report.name, "--data", data, "--format", "csv"];
        let single = ok(tokenledger(&args, &env_refs));
        let distributed = ok(tokenledger(&args, &cluster_env));
        let split = |text: &str| -> Vec<Vec<String>> {
            text.lines()
                .map(|l| l.split(',').map(str::to_string).collect())
                .collect()
        };
        assert_same_rows(report.name, &split(&single), &split(&distributed));
    }
    let files = ok(tokenledger(
        &[
            "query",
            "--data",
            data,
            "--format",
            "csv",
            "SELECT status FROM tokenledger_files WHERE path LIKE '%cut.parquet'",
        ],
        &cluster_env,
    ));
    assert!(files.contains("quarantined"), "{files}");
    let plan = ok(tokenledger(
        &[
            "query",
            "--data",
            data,
            "EXPLAIN SELECT count(*), sum(cost_usd) FROM spans",
        ],
        &cluster_env,
    ));
    assert!(plan.contains("tasks=3"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_fails_it_quickly_and_the_next_query_uses_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = generate(dir.path(), 6_000);
    let mut workers = start_workers(3, &data, &[]);
    let doomed = workers[1].address.clone();
    let (options, cluster) = coordinator_and_cluster(&workers, SessionOptions::default()).await;
    let session = open(&data, &options).await;
    // Long enough to be running when the worker dies: a self-join of every span.
    let slow = "SELECT count(*) FROM spans a JOIN spans b ON a.workflow = b.workflow AND a.model = b.model";
    let running = {
        let frame = session.plan_sql(slow, Access::ReadOnly).await.unwrap();
        let stream = session.execute(frame).await.unwrap();
        tokio::spawn(datafusion::physical_plan::common::collect(stream))
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed = Instant::now();
    workers[1].kill();
    let outcome = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the query ends within seconds of the worker's death")
        .unwrap();
    let error = outcome
        .expect_err("a query whose worker died fails")
        .to_string();
    let port = doomed.rsplit(':').next().unwrap();
    assert!(
        error.contains(port),
        "the error does not name the worker {doomed}: {error}"
    );
    eprintln!("failed {:?} after the kill: {error}", killed.elapsed());

    // Once the health check has seen it gone (every second), queries use the others.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster
        .answering()
        .iter()
        .any(|url| url.as_str().contains(port))
    {
        assert!(
            Instant::now() < deadline,
            "the dead worker still counts as answering"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let single = open(&data, &SessionOptions::default()).await;
    let sql = "SELECT workflow, count(*), sum(cost_usd) FROM spans GROUP BY 1 ORDER BY 1";
    let expected = rows(&single, sql).await.unwrap();
    let fresh = open(&data, &options).await;
    let got = rows(&fresh, sql)
        .await
        .expect("the remaining workers answer");
    assert_same_rows(sql, &expected, &got);
    // Not the three tasks a stage had with three workers (with one busy worker slow to
    // answer its check, the query may even run on one).
    let plan = explain(&fresh, sql).await;
    assert!(
        !plan.contains("tasks=3"),
        "a dead worker is still planned for:\n{plan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_would_answer_differently_are_refused() {
    // Addresses that cannot be workers are refused before any connection.
    for (bad, why) in [
        ("ftp://10.0.0.5:50061", "scheme ftp"),
        ("10.0.0.5", "no port"),
    ] {
        let error = Cluster::parse_addresses(&[bad.to_string()])
            .unwrap_err()
            .to_string();
        assert!(error.contains(bad) && error.contains(why), "{error}");
    }
    // Another build: a datafusion-distributed worker reporting another version.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                datafusion_distributed::Worker::default()
                    .with_version("0.0.0-other")
                    .into_worker_server(),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let urls = Cluster::parse_addresses(&[other.to_string()]).unwrap();
    match Cluster::connect(urls, Startup::AllWorkers, test_security()).await {
        Err(e @ DistributedError::VersionMismatch { .. }) => {
            let message = e.to_string();
            assert!(message.contains("0.0.0-other"), "{message}");
            assert!(
                message.contains(tokenledger_distributed::VERSION),
                "{message}"
            );
        }
        other => panic!("a worker of another version was accepted: {other:?}"),
    }
    server.abort();
    // Nobody listening: a clear error naming the address, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let urls = Cluster::parse_addresses(&[closed.to_string()]).unwrap();
    let started = Instant::now();
    let error = Cluster::connect(urls, Startup::AllWorkers, test_security())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&closed.port().to_string()), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // A server starts anyway and leaves it out until it answers.
    let urls = Cluster::parse_addresses(&[closed.to_string()]).unwrap();
    let cluster = Cluster::connect(urls, Startup::Tolerant, test_security())
        .await
        .unwrap();
    let options = SessionOptions {
        distribution: Some(cluster.distribution(1)),
        ..SessionOptions::default()
    };
    let handmade = repo_root().join("testdata/handmade");
    let session = open(handmade.to_str().unwrap(), &options).await;
    let error = rows(&session, "SELECT count(*) FROM spans GROUP BY workflow")
        .await
        .unwrap_err();
    assert!(
        error.contains("no worker of the cluster answers")
            && error.contains(&closed.port().to_string()),
        "{error}"
    );

    // Other prices: a worker over a copy of the data whose model_prices differ refuses the
    // coordinator's query; over the same data it prices exactly as one node.
    let dir = tempfile::tempdir().unwrap();
    let data = generate(dir.path(), 300);
    let copy = tempfile::tempdir().unwrap();
    copy_dir(Path::new(&data), copy.path());
    let doubled = copy.path().join("model_prices");
    let extra = doubled.join("later.csv");
    std::fs::write(
        &extra,
        "model,valid_from,input_usd_per_mtok,output_usd_per_mtok\nclaude-sonnet-4-5,2020-01-01,999,999\n",
    )
    .unwrap();
    ok(tokenledger(
        &[
            "import",
            "--data",
            copy.path().to_str().unwrap(),
            "--table",
            "model_prices",
            extra.to_str().unwrap(),
        ],
        &[],
    ));
    std::fs::remove_file(&extra).unwrap();
    let priced = "SELECT model, sum(token_cost(model, input_tokens, cached_input_tokens, output_tokens, \
                  reasoning_tokens, start_time)) FROM spans GROUP BY 1 ORDER BY 1";
    // Two workers: with one, the planner keeps the whole query on the coordinator.
    let stranger = start_workers(2, copy.path().to_str().unwrap(), &[]);
    let session = open(
        &data,
        &coordinator(&stranger, SessionOptions::default()).await,
    )
    .await;
    let error = rows(&session, priced).await.unwrap_err();
    assert!(
        error.contains("prices token_cost with model_prices"),
        "{error}"
    );
    drop(stranger);

    let same = start_workers(2, &data, &[]);
    let session = open(&data, &coordinator(&same, SessionOptions::default()).await).await;
    let single = open(&data, &SessionOptions::default()).await;
    assert_same_rows(
        priced,
        &rows(&single, priced).await.unwrap(),
        &rows(&session, priced).await.unwrap(),
    );
    // New prices land after the workers started: a coordinator that has read them makes the
    // workers read them too, and prices as one node does.
    let before = single.prices_fingerprint();
    let later = Path::new(&data).join("later.csv");
    std::fs::write(
        &later,
        "model,valid_from,input_usd_per_mtok,output_usd_per_mtok\nclaude-sonnet-4-5,2020-01-01,999,999\n",
    )
    .unwrap();
    ok(tokenledger(
        &[
            "import",
            "--data",
            &data,
            "--table",
            "model_prices",
            later.to_str().unwrap(),
        ],
        &[],
    ));
    let session = open(&data, &coordinator(&same, SessionOptions::default()).await).await;
    let single = open(&data, &SessionOptions::default()).await;
    assert_ne!(
        single.prices_fingerprint(),
        before,
        "the new price file changed nothing"
    );
    assert_same_rows(
        priced,
        &rows(&single, priced).await.unwrap(),
        &rows(&session, priced).await.unwrap(),
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// datafusion-distributed 4.0.0 gives a shuffle the ordering of what feeds it, though each of
/// its partitions joins the streams of several tasks (fixed after the release, upstream PR
/// 735). Over files sorted by workflow, an aggregation by workflow then runs in sorted mode
/// on unsorted input and splits groups. Here every workflow is cut into two files by time, so
/// both workers hold part of every group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_over_sorted_files_split_across_workers_counts_each_group_once() {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::compute::{concat_batches, take};
    use tokenledger_engine::storage::writer::{StreamingParquetFile, writer_properties};

    let source = tempfile::tempdir().unwrap();
    let source = generate(source.path(), 400);
    let spans = {
        let session = open(&source, &SessionOptions::default()).await;
        let frame = session
            .plan_sql(
                "SELECT * FROM spans ORDER BY start_time, trace_id, span_id",
                Access::ReadOnly,
            )
            .await
            .unwrap();
        let batches = frame.collect().await.unwrap();
        concat_batches(&batches[0].schema(), &batches).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn object_store::ObjectStore> =
        Arc::new(object_store::local::LocalFileSystem::new());
    let schema = spans.schema();
    let workflow = schema.index_of("workflow").unwrap();
    const WORKFLOWS: usize = 12;
    for w in 0..WORKFLOWS {
        // Rows w, w + 12, w + 24, … are workflow w; the earlier half goes to one file.
        let rows: Vec<u32> = (w..spans.num_rows())
            .step_by(WORKFLOWS)
            .map(|r| r as u32)
            .collect();
        for (half, part) in rows.chunks(rows.len().div_ceil(2)).enumerate() {
            let indices = datafusion::arrow::array::UInt32Array::from(part.to_vec());
            let mut columns: Vec<ArrayRef> = spans
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None).unwrap())
                .collect();
            let name = format!("w{w:02}");
            columns[workflow] = datafusion::arrow::compute::cast(
                &StringArray::from(vec![name.as_str(); part.len()]),
                schema.field(workflow).data_type(),
            )
            .unwrap();
            let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
            let path = dir.path().join(format!("spans/{name}/part-{half}.parquet"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let path = object_store::path::Path::from_absolute_path(&path).unwrap();
            let properties = writer_properties(&schema, &["workflow", "start_time"]);
            let mut file =
                StreamingParquetFile::create(Arc::clone(&store), path, &schema, properties)
                    .unwrap();
            file.write(&batch).await.unwrap();
            file.close().await.unwrap();
        }
    }
    let data = dir.path().to_str().unwrap().to_string();
    let workers = start_workers(2, &data, &[]);
    let single = open(&data, &SessionOptions::default()).await;
    let distributed = open(
        &data,
        &coordinator(&workers, SessionOptions::default()).await,
    )
    .await;
    let sql = "SELECT workflow, count(*) AS spans, sum(cost_usd) AS cost FROM spans GROUP BY 1 ORDER BY 1";
    let plan = rows(&distributed, &format!("EXPLAIN {sql}")).await.unwrap();
    let plan: String = plan.iter().map(|r| r.join(" ") + "\n").collect();
    assert!(
        plan.contains("ordering_mode=Sorted") && plan.contains("NetworkShuffleExec"),
        "the case under test (a sorted aggregation above a shuffle) is not planned:\n{plan}"
    );
    let expected = rows(&single, sql).await.unwrap();
    assert_eq!(expected.len(), WORKFLOWS);
    assert_same_rows(sql, &expected, &rows(&distributed, sql).await.unwrap());
}

/// A Flight SQL server coordinating three workers: an administrator sees every tenant's rows
/// and a tenant-scoped user only theirs, as on one node; the tenant filter (our own plan node)
/// travels to the workers with the plan.
#[test]
fn flight_sql_through_a_coordinator_keeps_answers_and_tenants() {
    use arrow_flight::sql::client::FlightSqlServiceClient;
    use futures::TryStreamExt;

    let sample = repo_root().join("testdata/sample");
    let workers = start_workers(3, sample.to_str().unwrap(), &[]);
    let list = addresses(&workers).join(",");
    let server = crate::flight_clients::ServeProcess::serve_to(
        &sample,
        false,
        &[
            ("admin", "admin's password", &["*"]),
            ("acme", "acme's password", &["acme-retail"]),
        ],
        &["--workers", &list, "--partition-bytes", "1"],
    );
    let sql = "SELECT tenant, count(*) AS spans, sum(input_tokens) AS tokens FROM spans GROUP BY 1 ORDER BY 1";
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer = |user: &str, password: &str, sql: &str| -> Vec<Vec<String>> {
        runtime.block_on(async {
            let channel = tonic::transport::Channel::from_shared(format!(
                "http://127.0.0.1:{}",
                server.port()
            ))
            .unwrap()
            .connect()
            .await
            .unwrap();
            let mut client = FlightSqlServiceClient::new(channel);
            client.handshake(user, password).await.unwrap();
            let info = client.execute(sql.into(), None).await.unwrap();
            let ticket = info.endpoint[0].ticket.clone().unwrap();
            let batches: Vec<RecordBatch> = client
                .do_get(ticket)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            slt_db::stringify(&batches)
        })
    };
    let single = runtime.block_on(async {
        let session = open(sample.to_str().unwrap(), &SessionOptions::default()).await;
        rows(&session, sql).await.unwrap()
    });
    // The tenant-scoped plan runs its tenant boundary inside a stage on the workers.
    let staged = runtime.block_on(async {
        let options = coordinator(&workers, SessionOptions::default()).await;
        let session = open(sample.to_str().unwrap(), &options).await;
        let scoped = session
            .for_scope(&tokenledger_engine::TenantScope::only(["acme-retail"]))
            .await
            .unwrap();
        let frame = scoped.plan_sql(sql, Access::ReadOnly).await.unwrap();
        let plan = frame.create_physical_plan().await.unwrap();
        datafusion_distributed::display_plan_ascii(plan.as_ref(), false)
    });
    let stage = staged
        .split("Stage ")
        .find(|stage| stage.contains("TenantScopeExec"))
        .unwrap_or_else(|| panic!("no stage runs the tenant filter:\n{staged}"));
    assert!(stage.contains("tasks=3"), "{staged}");
    assert_same_rows(sql, &single, &answer("admin", "admin's password", sql));
    let acme: Vec<Vec<String>> = single
        .iter()
        .filter(|row| row[0] == "acme-retail")
        .cloned()
        .collect();
    assert_same_rows(sql, &acme, &answer("acme", "acme's password", sql));
    // Trying to see past the filter: the other tenants' rows are not there.
    let tenants = answer(
        "acme",
        "acme's password",
        "SELECT DISTINCT tenant FROM spans WHERE tenant <> 'acme-retail' OR tenant IS NULL",
    );
    assert!(tenants.is_empty(), "{tenants:?}");
    let log = server.log();
    assert!(!log.contains("ERROR"), "{log}");
}
