//! The bounded log of recent deletes: key → (slot, time, the node that is
//! known to have applied it).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use slotguard_core::{NodeAddr, SlotMap};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::config::LogConfig;

/// Shards of the log, picked by slot.
const SHARDS: usize = 32;

#[derive(Debug)]
struct Entry {
    slot: u16,
    at: Instant,
    // Tells this delete from a later one of the same key.
    seq: u64,
    // The primary known to hold the delete; `None` until one is (the
    // delete failed, or its slot changed owner since).
    owner: Option<NodeAddr>,
}

#[derive(Debug, Default)]
struct ShardLog {
    entries: HashMap<Bytes, Entry>,
    // (time, key, seq) in insertion order, for expiry and eviction.
    order: VecDeque<(Instant, Bytes, u64)>,
}

#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard(Mutex<ShardLog>);

/// Counters, for telemetry and tests.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) recorded: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) distrusted: AtomicU64,
    pub(crate) evicted: AtomicU64,
}

/// A delete to send again to its slot's current owner.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) key: Bytes,
    pub(crate) seq: u64,
    pub(crate) target: NodeAddr,
}

pub(crate) struct Log {
    pub(crate) config: LogConfig,
    per_shard: usize,
    // Entries in all shards: a read checks this one word while the log is
    // empty, which is nearly always.
    len: AtomicUsize,
    seq: AtomicU64,
    shards: Box<[Shard]>,
    pub(crate) counters: Counters,
    pub(crate) wake: Notify,
    pub(crate) replayer: AtomicBool,
    // The service replays go through, registered by `layer()`.
    pub(crate) sender: Mutex<Option<super::replay::ReplaySvc>>,
    pub(crate) registered: Notify,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("len", &self.len.load(Ordering::Relaxed))
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Log {
    pub(crate) fn new(config: LogConfig) -> Self {
        let per_shard = config.capacity.div_ceil(SHARDS).max(1);
        Self {
            config,
            per_shard,
            len: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            counters: Counters::default(),
            wake: Notify::new(),
            replayer: AtomicBool::new(false),
            sender: Mutex::new(None),
            registered: Notify::new(),
        }
    }

    fn shard(&self, slot: u16) -> MutexGuard<'_, ShardLog> {
        // Each critical section is a few map and queue operations that do
        // not panic halfway: a poisoned shard is still consistent.
        self.shards[usize::from(slot) % SHARDS]
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Remember a delete of `key`; `owner` is the primary that acknowledged
    /// it, if any did.
    pub(crate) fn record(&self, key: Bytes, slot: u16, owner: Option<NodeAddr>) {
        let now = Instant::now();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(slot);
        let entry = Entry {
            slot,
            at: now,
            seq,
            owner,
        };
        if shard.entries.insert(key.clone(), entry).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        shard.order.push_back((now, key, seq));
        self.expire(&mut shard, now);
        drop(shard);
        self.counters.recorded.fetch_add(1, Ordering::Relaxed);
    }

    /// Drop what is older than the window, and the oldest beyond capacity.
    fn expire(&self, shard: &mut ShardLog, now: Instant) {
        let window = self.config.window;
        // The queue holds one item per delete, the map one per key: bound
        // the queue too, for a key deleted over and over.
        while let Some((at, _, _)) = shard.order.front() {
            let old = now.saturating_duration_since(*at) > window;
            let full =
                shard.entries.len() > self.per_shard || shard.order.len() > 2 * self.per_shard;
            if !(old || full) {
                break;
            }
            let Some((_, key, seq)) = shard.order.pop_front() else {
                break;
            };
            if shard.entries.get(&key).is_some_and(|e| e.seq == seq) {
                shard.entries.remove(&key);
                self.len.fetch_sub(1, Ordering::Relaxed);
                if !old {
                    self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// `Some(owner)` when `key` was deleted within the window: only that
    /// primary's answer for it can be trusted (none, while `owner` is
    /// `None`).
    pub(crate) fn lookup(&self, key: &Bytes, slot: u16) -> Option<Option<NodeAddr>> {
        if self.len() == 0 {
            return None;
        }
        let shard = self.shard(slot);
        let entry = shard.entries.get(key)?;
        if Instant::now().saturating_duration_since(entry.at) > self.config.window {
            return None;
        }
        Some(entry.owner.clone())
    }

    /// Deletes within the window whose slot's owner in `map` is not known to
    /// hold them. A delete whose slot changed owner loses its trusted owner
    /// here, until a replay to the new one succeeds.
    pub(crate) fn pending(&self, map: &SlotMap) -> Vec<Replay> {
        let now = Instant::now();
        let mut work = Vec::new();
        for index in 0..SHARDS {
            let mut shard = self.shards[index]
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.expire(&mut shard, now);
            for (key, entry) in shard.entries.iter_mut() {
                let Some(primary) = map.primary_for_slot(entry.slot) else {
                    continue;
                };
                if entry.owner.as_ref() == Some(&primary.addr) {
                    continue;
                }
                entry.owner = None;
                work.push(Replay {
                    key: key.clone(),
                    seq: entry.seq,
                    target: primary.addr.clone(),
                });
            }
        }
        work
    }

    /// `node`, a primary, acknowledged the replay of delete `seq` of `key`.
    pub(crate) fn confirm(&self, key: &Bytes, slot: u16, seq: u64, node: NodeAddr) {
        let mut shard = self.shard(slot);
        if let Some(entry) = shard.entries.get_mut(key) {
            if entry.seq == seq {
                entry.owner = Some(node);
            }
        }
    }
}
