//! The path of an accepted request: mapped, spooled and synced (group commit: one sync for all
//! requests waiting), acknowledged, then written as Parquet with the rest of its segment when the
//! segment is full or old enough.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use prost::Message;
use tokenledger_engine::DataLocation;
use tokenledger_engine::integrity::{Policy, Rule};
use tokenledger_engine::schema::{OUTCOMES, REJECTED_SPANS, SPANS};
use tokenledger_engine::storage::writer::{
    ParquetFileBuilder, checked_spans_properties, put_file, writer_properties,
};
use tokio::sync::oneshot;

use crate::auth::Exporter;
use crate::decode::Decoded;
use crate::error::{IngestError, Result};
use crate::map::{Mapped, map_request};
use crate::records::{outcomes_batch, rejected_batch, sorted, spans_batch};
use crate::spool::{SegmentWriter, list_segments, read_segment, remove_segment};
use crate::tenants;

/// When a segment becomes Parquet, and how much may wait.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Where accepted requests are spooled (a local directory; created if missing).
    pub spool_dir: PathBuf,
    /// A segment is written out once it holds this many rows…
    pub flush_rows: usize,
    /// …or this many bytes of requests…
    pub flush_bytes: u64,
    /// …or is this old.
    pub flush_age: Duration,
    /// Rows accepted but not yet in Parquet above which requests are refused (503 / UNAVAILABLE,
    /// which exporters retry).
    pub max_pending_rows: usize,
}

impl IngestOptions {
    /// Defaults, spooling into `spool_dir`.
    pub fn new(spool_dir: PathBuf) -> Self {
        IngestOptions {
            spool_dir,
            flush_rows: 200_000,
            flush_bytes: 64 * 1024 * 1024,
            flush_age: Duration::from_secs(2),
            max_pending_rows: 2_000_000,
        }
    }

    /// The spool directory for a local data location: a hidden folder beside the tables.
    pub fn local_spool_dir(location: &DataLocation) -> Option<PathBuf> {
        match location {
            DataLocation::Local(dir) => Some(dir.join("_ingest").join("spool")),
            DataLocation::S3 { .. } => None,
        }
    }
}

/// What happened to one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Accepted {
    /// Spans stored (span and outcome rows).
    pub rows: usize,
    /// Spans refused one by one, with why (OTLP partial success).
    pub rejected: Vec<String>,
    /// The rule each refused span broke, in the same order.
    pub rules: Vec<Rule>,
}

/// Refused spans named one by one in a partial-success message; the rest are counted.
const NAMED_IN_MESSAGE: usize = 10;

impl Accepted {
    /// OTLP's partial-success answer: how many spans were refused, how many under each rule,
    /// and the first few by name with what was wrong (all of them are in `rejected_spans`).
    pub fn partial_success(&self) -> Option<ExportTracePartialSuccess> {
        if self.rejected.is_empty() {
            return None;
        }
        let mut by_rule: Vec<(Rule, usize)> = Vec::new();
        for rule in &self.rules {
            match by_rule.iter_mut().find(|(r, _)| r == rule) {
                Some((_, count)) => *count += 1,
                None => by_rule.push((*rule, 1)),
            }
        }
        let counts: Vec<String> = by_rule.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        let mut message = format!(
            "{} spans rejected ({}); the others were stored. ",
            self.rejected.len(),
            counts.join(", ")
        );
        message.push_str(&self.rejected[..self.rejected.len().min(NAMED_IN_MESSAGE)].join("; "));
        if self.rejected.len() > NAMED_IN_MESSAGE {
            message.push_str(&format!(
                "; and {} more (see the rejected_spans table)",
                self.rejected.len() - NAMED_IN_MESSAGE
            ));
        }
        Some(ExportTracePartialSuccess {
            rejected_spans: self.rejected.len() as i64,
            error_message: message,
        })
    }
}

/// One request for the spool thread.
struct Job {
    payload: Bytes,
    rows: Rows,
    done: oneshot::Sender<std::io::Result<()>>,
}

/// A segment ready to be written as Parquet.
struct Sealed {
    id: String,
    path: PathBuf,
    rows: Rows,
}

/// Rows of `spans`, `outcomes` and `rejected_spans`, as batches (each batch owns its strings: a
/// request's own allocations are freed once it is mapped).
#[derive(Default)]
struct Rows {
    spans: Vec<RecordBatch>,
    outcomes: Vec<RecordBatch>,
    rejected: Vec<RecordBatch>,
}

impl Rows {
    /// The rows of one mapped request, received at `received_at` (micros).
    fn of(mapped: &Mapped, received_at: i64) -> Result<Self> {
        let mut rows = Rows::default();
        if !mapped.spans.is_empty() {
            rows.spans.push(spans_batch(&mapped.spans)?);
        }
        if !mapped.outcomes.is_empty() {
            rows.outcomes.push(outcomes_batch(&mapped.outcomes)?);
        }
        if !mapped.rejected.is_empty() {
            rows.rejected
                .push(rejected_batch(&mapped.rejected, received_at, "otlp")?);
        }
        Ok(rows)
    }

    fn rejected_count(&self) -> usize {
        self.rejected.iter().map(RecordBatch::num_rows).sum()
    }

    fn span_count(&self) -> usize {
        self.spans.iter().map(RecordBatch::num_rows).sum()
    }

    fn outcome_count(&self) -> usize {
        self.outcomes.iter().map(RecordBatch::num_rows).sum()
    }

    /// Rows of every table, refused spans included: what waits for Parquet.
    fn len(&self) -> usize {
        self.span_count() + self.outcome_count() + self.rejected_count()
    }

    fn extend(&mut self, other: Rows) {
        self.spans.extend(other.spans);
        self.outcomes.extend(other.outcomes);
        self.rejected.extend(other.rejected);
    }
}

/// The receiver's shared state: the way into the spool, the count of rows not yet in Parquet,
/// and what it has counted.
#[derive(Clone)]
pub struct Ingestor {
    jobs: SyncSender<Job>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
    counters: Arc<Counters>,
}

/// What the receiver counts, shown at `GET /metrics` on the OTLP/HTTP port in Prometheus' text
/// format. Only counts: no user or tenant names.
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans and outcomes stored.
    pub rows_accepted: AtomicU64,
    /// Spans left out of an accepted request, each named in its partial-success answer.
    pub spans_rejected: AtomicU64,
    /// Requests refused because they named tenants their exporter may not write.
    pub requests_refused_tenant: AtomicU64,
    /// Requests refused for wrong credentials or a lockout.
    pub requests_refused_login: AtomicU64,
}

impl Counters {
    /// Counts a request that failed to authenticate, when its credentials were the reason
    /// (wrong, or locked out; not a busy receiver).
    pub fn count_login_refusal(&self, error: &IngestError) {
        if matches!(
            error,
            IngestError::Unauthenticated(_) | IngestError::LockedOut { .. }
        ) {
            self.requests_refused_login.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters in Prometheus' text exposition format.
    pub fn exposition(&self) -> String {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "# HELP tokenledger_otlp_rows_accepted_total Spans and outcomes stored.\n\
             # TYPE tokenledger_otlp_rows_accepted_total counter\n\
             tokenledger_otlp_rows_accepted_total {}\n\
             # HELP tokenledger_otlp_spans_rejected_total Spans refused alone (partial success).\n\
             # TYPE tokenledger_otlp_spans_rejected_total counter\n\
             tokenledger_otlp_spans_rejected_total {}\n\
             # HELP tokenledger_otlp_requests_refused_total Requests refused whole, by reason.\n\
             # TYPE tokenledger_otlp_requests_refused_total counter\n\
             tokenledger_otlp_requests_refused_total{{reason=\"tenant\"}} {}\n\
             tokenledger_otlp_requests_refused_total{{reason=\"login\"}} {}\n",
            read(&self.rows_accepted),
            read(&self.spans_rejected),
            read(&self.requests_refused_tenant),
            read(&self.requests_refused_login),
        )
    }
}

impl Ingestor {
    /// Starts the spool thread and the writer task (on the current Tokio runtime) over
    /// `location`, first turning any segments a previous run left into Parquet.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        location: DataLocation,
        options: IngestOptions,
    ) -> Result<Self> {
        std::fs::create_dir_all(&options.spool_dir).map_err(|e| IngestError::Spool {
            path: options.spool_dir.display().to_string(),
            source: e,
        })?;
        let pending = Arc::new(AtomicUsize::new(0));
        let (sealed_tx, sealed_rx) = tokio::sync::mpsc::unbounded_channel();
        for (id, path) in list_segments(&options.spool_dir).map_err(|e| IngestError::Spool {
            path: options.spool_dir.display().to_string(),
            source: e,
        })? {
            let segment = replay(&id, path)?;
            pending.fetch_add(segment.rows(), Ordering::SeqCst);
            let _ = sealed_tx.send(segment);
        }
        tokio::spawn(write_segments(
            store,
            location,
            sealed_rx,
            Arc::clone(&pending),
        ));
        // Enough queued requests for a group commit to gather many; more wait in the caller.
        let (jobs, job_rx) = mpsc::sync_channel(1024);
        let spool = Spooler {
            options: options.clone(),
            sealed: sealed_tx,
            segment: None,
        };
        std::thread::Builder::new()
            .name("otlp-spool".into())
            .spawn(move || spool.run(job_rx))
            .map_err(|e| IngestError::Spool {
                path: options.spool_dir.display().to_string(),
                source: e,
            })?;
        Ok(Ingestor {
            jobs,
            pending,
            max_pending: options.max_pending_rows,
            counters: Arc::default(),
        })
    }

    /// What this receiver has counted.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Maps a decoded request, checking each span against the validation policy (refused spans
    /// go to `rejected_spans`, the others are stored), checks its tenants against what `writer`
    /// may write ([`tenants::bind`]), spools it and returns once it is durable. Refused with
    /// [`IngestError::Busy`] while too many rows wait for Parquet, and with
    /// [`IngestError::Forbidden`], storing nothing, when it names a tenant not the writer's.
    pub async fn accept(&self, decoded: Decoded, writer: &Exporter) -> Result<Accepted> {
        let Decoded {
            request,
            payload,
            undecodable,
        } = decoded;
        let mut mapped = map_request(&request, &Policy::now());
        mapped.rejected.extend(undecodable);
        let filled = match tenants::bind(&mut mapped, writer) {
            Ok(filled) => filled,
            Err(refusal) => {
                self.counters
                    .requests_refused_tenant
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user = %writer.user, reason = %refusal, "OTLP request refused");
                return Err(refusal);
            }
        };
        let payload = tenants::envelope(filled.as_deref(), payload);
        let batches = Rows::of(&mapped, chrono::Utc::now().timestamp_micros())?;
        let rows = batches.len();
        for rejected in &mapped.rejected {
            tracing::warn!(reason = %rejected.reason(), "span rejected");
        }
        let accepted = Accepted {
            rows: batches.span_count() + batches.outcome_count(),
            rejected: mapped.rejected.iter().map(|r| r.reason()).collect(),
            rules: mapped.rejected.iter().map(|r| r.violation.rule).collect(),
        };
        if rows == 0 {
            self.counters
                .spans_rejected
                .fetch_add(accepted.rejected.len() as u64, Ordering::Relaxed);
            return Ok(accepted);
        }
        let waiting = self.pending.fetch_add(rows, Ordering::SeqCst);
        if waiting + rows > self.max_pending && waiting > 0 {
            self.pending.fetch_sub(rows, Ordering::SeqCst);
            return Err(IngestError::Busy);
        }
        let (done, synced) = oneshot::channel();
        let job = Job {
            payload,
            rows: batches,
            done,
        };
        // The queue is bounded: a full one is waited on from a blocking thread, never from a
        // Tokio worker.
        let queued = match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(job)) => {
                let sender = self.jobs.clone();
                tokio::task::spawn_blocking(move || sender.send(job).is_ok())
                    .await
                    .unwrap_or(false)
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        };
        let result = if queued {
            synced
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the spool thread stopped")))
        } else {
            Err(std::io::Error::other("the spool thread stopped"))
        };
        match result {
            Ok(()) => {
                let counters = &self.counters;
                counters
                    .rows_accepted
                    .fetch_add(accepted.rows as u64, Ordering::Relaxed);
                counters
                    .spans_rejected
                    .fetch_add(accepted.rejected.len() as u64, Ordering::Relaxed);
                Ok(accepted)
            }
            Err(e) => {
                self.pending.fetch_sub(rows, Ordering::SeqCst);
                Err(IngestError::Spool {
                    path: "spool".into(),
                    source: e,
                })
            }
        }
    }
}

/// The spool thread's state: the open segment and the rows it holds.
struct Spooler {
    options: IngestOptions,
    sealed: tokio::sync::mpsc::UnboundedSender<Sealed>,
    segment: Option<OpenSegment>,
}

struct OpenSegment {
    writer: SegmentWriter,
    opened: Instant,
    rows: Rows,
}

impl Spooler {
    fn run(mut self, jobs: Receiver<Job>) {
        loop {
            let wait = self
                .segment
                .as_ref()
                .map_or(Duration::from_secs(3600), |s| {
                    self.options.flush_age.saturating_sub(s.opened.elapsed())
                });
            let first = match jobs.recv_timeout(wait) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.seal();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.seal();
                    return;
                }
            };
            // Group commit: everything queued meanwhile shares this sync.
            let mut batch = vec![first];
            while let Ok(job) = jobs.try_recv() {
                batch.push(job);
            }
            self.commit(batch);
            let full = self.segment.as_ref().is_some_and(|s| {
                s.rows.len() >= self.options.flush_rows
                    || s.writer.len() >= self.options.flush_bytes
                    || s.opened.elapsed() >= self.options.flush_age
            });
            if full {
                self.seal();
            }
        }
    }

    /// Appends and syncs `batch`, then acknowledges each request.
    fn commit(&mut self, batch: Vec<Job>) {
        let written = self.open().and_then(|segment| {
            for job in &batch {
                if let Err(e) = segment.writer.append(&job.payload) {
                    segment.writer.discard_unsynced();
                    return Err(e);
                }
            }
            segment.writer.sync().map(|()| segment)
        });
        match written {
            Ok(segment) => {
                for job in batch {
                    segment.rows.extend(job.rows);
                    let _ = job.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; requests refused");
                for job in batch {
                    let _ = job
                        .done
                        .send(Err(std::io::Error::new(e.kind(), e.to_string())));
                }
                // A fresh segment for what comes next.
                self.seal();
            }
        }
    }

    fn open(&mut self) -> std::io::Result<&mut OpenSegment> {
        if self.segment.is_none() {
            let writer = SegmentWriter::create(&self.options.spool_dir, &segment_id())?;
            self.segment = Some(OpenSegment {
                writer,
                opened: Instant::now(),
                rows: Rows::default(),
            });
        }
        Ok(self.segment.as_mut().expect("opened above"))
    }

    /// Hands the open segment to the writer task.
    fn seal(&mut self) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        let sealed = Sealed {
            id: segment.writer.id().to_string(),
            path: segment.writer.path().to_path_buf(),
            rows: segment.rows,
        };
        let _ = self.sealed.send(sealed);
    }
}

/// A new segment id: creation time in milliseconds (so ids sort by age), then randomness (so two
/// receivers sharing a location never pick the same name).
fn segment_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{millis:013}-{:016x}", rand::random::<u64>())
}

impl Sealed {
    fn rows(&self) -> usize {
        self.rows.len()
    }
}

/// A segment a previous run left: its requests mapped again (mapping is deterministic, so the
/// rows, and the files, are the ones that run would have written).
fn replay(id: &str, path: PathBuf) -> Result<Sealed> {
    let records = read_segment(&path).map_err(|e| IngestError::Spool {
        path: path.display().to_string(),
        source: e,
    })?;
    let mut sealed = Sealed {
        id: id.to_string(),
        path,
        rows: Rows::default(),
    };
    for record in records {
        let (filled, record) = tenants::open_envelope(record);
        match ExportTraceServiceRequest::decode(record) {
            Ok(request) => {
                let mut mapped = map_request(&request, &Policy::now());
                if let Some(tenant) = &filled {
                    tenants::fill(&mut mapped, tenant);
                }
                sealed.rows.extend(Rows::of(&mapped, segment_micros(id))?);
            }
            Err(e) => tracing::error!(segment = id, error = %e, "undecodable spool record skipped"),
        }
    }
    tracing::info!(
        segment = id,
        spans = sealed.rows.span_count(),
        outcomes = sealed.rows.outcome_count(),
        "replaying spool segment"
    );
    Ok(sealed)
}

/// Writes sealed segments as Parquet, in order, retrying a failed store until it works (rows
/// wait in the spool meanwhile; new requests are refused once too many wait).
async fn write_segments(
    store: Arc<dyn ObjectStore>,
    location: DataLocation,
    mut sealed: tokio::sync::mpsc::UnboundedReceiver<Sealed>,
    pending: Arc<AtomicUsize>,
) {
    while let Some(segment) = sealed.recv().await {
        let rows = segment.rows();
        let id = segment.id.clone();
        let location_for_encoding = location.clone();
        let encoded =
            tokio::task::spawn_blocking(move || encode_segment(&location_for_encoding, segment))
                .await
                .map_err(|e| IngestError::Internal(e.to_string()))
                .and_then(|r| r);
        match encoded {
            Ok(encoded) => {
                let mut backoff = Duration::from_millis(200);
                while let Err(e) = store_segment(store.as_ref(), &location, &encoded).await {
                    tracing::error!(segment = %id, error = %e, "storing segment failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
            // Not a passing condition: the segment stays in the spool for the next start.
            Err(e) => {
                tracing::error!(segment = %id, error = %e, "segment cannot be encoded; kept in the spool")
            }
        }
        pending.fetch_sub(rows, Ordering::SeqCst);
    }
}

/// A segment's finished Parquet files and where they go.
struct Encoded {
    id: String,
    spool_file: PathBuf,
    files: Vec<(Path, Bytes)>,
    spans: usize,
    outcomes: usize,
    started: Instant,
}

/// The Parquet files of `segment`, named after its id (CPU work: runs on a blocking thread).
fn encode_segment(location: &DataLocation, segment: Sealed) -> Result<Encoded> {
    let started = Instant::now();
    let day = segment_day(&segment.id);
    let mut files = Vec::new();
    let rows = &segment.rows;
    if !rows.spans.is_empty() {
        let batch = sorted(&SPANS, &rows.spans, &["workflow", "start_time"])?;
        files.push((
            file_path(location, SPANS.name, &day, &segment.id),
            encode(&SPANS, batch, &["workflow", "start_time"])?,
        ));
    }
    if !rows.outcomes.is_empty() {
        let batch = sorted(&OUTCOMES, &rows.outcomes, &["workflow"])?;
        files.push((
            file_path(location, OUTCOMES.name, &day, &segment.id),
            encode(&OUTCOMES, batch, &["workflow"])?,
        ));
    }
    if !rows.rejected.is_empty() {
        let batch = sorted(&REJECTED_SPANS, &rows.rejected, &["received_at"])?;
        files.push((
            file_path(location, REJECTED_SPANS.name, &day, &segment.id),
            encode(&REJECTED_SPANS, batch, &["received_at"])?,
        ));
    }
    let (spans, outcomes) = (rows.span_count(), rows.outcome_count());
    Ok(Encoded {
        id: segment.id,
        spool_file: segment.path,
        files,
        spans,
        outcomes,
        started,
    })
}

/// Stores the files (each in one PUT, so readers see all of a file or none of it), then removes
/// the segment from the spool. Run again after a failure, it overwrites the same names.
async fn store_segment(
    store: &dyn ObjectStore,
    location: &DataLocation,
    encoded: &Encoded,
) -> Result<()> {
    for (path, file) in &encoded.files {
        put_file(store, path, file.clone()).await?;
    }
    // A PUT to S3 is durable once answered; a local file is only renamed into place, so it is
    // synced before the spool lets go of its rows.
    if let DataLocation::Local(root) = location {
        for (path, _) in &encoded.files {
            let local = local_file(root, path);
            sync_local_file(&local).map_err(|e| IngestError::Spool {
                path: local.display().to_string(),
                source: e,
            })?;
        }
    }
    remove_segment(&encoded.spool_file).map_err(|e| IngestError::Spool {
        path: encoded.spool_file.display().to_string(),
        source: e,
    })?;
    tracing::info!(
        segment = %encoded.id,
        spans = encoded.spans,
        outcomes = encoded.outcomes,
        ms = encoded.started.elapsed().as_millis() as u64,
        "flushed to Parquet"
    );
    Ok(())
}

/// Where the object `path` of a local location lies on disk (`root` is the location's
/// directory; the object path repeats it, as object_store's local paths are absolute).
fn local_file(root: &std::path::Path, path: &Path) -> PathBuf {
    let relative: PathBuf = path
        .parts()
        .skip(
            DataLocation::Local(root.to_path_buf())
                .root()
                .parts()
                .count(),
        )
        .map(|part| part.as_ref().to_string())
        .collect();
    root.join(relative)
}

/// Syncs a file and the directory that names it.
fn sync_local_file(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn encode(
    table: &tokenledger_engine::schema::TableDef,
    batch: arrow::array::RecordBatch,
    sorted_by: &[&str],
) -> Result<Bytes> {
    let schema = table.schema();
    // Every span was checked against the validation policy as it was accepted.
    let properties = match table.name == SPANS.name {
        true => checked_spans_properties(&schema, sorted_by),
        false => writer_properties(&schema, sorted_by),
    };
    let mut file = ParquetFileBuilder::new(&schema, properties)?;
    file.write(&batch)?;
    Ok(file.finish()?)
}

/// `table/otlp/YYYY-MM-DD/<segment>.parquet`: the day the segment was opened (UTC).
fn file_path(location: &DataLocation, table: &str, day: &str, id: &str) -> Path {
    location
        .table_dir(table)
        .join("otlp")
        .join(day)
        .join(format!("{id}.parquet"))
}

/// When segment `id` was opened, in microseconds.
fn segment_micros(id: &str) -> i64 {
    segment_millis(id).saturating_mul(1_000)
}

fn segment_millis(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

fn segment_day(id: &str) -> String {
    let millis = segment_millis(id);
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}
