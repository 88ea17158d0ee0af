//! Fault points for the crash tests: `TOKENLEDGER_FAULT=<point>` makes the process abort there,
//! as a power cut or `kill -9` would, so tests can check that a rerun neither loses nor doubles
//! a landing file. Unset (always, outside tests) it costs one environment lookup per point.

/// Data files written, commit not yet made.
pub const BEFORE_COMMIT: &str = "before-commit";
/// Commit made, landing files not yet deleted.
pub const AFTER_COMMIT: &str = "after-commit";
/// One landing file deleted, the others not.
pub const DURING_CLEANUP: &str = "during-cleanup";

/// Aborts the process if `TOKENLEDGER_FAULT` names `point`.
pub fn point(point: &str) {
    if std::env::var("TOKENLEDGER_FAULT").is_ok_and(|wanted| wanted == point) {
        eprintln!("tokenledger: fault point {point} reached: aborting (TOKENLEDGER_FAULT)");
        std::process::abort();
    }
}

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The store Delta writes through: `inner`, with [`BEFORE_COMMIT`] checked just before a commit
/// file (`_delta_log/<version>.json`) is put, after the commit's data files are written.
pub fn delta_store(inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    if std::env::var_os("TOKENLEDGER_FAULT").is_none() {
        return inner;
    }
    Arc::new(FaultStore { inner })
}

#[derive(Debug)]
struct FaultStore {
    inner: Arc<dyn ObjectStore>,
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

fn is_commit_file(location: &Path) -> bool {
    let mut parts: Vec<_> = location.parts().collect();
    let name = parts.pop();
    let dir = parts.pop();
    dir.is_some_and(|d| d.as_ref() == "_delta_log")
        && name.is_some_and(|n| {
            let n = n.as_ref();
            n.ends_with(".json")
                && n.trim_end_matches(".json")
                    .bytes()
                    .all(|b| b.is_ascii_digit())
        })
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if is_commit_file(location) {
            point(BEFORE_COMMIT);
        }
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
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
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
