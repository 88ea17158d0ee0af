//! Admission: how many queries run at once, overall and per user, how many may wait for a
//! turn, and how long a query may take from its arrival to its last batch.
//!
//! Queries wait in arrival order (tokio's semaphores are fair). Past the wait queue a query is
//! refused at once with RESOURCE_EXHAUSTED "server busy", so a flood of requests costs the
//! server nothing but the refusals. A query that reads no table (`SELECT 1`, `SELECT version()`:
//! what BI tools and connection pools send to check a connection) takes a slot of its own kind,
//! so a connection check never waits behind reports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Limits on running queries, with defaults sized for a 2-core server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Queries that read tables running at once, over all users.
    pub max_running: usize,
    /// Of those, how many one user may run at once.
    pub max_running_per_user: usize,
    /// Queries that may wait for a turn; past that, "server busy".
    pub max_queued: usize,
    /// Time from a query's arrival (its DoGet) to its last batch, waiting included.
    pub timeout: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_running: 4,
            max_running_per_user: 2,
            max_queued: 256,
            timeout: Duration::from_secs(300),
        }
    }
}

/// What a query costs, for the purpose of admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Reads at least one table or table function.
    Reads,
    /// Reads nothing: a constant expression.
    Constant,
}

/// The gate every query passes before it runs.
pub struct Admission {
    limits: QueryLimits,
    running: Arc<Semaphore>,
    constant: Arc<Semaphore>,
    per_user: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Queries waiting for a turn, per kind: constant queries have their own queue too.
    waiting: AtomicUsize,
    waiting_constant: AtomicUsize,
}

/// A query's turn: held while it runs; dropping it frees the slot.
pub struct Turn {
    _permits: Vec<OwnedSemaphorePermit>,
    /// How long the query waited for its turn.
    pub queued: Duration,
}

impl Admission {
    /// A gate with `limits`.
    pub fn new(limits: QueryLimits) -> Self {
        Admission {
            running: Arc::new(Semaphore::new(limits.max_running.max(1))),
            constant: Arc::new(Semaphore::new(limits.max_running.max(1))),
            per_user: Mutex::default(),
            waiting: AtomicUsize::new(0),
            waiting_constant: AtomicUsize::new(0),
            limits,
        }
    }

    /// The limits this gate applies.
    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// Waits for `user`'s query to have its turn, until `deadline`.
    pub async fn admit(
        &self,
        user: &str,
        weight: Weight,
        deadline: Instant,
    ) -> Result<Turn, Status> {
        let arrived = Instant::now();
        let _waiting = self.queue(weight)?;
        let semaphores = match weight {
            Weight::Constant => vec![Arc::clone(&self.constant)],
            Weight::Reads => vec![self.user_semaphore(user), Arc::clone(&self.running)],
        };
        let mut permits = Vec::with_capacity(semaphores.len());
        for semaphore in semaphores {
            let permit = tokio::time::timeout_at(deadline.into(), semaphore.acquire_owned())
                .await
                .map_err(|_| self.timed_out(arrived))?
                .map_err(|_| Status::unavailable("the server is shutting down"))?;
            permits.push(permit);
        }
        Ok(Turn {
            _permits: permits,
            queued: arrived.elapsed(),
        })
    }

    /// A place in the wait queue, or "server busy" when it is full.
    fn queue(&self, weight: Weight) -> Result<Waiting<'_>, Status> {
        let waiting = match weight {
            Weight::Reads => &self.waiting,
            Weight::Constant => &self.waiting_constant,
        };
        let (guard, before) = Waiting::join(waiting);
        if before >= self.limits.max_queued {
            return Err(Status::resource_exhausted(format!(
                "server busy: {} queries are waiting for one of {} running slots \
                 (--max-queued-queries {}, --max-running-queries {}); retry later",
                before, self.limits.max_running, self.limits.max_queued, self.limits.max_running
            )));
        }
        Ok(guard)
    }

    fn user_semaphore(&self, user: &str) -> Arc<Semaphore> {
        let mut per_user = self.per_user.lock().expect("per-user slots lock");
        Arc::clone(
            per_user.entry(user.to_string()).or_insert_with(|| {
                Arc::new(Semaphore::new(self.limits.max_running_per_user.max(1)))
            }),
        )
    }

    fn timed_out(&self, arrived: Instant) -> Status {
        Status::deadline_exceeded(format!(
            "the query waited {:.1} s for a turn and reached its time limit of {} s \
             (--query-timeout) before it could run",
            arrived.elapsed().as_secs_f64(),
            self.limits.timeout.as_secs()
        ))
    }
}

/// Counts one waiter (a query waiting for its turn, a login waiting for a hashing thread) until
/// it is dropped: its turn came, it gave up, or it was refused.
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Joins the waiters `counter` counts; also returns how many were waiting before.
    pub(crate) fn join(counter: &'a AtomicUsize) -> (Self, usize) {
        let before = counter.fetch_add(1, Ordering::SeqCst);
        (Waiting(counter), before)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(running: usize, per_user: usize, queued: usize) -> Arc<Admission> {
        Arc::new(Admission::new(QueryLimits {
            max_running: running,
            max_running_per_user: per_user,
            max_queued: queued,
            timeout: Duration::from_secs(5),
        }))
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn turns_are_capped_overall_per_user_and_in_the_queue() {
        let gate = gate(2, 1, 1);
        let ana = gate.admit("ana", Weight::Reads, soon(1000)).await.unwrap();
        // Ana's second query waits for her first (per-user cap), and times out.
        let waited = gate
            .admit("ana", Weight::Reads, soon(50))
            .await
            .err()
            .unwrap();
        assert_eq!(waited.code(), tonic::Code::DeadlineExceeded);
        let bo = gate.admit("bo", Weight::Reads, soon(1000)).await.unwrap();
        // Both slots are taken: cy waits (the queue holds one), dee is refused at once.
        let cy = tokio::spawn({
            let gate = Arc::clone(&gate);
            async move { gate.admit("cy", Weight::Reads, soon(2000)).await }
        });
        while gate.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let busy = gate
            .admit("dee", Weight::Reads, soon(1000))
            .await
            .err()
            .unwrap();
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted);
        assert!(busy.message().contains("server busy"), "{busy:?}");
        // A constant query does not wait behind them.
        gate.admit("dee", Weight::Constant, soon(10)).await.unwrap();
        drop(ana);
        let cy = cy.await.unwrap().unwrap();
        assert!(cy.queued > Duration::ZERO);
        drop((bo, cy));
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(gate.running.available_permits(), 2);
    }
}
