//! Settings of the fallback layer.

use std::time::Duration;

/// How the fallback layer loads from the store, writes back and keeps its
/// near-cache. Start from [`FallbackConfig::default`] and change what you
/// need with the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FallbackConfig {
    /// Cache-aside: after a miss answered by the store, write the value
    /// back to the cluster. `None` turns it off. Default on
    /// ([`WriteBack::default`]).
    pub write_back: Option<WriteBack>,
    /// Deadline of the cluster attempt of a read, so a sick cluster leaves
    /// time for the fallback within the caller's own deadline: at most this
    /// long, and never the last quarter of the caller's remaining time.
    /// `None`: the request's deadline only. Default 300 ms.
    pub cluster_read_timeout: Option<Duration>,
    /// Deadline of the cluster attempt of a read of a *marked* key (one
    /// only its primary may answer, see the module docs): past it the
    /// store answers. A stalled primary then costs such a read this long,
    /// not the whole cluster read timeout, since no replica may answer it.
    /// `None`: the cluster read timeout. Default `None`: a primary that
    /// misses this deadline counts as timed out to its circuit breaker, and
    /// a short one (measured with 25 ms: a manual failover's brief pause)
    /// opened the breaker and refused writes.
    pub marked_read_timeout: Option<Duration>,
    /// Hedge a read of a marked key to the store: when its primary has not
    /// answered within the hedge delay, the store is asked too and the
    /// first good answer wins. Unlike
    /// [`marked_read_timeout`](Self::marked_read_timeout), the primary's
    /// call is not timed out: it runs until the store answers, and a call
    /// dropped then counts as nothing to its breaker. `None`: off.
    /// Default on, 5–25 ms ([`MarkedHedge::default`]).
    pub marked_hedge: Option<MarkedHedge>,
    /// Deadline of one store call, from when its load has a slot (see
    /// [`store_concurrency`](Self::store_concurrency)). Each caller also
    /// waits at most until its own deadline. Default 1 s.
    pub store_timeout: Duration,
    /// Store loads in flight at most (over all keys; one per key at most
    /// anyway). A load waits at most [`store_timeout`](Self::store_timeout)
    /// for a slot, else fails `Overloaded` (not counted by the store's
    /// breaker). Default 32.
    pub store_concurrency: usize,
    /// Largest value accepted from the store; a larger one is an error
    /// and is neither returned, cached nor written back. Default 16 MiB.
    pub max_value_bytes: usize,
    /// The store's own breaker.
    pub store_breaker: StoreBreakerConfig,
    /// How long a key stays marked after an explicit invalidation when no
    /// authoritative read clears it sooner. Default 5 min.
    pub invalidation_ttl: Duration,
    /// Most keys marked at once (a bound on memory; past it the oldest mark
    /// of the key's shard is dropped). Default 100,000.
    pub max_invalidations: usize,
    /// The near-cache; `None` turns it off. Default on
    /// ([`NearCacheConfig::default`]).
    pub near_cache: Option<NearCacheConfig>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            write_back: Some(WriteBack::default()),
            cluster_read_timeout: Some(Duration::from_millis(300)),
            marked_read_timeout: None,
            marked_hedge: Some(MarkedHedge::default()),
            store_timeout: Duration::from_secs(1),
            store_concurrency: 32,
            max_value_bytes: 16 * 1024 * 1024,
            store_breaker: StoreBreakerConfig::default(),
            invalidation_ttl: Duration::from_secs(300),
            max_invalidations: 100_000,
            near_cache: Some(NearCacheConfig::default()),
        }
    }
}

impl FallbackConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_write_back => write_back: Option<WriteBack>,
    }

    slotguard_core::setters! {
        with_cluster_read_timeout => cluster_read_timeout: Option<Duration>,
        with_marked_read_timeout => marked_read_timeout: Option<Duration>,
        with_marked_hedge => marked_hedge: Option<MarkedHedge>,
        with_store_timeout => store_timeout: Duration,
        with_store_concurrency => store_concurrency: usize,
        with_max_value_bytes => max_value_bytes: usize,
        with_store_breaker => store_breaker: StoreBreakerConfig,
        with_invalidation_ttl => invalidation_ttl: Duration,
        with_max_invalidations => max_invalidations: usize,
    }

    slotguard_core::setters! {
        with_near_cache => near_cache: Option<NearCacheConfig>,
    }
}

/// How long a read of a marked key waits for its primary before it also
/// asks the store ([`FallbackConfig::marked_hedge`]): the primary's own
/// latency bound (its smoothed latency plus four deviations, the bound
/// replica hedges use), kept within `floor..=cap`; the cap while the
/// primary's latency is not known yet.
///
/// No budget of its own: the store's guard already bounds what a hedge can
/// cost it (one load per key at a time, a concurrency limit, its breaker),
/// and only marked keys hedge: keys written or invalidated since their
/// primary last answered them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MarkedHedge {
    /// Shortest delay, however fast the primary usually is. Default 5 ms.
    pub floor: Duration,
    /// Longest delay: what a stalled primary costs a marked read (plus the
    /// store's answer). Default 25 ms.
    pub cap: Duration,
}

impl Default for MarkedHedge {
    fn default() -> Self {
        MarkedHedge {
            floor: Duration::from_millis(5),
            cap: Duration::from_millis(25),
        }
    }
}

impl MarkedHedge {
    /// A delay within `floor..=cap` (a `cap` below `floor` is raised to it).
    pub fn new(floor: Duration, cap: Duration) -> Self {
        MarkedHedge {
            floor,
            cap: cap.max(floor),
        }
    }

    /// The delay for a primary whose latency bound is `bound` (zero: not
    /// known yet).
    pub fn delay(&self, bound: Duration) -> Duration {
        if bound.is_zero() {
            return self.cap.max(self.floor);
        }
        bound.clamp(self.floor, self.cap.max(self.floor))
    }
}

/// Cache-aside write-back of store answers to the cluster.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteBack {
    /// Expiry of written-back values: bounds how long a value written back
    /// by a racing reader can outlive a change made elsewhere. Default 5 min.
    pub ttl: Duration,
    /// Deadline of one write-back. Default 250 ms.
    pub timeout: Duration,
    /// Write-backs in flight at most; past it a write-back is skipped (the
    /// next miss loads again). Default 64.
    pub max_in_flight: usize,
}

impl Default for WriteBack {
    fn default() -> Self {
        WriteBack {
            ttl: Duration::from_secs(300),
            timeout: Duration::from_millis(250),
            max_in_flight: 64,
        }
    }
}

impl WriteBack {
    /// Write back with expiry `ttl`, other settings default.
    pub fn new(ttl: Duration) -> Self {
        WriteBack {
            ttl,
            ..WriteBack::default()
        }
    }

    slotguard_core::setters! {
        with_timeout => timeout: Duration,
    }

    slotguard_core::setters! {
        with_max_in_flight => max_in_flight: usize,
    }
}

/// When the store's breaker opens and how it recovers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreBreakerConfig {
    /// Open after this many failed loads in a row (errors and timeouts; at
    /// least 1). Default 5.
    pub consecutive_failures: u32,
    /// How long an open breaker refuses loads before one probe goes
    /// through. Default 1 s.
    pub open_duration: Duration,
}

impl Default for StoreBreakerConfig {
    fn default() -> Self {
        StoreBreakerConfig {
            consecutive_failures: 5,
            open_duration: Duration::from_secs(1),
        }
    }
}

impl StoreBreakerConfig {
    /// A breaker that opens after `failures` in a row for `open_duration`.
    pub fn new(failures: u32, open_duration: Duration) -> Self {
        StoreBreakerConfig {
            consecutive_failures: failures,
            open_duration,
        }
    }
}

/// The near-cache of hot keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NearCacheConfig {
    /// Total size of the entries (key + value + overhead) at most.
    /// Default 64 MiB.
    pub max_bytes: u64,
    /// Larger values are never kept. Default 256 KiB.
    pub max_entry_bytes: usize,
    /// A key is kept after this many reads within
    /// [`admission_window`](Self::admission_window) (at least 1). Default 2.
    pub admit_after: u32,
    /// The window admission counts reads in. Default 10 s.
    pub admission_window: Duration,
    /// How long an entry answers healthy reads without asking the cluster.
    /// Default 0: healthy reads always go to the cluster, and the near-cache
    /// answers only when the cluster cannot. Raise it only when another
    /// client's writes reach this one as invalidations (an
    /// [`InvalidationBus`](slotguard_core::invalidation::InvalidationBus)
    /// fed by client tracking): otherwise they stay unseen this long.
    pub fresh_for: Duration,
    /// While the cluster is failing, entries answer up to this long past
    /// [`fresh_for`](Self::fresh_for). Default 2 s.
    pub max_stale: Duration,
    /// Client-side caching: how long an entry read from its slot's primary
    /// over a connection with RESP3 client tracking answers healthy reads
    /// without asking the cluster — only while that connection is the
    /// node's live one, and only until an invalidation of the key (a
    /// tracking push, a write or delete through the layer, a slot move)
    /// arrives. Needs the leaf's invalidation bus
    /// ([`FallbackLayer::with_invalidations`](super::FallbackLayer::with_invalidations)),
    /// subscribed before the leaf connects: a connection whose `Tracking`
    /// event the layer did not see is never trusted (without a bus, no
    /// entry answers a healthy read, whatever this says). Default 2 s, the
    /// same bound as [`max_stale`](Self::max_stale): an invalidation that
    /// cannot arrive (a node partitioned from this client alone, whose
    /// connection has not failed yet) leaves an entry answering at most as
    /// long as a failed read's near-cache answer may be old anyway
    /// (docs/client-side-caching.md says why this is the default). `0`
    /// turns client-side caching off.
    pub tracked_for: Duration,
}

impl Default for NearCacheConfig {
    fn default() -> Self {
        NearCacheConfig {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 256 * 1024,
            admit_after: 2,
            admission_window: Duration::from_secs(10),
            fresh_for: Duration::ZERO,
            max_stale: Duration::from_secs(2),
            tracked_for: Duration::from_secs(2),
        }
    }
}

impl NearCacheConfig {
    slotguard_core::setters! {
        with_max_bytes => max_bytes: u64,
        with_max_entry_bytes => max_entry_bytes: usize,
    }

    /// Set [`admit_after`](Self::admit_after) and
    /// [`admission_window`](Self::admission_window).
    pub fn with_admission(mut self, reads: u32, window: Duration) -> Self {
        self.admit_after = reads;
        self.admission_window = window;
        self
    }

    slotguard_core::setters! {
        with_fresh_for => fresh_for: Duration,
        with_max_stale => max_stale: Duration,
        with_tracked_for => tracked_for: Duration,
    }
}
