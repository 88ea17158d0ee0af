//! Worker ports locked down (#43), each claim tested by trying to break it: raw clients with no
//! secret or the wrong one, a coordinator's own requests replayed or altered, signed plans that
//! read `/etc/passwd`, another data location, or past their tenant scope, and TLS.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, DistributedExt, GetWorkerInfoRequest, SessionStateBuilderExt, WorkerChannel,
    WorkerResolver,
};
use futures::StreamExt;
use http_body_util::BodyExt;
use tokenledger_distributed::codec::TokenledgerCodec;
use tokenledger_distributed::security::Signed;
use tokenledger_distributed::{Cluster, ClusterKey, ClusterSecurity, Startup, VERSION};
use tokenledger_engine::access::tenancy::{TenantTable, UntenantedRows};
use tokenledger_engine::cluster::ClusterQuery;
use tokenledger_engine::{SessionOptions, TenantScope};
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response, Uri};
use tonic::transport::Channel;
use tower_service::Service;
use url::Url;

use crate::distributed::slt_db;
use crate::distributed::{
    TEST_CLUSTER_SECRET, WorkerProcess, addresses, assert_same_rows, open, rows, test_security,
};
use crate::flight_clients::write_test_certificates;
use crate::peers::{repo_root, tokenledger};

fn sample() -> String {
    repo_root().join("testdata/sample").display().to_string()
}

fn urls(workers: &[WorkerProcess]) -> Vec<Url> {
    Cluster::parse_addresses(&addresses(workers)).unwrap()
}

fn test_key() -> Arc<ClusterKey> {
    Arc::clone(&test_security().key)
}

/// A connection to `url` that signs nothing.
fn raw_channel(url: &Url) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap()
        .connect_lazy()
}

/// A request a coordinator sent: enough to send it again.
#[derive(Clone)]
struct Sent {
    target: Url,
    uri: Uri,
    headers: HeaderMap,
    first_message: Bytes,
}

/// Sits under the signer and keeps a copy of each plan a coordinator sends.
#[derive(Clone)]
struct Recorder {
    target: Url,
    inner: Channel,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl Service<Request<Body>> for Recorder {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let sent = Arc::clone(&self.sent);
        let target = self.target.clone();
        Box::pin(async move {
            if !request.uri().path().ends_with("CoordinatorChannel") {
                return inner.call(request).await;
            }
            let (parts, mut body) = request.into_parts();
            // The signer hands on the bytes it read as one frame: the whole first message.
            let first = body
                .frame()
                .await
                .and_then(|frame| frame.ok()?.into_data().ok())
                .unwrap_or_default();
            sent.lock().unwrap().push(Sent {
                target,
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                first_message: first.clone(),
            });
            let again = futures::stream::once(async move { Ok(http_body::Frame::data(first)) })
                .chain(http_body_util::BodyStream::new(body));
            let body = Body::new(http_body_util::StreamBody::new(again));
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// A coordinator's connections as the tests want them: signed with `key`, recorded.
struct TestChannels {
    key: Arc<ClusterKey>,
    sent: Arc<Mutex<Vec<Sent>>>,
}

#[async_trait]
impl ChannelResolver for TestChannels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        let recorder = Recorder {
            target: url.clone(),
            inner: raw_channel(url),
            sent: Arc::clone(&self.sent),
        };
        let signed = Signed::new(recorder, Arc::clone(&self.key));
        Ok(create_worker_client(BoxCloneSyncChannel::new(signed)))
    }
}

struct Fixed(Vec<Url>);

impl WorkerResolver for Fixed {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.clone())
    }
}

/// A hand-built coordinator, as someone holding the cluster secret could build one: it plans
/// whatever tables it registers, with the settings `scope` and `prices` it chooses.
async fn hand_built_coordinator(
    workers: &[WorkerProcess],
    sent: Arc<Mutex<Vec<Sent>>>,
    scope: &TenantScope,
) -> SessionContext {
    let prices = open(&sample(), &SessionOptions::default())
        .await
        .prices_fingerprint();
    let mut settings = ClusterQuery::default();
    settings.prices = prices;
    settings.set_scope(scope);
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(files_in_subdirectories().with_target_partitions(4))
        .with_distributed_worker_resolver(Fixed(urls(workers)))
        .with_distributed_channel_resolver(TestChannels {
            key: test_key(),
            sent,
        })
        .with_distributed_user_codec(TokenledgerCodec)
        .with_distributed_option_extension(settings)
        .with_distributed_file_scan_config_bytes_per_partition(1)
        .unwrap()
        .with_distributed_planner()
        .build();
    SessionContext::new_with_state(state)
}

/// The rows of `sql`, sorted (a hand-built coordinator lacks tokenledger's planner, whose
/// fix keeps ORDER BY right after shuffles: see `planning.rs`).
async fn answer(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let frame = ctx.sql(sql).await.map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch> = frame.collect().await.map_err(|e| e.to_string())?;
    let mut rows = slt_db::stringify(&batches);
    rows.sort();
    Ok(rows)
}

/// Sends `request` as it was recorded, through a connection that adds nothing; returns the
/// gRPC status code and message of the answer.
async fn send_again(url: &Url, request: &Sent) -> (String, String) {
    let mut channel = raw_channel(url);
    futures::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let mut replay = Request::builder()
        .method("POST")
        .uri(request.uri.clone())
        .body(Body::new(http_body_util::Full::new(
            request.first_message.clone(),
        )))
        .unwrap();
    *replay.headers_mut() = request.headers.clone();
    let response = channel.call(replay).await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (
        header("grpc-status"),
        percent_decoded(&header("grpc-message")),
    )
}

/// gRPC messages travel percent-encoded.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refusal<T>(answer: Result<T, DataFusionError>) -> String {
    match answer {
        Ok(_) => panic!("the worker answered"),
        Err(e) => e.to_string(),
    }
}

fn start_workers(n: usize) -> Vec<WorkerProcess> {
    (0..n)
        .map(|_| WorkerProcess::start(&sample(), &[]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_answers_only_requests_signed_with_the_secret_and_each_once() {
    let workers = start_workers(2);
    let url = &urls(&workers)[0];
    // No credentials.
    let mut unsigned = create_worker_client(BoxCloneSyncChannel::new(raw_channel(url)));
    let error = refusal(unsigned.get_worker_info(GetWorkerInfoRequest {}).await);
    assert!(
        error.contains("not signed with the cluster secret"),
        "{error}"
    );
    // Wrong credentials.
    let wrong =
        Arc::new(ClusterKey::from_secret(b"another cluster's secret, long enough").unwrap());
    let mut forged = create_worker_client(BoxCloneSyncChannel::new(Signed::new(
        raw_channel(url),
        wrong,
    )));
    let error = refusal(forged.get_worker_info(GetWorkerInfoRequest {}).await);
    assert!(
        error.contains("not signed with this cluster's secret"),
        "{error}"
    );
    // The right secret: the worker answers.
    let mut signed = create_worker_client(BoxCloneSyncChannel::new(Signed::new(
        raw_channel(url),
        test_key(),
    )));
    let info = signed
        .get_worker_info(GetWorkerInfoRequest {})
        .await
        .unwrap();
    assert_eq!(info.version, VERSION);

    // A real query through the workers, each plan it sends recorded.
    let sent = Arc::new(Mutex::new(Vec::new()));
    let ctx = hand_built_coordinator(&workers, Arc::clone(&sent), &TenantScope::All).await;
    let spans = repo_root().join("testdata/sample/spans");
    register_files(&ctx, "spans", &spans).await;
    let sql = "SELECT workflow, count(*), sum(input_tokens) FROM spans GROUP BY 1";
    let local = local_spans(&spans).await;
    assert_same_rows(
        sql,
        &answer(&local, sql).await.unwrap(),
        &answer(&ctx, sql).await.unwrap(),
    );
    let sent = sent.lock().unwrap().clone();
    assert!(!sent.is_empty(), "no plan went to a worker");
    for request in &sent {
        let target = &request.target;
        // Replayed as it was: refused before the plan is read.
        let (code, message) = send_again(target, request).await;
        assert_eq!(code, "16", "a replayed plan was accepted: {message}");
        assert!(message.contains("replay"), "{message}");
        // Altered by one byte, the plan's last: the signature no longer fits.
        let mut altered = request.clone();
        let mut bytes = altered.first_message.to_vec();
        let plan_end = 5 + u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        bytes[plan_end - 1] ^= 1;
        altered.first_message = Bytes::from(bytes);
        let (code, message) = send_again(target, &altered).await;
        assert_eq!(code, "16", "an altered plan was accepted: {message}");
        assert!(
            message.contains("not signed with this cluster's secret"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_plan_reads_nothing_outside_the_data_location_or_the_tenant_scope() {
    let workers = start_workers(2);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let ctx = hand_built_coordinator(&workers, Arc::clone(&sent), &TenantScope::All).await;
    // /etc/passwd, as a CSV table.
    let passwd = CsvReadOptions::new()
        .has_header(false)
        .delimiter(b':')
        .file_extension("");
    ctx.register_csv("passwd", "/etc/passwd", passwd)
        .await
        .unwrap();
    let error = answer(&ctx, "SELECT column_1, count(*) FROM passwd GROUP BY 1")
        .await
        .unwrap_err();
    assert!(
        error.contains("outside its data location") && error.contains("etc/passwd"),
        "{error}"
    );
    // Another data location: a copy of the same spans elsewhere.
    let other = tempfile::tempdir().unwrap();
    let spans = repo_root().join("testdata/sample/spans");
    copy_parquet(&spans, other.path());
    register_files(&ctx, "elsewhere", other.path()).await;
    let error = answer(&ctx, "SELECT workflow, count(*) FROM elsewhere GROUP BY 1")
        .await
        .unwrap_err();
    assert!(error.contains("outside its data location"), "{error}");
    assert!(!sent.lock().unwrap().is_empty(), "no plan went to a worker");

    // Tenant scope: the settings say acme-retail, the plan's filter lets every tenant through.
    let local = local_spans(&spans).await;
    let every_tenant: BTreeSet<String> = answer(
        &local,
        "SELECT DISTINCT tenant FROM spans WHERE tenant IS NOT NULL",
    )
    .await
    .unwrap()
    .into_iter()
    .map(|row| row[0].clone())
    .collect();
    assert!(every_tenant.len() > 1, "{every_tenant:?}");
    let acme = TenantScope::only(["acme-retail"]);
    let scoped = hand_built_coordinator(&workers, Arc::new(Mutex::default()), &acme).await;
    register_files(&scoped, "raw", &spans).await;
    let raw = scoped.table_provider("raw").await.unwrap();
    let widened = TenantTable::new(raw, every_tenant, UntenantedRows::Shared).unwrap();
    scoped.register_table("spans", Arc::new(widened)).unwrap();
    let sql = "SELECT tenant, count(*), sum(input_tokens) FROM spans GROUP BY 1";
    let only_acme = answer(
        &local,
        "SELECT tenant, count(*), sum(input_tokens) FROM spans WHERE tenant = 'acme-retail' GROUP BY 1",
    )
    .await
    .unwrap();
    assert_same_rows(sql, &only_acme, &answer(&scoped, sql).await.unwrap());
    // No tenant filter at all: refused.
    let error = answer(&scoped, "SELECT tenant, count(*) FROM raw GROUP BY 1")
        .await
        .unwrap_err();
    assert!(error.contains("without a tenant filter"), "{error}");
}

/// The Parquet files under `dir` as table `name` of `ctx`.
async fn register_files(ctx: &SessionContext, name: &str, dir: &Path) {
    let dir = dir.to_str().unwrap();
    ctx.register_parquet(name, dir, ParquetReadOptions::default())
        .await
        .unwrap();
}

/// A single-node context over `dir`'s spans: the answers the workers must give.
async fn local_spans(dir: &Path) -> SessionContext {
    let local = SessionContext::new_with_config(files_in_subdirectories());
    register_files(&local, "spans", dir).await;
    local
}

/// Tables read as tokenledger lays them out: one directory per workflow.
fn files_in_subdirectories() -> SessionConfig {
    SessionConfig::new().set_bool(
        "datafusion.execution.listing_table_ignore_subdirectory",
        false,
    )
}

/// The Parquet files under `from`, side by side in `to`.
fn copy_parquet(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            copy_parquet(&path, to);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let name = format!(
                "{}-{}",
                to.read_dir().unwrap().count(),
                path.file_name().unwrap().to_str().unwrap()
            );
            std::fs::copy(&path, to.join(name)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_over_tls_answer_coordinators_that_trust_their_authority() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_test_certificates(dir.path());
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    let tls = ["--tls-cert", cert, "--tls-key", key, "--worker-ca", ca];
    let workers: Vec<WorkerProcess> = (0..2)
        .map(|_| WorkerProcess::start_with(&sample(), &tls, &[]).unwrap())
        .collect();
    let listed = urls(&workers);
    assert!(
        listed.iter().all(|url| url.scheme() == "https"),
        "{listed:?}"
    );
    // Trusting the workers' authority: the answers of one node, worker to worker included.
    let trusting = ClusterSecurity {
        worker_ca: Some(std::fs::read(ca).unwrap()),
        ..test_security()
    };
    let cluster = Cluster::connect(listed.clone(), Startup::AllWorkers, trusting)
        .await
        .unwrap();
    let options = SessionOptions {
        distribution: Some(cluster.distribution(1)),
        ..SessionOptions::default()
    };
    let sql = "SELECT workflow, model, count(*), sum(output_tokens) FROM spans GROUP BY 1, 2 ORDER BY 1, 2";
    let single = open(&sample(), &SessionOptions::default()).await;
    let through_tls = open(&sample(), &options).await;
    assert_same_rows(
        sql,
        &rows(&single, sql).await.unwrap(),
        &rows(&through_tls, sql).await.unwrap(),
    );
    // Without the authority, https cannot be checked: refused before connecting.
    let error = Cluster::connect(listed.clone(), Startup::AllWorkers, test_security())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("--worker-ca"), "{error}");
    // Plain gRPC to a TLS port: no answer.
    let plain: Vec<Url> = listed
        .iter()
        .map(|url| Url::parse(&url.as_str().replace("https://", "http://")).unwrap())
        .collect();
    assert!(
        Cluster::connect(plain, Startup::AllWorkers, test_security())
            .await
            .is_err()
    );
}

#[test]
fn a_worker_refuses_to_start_without_a_secret_or_in_plain_text_off_loopback() {
    let data = sample();
    let secret = [("TOKENLEDGER_CLUSTER_SECRET", TEST_CLUSTER_SECRET)];
    let refused = |args: &[&str], env: &[(&str, &str)]| -> String {
        let mut all = vec!["worker", "--data", data.as_str()];
        all.extend_from_slice(args);
        let output = tokenledger(&all, env);
        assert!(!output.status.success(), "worker started with {args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let error = refused(&["--listen", "127.0.0.1:0"], &[]);
    assert!(error.contains("shared secret"), "{error}");
    let error = refused(
        &["--listen", "127.0.0.1:0"],
        &[("TOKENLEDGER_CLUSTER_SECRET", "short")],
    );
    assert!(error.contains("at least 32"), "{error}");
    let error = refused(&["--listen", "0.0.0.0:0"], &secret);
    assert!(
        error.contains("--tls-cert") && error.contains("unencrypted"),
        "{error}"
    );
    // A secret file others may read.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, TEST_CLUSTER_SECRET).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = refused(
        &[
            "--listen",
            "127.0.0.1:0",
            "--cluster-secret-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(error.contains("chmod 600"), "{error}");
    // The secret never appears in what the worker says.
    assert!(!error.contains(TEST_CLUSTER_SECRET), "{error}");
}
