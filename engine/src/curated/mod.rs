//! Curated tables: each trace table's settled landing files moved by `tokenledger compact` into
//! a Delta Lake table, `<location>/_curated/<table>`, in large sorted files, one commit per
//! batch of landing files.
//!
//! **How nothing is lost or counted twice.** Every compaction commit names, in its commit info,
//! the landing files it absorbed (`ABSORBED`) and every landing file absorbed so far that may
//! still be in landing (`IN_LANDING`). A reader loads one snapshot, takes that list from the
//! newest compaction commit at or below it, and reads the snapshot plus the landing files not on
//! the list ([`TraceTable`]). Landing files are deleted only after a grace period longer than any
//! query, so a reader that planned with an older snapshot still finds the landing files that
//! snapshot had not absorbed.
//!
//! **History.** Commits never clean up the log (`delta.enableExpiredLogCleanup = false`), the
//! table is append-only, and vacuum keeps every file the audit window may need, so
//! `spans_at(version | time)` and `tokenledger_history` answer for every version in the window.

pub(crate) mod compact;
mod faults;
mod history;
mod table;

use std::collections::HashSet;
use std::sync::Arc;

use deltalake_core::kernel::transaction::TransactionError;
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{EngineError, Result};
use crate::schema::TableDef;
use crate::storage::location::DataLocation;

pub use compact::{
    CompactOptions, CompactProgress, CompactReport, DEFAULT_AUDIT_WINDOW, MaintainOptions,
    Maintenance,
};
pub use history::{AsOf, AsOfFunction, AsOfTable, HISTORY_TABLE, HistoryTable};
pub use table::TraceTable;

/// Where the curated tables live, under the data location.
pub const CURATED_DIR: &str = "_curated";
/// Commit info: the landing files this commit absorbed, relative to the data location.
const ABSORBED: &str = "tokenledger.absorbed";
/// Commit info on every compaction commit: every landing file absorbed up to this commit that
/// may still be in landing. A reader needs only the newest one.
const IN_LANDING: &str = "tokenledger.absorbed_in_landing";

/// One trace table's curated Delta table and its landing directory.
#[derive(Debug, Clone)]
pub(crate) struct Curated {
    pub def: &'static TableDef,
    pub location: DataLocation,
    /// The location's store, without quarantine (Delta files are not trace files).
    pub store: Arc<dyn ObjectStore>,
}

impl Curated {
    pub fn new(
        def: &'static TableDef,
        location: DataLocation,
        store: Arc<dyn ObjectStore>,
    ) -> Self {
        Curated {
            def,
            location,
            store,
        }
    }

    /// The curated table's directory: its log and data files.
    pub fn table_dir(&self) -> Path {
        self.location.root().join(CURATED_DIR).join(self.def.name)
    }

    fn log_dir(&self) -> Path {
        self.table_dir().join("_delta_log")
    }

    /// Whether the curated table has been created (its log has a commit).
    pub async fn exists(&self) -> Result<bool> {
        Ok(self
            .store
            .list(Some(&self.log_dir()))
            .try_next()
            .await?
            .is_some())
    }

    /// The curated table, not loaded.
    pub fn open(&self) -> Result<DeltaTable> {
        let listing = self
            .location
            .table_url(&format!("{CURATED_DIR}/{}", self.def.name))?;
        let url = url::Url::parse(listing.as_str())
            .map_err(|e| EngineError::Config(format!("curated table URL {listing}: {e}")))?;
        register_s3_log_store();
        DeltaTableBuilder::from_url(url.clone())
            .and_then(|builder| {
                builder
                    .with_storage_backend(faults::delta_store(Arc::clone(&self.store)), url)
                    .build()
            })
            .map_err(delta_error)
    }

    /// The newest version of the curated table, or `None` before the first compaction.
    pub async fn load_latest(&self) -> Result<Option<DeltaTable>> {
        if !self.exists().await? {
            return Ok(None);
        }
        let mut delta = self.open()?;
        delta.load().await.map_err(delta_error)?;
        Ok(Some(delta))
    }

    /// The landing directory.
    pub fn landing_dir(&self) -> Path {
        self.location.table_dir(self.def.name)
    }

    /// `path` as commits record it: relative to the data location.
    pub fn landing_key(&self, path: &Path) -> String {
        let root = self.location.root();
        match path.prefix_match(&root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// The object path of a recorded landing file.
    pub fn landing_path(&self, key: &str) -> Path {
        let mut path = self.location.root();
        for part in key.split('/') {
            path = path.join(part);
        }
        path
    }

    /// The commit info of `version`, read from its log entry. (delta-rs's `history(limit)`
    /// also returns commits newer than the loaded version, so a reader pinned to a snapshot
    /// reads its commits itself.)
    pub async fn commit_info(&self, version: u64) -> Result<CommitInfo> {
        let path = self.log_dir().join(format!("{version:020}.json"));
        let bytes = self.store.get(&path).await?.bytes().await?;
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                EngineError::Curated(format!(
                    "{}: unreadable log entry {path}: {e}",
                    self.def.name
                ))
            })?;
            if let Some(serde_json::Value::Object(info)) = action.get("commitInfo") {
                return Ok(CommitInfo(info.clone()));
            }
        }
        Ok(CommitInfo(serde_json::Map::new()))
    }
}

/// What the latest version of a curated table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CuratedSummary {
    pub version: u64,
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
    /// Landing files it absorbed that may still be in landing (not to be counted again).
    pub absorbed: HashSet<String>,
}

impl Curated {
    /// The latest version's data files, bytes and rows (from the log: no data file is read).
    pub async fn summary(&self) -> Result<Option<CuratedSummary>> {
        let Some(delta) = self.load_latest().await? else {
            return Ok(None);
        };
        let snapshot = delta.snapshot().map_err(delta_error)?;
        let mut summary = CuratedSummary {
            version: delta.version().unwrap_or_default(),
            absorbed: absorbed_in_landing(self, &delta).await?,
            ..CuratedSummary::default()
        };
        for file in snapshot.log_data().iter() {
            summary.files += 1;
            summary.bytes += file.size().max(0) as u64;
            summary.rows += file.num_records().unwrap_or_default() as u64;
        }
        Ok(Some(summary))
    }
}

/// One commit's `commitInfo` action.
#[derive(Debug, Clone)]
pub(crate) struct CommitInfo(serde_json::Map<String, serde_json::Value>);

impl CommitInfo {
    /// Milliseconds since the epoch when it was committed.
    pub fn timestamp(&self) -> Option<i64> {
        self.0.get("timestamp")?.as_i64()
    }

    /// The operation (`WRITE`, `OPTIMIZE`, `VACUUM START`, …).
    pub fn operation(&self) -> Option<&str> {
        self.0.get("operation")?.as_str()
    }

    /// One of delta-rs's operation metrics, by the first of `names` present.
    pub fn metric(&self, names: &[&str]) -> Option<i64> {
        let metrics = self.0.get("operationMetrics")?;
        names.iter().find_map(|n| metrics.get(*n)?.as_i64())
    }

    /// How many landing files this commit absorbed, if it is a compaction.
    pub fn absorbed(&self) -> Option<usize> {
        Some(self.0.get(ABSORBED)?.as_array()?.len())
    }

    /// The landing files absorbed so far and maybe still in landing, if it is a compaction.
    pub fn in_landing(&self) -> Option<HashSet<String>> {
        Some(string_list(self.0.get(IN_LANDING)?).collect())
    }
}

/// The landing files the snapshot `delta` holds had absorbed, as far as they may still be in
/// landing: the list on the newest compaction commit at or below its version (optimize and
/// vacuum commits may sit in between).
async fn absorbed_in_landing(curated: &Curated, delta: &DeltaTable) -> Result<HashSet<String>> {
    let Some(newest) = delta.version() else {
        return Ok(HashSet::new());
    };
    for version in (0..=newest).rev() {
        if let Some(list) = curated.commit_info(version).await?.in_landing() {
            return Ok(list);
        }
    }
    Ok(HashSet::new())
}

fn string_list(value: &serde_json::Value) -> impl Iterator<Item = String> + '_ {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
}

/// Delta's log store for `s3://` tables over the store tokenledger already configured: commits
/// are conditional puts (`If-None-Match`), which S3 and SeaweedFS honour, so no locking service
/// (deltalake-aws's DynamoDB) and no AWS SDK are needed.
struct S3LogStoreFactory;

impl deltalake_core::logstore::LogStoreFactory for S3LogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &url::Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn deltalake_core::logstore::LogStore>> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Registers [`S3LogStoreFactory`] once per process (Delta's registry is global).
fn register_s3_log_store() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let s3 = url::Url::parse("s3://").expect("static URL");
        deltalake_core::logstore::logstore_factories()
            .entry(s3)
            .or_insert_with(|| Arc::new(S3LogStoreFactory));
    });
}

/// A Delta error as the engine's: a lost commit race is a [`EngineError::Conflict`].
fn delta_error(e: DeltaTableError) -> EngineError {
    match e {
        DeltaTableError::Transaction {
            source: TransactionError::MaxCommitAttempts(_) | TransactionError::CommitConflict(_),
        }
        | DeltaTableError::VersionAlreadyExists(_) => EngineError::Conflict(e.to_string()),
        other => EngineError::Curated(other.to_string()),
    }
}
