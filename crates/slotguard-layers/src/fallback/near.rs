//! The near-cache: a bounded `moka` cache of hot keys, with admission after
//! a few reads in a window.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::NodeAddr;

use super::clock::Clock;
use super::config::NearCacheConfig;

/// Bytes counted per entry on top of key and value (the entry, moka's
/// bookkeeping), so a flood of tiny values is bounded too.
const OVERHEAD: usize = 96;

/// One cached value.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    // When a read that returned this value started (clock nanos); touched
    // by later reads of the same value.
    fetched: AtomicU64,
    // The node that answered (`Invalidation::Node` flushes by it).
    pub(crate) node: Option<NodeAddr>,
    // The slot's primary when the value was read: an entry whose slot
    // changed owner is not served.
    pub(crate) owner: Option<NodeAddr>,
    pub(crate) slot: u16,
    // The epoch the filling read started at: a flush after it makes the
    // entry unservable even before moka drops it.
    pub(crate) epoch: u64,
    // Read over a tracking connection (client-side caching): the node's
    // session word then, and the word itself to compare with.
    tracked: Option<Tracked>,
    // A healthy read was answered from it (client-side caching): a write
    // of its key is worth reading back.
    served: AtomicBool,
}

/// A tracking session of a node, as it was when a value was read.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub(crate) session: Arc<AtomicU64>,
    pub(crate) word: u64,
}

impl Tracked {
    fn same(a: Option<&Tracked>, b: Option<&Tracked>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(&a.session, &b.session) && a.word == b.word,
            _ => false,
        }
    }
}

impl Entry {
    /// Whether the entry was read over a tracking connection that is still
    /// its node's live one (every invalidation of it since reached us).
    pub(crate) fn tracking_live(&self) -> bool {
        self.tracked
            .as_ref()
            .is_some_and(|t| t.session.load(Ordering::SeqCst) == t.word)
    }

    /// A healthy read was answered from this entry.
    pub(crate) fn note_served(&self) {
        // Looked at first: a hot entry's line is not written on every hit.
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn age(&self, clock: &Clock) -> Duration {
        Duration::from_nanos(
            clock
                .now()
                .saturating_sub(self.fetched.load(Ordering::Acquire)),
        )
    }
}

/// What a fill knows about the value.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) value: Bytes,
    pub(crate) node: Option<NodeAddr>,
    pub(crate) owner: Option<NodeAddr>,
    pub(crate) slot: u16,
    pub(crate) epoch: u64,
    pub(crate) fetched: u64,
    pub(crate) tracked: Option<Tracked>,
}

/// A count-min sketch of recent reads (two counters per key, saturating),
/// reset every window: admission costs a hash and two atomic loads.
#[derive(Debug)]
struct Sketch {
    counters: Box<[AtomicU8]>,
    seed: u64,
    window_start: AtomicU64,
    window: u64,
    admit_after: u8,
}

const SKETCH_BITS: u32 = 16;

impl Sketch {
    fn new(config: &NearCacheConfig) -> Self {
        Sketch {
            counters: (0..1usize << SKETCH_BITS)
                .map(|_| AtomicU8::new(0))
                .collect(),
            seed: RandomState::new().hash_one(0u64),
            window_start: AtomicU64::new(0),
            window: u64::try_from(config.admission_window.as_nanos())
                .unwrap_or(u64::MAX)
                .max(1),
            admit_after: config.admit_after.clamp(1, 255) as u8,
        }
    }

    /// The admission hash (see [`fast_hash`]): admission only needs
    /// spread, and every hit pays for it. A crafted collision only admits a
    /// cold key early.
    fn hash(&self, key: &[u8]) -> u64 {
        fast_hash(self.seed, key)
    }

    /// Count one read of the key hashed to `h`; whether it is now admitted.
    fn hit(&self, h: u64, now: u64) -> bool {
        if self.admit_after <= 1 {
            return true;
        }
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= self.window
            && self
                .window_start
                .compare_exchange(start, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // Once per window, by whoever noticed first.
            for c in self.counters.iter() {
                c.store(0, Ordering::Relaxed);
            }
        }
        let mask = (1u64 << SKETCH_BITS) - 1;
        let a = &self.counters[(h & mask) as usize];
        let b = &self.counters[((h >> 32) & mask) as usize];
        let mut min = u8::MAX;
        for c in [a, b] {
            let v = c.load(Ordering::Relaxed);
            // Saturated counters are not written again: a hot key costs
            // reads only.
            let v = if v < self.admit_after {
                c.fetch_add(1, Ordering::Relaxed).saturating_add(1)
            } else {
                v
            };
            min = min.min(v);
        }
        min >= self.admit_after
    }
}

#[derive(Debug)]
pub(crate) struct NearCache {
    cache: moka::sync::Cache<Bytes, Arc<Entry>>,
    sketch: Sketch,
    // Which key hashed to each slot was last kept, and when: `(tag << 32) |
    // clock milliseconds` (wrapping; 0: never, or evicted since). A hot key
    // is kept again at most once per `refresh_ms`, so most hits cost no
    // cache lookup; a key whose slot another key took is kept at once (two
    // hot keys sharing a slot lose the saving, neither starves).
    kept: Box<[AtomicU64]>,
    refresh_ms: u32,
    pub(crate) config: NearCacheConfig,
}

impl NearCache {
    pub(crate) fn new(config: NearCacheConfig) -> Self {
        // moka's own expiry runs on the real clock and only frees memory;
        // whether an entry may answer is decided from its age on tokio's
        // clock.
        let keep = config
            .fresh_for
            .saturating_add(config.max_stale)
            .saturating_mul(2)
            .max(config.tracked_for)
            .max(Duration::from_secs(1));
        let cache = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|k: &Bytes, e: &Arc<Entry>| {
                u32::try_from(k.len() + e.value.len() + OVERHEAD).unwrap_or(u32::MAX)
            })
            .time_to_live(keep)
            .build();
        // An eighth of the staleness budget: an entry kept answering
        // degraded reads is at most that much older than the last read.
        let refresh_ms = (config.max_stale.as_millis() / 8).clamp(1, 250) as u32;
        NearCache {
            cache,
            sketch: Sketch::new(&config),
            kept: (0..1usize << SKETCH_BITS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            refresh_ms,
            config,
        }
    }

    /// Entries and weighed bytes (moka's counts, updated lazily).
    pub(crate) fn size(&self) -> (u64, u64) {
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    pub(crate) fn get(&self, key: &Bytes) -> Option<Arc<Entry>> {
        self.cache.get(key)
    }

    fn kept_slot(&self, h: u64) -> &AtomicU64 {
        &self.kept[((h >> 16) & ((1 << SKETCH_BITS) - 1)) as usize]
    }

    /// Count a read of `key`; whether its value should be kept now: the key
    /// is hot, the value not too large, and it was not kept in the last
    /// refresh interval.
    pub(crate) fn admit(&self, key: &[u8], len: usize, now: u64) -> bool {
        if len > self.config.max_entry_bytes {
            return false;
        }
        let h = self.sketch.hash(key);
        let ms = ((now / 1_000_000) as u32).max(1);
        let tag = h >> 32;
        let slot = self.kept_slot(h);
        let last = slot.load(Ordering::Relaxed);
        // Checked first: a hot key kept a moment ago touches one word.
        if last != 0 && last >> 32 == tag && ms.wrapping_sub(last as u32) < self.refresh_ms {
            return false;
        }
        if !self.sketch.hit(h, now) {
            return false;
        }
        slot.store((tag << 32) | u64::from(ms), Ordering::Relaxed);
        true
    }

    /// Keep `fill` for `key`: a read of the same value from the same owner
    /// only refreshes the entry's age, without an insert. Whether it
    /// inserted.
    pub(crate) fn fill(&self, key: &Bytes, fill: Fill) -> bool {
        if let Some(e) = self.cache.get(key) {
            if e.value == fill.value
                && e.owner == fill.owner
                && e.epoch <= fill.epoch
                && Tracked::same(e.tracked.as_ref(), fill.tracked.as_ref())
            {
                e.fetched.fetch_max(fill.fetched, Ordering::AcqRel);
                return false;
            }
        }
        let entry = Entry {
            value: fill.value,
            fetched: AtomicU64::new(fill.fetched),
            node: fill.node,
            owner: fill.owner,
            slot: fill.slot,
            epoch: fill.epoch,
            tracked: fill.tracked,
            served: AtomicBool::new(false),
        };
        self.cache.insert(key.clone(), Arc::new(entry));
        true
    }

    /// `key` was admitted but its fill was refused (an invalidation since
    /// its read began): forget that it was kept, or the next read, which
    /// may keep it, would be refused for a refresh interval and a hot key
    /// written often would hardly ever be cached.
    pub(crate) fn unkeep(&self, key: &[u8]) {
        let h = self.sketch.hash(key);
        let slot = self.kept_slot(h);
        let last = slot.load(Ordering::Relaxed);
        if last >> 32 == h >> 32 {
            // Lost to a racing admit of another key sharing the slot: that
            // key is kept again a refresh interval early, which is harmless.
            let _ = slot.compare_exchange(last, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub(crate) fn evict(&self, key: &[u8]) {
        // The next read keeps the key again at once.
        self.kept_slot(self.sketch.hash(key))
            .store(0, Ordering::Relaxed);
        // Most writes are of keys not kept (or already evicted by the mark
        // before the write): a lookup costs far less than moka's
        // invalidation, which queues a write operation for its
        // housekeeping. A fill racing this check is safe: it looks for
        // the mark again after inserting, and the mark was set first.
        if self.cache.contains_key(key) {
            self.cache.invalidate(key);
        }
    }

    pub(crate) fn evict_all(&self) {
        for k in self.kept.iter() {
            k.store(0, Ordering::Relaxed);
        }
        self.cache.invalidate_all();
    }

    /// Evict every entry `pred` selects (a scan: for rare events only).
    pub(crate) fn evict_where(&self, pred: impl Fn(&Entry) -> bool) {
        let doomed: Vec<Arc<Bytes>> = self
            .cache
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(k, _)| k)
            .collect();
        for k in doomed {
            self.evict(k.as_ref());
        }
    }

    /// Whether `key`'s entry answered a healthy read since it was kept.
    pub(crate) fn served(&self, key: &Bytes) -> bool {
        self.cache
            .get(key)
            .is_some_and(|e| e.served.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.cache.contains_key(key)
    }
}

/// A fast seeded hash: FxHash's mixing, 8 bytes at a time, then murmur3's
/// finaliser (every output bit depends on every input bit). For spreading
/// keys (admission counters, lock shards), never for a map's own buckets:
/// it is not built to resist crafted collisions.
pub(crate) fn fast_hash(seed: u64, key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = seed;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    let mut w = [0u8; 8];
    let rest = chunks.remainder();
    w[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(w) ^ key.len() as u64).wrapping_mul(K);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_counts_reads_in_a_window() {
        let config = NearCacheConfig::default().with_admission(3, Duration::from_secs(1));
        let sketch = Sketch::new(&config);
        let s = 1_000_000_000;
        let h = sketch.hash(b"k");
        assert!(!sketch.hit(h, s));
        assert!(!sketch.hit(h, s + 1));
        assert!(sketch.hit(h, s + 2));
        assert!(sketch.hit(h, s + 3));
        // a new window starts from zero
        assert!(!sketch.hit(h, 3 * s));
    }

    #[test]
    fn a_hot_key_is_kept_once_per_refresh_interval_and_at_once_after_an_eviction() {
        let config = NearCacheConfig::default().with_admission(1, Duration::from_secs(10));
        let near = NearCache::new(config);
        let ms = 1_000_000;
        assert!(near.admit(b"k", 1, 1000 * ms));
        assert!(!near.admit(b"k", 1, 1100 * ms));
        assert!(near.admit(b"k", 1, 1300 * ms));
        near.evict(b"k");
        assert!(near.admit(b"k", 1, 1301 * ms));
        // A refused fill forgets the admission: the next read keeps it.
        near.unkeep(b"k");
        assert!(near.admit(b"k", 1, 1302 * ms));
        // ...but not another key's.
        near.unkeep(b"other");
        assert!(!near.admit(b"k", 1, 1303 * ms));
    }
}
