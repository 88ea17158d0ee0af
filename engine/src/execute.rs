//! Running a planned query so that no file can take it, or the process, down.
//!
//! The footer check keeps out files whose footer is bad, but pages behind a good footer are
//! read only by the scan: a page checksum mismatch or an undecodable page surfaces there as a
//! Parquet error that names no file, and a decoder bug as a panic (which DataFusion carries from
//! its worker tasks to whoever polls the stream). [`execute`] runs the plan under
//! `catch_unwind`; when the scan fails on a file's content, it reads the query's files in full
//! to find the culprit, quarantines it, and fails the query with an error that names it. The
//! next query reads the other files.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use futures::{FutureExt, StreamExt};
use object_store::ObjectMeta;

use crate::access::limits::MemoryLimits;
use crate::error::{EngineError, error_chain};
use crate::storage::files::TableFileStore;
use crate::storage::footer::panic_message;

/// Plans and starts `frame` over `store`'s files. Errors and panics while planning or
/// executing come back as errors; see the module documentation.
/// With `limits`, the query draws its memory through its own cap on the server's pool.
pub async fn execute(
    store: Arc<TableFileStore>,
    frame: DataFrame,
    limits: Option<&MemoryLimits>,
) -> Result<SendableRecordBatchStream, DataFusionError> {
    let mut task = frame.task_ctx();
    if let Some(limits) = limits {
        let runtime = limits.for_query(&task.runtime_env());
        task = task.with_runtime(runtime);
    }
    let runtime = task.runtime_env();
    let plan = AssertUnwindSafe(frame.create_physical_plan())
        .catch_unwind()
        .await
        .map_err(|panic| panicked("planning", panic.as_ref()))??;
    let files = scanned_files(&plan);
    let schema = plan.schema();
    let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
        execute_stream(Arc::clone(&plan), Arc::new(task))
    }));
    let batches = match started {
        Ok(batches) => batches?,
        Err(panic) => return Err(panicked("starting", panic.as_ref())),
    };
    let running = Running {
        batches,
        store,
        files,
        runtime,
    };
    let guarded = futures::stream::unfold(Some(running), |state| async move {
        let mut running = state?;
        let next = AssertUnwindSafe(running.batches.next())
            .catch_unwind()
            .await;
        let error = match next {
            Ok(Some(Ok(batch))) => return Some((Ok(batch), Some(running))),
            Ok(None) => return None,
            Ok(Some(Err(e))) => e,
            Err(panic) => panicked("reading", panic.as_ref()),
        };
        Some((Err(running.fail(error).await), None))
    });
    Ok(Box::pin(RecordBatchStreamAdapter::new(schema, guarded)))
}

/// A query being read, with what it takes to explain a failure.
struct Running {
    batches: SendableRecordBatchStream,
    store: Arc<TableFileStore>,
    /// The files the plan scans.
    files: Vec<ObjectMeta>,
    runtime: Arc<RuntimeEnv>,
}

impl Running {
    /// The error the query ends with: `error`, or one naming the damaged file behind it.
    async fn fail(self, error: DataFusionError) -> DataFusionError {
        let Running {
            batches,
            store,
            files,
            runtime,
        } = self;
        // Stop the other partitions before reading the files again.
        drop(batches);
        let error = name_bad_file(&store, &files, error).await;
        if is_quarantine(&error) {
            // Listings are cached; the next query must list again to leave the file out.
            if let Some(listings) = runtime.cache_manager.get_list_files_cache() {
                listings.clear();
            }
        }
        error
    }
}

/// The error a panic becomes. It counts as a file problem: see [`may_be_a_bad_file`].
fn panicked(stage: &str, payload: &(dyn std::any::Any + Send)) -> DataFusionError {
    DataFusionError::External(Box::new(EngineError::Panic(format!(
        "{stage} the query: {}",
        panic_message(payload)
    ))))
}

/// `error`, or, if it came from a damaged file among `files`, an error naming that file.
async fn name_bad_file(
    store: &TableFileStore,
    files: &[ObjectMeta],
    error: DataFusionError,
) -> DataFusionError {
    if !may_be_a_bad_file(&error) || files.is_empty() {
        return error;
    }
    let found = store.quarantine_unreadable(files).await;
    match found.first() {
        Some(problem) => {
            DataFusionError::External(Box::new(crate::error::SharedError(Arc::clone(problem))))
        }
        None => error,
    }
}

/// Whether `error` is one [`name_bad_file`] made: a file was quarantined.
fn is_quarantine(error: &DataFusionError) -> bool {
    matches!(error, DataFusionError::External(e) if e.is::<crate::error::SharedError>())
}

/// Whether `error` can come from a file's bytes: Parquet decoding errors and panics. Storage
/// failures and errors of the query's own expressions (`1/0`, a bad cast) cannot, and reading
/// every file again for them would only cost time.
fn may_be_a_bad_file(error: &DataFusionError) -> bool {
    let mut from_a_file = false;
    for err in error_chain(error) {
        if err.downcast_ref::<object_store::Error>().is_some() {
            return false;
        }
        from_a_file |= err
            .downcast_ref::<parquet::errors::ParquetError>()
            .is_some()
            || matches!(
                err.downcast_ref::<arrow::error::ArrowError>(),
                Some(arrow::error::ArrowError::ParquetError(_))
            )
            || matches!(
                err.downcast_ref::<DataFusionError>(),
                Some(DataFusionError::ParquetError(_) | DataFusionError::ExecutionJoin(_))
            )
            || matches!(
                err.downcast_ref::<EngineError>(),
                Some(EngineError::Panic(_))
            );
    }
    from_a_file
}

/// The files `plan` reads.
fn scanned_files(plan: &Arc<dyn ExecutionPlan>) -> Vec<ObjectMeta> {
    let mut files = Vec::new();
    let _ = plan.apply(|node| {
        if let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
        {
            for group in &config.file_groups {
                files.extend(group.iter().map(|file| file.object_meta.clone()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    files.sort_by(|a, b| a.location.cmp(&b.location));
    files.dedup_by(|a, b| a.location == b.location);
    files
}
