//! Memory limits: one pool for the whole server, a cap per query, and a bounded spill
//! directory. Sorts, aggregations and repartitions that reach their share spill to disk; an
//! operator that cannot spill (a hash join's build side) fails its query with
//! `ResourcesExhausted`, whose message names the limit, while the other queries go on.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// How much memory and spill space queries may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes all running queries may hold together (the server's pool).
    pub pool_bytes: usize,
    /// Bytes one query may hold.
    pub query_bytes: usize,
    /// Where spill files go; `None` = a directory under the system's temporary directory.
    pub spill_dir: Option<PathBuf>,
    /// Bytes of spill files all queries may keep at once.
    pub spill_bytes: u64,
}

/// Operators whose use is named in a "memory exhausted" message.
const CONSUMERS_NAMED: usize = 3;

impl MemoryLimits {
    /// Puts the server pool and the spill directory into a runtime being built. The pool is fair
    /// among operators that can spill, so one large sort cannot starve the others.
    pub(crate) fn apply(&self, runtime: RuntimeEnvBuilder) -> RuntimeEnvBuilder {
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(self.pool_bytes),
            NonZeroUsize::new(CONSUMERS_NAMED).expect("nonzero"),
        );
        let mode = match &self.spill_dir {
            Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
            None => DiskManagerMode::OsTmpDirectory,
        };
        runtime
            .with_memory_pool(Arc::new(ServerPool(pool, self.pool_bytes)))
            .with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(mode)
                    .with_max_temp_directory_size(self.spill_bytes),
            )
    }

    /// The runtime one query runs with: `shared`, with its memory drawn through a cap of
    /// [`MemoryLimits::query_bytes`].
    pub(crate) fn for_query(&self, shared: &RuntimeEnv) -> Arc<RuntimeEnv> {
        let mut runtime = shared.clone();
        runtime.memory_pool = Arc::new(QueryPool {
            server: Arc::clone(&shared.memory_pool),
            own: FairSpillPool::new(self.query_bytes),
            cap: self.query_bytes,
        });
        Arc::new(runtime)
    }
}

/// Bytes in a reader's units: `512 MiB`, `2.0 GiB`.
pub fn human_bytes(bytes: usize) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let bytes = bytes as f64;
    if bytes >= 1024.0 * MIB {
        format!("{:.1} GiB", bytes / (1024.0 * MIB))
    } else {
        format!("{:.0} MiB", bytes / MIB)
    }
}

/// The server's pool, whose refusals name the server limit and its flag.
struct ServerPool(TrackConsumersPool<FairSpillPool>, usize);

impl fmt::Debug for ServerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerPool({})", human_bytes(self.1))
    }
}

impl fmt::Display for ServerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl MemoryPool for ServerPool {
    fn name(&self) -> &str {
        "tokenledger server pool"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.0.register(consumer)
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.0.unregister(consumer)
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.0.grow(reservation, additional)
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.0.shrink(reservation, shrink)
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.0.try_grow(reservation, additional).map_err(|e| {
            exhausted(format!(
                "the server's memory pool of {} (--memory-limit) is in use by running queries: {}",
                human_bytes(self.1),
                e.find_root()
            ))
        })
    }
    fn reserved(&self) -> usize {
        self.0.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.0.memory_limit()
    }
}

/// One query's view of the server pool: the same pool, refusing past the query's cap. Within
/// the cap the query's own operators share fairly, as the server's do within the pool: a sort
/// partition that spilled can take memory again even while another holds its share.
struct QueryPool {
    server: Arc<dyn MemoryPool>,
    own: FairSpillPool,
    cap: usize,
}

impl fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "QueryPool({} of {})",
            human_bytes(self.own.reserved()),
            human_bytes(self.cap)
        )
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "tokenledger query pool"
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.own.register(consumer);
        self.server.register(consumer);
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.own.unregister(consumer);
        self.server.unregister(consumer);
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.own.grow(reservation, additional);
        self.server.grow(reservation, additional);
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.own.shrink(reservation, shrink);
        self.server.shrink(reservation, shrink);
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if self.own.try_grow(reservation, additional).is_err() {
            let consumer = reservation.consumer();
            return Err(exhausted(format!(
                "the query reached its memory limit of {} (--query-memory-limit): {} more for \
                 {} on top of {} the query holds{}",
                human_bytes(self.cap),
                human_bytes(additional),
                consumer.name(),
                human_bytes(self.own.reserved()),
                if consumer.can_spill() {
                    ", after spilling what it could"
                } else {
                    " (this operator cannot spill to disk)"
                }
            )));
        }
        self.server
            .try_grow(reservation, additional)
            .inspect_err(|_| self.own.shrink(reservation, additional))
    }
    fn reserved(&self) -> usize {
        self.own.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.cap)
    }
}

fn exhausted(message: String) -> DataFusionError {
    DataFusionError::ResourcesExhausted(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pool: usize, query: usize) -> MemoryLimits {
        MemoryLimits {
            pool_bytes: pool,
            query_bytes: query,
            spill_dir: None,
            spill_bytes: 1 << 30,
        }
    }

    #[test]
    fn a_query_is_refused_past_its_cap_and_the_server_past_the_pool() {
        let limits = limits(1000, 600);
        let shared = limits.apply(RuntimeEnvBuilder::new()).build().unwrap();
        let first = limits.for_query(&shared);
        let second = limits.for_query(&shared);
        let a = MemoryConsumer::new("HashJoinInput").register(&first.memory_pool);
        a.try_grow(500).unwrap();
        let refused = a.try_grow(200).unwrap_err().to_string();
        assert!(refused.contains("--query-memory-limit"), "{refused}");
        assert!(refused.contains("cannot spill"), "{refused}");
        assert_eq!(
            shared.memory_pool.reserved(),
            500,
            "a refusal takes nothing"
        );
        let b = MemoryConsumer::new("Sort").register(&second.memory_pool);
        let pool_full = b.try_grow(600).unwrap_err().to_string();
        assert!(pool_full.contains("--memory-limit"), "{pool_full}");
        b.try_grow(400).unwrap();
        drop(a);
        assert_eq!(
            shared.memory_pool.reserved(),
            400,
            "a finished query gives back"
        );
        assert_eq!(first.memory_pool.reserved(), 0);
    }
}
