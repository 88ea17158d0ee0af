//! The catalog's view of a data location: an [`ObjectStore`] wrapper that lists only the files a
//! table should read.
//!
//! DataFusion's `ListingTable` does the scanning, pruning and partitioning; this wrapper decides
//! which objects it sees. Listings skip objects a pipeline is still writing (names starting with
//! `_` or `.`, zero-length objects), and every Parquet file under a table directory has its footer
//! checked against the table's schema once (per path, size and version), so a file with a
//! mistyped column fails with an error naming the file and the column instead of an opaque cast
//! error deep inside a scan.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use crate::error::EngineError;
use crate::schema::TableDef;

/// How many footers are read at once while checking a listing.
const FOOTER_READS_IN_FLIGHT: usize = 16;
/// Most footers (schema + row-group statistics) fit in one read of this size.
const FOOTER_SIZE_HINT: usize = 64 * 1024;

/// Object store view that hides in-progress objects and checks table files' schemas.
#[derive(Debug)]
pub struct TableFileStore {
    inner: Arc<dyn ObjectStore>,
    tables: Arc<Vec<(Path, &'static TableDef)>>,
    checked: Arc<Mutex<CheckCache>>,
    /// The session's footer cache: footers read for checking are not read again by the scan.
    footer_cache: Option<Arc<FileMetadataCache>>,
    /// Put before object paths in messages, so users see `/data/x.parquet` or `s3://b/x.parquet`.
    display_prefix: Arc<str>,
}

/// The verdict on each file version checked so far.
type CheckCache = HashMap<FileVersion, Result<(), Arc<EngineError>>>;

/// A file's identity for caching a schema check: a rewritten file gets checked again.
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

impl TableFileStore {
    /// Wraps `inner`; `tables` maps each table's directory to its definition. Footers read
    /// while checking go into `footer_cache` (the session's), so scans find them there.
    /// `display_prefix` turns object paths into what users know (`/`, `s3://bucket/`).
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        tables: Vec<(Path, &'static TableDef)>,
        footer_cache: Option<Arc<FileMetadataCache>>,
        display_prefix: &str,
    ) -> Self {
        TableFileStore {
            inner,
            tables: Arc::new(tables),
            checked: Arc::default(),
            footer_cache,
            display_prefix: display_prefix.into(),
        }
    }

    /// The store being wrapped.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }
}

/// Whether a listed object is one a reader should see at all: pipelines write `_tmp`, `.part`
/// or zero-length placeholders before the real file appears.
pub fn is_visible(meta: &ObjectMeta, below: &Path) -> bool {
    if meta.size == 0 {
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

fn table_for<'a>(
    tables: &'a [(Path, &'static TableDef)],
    path: &Path,
) -> Option<&'a (Path, &'static TableDef)> {
    tables.iter().find(|(dir, _)| {
        path.prefix_match(dir)
            .is_some_and(|mut rest| rest.next().is_some())
    })
}

async fn check_file(
    store: &dyn ObjectStore,
    footer_cache: Option<Arc<FileMetadataCache>>,
    meta: &ObjectMeta,
    table: &'static TableDef,
    display_prefix: &str,
) -> Result<(), EngineError> {
    let file = format!("{display_prefix}{}", meta.location);
    let schema = DFParquetMetadata::new(store, meta)
        .with_metadata_size_hint(Some(FOOTER_SIZE_HINT))
        .with_file_metadata_cache(footer_cache)
        .fetch_schema()
        .await
        .map_err(|e| {
            EngineError::Input(format!(
                "{} file {file}: not readable as Parquet: {}",
                table.name,
                e.find_root()
            ))
        })?;
    table
        .check_file_schema(&schema)
        .map_err(|p| EngineError::Schema {
            table: table.name.to_string(),
            file,
            column: p.column,
            problem: p.problem,
        })
}

fn to_store_error(e: Arc<EngineError>) -> object_store::Error {
    object_store::Error::Generic {
        store: "tokenledger",
        source: Box::new(SharedError(e)),
    }
}

/// An [`EngineError`] shared between the check cache and the queries that hit it.
#[derive(Debug)]
pub struct SharedError(pub Arc<EngineError>);

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SharedError {}

impl fmt::Display for TableFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TableFileStore({})", self.inner)
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
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let below = prefix.cloned().unwrap_or_default();
        let inner = Arc::clone(&self.inner);
        let tables = Arc::clone(&self.tables);
        let checked = Arc::clone(&self.checked);
        let footer_cache = self.footer_cache.clone();
        let display_prefix = Arc::clone(&self.display_prefix);
        self.inner
            .list(prefix)
            .try_filter(move |meta| futures::future::ready(is_visible(meta, &below)))
            .map_ok(move |meta| {
                let inner = Arc::clone(&inner);
                let tables = Arc::clone(&tables);
                let checked = Arc::clone(&checked);
                let footer_cache = footer_cache.clone();
                let display_prefix = Arc::clone(&display_prefix);
                async move {
                    let Some((_, table)) = table_for(&tables, &meta.location) else {
                        return Ok(meta);
                    };
                    if !meta.location.as_ref().ends_with(".parquet") {
                        return Ok(meta);
                    }
                    let version = FileVersion::from(&meta);
                    let cached = checked
                        .lock()
                        .expect("check cache lock")
                        .get(&version)
                        .cloned();
                    let verdict = match cached {
                        Some(verdict) => verdict,
                        None => {
                            let verdict = check_file(
                                inner.as_ref(),
                                footer_cache,
                                &meta,
                                table,
                                &display_prefix,
                            )
                            .await
                            .map_err(Arc::new);
                            checked
                                .lock()
                                .expect("check cache lock")
                                .insert(version, verdict.clone());
                            verdict
                        }
                    };
                    verdict.map(|()| meta).map_err(to_store_error)
                }
            })
            .try_buffered(FOOTER_READS_IN_FLIGHT)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut result = self.inner.list_with_delimiter(prefix).await?;
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
        self.inner.copy_opts(from, to, options).await
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
        // Only names below the listed prefix count: a data root under `_build/` still works.
        assert!(is_visible(
            &meta("_build/data/spans/a.parquet", 10),
            &Path::from("_build/data/spans")
        ));
    }
}
