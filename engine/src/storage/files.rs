//! The catalog's view of a data location: an [`ObjectStore`] wrapper that lists only the files a
//! table should read.
//!
//! DataFusion's `ListingTable` does the scanning, pruning and partitioning; this wrapper decides
//! which objects it sees:
//! - Objects a pipeline is still writing are skipped: names starting with `_` or `.`, suffixes
//!   such as `.tmp` or `.inprogress`, zero-length objects.
//! - Every Parquet file under a table directory has its footer checked against the table's
//!   schema once per version (path, size, ETag or modification time). A file that fails — cut
//!   short, not Parquet at all, or with a column that cannot be read as the table's — is
//!   *quarantined*: left out of every query, logged once as a warning, and reported in
//!   [`TableFileStore::file_report`] (the `tokenledger_files` table). In strict mode it is an
//!   error naming the file and the column instead.
//! - A file no longer than the footer read (64 KiB) is read once: the check keeps its bytes and
//!   the scan reads them from memory (64 MiB at most), so a first query over many small files
//!   makes one request per file, not two.
//! - Storage failures (S3 unreachable) are not quarantine: they fail the query that met them and
//!   are not remembered, so the next query tries again.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
use datafusion::execution::cache::cache_manager::{CachedFileMetadataEntry, FileMetadataCache};
use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask, parquet_to_arrow_schema};
use parquet::file::metadata::FileMetaData;

use crate::error::{EngineError, SharedError};
use crate::integrity::{BatchCheck, CHECKED_COLUMNS, Policy, VALUES_CHECKED_KEY};
use crate::schema::{SPANS, TableDef};
use crate::storage::footer::{self, BadFooter};

/// Files whose verdicts are kept (about 300 bytes each).
const MAX_CACHED_CHECKS: usize = 200_000;
/// How many files are read in full at once when looking for the one a scan failed on.
const FILES_DECODED_AT_ONCE: usize = 2;
/// How many footers are read at once while checking a listing.
const FOOTER_READS_IN_FLIGHT: usize = 16;
/// Most footers (schema + row-group statistics) fit in one read of this size.
const FOOTER_SIZE_HINT: u64 = 64 * 1024;
/// Bytes of small files kept from their footer reads for scans (files up to the size hint).
const SMALL_FILE_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Name endings of files still being written (uploaders and writers add them until done).
const IN_PROGRESS_SUFFIXES: [&str; 5] = [".tmp", ".temp", ".inprogress", ".partial", ".crdownload"];
/// The only files a table reads.
const PARQUET_SUFFIX: &str = ".parquet";

/// Object store view that hides in-progress objects and quarantines unreadable table files.
#[derive(Debug)]
pub struct TableFileStore {
    checker: Arc<Checker>,
}

/// What the wrapper shares with its listing streams.
#[derive(Debug)]
struct Checker {
    inner: Arc<dyn ObjectStore>,
    tables: Vec<(Path, &'static TableDef)>,
    checked: Mutex<CheckCache>,
    /// The session's footer cache: footers read for checking are not read again by the scan.
    footer_cache: Option<Arc<FileMetadataCache>>,
    /// Files no longer than the footer read, kept whole from it: the scan reads them here.
    small_files: Mutex<SmallFileCache>,
    /// Put before object paths in messages, so users see `/data/x.parquet` or `s3://b/x.parquet`.
    display_prefix: String,
    /// Fail queries on a bad file instead of leaving it out.
    strict: bool,
    /// Whether a checked file had rows breaking the validation policy (then `spans` is read
    /// through it: [`crate::integrity::ValidRows`]).
    failing_rows_seen: AtomicBool,
}

/// Verdicts by file, for the version last checked: a rewritten file replaces its old entry.
/// Bounded: past [`MAX_CACHED_CHECKS`] files it starts again empty, which costs one footer read
/// per file (a file quarantined by a scan is then admitted again until a scan meets it).
#[derive(Debug)]
struct CheckCache {
    entries: HashMap<Path, (FileVersion, FileCheck)>,
    cap: usize,
}

impl Default for CheckCache {
    fn default() -> Self {
        CheckCache {
            entries: HashMap::new(),
            cap: MAX_CACHED_CHECKS,
        }
    }
}

impl CheckCache {
    fn get(&self, version: &FileVersion) -> Option<FileCheck> {
        self.entries
            .get(&version.path)
            .filter(|(cached, _)| cached == version)
            .map(|(_, check)| check.clone())
    }

    fn insert(&mut self, version: FileVersion, check: FileCheck) {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&version.path) {
            self.entries.clear();
        }
        self.entries.insert(version.path.clone(), (version, check));
    }
}

/// The bytes of small files, as read when their footers were checked. A scan over many small
/// files (pipelines drop them; ingest writes them) would otherwise fetch each file a second
/// time, one after another in each partition: on S3 that wait is most of a first query.
/// Keyed by path, holding the version checked last (a rewritten file is checked again and
/// replaces its entry). Bounded by total bytes: when full it starts again empty, and scans
/// fetch from storage what is not here.
#[derive(Debug)]
struct SmallFileCache {
    entries: HashMap<Path, (ObjectMeta, Bytes)>,
    bytes: usize,
    cap: usize,
}

impl Default for SmallFileCache {
    fn default() -> Self {
        SmallFileCache {
            entries: HashMap::new(),
            bytes: 0,
            cap: SMALL_FILE_CACHE_BYTES,
        }
    }
}

impl SmallFileCache {
    /// The cached bytes of `location`, with the version they are.
    fn get(&self, location: &Path) -> Option<(ObjectMeta, Bytes)> {
        self.entries.get(location).cloned()
    }

    /// Keeps `body` as the bytes of `meta`'s version, or forgets the path (`None`: the checked
    /// version is too large to keep, or quarantined).
    fn set(&mut self, meta: &ObjectMeta, body: Option<Bytes>) {
        if let Some((_, old)) = self.entries.remove(&meta.location) {
            self.bytes -= old.len();
        }
        let Some(body) = body.filter(|body| body.len() <= self.cap) else {
            return;
        };
        if self.bytes + body.len() > self.cap {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += body.len();
        self.entries
            .insert(meta.location.clone(), (meta.clone(), body));
    }
}

/// A file's identity for caching a check: a rewritten file gets checked again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileVersion {
    path: Path,
    size: u64,
    version: Option<String>,
}

impl From<&ObjectMeta> for FileVersion {
    fn from(meta: &ObjectMeta) -> Self {
        FileVersion {
            path: meta.location.clone(),
            size: meta.size,
            version: meta
                .e_tag
                .clone()
                .or_else(|| Some(meta.last_modified.timestamp_micros().to_string())),
        }
    }
}

/// The verdict on one file version: its rows, or why it is quarantined.
#[derive(Debug, Clone)]
pub enum FileCheck {
    /// Readable as its table; this many rows. For a `spans` file, its rows checked against the
    /// validation policy ([`crate::integrity`]): on listing, or by its writer at the door (then
    /// none fail); `None` for other tables, or when the values could not be read.
    Ok {
        rows: u64,
        values: Option<Arc<BatchCheck>>,
    },
    /// Left out of queries, for this reason.
    Quarantined(Arc<EngineError>),
}

/// One line of [`TableFileStore::file_report`].
#[derive(Debug, Clone)]
pub struct FileReport {
    /// The table whose directory holds the file.
    pub table: &'static str,
    /// Where it is, as users write it (`/data/spans/x.parquet`, `s3://bucket/spans/x.parquet`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub modified: DateTime<Utc>,
    /// Whether queries read it.
    pub check: FileCheck,
}

impl TableFileStore {
    /// Wraps `inner`; `tables` maps each table's directory to its definition. Footers read
    /// while checking go into `footer_cache` (the session's), so scans find them there.
    /// `display_prefix` turns object paths into what users know (`/`, `s3://bucket/`).
    /// With `strict`, a bad file fails queries instead of being quarantined.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        tables: Vec<(Path, &'static TableDef)>,
        footer_cache: Option<Arc<FileMetadataCache>>,
        display_prefix: &str,
        strict: bool,
    ) -> Self {
        TableFileStore {
            checker: Arc::new(Checker {
                inner,
                tables,
                checked: Mutex::default(),
                footer_cache,
                small_files: Mutex::default(),
                display_prefix: display_prefix.to_string(),
                strict,
                failing_rows_seen: AtomicBool::new(false),
            }),
        }
    }

    /// The store being wrapped.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.checker.inner
    }

    /// Whether any file checked so far holds rows that break the validation policy.
    pub fn has_failing_rows(&self) -> bool {
        self.checker.failing_rows_seen.load(Ordering::Relaxed)
    }

    /// The policy check of `meta`'s rows, if it is a checked `spans` file (from the cache;
    /// checked now if the file was not listed yet).
    pub async fn value_check(&self, meta: &ObjectMeta) -> Option<Arc<BatchCheck>> {
        let table = self.checker.table_for(&meta.location)?;
        match self.checker.check(meta, table).await {
            Ok(FileCheck::Ok { values, .. }) => values,
            _ => None,
        }
    }

    /// Every visible file under `dir` (in-progress objects aside), unchecked, sorted by path.
    pub async fn list_visible(&self, dir: &Path) -> object_store::Result<Vec<ObjectMeta>> {
        let mut files: Vec<ObjectMeta> = self
            .checker
            .inner
            .list(Some(dir))
            .try_filter(|meta| futures::future::ready(is_visible(meta, dir)))
            .try_collect()
            .await?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files)
    }

    /// The files of `files` queries may read: quarantined and vanished ones left out (strict
    /// sessions fail on a bad file instead), in the same order. Checks are cached per file
    /// version, as for listings.
    pub async fn admit_all(&self, files: Vec<ObjectMeta>) -> object_store::Result<Vec<ObjectMeta>> {
        futures::stream::iter(files)
            .map(|meta| self.checker.admit(meta))
            .buffered(FOOTER_READS_IN_FLIGHT)
            .try_filter_map(futures::future::ok)
            .try_collect()
            .await
    }

    /// Every file under every table directory (in-progress objects aside), with its verdict.
    /// Files not named `*.parquet` are reported as quarantined: tables never read them.
    pub async fn file_report(&self) -> Result<Vec<FileReport>, EngineError> {
        let mut report = Vec::new();
        for (dir, table) in &self.checker.tables {
            let files = self.list_visible(dir).await?;
            // Footers are read as many at a time as a listing reads them, in listing order.
            let checks: Vec<_> = futures::stream::iter(files)
                .map(|meta| async move {
                    let check = if is_parquet(&meta) {
                        self.checker.check(&meta, table).await
                    } else {
                        Ok(FileCheck::Quarantined(Arc::new(EngineError::Quarantine {
                            table: table.name.to_string(),
                            file: self.checker.display(&meta.location),
                            reason: format!(
                                "not read: tables read only files named *{PARQUET_SUFFIX}"
                            ),
                        })))
                    };
                    (meta, check)
                })
                .buffered(FOOTER_READS_IN_FLIGHT)
                .collect()
                .await;
            for (meta, check) in checks {
                let check = match check {
                    Ok(check) => check,
                    // Deleted since the listing: no longer part of the table.
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                report.push(FileReport {
                    table: table.name,
                    path: self.checker.display(&meta.location),
                    size: meta.size,
                    modified: meta.last_modified,
                    check,
                });
            }
        }
        Ok(report)
    }
}

impl TableFileStore {
    /// Reads each of `files` in full, decoding every page (and verifying page checksums where
    /// the file has them), and quarantines the ones that fail. Called when a scan over them
    /// failed on their content: the scan's error does not say which file it was reading, this
    /// finds it, so the query's error can name it and later queries leave it out. Returns the
    /// problems found; storage errors are skipped (they say nothing about the files).
    pub async fn quarantine_unreadable(&self, files: &[ObjectMeta]) -> Vec<Arc<EngineError>> {
        let checker = &self.checker;
        let verdicts = futures::stream::iter(files.iter().cloned())
            .map(|meta| async move {
                let verdict = checker.decode_all(&meta).await;
                (meta, verdict)
            })
            .buffer_unordered(FILES_DECODED_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        let mut found = Vec::new();
        for (meta, verdict) in verdicts {
            let Ok(Err(problem)) = verdict else { continue };
            let Some(table) = checker.table_for(&meta.location) else {
                continue;
            };
            let problem = Arc::new(EngineError::Corrupt {
                table: table.name.to_string(),
                file: checker.display(&meta.location),
                problem,
            });
            tracing::warn!("quarantined, left out of queries: {problem}");
            checker.checked.lock().expect("check cache lock").insert(
                FileVersion::from(&meta),
                FileCheck::Quarantined(Arc::clone(&problem)),
            );
            found.push(problem);
        }
        found
    }
}

/// Whether a listed object is one a reader should see at all: pipelines write `_tmp`, `.part`,
/// `x.parquet.tmp` or zero-length placeholders before the real file appears.
pub fn is_visible(meta: &ObjectMeta, below: &Path) -> bool {
    if meta.size == 0 {
        return false;
    }
    let name = meta.location.filename().unwrap_or_default();
    if IN_PROGRESS_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return false;
    }
    let Some(parts) = meta.location.prefix_match(below) else {
        return true;
    };
    !parts.into_iter().any(|part| {
        let name = part.as_ref();
        name.starts_with('_') || name.starts_with('.')
    })
}

/// Reads the byte ranges the Parquet reader asks for (the projected column chunks), with the
/// footer already read: from the file's bytes when the footer read fetched all of it, else from
/// the store.
struct ColumnReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    metadata: Arc<parquet::file::metadata::ParquetMetaData>,
    whole_file: Option<Bytes>,
}

impl AsyncFileReader for ColumnReader {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            match &self.whole_file {
                Some(bytes) => slice_of(&self.path, bytes, range),
                None => self.store.get_range(&self.path, range).await,
            }
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> futures::future::BoxFuture<
        'a,
        parquet::errors::Result<Arc<parquet::file::metadata::ParquetMetaData>>,
    > {
        let metadata = Arc::clone(&self.metadata);
        async move { Ok(metadata) }.boxed()
    }
}

/// Whether the file's writer checked every row against the validation policy (tokenledger's
/// own writers say so in the footer's key-value metadata).
fn values_checked_by_writer(metadata: &FileMetaData) -> bool {
    metadata
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|entry| entry.key == VALUES_CHECKED_KEY))
}

fn is_parquet(meta: &ObjectMeta) -> bool {
    meta.location.as_ref().ends_with(PARQUET_SUFFIX)
}

impl Checker {
    fn display(&self, location: &Path) -> String {
        format!("{}{location}", self.display_prefix)
    }

    fn table_for(&self, path: &Path) -> Option<&'static TableDef> {
        self.tables
            .iter()
            .find(|(dir, _)| {
                path.prefix_match(dir)
                    .is_some_and(|mut rest| rest.next().is_some())
            })
            .map(|(_, table)| *table)
    }

    /// The verdict on `meta`, from the cache or by reading its footer. Storage errors are
    /// returned, not cached: they say nothing about the file.
    async fn check(
        &self,
        meta: &ObjectMeta,
        table: &'static TableDef,
    ) -> object_store::Result<FileCheck> {
        let version = FileVersion::from(meta);
        if let Some(cached) = self.checked.lock().expect("check cache lock").get(&version) {
            return Ok(cached);
        }
        let check = match self.read_footer(meta, table).await? {
            Ok((rows, values)) => {
                if values.as_ref().is_some_and(|v| v.failing_rows > 0) {
                    self.failing_rows_seen.store(true, Ordering::Relaxed);
                }
                FileCheck::Ok {
                    rows,
                    values: values.map(Arc::new),
                }
            }
            Err(problem) => {
                // Strict sessions report it as the query's error instead. The problem names the
                // file and, for schema problems, the column.
                if !self.strict {
                    tracing::warn!("quarantined, left out of queries: {problem}");
                }
                FileCheck::Quarantined(Arc::new(problem))
            }
        };
        self.checked
            .lock()
            .expect("check cache lock")
            .insert(version, check.clone());
        Ok(check)
    }

    /// Reads the footer and checks its schema, then, for a `spans` file its writer did not
    /// check, its rows against the validation policy: the row count and the value check, or what
    /// is wrong with the file. A footer that passes goes into the session's footer cache, where
    /// the scan finds it.
    async fn read_footer(
        &self,
        meta: &ObjectMeta,
        table: &'static TableDef,
    ) -> object_store::Result<Result<(u64, Option<BatchCheck>), EngineError>> {
        let file = self.display(&meta.location);
        let footer = footer::read_footer(self.inner.as_ref(), meta, FOOTER_SIZE_HINT).await?;
        // Forget any earlier version's bytes whatever the verdict; keep this one's if it passes.
        self.small_files
            .lock()
            .expect("small file cache lock")
            .set(meta, None);
        let footer = match footer {
            Ok(footer) => footer,
            Err(BadFooter(problem)) => {
                return Ok(Err(EngineError::Quarantine {
                    table: table.name.to_string(),
                    file,
                    reason: format!("not readable as Parquet: {problem}"),
                }));
            }
        };
        let metadata = footer.metadata.file_metadata();
        let schema = catch_unwind(AssertUnwindSafe(|| {
            parquet_to_arrow_schema(metadata.schema_descr(), metadata.key_value_metadata())
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|panic| Err(footer::panic_message(panic.as_ref())));
        let schema = match schema {
            Ok(schema) => schema,
            Err(e) => {
                return Ok(Err(EngineError::Quarantine {
                    table: table.name.to_string(),
                    file,
                    reason: format!("Parquet schema has no Arrow equivalent: {e}"),
                }));
            }
        };
        let rows = u64::try_from(metadata.num_rows()).unwrap_or_default();
        if let Err(p) = table.check_file_schema(&schema) {
            return Ok(Err(EngineError::Schema {
                table: table.name.to_string(),
                file,
                column: p.column,
                problem: p.problem,
            }));
        }
        let values = match table.name == SPANS.name {
            false => None,
            // Checked row by row as it was written: nothing fails.
            true if values_checked_by_writer(metadata) => Some(BatchCheck {
                rows,
                ..BatchCheck::default()
            }),
            true => self.check_values(meta, &footer).await,
        };
        self.keep_for_scans(meta, footer);
        Ok(Ok((rows, values)))
    }

    /// Counts the rows of a `spans` file breaking each rule of the policy, reading only the
    /// columns the rules look at. `None` if they cannot be read: the scan then meets the
    /// damage and quarantines the file.
    async fn check_values(&self, meta: &ObjectMeta, footer: &footer::Footer) -> Option<BatchCheck> {
        let options = ArrowReaderOptions::new();
        let reader_metadata =
            ArrowReaderMetadata::try_new(Arc::clone(&footer.metadata), options).ok()?;
        let mask = ProjectionMask::columns(
            reader_metadata.metadata().file_metadata().schema_descr(),
            CHECKED_COLUMNS,
        );
        let policy = Policy::now();
        let reader = ColumnReader {
            store: Arc::clone(&self.inner),
            path: meta.location.clone(),
            metadata: Arc::clone(&footer.metadata),
            whole_file: footer.whole_file.clone(),
        };
        let counting = async move {
            let mut stream =
                ParquetRecordBatchStreamBuilder::new_with_metadata(reader, reader_metadata)
                    .with_projection(mask)
                    .build()
                    .map_err(|e| e.to_string())?;
            let mut check = BatchCheck::default();
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| e.to_string())?;
                check.add(&policy.check_batch(&batch).map_err(|e| e.to_string())?);
            }
            Ok::<_, String>(check)
        };
        // The decoder trusts bytes the footer check did not look at: a panic is the file's
        // problem, not the process's.
        let counted = AssertUnwindSafe(counting)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| Err(footer::panic_message(panic.as_ref())));
        match counted {
            Ok(check) => {
                if check.failing_rows > 0 {
                    tracing::warn!(
                        file = %self.display(&meta.location),
                        rules = %check.summary(),
                        "rows breaking the validation policy are left out of queries"
                    );
                }
                Some(check)
            }
            Err(e) => {
                tracing::warn!(file = %self.display(&meta.location), error = %e, "values not checked");
                None
            }
        }
    }

    /// Puts a checked file's footer where the scan looks for it (the session's footer cache)
    /// and, for a small file, its bytes in the small-file cache.
    fn keep_for_scans(&self, meta: &ObjectMeta, footer: footer::Footer) {
        if let Some(cache) = &self.footer_cache {
            cache.put(
                &meta.location,
                CachedFileMetadataEntry::new(
                    meta.clone(),
                    Arc::new(CachedParquetMetaData::new(footer.metadata)),
                ),
            );
        }
        self.small_files
            .lock()
            .expect("small file cache lock")
            .set(meta, footer.whole_file);
    }

    /// The bytes of `location` if it is a small file whose check kept them.
    fn small_file(&self, location: &Path) -> Option<(ObjectMeta, Bytes)> {
        self.small_files
            .lock()
            .expect("small file cache lock")
            .get(location)
    }

    /// Reads the whole file and decodes every value of every column: `Ok(Ok(()))` if it reads
    /// cleanly, else what is wrong (a checksum mismatch, an undecodable page, a decoder panic).
    async fn decode_all(&self, meta: &ObjectMeta) -> object_store::Result<Result<(), String>> {
        let bytes = self.inner.get(&meta.location).await?.bytes().await?;
        let verdict = tokio::task::spawn_blocking(move || {
            catch_unwind(AssertUnwindSafe(|| decode_every_page(bytes))).unwrap_or_else(|panic| {
                Err(format!(
                    "the Parquet decoder failed on it ({})",
                    footer::panic_message(panic.as_ref())
                ))
            })
        })
        .await
        .unwrap_or_else(|e| Err(format!("decoding stopped: {e}")));
        Ok(verdict)
    }

    /// `meta` if queries should read it; `None` if it is quarantined or gone; an error for a
    /// storage failure or, in strict mode, a bad file.
    async fn admit(&self, meta: ObjectMeta) -> object_store::Result<Option<ObjectMeta>> {
        let Some(table) = self.table_for(&meta.location) else {
            return Ok(Some(meta));
        };
        if !is_parquet(&meta) {
            return Ok(Some(meta));
        }
        match self.check(&meta, table).await {
            Ok(FileCheck::Ok { .. }) => Ok(Some(meta)),
            Ok(FileCheck::Quarantined(problem)) if self.strict => Err(to_store_error(problem)),
            Ok(FileCheck::Quarantined(_)) => Ok(None),
            // Deleted between the listing and the check: no longer part of the table.
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Decodes every row of a whole Parquet file held in memory.
fn decode_every_page(bytes: Bytes) -> Result<(), String> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|builder| builder.build())
        .map_err(|e| e.to_string())?;
    for batch in reader {
        batch.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A read of bytes and nothing else: no conditions, no older version, not a HEAD. Only such
/// reads are served from the small-file cache.
fn is_plain_read(options: &GetOptions) -> bool {
    options.if_match.is_none()
        && options.if_none_match.is_none()
        && options.if_modified_since.is_none()
        && options.if_unmodified_since.is_none()
        && options.version.is_none()
        && !options.head
}

/// A GET of `range` (all of it if `None`) answered from a small file's cached `body`.
fn cached_get(
    location: &Path,
    meta: ObjectMeta,
    body: Bytes,
    range: Option<GetRange>,
) -> object_store::Result<GetResult> {
    let range = match range {
        Some(range) => range
            .as_range(meta.size)
            .map_err(|e| object_store::Error::Generic {
                store: "tokenledger",
                source: format!("{location}: {e}").into(),
            })?,
        None => 0..meta.size,
    };
    let bytes = slice_of(location, &body, range.clone())?;
    Ok(GetResult {
        payload: GetResultPayload::Stream(futures::stream::once(async { Ok(bytes) }).boxed()),
        meta,
        range,
        attributes: Default::default(),
    })
}

/// `range` of a small file's cached `body`, or an error naming the file if it is out of bounds.
fn slice_of(location: &Path, body: &Bytes, range: Range<u64>) -> object_store::Result<Bytes> {
    let len = body.len() as u64;
    if range.start > range.end || range.end > len {
        return Err(object_store::Error::Generic {
            store: "tokenledger",
            source: format!("{location}: bytes {range:?} requested of a {len}-byte file").into(),
        });
    }
    Ok(body.slice(range.start as usize..range.end as usize))
}

fn to_store_error(e: Arc<EngineError>) -> object_store::Error {
    object_store::Error::Generic {
        store: "tokenledger",
        source: Box::new(SharedError(e)),
    }
}

impl fmt::Display for TableFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableFileStore({})", self.checker.inner)
    }
}

#[async_trait]
impl ObjectStore for TableFileStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.checker.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.checker.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if is_plain_read(&options)
            && let Some((meta, body)) = self.checker.small_file(location)
        {
            return cached_get(location, meta, body, options.range);
        }
        self.checker.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if let Some((_, body)) = self.checker.small_file(location) {
            return ranges
                .iter()
                .map(|range| slice_of(location, &body, range.clone()))
                .collect();
        }
        self.checker.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.checker.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let below = prefix.cloned().unwrap_or_default();
        let checker = Arc::clone(&self.checker);
        self.checker
            .inner
            .list(prefix)
            .try_filter(move |meta| futures::future::ready(is_visible(meta, &below)))
            .map_ok(move |meta| {
                let checker = Arc::clone(&checker);
                async move { checker.admit(meta).await }
            })
            .try_buffered(FOOTER_READS_IN_FLIGHT)
            .try_filter_map(futures::future::ok)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut result = self.checker.inner.list_with_delimiter(prefix).await?;
        let below = prefix.cloned().unwrap_or_default();
        result.objects.retain(|meta| is_visible(meta, &below));
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.checker.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn meta(path: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            location: Path::from(path),
            last_modified: Utc::now(),
            size,
            e_tag: None,
            version: None,
        }
    }

    #[test]
    fn the_check_cache_keeps_one_version_per_file_and_stays_bounded() {
        let version = |path: &str, size: u64| FileVersion {
            path: Path::from(path),
            size,
            version: Some("etag".into()),
        };
        let mut cache = CheckCache {
            entries: HashMap::new(),
            cap: 3,
        };
        cache.insert(
            version("t/a.parquet", 10),
            FileCheck::Ok {
                rows: 1,
                values: None,
            },
        );
        // Rewritten: the new version replaces the old one, and the old one is no longer known.
        cache.insert(
            version("t/a.parquet", 20),
            FileCheck::Ok {
                rows: 2,
                values: None,
            },
        );
        assert!(cache.get(&version("t/a.parquet", 10)).is_none());
        assert!(matches!(
            cache.get(&version("t/a.parquet", 20)),
            Some(FileCheck::Ok {
                rows: 2,
                values: None
            })
        ));
        cache.insert(
            version("t/b.parquet", 10),
            FileCheck::Ok {
                rows: 1,
                values: None,
            },
        );
        cache.insert(
            version("t/c.parquet", 10),
            FileCheck::Ok {
                rows: 1,
                values: None,
            },
        );
        assert_eq!(cache.entries.len(), 3);
        // A fourth file starts again empty: bounded whatever a long-running server sees.
        cache.insert(
            version("t/d.parquet", 10),
            FileCheck::Ok {
                rows: 1,
                values: None,
            },
        );
        assert_eq!(cache.entries.len(), 1);
        assert!(cache.get(&version("t/d.parquet", 10)).is_some());
    }

    #[test]
    fn the_small_file_cache_keeps_the_last_checked_version_and_stays_bounded() {
        let mut cache = SmallFileCache {
            entries: HashMap::new(),
            bytes: 0,
            cap: 10,
        };
        let body = |n: usize, byte: u8| Some(Bytes::from(vec![byte; n]));
        cache.set(&meta("t/a.parquet", 4), body(4, 1));
        cache.set(&meta("t/b.parquet", 4), body(4, 2));
        assert_eq!(cache.bytes, 8);
        // Rewritten: the new version's bytes replace the old ones.
        cache.set(&meta("t/a.parquet", 3), body(3, 3));
        assert_eq!(
            cache.get(&Path::from("t/a.parquet")).unwrap().1,
            body(3, 3).unwrap()
        );
        assert_eq!(cache.bytes, 7);
        // Checked again and too large (or quarantined): forgotten, so scans go to storage.
        cache.set(&meta("t/a.parquet", 100), None);
        assert!(cache.get(&Path::from("t/a.parquet")).is_none());
        assert_eq!(cache.bytes, 4);
        // Past the cap it starts again empty; a file larger than the cap is never kept.
        cache.set(&meta("t/c.parquet", 7), body(7, 4));
        assert_eq!(cache.entries.len(), 1);
        assert_eq!(cache.bytes, 7);
        cache.set(&meta("t/d.parquet", 11), body(11, 5));
        assert!(cache.get(&Path::from("t/d.parquet")).is_none());
        assert_eq!(cache.bytes, 7);
    }

    #[test]
    fn hides_in_progress_objects() {
        let below = Path::from("data/spans");
        assert!(is_visible(
            &meta("data/spans/2026/01/a.parquet", 10),
            &below
        ));
        assert!(!is_visible(
            &meta("data/spans/2026/_tmp/a.parquet", 10),
            &below
        ));
        assert!(!is_visible(&meta("data/spans/.a.parquet", 10), &below));
        assert!(!is_visible(&meta("data/spans/a.parquet", 0), &below));
        assert!(!is_visible(&meta("data/spans/a.parquet.tmp", 10), &below));
        assert!(!is_visible(
            &meta("data/spans/a.parquet.inprogress", 10),
            &below
        ));
        // Only names below the listed prefix count: a data root under `_build/` still works.
        assert!(is_visible(
            &meta("_build/data/spans/a.parquet", 10),
            &Path::from("_build/data/spans")
        ));
    }
}
