//! Keys explicitly invalidated and not yet re-read from an authoritative
//! source.
//!
//! Not a cache: a cache may refuse or evict an entry to make room, and a
//! lost mark lets a replica or near-cache serve the old value. The bound
//! is explicit instead: marks expire after the invalidation TTL, and a full
//! shard drops its oldest mark (documented in the module docs).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::clock::Clock;

const SHARDS: usize = 32;
// Counters of live-or-expired marks no read has cleared yet, by key hash.
// A multiple of `SHARDS`, so each counter belongs to one shard and changes
// only under that shard's lock.
const PENDING: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Mark {
    epoch: u64,
    at: u64,
    // An authoritative read answered since: the key is trusted again, but
    // the epoch stays, so a read (or write-back) that began before the
    // invalidation still knows it happened.
    cleared: bool,
    // Set by a write of this process before it is sent, and replaced when
    // it is done: until then the write has not happened for any caller, so
    // a value kept before it may still answer a read that overlaps it.
    writing: bool,
}

#[derive(Debug)]
pub(crate) struct Marks {
    shards: Box<[Mutex<HashMap<Bytes, Mark>>]>,
    // Picks the shard with a fast hash: the map inside still hashes with
    // SipHash (keys may be crafted), so a key is SipHashed once, not twice.
    seed: u64,
    clock: Clock,
    ttl: u64,
    per_shard: usize,
    // When the last mark was set (0: never). Every live mark is younger
    // than the TTL, so reads skip the lookup when this is older: the
    // healthy path of a workload without recent writes takes no lock.
    last: AtomicU64,
    // Uncleared marks per hash bucket. Most marks are cleared by the next
    // read of the key, so on a load that writes all the time nearly every
    // bucket is at zero, and `get` (every read asks it) answers without the
    // lock, the clock or SipHash.
    pending: Box<[AtomicU32]>,
}

impl Marks {
    pub(crate) fn new(clock: Clock, ttl: std::time::Duration, max: usize) -> Self {
        Marks {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            seed: RandomState::new().hash_one(0u64),
            clock,
            ttl: u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX),
            per_shard: (max / SHARDS).max(1),
            last: AtomicU64::new(0),
            pending: (0..PENDING).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// `key`'s pending-counter index; its shard is that index modulo
    /// `SHARDS`.
    fn bucket(&self, key: &[u8]) -> usize {
        (super::near::fast_hash(self.seed, key) as usize) % PENDING
    }

    fn shard(&self, bucket: usize) -> std::sync::MutexGuard<'_, HashMap<Bytes, Mark>> {
        // A panic under this lock leaves a usable map.
        self.shards[bucket % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `key`'s bucket, unless no mark in it is uncleared (then no mark of
    /// `key` is): the lock-free answer every read gets on the common path.
    fn pending_bucket(&self, key: &[u8]) -> Option<usize> {
        if self.last.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let bucket = self.bucket(key);
        (self.pending[bucket].load(Ordering::SeqCst) > 0).then_some(bucket)
    }

    /// A mark of `key` stopped being uncleared (cleared, dropped, or
    /// replaced by a new one): called under its shard's lock.
    fn settled(&self, key: &[u8], mark: &Mark) {
        if !mark.cleared {
            self.pending[self.bucket(key)].fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn live(&self, mark: &Mark, now: u64) -> bool {
        now.saturating_sub(mark.at) < self.ttl
    }

    /// Mark `key` as invalidated at `epoch`.
    pub(crate) fn mark(&self, key: &Bytes, epoch: u64) {
        self.put(key, epoch, false, |_| false);
    }

    /// Mark `key` as invalidated at `epoch` by a write of this process
    /// about to be sent (see [`serving_blocked`](Self::serving_blocked)).
    pub(crate) fn mark_write(&self, key: &Bytes, epoch: u64) {
        self.put(key, epoch, true, |_| false);
    }

    /// Mark `key` as invalidated at `epoch`, by a write first marked at
    /// `sent` that read the key back: the mark is cleared at once (the
    /// read-back was authoritative) when `clear` and the key's mark is
    /// still the write's own: nothing else invalidated it since (a read
    /// that cleared it since changes nothing: what it kept is evicted, and
    /// it cannot keep anything later). Whether it was cleared.
    pub(crate) fn remark(&self, key: &Bytes, sent: u64, epoch: u64, clear: bool) -> bool {
        self.put(key, epoch, false, |old| {
            clear && old.is_some_and(|m| m.epoch == sent)
        })
    }

    /// Set `key`'s mark to `epoch`, cleared if `cleared` says so of the
    /// mark it replaces (looked at under the lock). Whether it was cleared.
    fn put(
        &self,
        key: &Bytes,
        epoch: u64,
        writing: bool,
        cleared: impl FnOnce(Option<&Mark>) -> bool,
    ) -> bool {
        let now = self.clock.now();
        let bucket = self.bucket(key);
        let mut shard = self.shard(bucket);
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.retain(|k, m| {
                let keep = now.saturating_sub(m.at) < self.ttl;
                if !keep {
                    self.settled(k, m);
                }
                keep
            });
            if shard.len() >= self.per_shard {
                if let Some(oldest) = shard
                    .iter()
                    .min_by_key(|(_, m)| m.at)
                    .map(|(k, _)| k.clone())
                {
                    if let Some(m) = shard.remove(&oldest) {
                        self.settled(&oldest, &m);
                    }
                }
            }
        }
        let cleared = cleared(shard.get(key));
        if !cleared {
            // Counted before the mark can be seen, and before this returns:
            // a read that starts after this call finds the counter above
            // zero.
            self.pending[bucket].fetch_add(1, Ordering::SeqCst);
        }
        let old = shard.insert(
            key.clone(),
            Mark {
                epoch,
                at: now,
                cleared,
                writing,
            },
        );
        if let Some(old) = old {
            self.settled(key, &old);
        }
        self.last.fetch_max(now, Ordering::SeqCst);
        cleared
    }

    /// `(epoch, cleared)` of `key`'s last invalidation within the TTL.
    fn lookup(&self, key: &[u8]) -> Option<(u64, bool)> {
        self.find(key).map(|m| (m.epoch, m.cleared))
    }

    /// `key`'s last mark within the TTL.
    fn find(&self, key: &[u8]) -> Option<Mark> {
        let last = self.last.load(Ordering::SeqCst);
        if last == 0 {
            return None;
        }
        let now = self.clock.now();
        if now.saturating_sub(last) >= self.ttl {
            return None;
        }
        let shard = self.shard(self.bucket(key));
        shard.get(key).filter(|m| self.live(m, now)).copied()
    }

    /// Whether a kept value of `key` may not answer a read: an uncleared
    /// mark, unless it is that of a write still on its way. Such a read
    /// overlaps the write, so the value before it is a right answer; once
    /// the write is done its second mark replaces this one. (Nothing can
    /// be kept while the mark stands: a value kept now was kept before.)
    pub(crate) fn serving_blocked(&self, key: &[u8]) -> bool {
        self.pending_bucket(key).is_some()
            && self.find(key).is_some_and(|m| !m.cleared && !m.writing)
    }

    /// The epoch of `key`'s mark, while no authoritative read cleared it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<u64> {
        self.pending_bucket(key)?;
        self.lookup(key)
            .filter(|(_, cleared)| !cleared)
            .map(|(e, _)| e)
    }

    /// Whether `key` was invalidated after epoch `start` (cleared or not).
    pub(crate) fn invalidated_since(&self, key: &[u8], start: u64) -> bool {
        self.lookup(key).is_some_and(|(e, _)| e > start)
    }

    /// Whether a value read by a read that began at `start` may be kept:
    /// no mark, or a cleared one older than the read.
    pub(crate) fn may_keep(&self, key: &[u8], start: u64) -> bool {
        match self.lookup(key) {
            None => true,
            Some((e, cleared)) => cleared && e <= start,
        }
    }

    /// An authoritative read that started at epoch `start` answered: drop
    /// the mark if it was set before that read began.
    pub(crate) fn clear(&self, key: &[u8], start: u64) {
        // Nothing uncleared in this bucket: nothing to clear.
        let Some(bucket) = self.pending_bucket(key) else {
            return;
        };
        let mut shard = self.shard(bucket);
        if let Some(m) = shard
            .get_mut(key)
            .filter(|m| m.epoch <= start && !m.cleared)
        {
            m.cleared = true;
            self.pending[bucket].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Uncleared marks counted (test only).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u64 {
        self.pending
            .iter()
            .map(|c| u64::from(c.load(Ordering::SeqCst)))
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn marks_clear_only_for_reads_that_started_after_them_and_expire() {
        let marks = Marks::new(Clock::new(), Duration::from_secs(10), 1000);
        let k = Bytes::from_static(b"k");
        assert_eq!(marks.get(b"k"), None);
        marks.mark(&k, 5);
        assert_eq!(marks.get(b"k"), Some(5));
        marks.clear(b"k", 4); // a read that began before the mark
        assert_eq!(marks.get(b"k"), Some(5));
        assert!(!marks.may_keep(b"k", 9));
        marks.clear(b"k", 5);
        assert_eq!(marks.get(b"k"), None);
        // Cleared, yet a read that began before the mark still sees it.
        assert!(marks.invalidated_since(b"k", 4));
        assert!(!marks.may_keep(b"k", 4));
        assert!(marks.may_keep(b"k", 5));
        marks.mark(&k, 6);
        assert_eq!(marks.pending(), 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(marks.get(b"k"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pending_count_follows_uncleared_marks() {
        let marks = Marks::new(Clock::new(), Duration::from_secs(10), SHARDS * 2);
        let keys: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("k{i}"))).collect();
        for (i, k) in keys.iter().enumerate() {
            marks.mark(k, i as u64 + 1);
            // A second mark of the same key replaces the first.
            marks.mark(k, i as u64 + 1);
            tokio::time::advance(Duration::from_nanos(1)).await;
        }
        // The bound dropped marks; each dropped one left the count.
        assert_eq!(marks.pending(), marks.len() as u64);
        for (i, k) in keys.iter().enumerate() {
            marks.clear(k, i as u64 + 1);
            marks.clear(k, i as u64 + 1);
        }
        assert_eq!(marks.pending(), 0);
        // Every key still reads as it should with the counters at zero.
        assert!(keys.iter().all(|k| marks.get(k).is_none()));
        marks.mark(&keys[0], 500);
        assert_eq!(marks.get(&keys[0]), Some(500));
        // Expired marks dropped by the bound leave the count too.
        tokio::time::advance(Duration::from_secs(11)).await;
        for (i, k) in keys.iter().enumerate().skip(1) {
            marks.mark(k, 600 + i as u64);
        }
        assert_eq!(marks.pending(), marks.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn marks_are_bounded() {
        let marks = Marks::new(Clock::new(), Duration::from_secs(10), SHARDS * 4);
        for i in 0..10_000u64 {
            marks.mark(&Bytes::from(i.to_string()), i + 1);
            tokio::time::advance(Duration::from_nanos(1)).await;
        }
        assert!(marks.len() <= SHARDS * 4, "{}", marks.len());
        // the newest survives
        assert_eq!(marks.get(b"9999"), Some(10_000));
    }
}
