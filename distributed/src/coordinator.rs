//! The coordinator's side: which workers there are, which answer, and how a session plans for
//! them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::{DataFusionError, exec_datafusion_err, exec_err};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{
    ChannelResolver, CoordinatorToWorkerMsg, DistributedConfig, DistributedExt, ExecuteTaskRequest,
    GetWorkerInfoRequest, GetWorkerInfoResponse, SessionStateBuilderExt, SetPlanRequest,
    WorkerChannel, WorkerResolver, WorkerToCoordinatorMsg,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokenledger_engine::cluster::{ClusterQuery, Distribution};
use tokio::sync::watch;
use tonic::codegen::http::HeaderMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use url::Url;

use crate::VERSION;
use crate::codec::TokenledgerCodec;
use crate::error::{DistributedError, Result};
use crate::planning::{TokenledgerPlanner, split_file_scan};
use crate::security::{ClusterSecurity, Signed};

/// The fewest partitions a coordinator plans with (see [`Coordinator::coordinate`]).
const MIN_PARTITIONS: usize = 2;
/// How long a worker may take to accept a connection or answer a health check.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the coordinator asks every worker whether it is there.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// HTTP/2 pings on open connections: a worker whose host vanished (no TCP reset) fails its
/// queries after about this long instead of leaving them waiting.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Health checks a worker must refuse in a row (no connection, an error) before the queries
/// reading from it are failed; one already keeps it out of new queries. A check it does not
/// answer in time only keeps it out of new queries: a worker busy with a large query may
/// answer late, and a host that vanished is caught by the connection's pings ([`KEEPALIVE`]).
const DEAD_AFTER_FAILED_CHECKS: u32 = 2;

/// What a coordinator does about workers that do not answer when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Refuse to start: every worker must answer (one-shot commands).
    AllWorkers,
    /// Start, and leave them out until they answer (servers).
    Tolerant,
}

/// The workers a coordinator sends tasks to. Queries go to the workers that answered the last
/// health check (every second); one that stops answering is left out of the next queries, and
/// comes back when it answers again.
pub struct Cluster {
    workers: Vec<Url>,
    /// Each worker's last health check, in the order of `workers`.
    health: RwLock<Vec<Health>>,
    channels: Channels,
    /// Stops the health checks when the cluster is dropped.
    _watcher: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Parses worker addresses (`host:port` or `http://host:port`), as `--workers` takes them.
    pub fn parse_addresses(addresses: &[String]) -> Result<Vec<Url>> {
        addresses
            .iter()
            .map(|address| address.trim())
            .filter(|address| !address.is_empty())
            .map(|address| {
                let text = if address.contains("://") {
                    address.to_string()
                } else {
                    format!("http://{address}")
                };
                let invalid = |reason: String| DistributedError::InvalidAddress {
                    address: address.to_string(),
                    reason,
                };
                let url = Url::parse(&text).map_err(|e| invalid(e.to_string()))?;
                if url.scheme() != "http" && url.scheme() != "https" {
                    return Err(invalid(format!(
                        "scheme {} (workers speak gRPC: http, or https with TLS)",
                        url.scheme()
                    )));
                }
                if url.port().is_none() {
                    return Err(invalid("no port".to_string()));
                }
                Ok(url)
            })
            .collect()
    }

    /// Connects to `workers` and checks that each runs this build, then keeps checking every
    /// second. A worker of another version is refused. One that does not answer is refused
    /// too with [`Startup::AllWorkers`] (one-shot commands); with [`Startup::Tolerant`] (a
    /// server) it is logged and left out until it answers. Every request is signed with
    /// `security`'s secret; `http://` workers off loopback are refused unless it allows
    /// plain text, and `https://` ones need its certificate authority.
    pub async fn connect(
        workers: Vec<Url>,
        startup: Startup,
        security: ClusterSecurity,
    ) -> Result<Arc<Cluster>> {
        for url in &workers {
            check_transport(url, &security)?;
        }
        let channels = Channels::new(security);
        let checks = workers.iter().map(|url| channels.check(url));
        let answers = futures::future::join_all(checks).await;
        let mut health = Vec::with_capacity(workers.len());
        for (url, answer) in workers.iter().zip(answers) {
            match answer {
                Ok(()) => health.push(Health::default()),
                Err(check @ (Check::Unreachable(_) | Check::Slow)) => {
                    if startup == Startup::AllWorkers {
                        return Err(DistributedError::Unreachable {
                            url: url.to_string(),
                            reason: check.reason(),
                        });
                    }
                    let reason = check.to_string();
                    tracing::warn!(worker = %url, %reason, "worker left out until it answers");
                    let mut left_out = Health::default();
                    left_out.record(Err(check));
                    health.push(left_out);
                }
                Err(Check::Version(theirs)) => {
                    return Err(DistributedError::VersionMismatch {
                        url: url.to_string(),
                        theirs,
                        ours: VERSION.to_string(),
                    });
                }
            }
        }
        let cluster = Arc::new_cyclic(|weak: &Weak<Cluster>| Cluster {
            health: RwLock::new(health),
            workers,
            channels,
            _watcher: tokio::spawn(check_health(weak.clone())),
        });
        Ok(cluster)
    }

    /// The workers, as configured.
    pub fn workers(&self) -> &[Url] {
        &self.workers
    }

    /// What makes a session this cluster's coordinator (for
    /// [`tokenledger_engine::SessionOptions`]). A Parquet scan gets one task per
    /// `partition_bytes × target_partitions` bytes, up to one per worker: the larger, the fewer
    /// workers a small table is spread over.
    pub fn distribution(self: &Arc<Self>, partition_bytes: usize) -> Arc<dyn Distribution> {
        Arc::new(Coordinator {
            cluster: Arc::clone(self),
            partition_bytes: partition_bytes.max(1),
        })
    }

    /// The workers that answered the last health check with this build: the ones new queries
    /// are planned for.
    pub fn answering(&self) -> Vec<Url> {
        let health = self.health.read().expect("health lock");
        self.workers
            .iter()
            .zip(health.iter())
            .filter(|(_, h)| h.state.is_ok())
            .map(|(url, _)| url.clone())
            .collect()
    }

    /// [`Cluster::answering`], or an error naming every worker and why when none does.
    fn live_workers(&self) -> std::result::Result<Vec<Url>, DataFusionError> {
        let live = self.answering();
        if live.is_empty() {
            let health = self.health.read().expect("health lock");
            let why: Vec<String> = self
                .workers
                .iter()
                .zip(health.iter())
                .map(|(url, h)| format!("{url} ({})", h.state.as_ref().err().map_or("?", |e| e)))
                .collect();
            return exec_err!("no worker of the cluster answers: {}", why.join(", "));
        }
        Ok(live)
    }
}

/// Refuses a worker the traffic would reach in plain text off loopback, or over TLS without a
/// certificate authority to check it against.
fn check_transport(url: &Url, security: &ClusterSecurity) -> Result<()> {
    let refuse = |reason: &str| Err(DistributedError::Tls(format!("worker {url}: {reason}")));
    match url.scheme() {
        "https" if security.worker_ca.is_none() => refuse(
            "https needs --worker-ca, the PEM certificate of the authority that signed the \
             workers' certificates",
        ),
        "http" if !is_loopback(url) && !security.allow_plaintext => refuse(
            "every tenant's rows would cross the network unencrypted; give the workers \
             --tls-cert/--tls-key and list them as https://…, or pass \
             --allow-plaintext-workers on a network nobody else can read",
        ),
        _ => Ok(()),
    }
}

/// Whether `url` names this machine.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks every worker each [`WATCH_INTERVAL`] while the cluster exists, logging changes.
async fn check_health(cluster: Weak<Cluster>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let checks = cluster
            .workers
            .iter()
            .map(|url| cluster.channels.check(url));
        let answers = futures::future::join_all(checks).await;
        let mut health = cluster.health.write().expect("health lock");
        for ((url, was), answer) in cluster.workers.iter().zip(health.iter_mut()).zip(answers) {
            match (&was.state, &answer) {
                (Ok(()), Err(check)) => {
                    tracing::warn!(worker = %url, reason = %check, "worker left out of queries")
                }
                (Err(_), Ok(())) => tracing::info!(worker = %url, "worker answers again"),
                _ => {}
            }
            was.record(answer);
            // Its running queries fail now rather than when they next read from it.
            cluster.channels.set_alive(url, was.alive());
        }
    }
}

/// A worker's last health check.
#[derive(Clone)]
struct Health {
    /// `Ok` when it answered with our version; why not otherwise.
    state: std::result::Result<(), String>,
    /// Checks in a row it refused or failed (not answering in time does not count).
    failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            state: Ok(()),
            failures: 0,
        }
    }
}

impl Health {
    fn record(&mut self, answer: std::result::Result<(), Check>) {
        match &answer {
            Ok(()) => self.failures = 0,
            Err(Check::Slow) => {}
            Err(_) => self.failures += 1,
        }
        self.state = answer.map_err(|check| check.to_string());
    }

    /// Whether the queries reading from it may go on (see [`DEAD_AFTER_FAILED_CHECKS`]).
    fn alive(&self) -> bool {
        self.failures < DEAD_AFTER_FAILED_CHECKS
    }
}

/// Why a worker failed its check.
enum Check {
    /// No connection, or an error answer.
    Unreachable(String),
    /// No answer within [`CONNECT_TIMEOUT`]: maybe only busy.
    Slow,
    /// It answered with another build's version.
    Version(String),
}

impl Check {
    /// The reason, without the "does not answer" the variants share.
    fn reason(&self) -> String {
        match self {
            Check::Unreachable(reason) => reason.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Unreachable(reason) => write!(f, "does not answer: {reason}"),
            Check::Slow => write!(f, "no answer within {CONNECT_TIMEOUT:?}"),
            Check::Version(theirs) => write!(f, "runs tokenledger {theirs}, not {VERSION}"),
        }
    }
}

/// gRPC connections to the workers, one per worker, reused by every query and the health
/// checks. Unlike datafusion-distributed's default, connecting has a timeout, open
/// connections are pinged, and the health checks can fail a dead worker's streams: a worker
/// that vanishes fails the queries reading from it within seconds. Every request is signed
/// ([`crate::security`]); `https://` workers are reached over TLS.
#[derive(Clone)]
pub(crate) struct Channels {
    links: Arc<Mutex<HashMap<Url, Link>>>,
    security: ClusterSecurity,
}

/// The connection to one worker, and whether the health checks think it is alive.
struct Link {
    channel: Channel,
    alive: watch::Sender<bool>,
}

impl Channels {
    pub(crate) fn new(security: ClusterSecurity) -> Self {
        Channels {
            links: Arc::default(),
            security,
        }
    }

    /// Records what the health checks concluded about `url`.
    fn set_alive(&self, url: &Url, alive: bool) {
        if let Some(link) = self.links.lock().expect("channels lock").get(url) {
            link.alive
                .send_if_modified(|was| std::mem::replace(was, alive) != alive);
        }
    }

    /// The channel to `url`, and a view of its liveness.
    fn channel(
        &self,
        url: &Url,
    ) -> std::result::Result<(BoxCloneSyncChannel, watch::Receiver<bool>), DataFusionError> {
        let mut channels = self.links.lock().expect("channels lock");
        if let Some(link) = channels.get(url) {
            return Ok((self.signed(&link.channel), link.alive.subscribe()));
        }
        let invalid =
            |e: &dyn fmt::Display| DataFusionError::Configuration(format!("worker URL {url}: {e}"));
        let mut endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| invalid(&e))?;
        if url.scheme() == "https" {
            let ca = self.security.worker_ca.as_deref().unwrap_or_default();
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            endpoint = endpoint.tls_config(tls).map_err(|e| invalid(&e))?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        // Lazy: connects on first use and reconnects after a failure by itself.
        let channel = endpoint.connect_lazy();
        let (alive, watching) = watch::channel(true);
        let link = Link {
            channel: channel.clone(),
            alive,
        };
        channels.insert(url.clone(), link);
        Ok((self.signed(&channel), watching))
    }

    /// `channel` with every request signed.
    fn signed(&self, channel: &Channel) -> BoxCloneSyncChannel {
        let key = Arc::clone(&self.security.key);
        BoxCloneSyncChannel::new(Signed::new(channel.clone(), key))
    }

    async fn check(&self, url: &Url) -> std::result::Result<(), Check> {
        let (channel, _) = self
            .channel(url)
            .map_err(|e| Check::Unreachable(e.to_string()))?;
        let mut client = create_worker_client(channel);
        let info = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.get_worker_info(GetWorkerInfoRequest {}),
        )
        .await
        .map_err(|_| Check::Slow)?
        .map_err(|e| Check::Unreachable(first_line(&e.find_root().to_string())))?;
        if info.version != VERSION {
            return Err(Check::Version(info.version));
        }
        Ok(())
    }
}

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> std::result::Result<Box<dyn WorkerChannel>, DataFusionError> {
        let (channel, alive) = self.channel(url)?;
        Ok(Box::new(NamedWorker {
            url: url.clone(),
            inner: create_worker_client(channel),
            alive,
        }))
    }
}

/// A worker's client whose errors say which worker they came from (a connection broken by a
/// worker's death otherwise reads only "h2 protocol error"), and whose streams fail as soon
/// as the health checks find the worker dead, not when the query next reads from it. The
/// error inside is kept as it was (its kind still decides how front ends report it).
struct NamedWorker {
    url: Url,
    inner: Box<dyn WorkerChannel>,
    alive: watch::Receiver<bool>,
}

impl NamedWorker {
    fn name(url: &Url) -> impl Fn(DataFusionError) -> DataFusionError + Clone + Send + use<> {
        let url = url.clone();
        move |e| DataFusionError::Context(format!("worker {url}"), Box::new(e))
    }

    /// `stream`, named, and ended with an error when the worker is found dead.
    fn watched<T: Send + 'static>(
        &self,
        stream: BoxStream<'static, std::result::Result<T, DataFusionError>>,
    ) -> BoxStream<'static, std::result::Result<T, DataFusionError>> {
        let state = Some((stream, self.alive.clone()));
        futures::stream::unfold(state, |state| async move {
            let (mut stream, mut alive) = state?;
            let died = async {
                // A dropped sender (the cluster is gone) is not a death.
                if alive.wait_for(|alive| !*alive).await.is_err() {
                    futures::future::pending::<()>().await;
                }
            };
            let dead = tokio::select! {
                biased;
                item = stream.next() => Err(item),
                () = died => Ok(()),
            };
            match dead {
                Err(item) => item.map(|item| (item, Some((stream, alive)))),
                Ok(()) => Some((
                    Err(exec_datafusion_err!(
                        "stopped answering its health checks while the query read from it"
                    )),
                    None,
                )),
            }
        })
        .map_err(Self::name(&self.url))
        .boxed()
    }
}

#[async_trait]
impl WorkerChannel for NamedWorker {
    async fn coordinator_channel(
        &mut self,
        headers: HeaderMap,
        set_plan_request: SetPlanRequest,
        c2w_stream: BoxStream<'static, CoordinatorToWorkerMsg>,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> std::result::Result<
        BoxStream<'static, std::result::Result<WorkerToCoordinatorMsg, DataFusionError>>,
        DataFusionError,
    > {
        let stream = self
            .inner
            .coordinator_channel(headers, set_plan_request, c2w_stream, metrics, task_ctx)
            .await
            .map_err(Self::name(&self.url))?;
        Ok(self.watched(stream))
    }

    async fn execute_task(
        &mut self,
        headers: HeaderMap,
        request: ExecuteTaskRequest,
        metrics: ExecutionPlanMetricsSet,
        task_ctx: &Arc<TaskContext>,
    ) -> std::result::Result<
        Vec<BoxStream<'static, std::result::Result<RecordBatch, DataFusionError>>>,
        DataFusionError,
    > {
        let streams = self
            .inner
            .execute_task(headers, request, metrics, task_ctx)
            .await
            .map_err(Self::name(&self.url))?;
        Ok(streams
            .into_iter()
            .map(|stream| self.watched(stream))
            .collect())
    }

    async fn get_worker_info(
        &mut self,
        request: GetWorkerInfoRequest,
    ) -> std::result::Result<GetWorkerInfoResponse, DataFusionError> {
        self.inner
            .get_worker_info(request)
            .await
            .map_err(Self::name(&self.url))
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// The workers datafusion-distributed may plan tasks for: those that answer.
struct LiveWorkers(Arc<Cluster>);

impl WorkerResolver for LiveWorkers {
    fn get_urls(&self) -> std::result::Result<Vec<Url>, DataFusionError> {
        self.0.live_workers()
    }
}

/// Makes a session's contexts coordinators of the cluster.
#[derive(Debug)]
struct Coordinator {
    cluster: Arc<Cluster>,
    partition_bytes: usize,
}

impl Distribution for Coordinator {
    fn coordinate(&self, state: SessionStateBuilder) -> SessionStateBuilder {
        let mut state = state
            .with_distributed_worker_resolver(LiveWorkers(Arc::clone(&self.cluster)))
            .with_distributed_channel_resolver(self.cluster.channels.clone())
            .with_distributed_user_codec(TokenledgerCodec)
            .with_distributed_option_extension(ClusterQuery::default())
            .with_distributed_scale_up_leaf_node_handler(split_file_scan)
            .with_distributed_planner();
        if let Some(config) = state.config().as_mut() {
            let options = config.options_mut();
            if let Some(distributed) = options.extensions.get_mut::<DistributedConfig>() {
                distributed.file_scan_config_bytes_per_partition = self.partition_bytes;
            }
            // A plan of one partition has no repartition to cut into stages, so a coordinator
            // on one core would run everything itself. Tasks run with this many partitions.
            let partitions = &mut options.execution.target_partitions;
            *partitions = (*partitions).max(MIN_PARTITIONS);
        }
        match state.query_planner().take() {
            Some(inner) => state.with_query_planner(Arc::new(TokenledgerPlanner { inner })),
            None => state,
        }
    }
}
