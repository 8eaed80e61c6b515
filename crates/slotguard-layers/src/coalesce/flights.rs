//! The table of reads in flight: one shared call per (key, consistency,
//! route), sharded by slot.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use slotguard_core::{BoxError, CacheError, CacheRequest, CacheResponse, Consistency, Route};

/// Shards of the table. The slot picks one, so the hash already computed
/// for routing spreads unrelated keys over separate locks, and a write
/// finds every flight of its key in one shard.
const SHARDS: usize = 32;

/// An error shared by the callers of one coalesced read.
///
/// Errors travel as [`BoxError`], which cannot be cloned: a
/// [`CacheError`] is cloned for each caller as is; any other error (tower's
/// `Elapsed`, a custom leaf's) is shared behind an `Arc`, wrapped in this
/// type, whose [`source`](StdError::source) is the original, so
/// [`classify`](slotguard_core::classify) and
/// [`as_cache_error`](slotguard_core::as_cache_error) see through it.
#[derive(Clone)]
pub struct SharedError(Arc<dyn StdError + Send + Sync + 'static>);

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedError").field(&self.0).finish()
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coalesced read failed: {}", self.0)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// An outcome every caller of a flight can take a copy of.
#[derive(Debug, Clone)]
pub(crate) enum Shareable {
    Cache(CacheError),
    Other(SharedError),
}

impl Shareable {
    pub(crate) fn new(err: BoxError) -> Self {
        match err.downcast::<CacheError>() {
            Ok(e) => Shareable::Cache(*e),
            Err(other) => Shareable::Other(SharedError(Arc::from(other))),
        }
    }

    pub(crate) fn into_box(self) -> BoxError {
        match self {
            Shareable::Cache(e) => Box::new(e),
            Shareable::Other(e) => Box::new(e),
        }
    }
}

pub(crate) type Outcome = Result<CacheResponse, Shareable>;
pub(crate) type Flight = Shared<BoxFuture<'static, Outcome>>;

/// What makes two reads identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    key: Bytes,
    consistency: Consistency,
    route: Route,
}

impl FlightKey {
    fn of(req: &CacheRequest) -> Self {
        Self {
            key: req.key().clone(),
            consistency: req.consistency,
            route: req.route.clone(),
        }
    }
}

struct Entry {
    // Tells this flight from a later one for the same key.
    id: u64,
    // Tickets not yet given back; counted under the shard's lock, so the
    // last caller out knows it is the last.
    tickets: usize,
    // Weak: the callers own the flight; when every one of them is gone,
    // the call is dropped (cancelled) rather than kept alive by the table.
    flight: WeakShared<BoxFuture<'static, Outcome>>,
}

/// The layer's table, shared by every service it made.
pub(crate) struct Flights {
    shards: Vec<Mutex<HashMap<FlightKey, Entry>>>,
    next_id: AtomicU64,
    pub(crate) led: AtomicU64,
    pub(crate) joined: AtomicU64,
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("led", &self.led.load(Ordering::Relaxed))
            .field("joined", &self.joined.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A caller's place in a flight.
pub(crate) struct Ticket {
    pub(crate) flight: Flight,
    key: FlightKey,
    id: u64,
    shard: usize,
    pub(crate) leader: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

impl Flights {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            next_id: AtomicU64::new(0),
            led: AtomicU64::new(0),
            joined: AtomicU64::new(0),
        }
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, HashMap<FlightKey, Entry>> {
        // Every critical section is a lookup, insert, remove or retain that
        // cannot panic halfway: a poisoned map is still consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Join the flight of an identical read, or start one with `start`.
    ///
    /// `start` runs under the shard's lock, so it only builds a lazy future
    /// (an `async` block that calls the inner service when first polled):
    /// no inner code runs under the lock, which could be this same layer
    /// again and deadlock.
    pub(crate) fn join_or_start<F, Fut>(&self, req: CacheRequest, start: F) -> Ticket
    where
        F: FnOnce(CacheRequest) -> Fut,
        Fut: Future<Output = Result<CacheResponse, BoxError>> + Send + 'static,
    {
        let shard = usize::from(req.slot()) % SHARDS;
        let key = FlightKey::of(&req);
        let mut table = self.shard(shard);
        if let Some(entry) = table.get_mut(&key) {
            // Always upgradable while tickets are out; a flight whose
            // callers all left was removed by the last of them.
            if let Some(flight) = entry.flight.upgrade() {
                entry.tickets += 1;
                let id = entry.id;
                drop(table);
                self.joined.fetch_add(1, Ordering::Relaxed);
                return Ticket {
                    flight,
                    key,
                    id,
                    shard,
                    leader: false,
                };
            }
        }
        let fut = start(req);
        let flight: Flight = async move { fut.await.map_err(Shareable::new) }
            .boxed()
            .shared();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(weak) = flight.downgrade() {
            let entry = Entry {
                id,
                tickets: 1,
                flight: weak,
            };
            table.insert(key.clone(), entry);
        }
        drop(table);
        self.led.fetch_add(1, Ordering::Relaxed);
        Ticket {
            flight,
            key,
            id,
            shard,
            leader: true,
        }
    }

    /// The flight finished: later reads start a new one. Every caller of
    /// it calls this (the first one removes the entry).
    pub(crate) fn finished(&self, ticket: &Ticket) {
        let mut table = self.shard(ticket.shard);
        if table.get(&ticket.key).is_some_and(|e| e.id == ticket.id) {
            table.remove(&ticket.key);
        }
    }

    /// A caller gives its ticket back before the flight finished (dropped,
    /// or its own deadline passed). The last one out removes the entry, and
    /// the call is dropped with its handle, after the lock is released (the
    /// inner future's drop may run anything, even another coalesce layer).
    pub(crate) fn leave(&self, ticket: Ticket) {
        let mut table = self.shard(ticket.shard);
        if let Some(entry) = table.get_mut(&ticket.key) {
            if entry.id == ticket.id {
                entry.tickets = entry.tickets.saturating_sub(1);
                if entry.tickets == 0 {
                    table.remove(&ticket.key);
                }
            }
        }
        drop(table);
        drop(ticket);
    }

    /// A write to `req`'s key went out: reads arriving from now on must not
    /// share a read that started before it (they could see the old value
    /// after the write was acknowledged). Callers already in a flight keep
    /// it.
    pub(crate) fn invalidate(&self, req: &CacheRequest) {
        let shard = usize::from(req.slot()) % SHARDS;
        let mut table = self.shard(shard);
        if !table.is_empty() {
            table.retain(|k, _| k.key != *req.key());
        }
    }

    /// Reads in flight now (entries in the table).
    pub(crate) fn in_flight(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).len()).sum()
    }
}
