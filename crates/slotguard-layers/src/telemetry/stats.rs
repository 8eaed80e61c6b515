//! A plain snapshot of what the telemetry layer counted, for applications
//! without OpenTelemetry.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters kept beside the OpenTelemetry instruments (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) reads: [AtomicU64; 6],
    pub(crate) writes: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) writes_refused: AtomicU64,
    pub(crate) redirects: [AtomicU64; 3],
    pub(crate) coalesced: AtomicU64,
    pub(crate) store_loads: [AtomicU64; 3],
    pub(crate) breaker_opened: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) fences_set: AtomicU64,
    pub(crate) invalidations_replayed: AtomicU64,
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Reads by the path that answered them: the same counts as
/// `redis_fallback_routing_attempts_total{status}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathCounts {
    /// Answered by the slot's primary.
    pub primary_hit: u64,
    /// Answered by a replica (failover or a replica read).
    pub primary_failover: u64,
    /// Answered by the secondary store.
    pub secondary_fallback: u64,
    /// Answered by the near-cache because the cluster could not.
    pub near_cache: u64,
    /// Failed.
    pub error: u64,
    /// Answered by client-side caching: a healthy read's hit.
    pub client_cache: u64,
}

impl PathCounts {
    /// Every read counted.
    pub fn total(&self) -> u64 {
        self.primary_hit
            + self.primary_failover
            + self.secondary_fallback
            + self.near_cache
            + self.error
    }
}

/// What the telemetry layer counted since it was built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TelemetryStats {
    /// Reads, by answering path.
    pub reads: PathCounts,
    /// Writes (`SET`, `DEL`) answered.
    pub writes: u64,
    /// Writes that failed (refused ones included).
    pub write_errors: u64,
    /// Writes refused before sending (fenced, breaker open, no owner).
    pub writes_refused: u64,
    /// `MOVED` replies followed.
    pub moved: u64,
    /// `ASK` replies followed.
    pub ask: u64,
    /// `TRYAGAIN` replies waited out.
    pub tryagain: u64,
    /// Reads that shared another caller's call.
    pub coalesced: u64,
    /// Store loads that found the key.
    pub store_hits: u64,
    /// Store loads that did not.
    pub store_misses: u64,
    /// Store loads that failed.
    pub store_errors: u64,
    /// Breakers opened (needs a topology: see `TelemetryBuilder::topology`).
    pub breakers_opened: u64,
    /// Slot map refresh rounds (needs a topology).
    pub refreshes: u64,
    /// Write fences set (needs a topology).
    pub fences_set: u64,
    /// Deletes replayed after failovers (needs a topology).
    pub invalidations_replayed: u64,
}

impl Counters {
    /// Every counter, in one fixed order.
    fn cells(&self) -> impl Iterator<Item = &AtomicU64> {
        self.reads
            .iter()
            .chain([&self.writes, &self.write_errors, &self.writes_refused])
            .chain(&self.redirects)
            .chain([&self.coalesced])
            .chain(&self.store_loads)
            .chain([
                &self.breaker_opened,
                &self.refreshes,
                &self.fences_set,
                &self.invalidations_replayed,
            ])
    }

    /// Add `other`'s counts to these.
    pub(crate) fn absorb(&self, other: &Counters) {
        for (a, b) in self.cells().zip(other.cells()) {
            a.fetch_add(get(b), Ordering::Relaxed);
        }
    }

    /// Reads by path (`ReadPath` order).
    pub(crate) fn reads(&self) -> [u64; 6] {
        self.reads.each_ref().map(get)
    }

    pub(crate) fn snapshot(&self) -> TelemetryStats {
        let r = &self.reads;
        TelemetryStats {
            reads: PathCounts {
                primary_hit: get(&r[0]),
                primary_failover: get(&r[1]),
                secondary_fallback: get(&r[2]),
                near_cache: get(&r[3]),
                error: get(&r[4]),
                client_cache: get(&r[5]),
            },
            writes: get(&self.writes),
            write_errors: get(&self.write_errors),
            writes_refused: get(&self.writes_refused),
            moved: get(&self.redirects[0]),
            ask: get(&self.redirects[1]),
            tryagain: get(&self.redirects[2]),
            coalesced: get(&self.coalesced),
            store_hits: get(&self.store_loads[0]),
            store_misses: get(&self.store_loads[1]),
            store_errors: get(&self.store_loads[2]),
            breakers_opened: get(&self.breaker_opened),
            refreshes: get(&self.refreshes),
            fences_set: get(&self.fences_set),
            invalidations_replayed: get(&self.invalidations_replayed),
        }
    }
}
