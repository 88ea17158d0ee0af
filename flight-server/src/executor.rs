//! Queries run on threads of their own, so the threads that serve gRPC stay free for what must
//! answer at once under load: logins, catalog calls, connection checks (`SELECT 1`), and the
//! batches of queries already running. With one shared pool, a connection check waited behind
//! every running query's busy workers (benches/results/2026-11-30-load.md).
//!
//! A query's stream is driven on the query runtime, where DataFusion also spawns its partition
//! tasks, and its batches are handed over through a small channel. Dropping the returned stream
//! (the client went away, the deadline passed) aborts the query's task, which drops its plan.

use std::future::Future;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Batches handed over ahead of the client: enough to keep both sides busy, few enough to
/// bound memory by a couple of batches per query.
const HANDOVER_BATCHES: usize = 2;

/// The query runtime.
pub struct QueryExecutor {
    runtime: Option<Runtime>,
}

impl QueryExecutor {
    /// A runtime with one worker thread per core.
    pub fn new() -> std::io::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tokenledger-query")
            .enable_all()
            .build()?;
        Ok(QueryExecutor {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
    }

    /// Starts the query `start` makes on the query runtime and returns its batches, or the
    /// error it failed to start with.
    pub async fn run(
        &self,
        schema: SchemaRef,
        start: impl Future<Output = Result<SendableRecordBatchStream, DataFusionError>> + Send + 'static,
    ) -> Result<SendableRecordBatchStream, DataFusionError> {
        let (started_tx, started) = oneshot::channel();
        let (batches_tx, batches) = mpsc::channel(HANDOVER_BATCHES);
        let task = AbortOnDrop(Some(self.handle().spawn(async move {
            let mut stream = match start.await {
                Ok(stream) => stream,
                Err(e) => {
                    let _ = started_tx.send(Err(e));
                    return;
                }
            };
            let _ = started_tx.send(Ok(()));
            while let Some(batch) = stream.next().await {
                if batches_tx.send(batch).await.is_err() {
                    return;
                }
            }
        })));
        match started.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ended(task).await),
        }
        let stream = futures::stream::unfold(Some((batches, task)), |state| async move {
            let (mut batches, task) = state?;
            match batches.recv().await {
                Some(batch) => Some((batch, Some((batches, task)))),
                // The sender is gone: the query finished, or its task failed.
                None => match task.finish().await {
                    Ok(()) => None,
                    Err(e) => Some((Err(e), None)),
                },
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

impl Drop for QueryExecutor {
    fn drop(&mut self) {
        // Dropped from within the server's runtime: a blocking shutdown is not allowed there.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The error of a query task that ended without saying why (it panicked or was cancelled).
async fn ended(task: AbortOnDrop) -> DataFusionError {
    task.finish()
        .await
        .err()
        .unwrap_or_else(|| DataFusionError::Execution("the query ended before it started".into()))
}

/// A query's task, aborted when its stream is dropped.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    /// Waits for the task to end: an error if it panicked or was cancelled.
    async fn finish(mut self) -> Result<(), DataFusionError> {
        match self.0.take() {
            Some(handle) => handle
                .await
                .map_err(|e| DataFusionError::Execution(format!("the query's task failed: {e}"))),
            None => Ok(()),
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}
