//! The table of reads in flight, sharded by slot, and the board on which a
//! flight's driver leaves its outcome (or, when it gives up, the call
//! itself) for its followers.
//!
//! Generic over what makes two calls the same (`K`), the outcome as the
//! driver gets it (`R`) and the copy its followers get (`S`), so the
//! fallback layer's store loads share the same table (see
//! [`fallback`](crate::fallback)'s store guard).
//!
//! Why not `futures::future::Shared` (measured first): it costs a boxed
//! future, an `Arc` and a waker table per read, and every poll goes through
//! its notifier — about 1.3 µs per healthy miss, more than the rest of the
//! stack. Here a read with no follower costs one hash, two short locks and
//! one box; the board is made by the first follower.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use slotguard_core::{BoxError, CacheRequest, CacheResponse, Consistency, Route};

use super::shared_error::{Outcome, Shareable};

/// The coalesce layer's table: identical reads, their responses.
pub(crate) type ReadFlights = Flights<FlightKey, Outcome, Result<CacheResponse, BoxError>>;

/// A read's outcome as its followers get it, and as its driver does.
pub(crate) fn share_read(
    out: Result<CacheResponse, BoxError>,
) -> (Outcome, Result<CacheResponse, BoxError>) {
    let shared = out.map_err(Shareable::new);
    (shared.clone(), shared.map_err(Shareable::into_box))
}

/// Shards of the table. The slot picks one, so unrelated keys spread over
/// separate locks, and a write finds every flight of its key in one shard.
const SHARDS: usize = 32;

/// The inner call of a flight, boxed so that a driver that gives up can
/// hand it, mid-flight, to a follower.
pub(crate) type Call<R> = BoxFuture<'static, R>;

/// What makes two reads identical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlightKey {
    key: Bytes,
    consistency: Consistency,
    route: Route,
}

impl FlightKey {
    fn matches(&self, req: &CacheRequest) -> bool {
        self.key == *req.key() && self.consistency == req.consistency && self.route == req.route
    }
}

/// The table is keyed by the key's hash, computed once per read: the map
/// itself need not hash again.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Entry<K, S, R> {
    key: K,
    // Tells this flight from a later one for the same key.
    id: u64,
    // Made by the first follower.
    board: Option<Arc<Board<S, R>>>,
}

struct Table<K, S, R> {
    entries: HashMap<u64, Entry<K, S, R>, BuildHasherDefault<IdHasher>>,
    // Flights a write closed to newcomers, still running for their callers
    // (a read after the write starts a new flight in `entries`). Few: only
    // flights in progress when a write to their key went out.
    closed: Vec<(u64, Entry<K, S, R>)>,
    next_id: u64,
    led: u64,
    joined: u64,
}

impl<K, S, R> Default for Table<K, S, R> {
    fn default() -> Self {
        Table {
            entries: HashMap::default(),
            closed: Vec::new(),
            next_id: 0,
            led: 0,
            joined: 0,
        }
    }
}

impl<K, S, R> Table<K, S, R> {
    fn entry(&self, ticket: &Ticket) -> Option<&Entry<K, S, R>> {
        match self.entries.get(&ticket.hash) {
            Some(e) if e.id == ticket.id => Some(e),
            _ => self
                .closed
                .iter()
                .find(|(h, e)| *h == ticket.hash && e.id == ticket.id)
                .map(|(_, e)| e),
        }
    }

    fn entry_mut(&mut self, ticket: &Ticket) -> Option<&mut Entry<K, S, R>> {
        if self
            .entries
            .get(&ticket.hash)
            .is_some_and(|e| e.id == ticket.id)
        {
            return self.entries.get_mut(&ticket.hash);
        }
        self.closed
            .iter_mut()
            .find(|(h, e)| *h == ticket.hash && e.id == ticket.id)
            .map(|(_, e)| e)
    }

    /// Take `ticket`'s entry out (if it is still that flight's).
    fn remove(&mut self, ticket: &Ticket) -> Option<Entry<K, S, R>> {
        if self
            .entries
            .get(&ticket.hash)
            .is_some_and(|e| e.id == ticket.id)
        {
            return self.entries.remove(&ticket.hash);
        }
        let i = self
            .closed
            .iter()
            .position(|(h, e)| *h == ticket.hash && e.id == ticket.id)?;
        Some(self.closed.swap_remove(i).1)
    }
}

/// One shard of the table. A flight's callers hold its shard (not the whole
/// table), so their reference counts spread over the shards too.
// A lock per cache line pair: shards used by different cores do not share
// a line.
#[repr(align(128))]
pub(crate) struct Shard<K, S, R>(Mutex<Table<K, S, R>>);

/// The layer's table, shared by every service it made.
pub(crate) struct Flights<K, S, R> {
    hasher: RandomState,
    shards: Box<[Arc<Shard<K, S, R>>]>,
}

impl<K, S, R> fmt::Debug for Flights<K, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Names one flight's entry in its shard.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    hash: u64,
    id: u64,
}

/// How a read takes part.
pub(crate) enum Joined<K, S, R> {
    /// It makes the call and reports the outcome.
    Lead(Arc<Shard<K, S, R>>, Ticket),
    /// It waits on the board of another read's call.
    Follow(Arc<Shard<K, S, R>>, Ticket, Arc<Board<S, R>>),
    /// It cannot be coalesced now (a different read with the same hash):
    /// it calls on its own.
    Alone,
}

impl ReadFlights {
    /// Join the flight of an identical read, or register a new one.
    pub(crate) fn join_read(
        &self,
        req: &CacheRequest,
    ) -> Joined<FlightKey, Outcome, Result<CacheResponse, BoxError>> {
        let hash = self.hash((req.key(), req.consistency, &req.route));
        self.join(
            hash,
            usize::from(req.slot()),
            |k| k.matches(req),
            || FlightKey {
                key: req.key().clone(),
                consistency: req.consistency,
                route: req.route.clone(),
            },
        )
    }

    /// A write to `req`'s key went out: reads arriving from now on must not
    /// share a read that started before it (they could see the old value
    /// after the write was acknowledged). Callers already in a flight keep
    /// it.
    pub(crate) fn invalidate_read(&self, req: &CacheRequest) {
        self.invalidate_key(req.slot(), req.key());
    }

    /// [`invalidate_read`](Self::invalidate_read) by slot and key.
    pub(crate) fn invalidate_key(&self, slot: u16, key: &Bytes) {
        self.invalidate(usize::from(slot), |k| k.key == *key);
    }
}

impl<K, S, R> Flights<K, S, R> {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Arc::new(Shard(Mutex::default())))
                .collect(),
        }
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Table<K, S, R>> {
        self.shards[index % SHARDS].lock()
    }

    /// The hash a flight is keyed by.
    pub(crate) fn hash(&self, what: impl std::hash::Hash) -> u64 {
        self.hasher.hash_one(what)
    }

    /// Join the flight in `shard` with this `hash` if `matches` says it is
    /// the same call, or register a new one for the `key` made.
    pub(crate) fn join(
        &self,
        hash: u64,
        shard: usize,
        matches: impl FnOnce(&K) -> bool,
        key: impl FnOnce() -> K,
    ) -> Joined<K, S, R> {
        let shard = &self.shards[shard % SHARDS];
        let mut table = shard.lock();
        if let Some(entry) = table.entries.get_mut(&hash) {
            if !matches(&entry.key) {
                table.led += 1;
                return Joined::Alone;
            }
            let board = entry.board.get_or_insert_with(Arc::default).clone();
            board.lock().waiting += 1;
            let id = entry.id;
            table.joined += 1;
            drop(table);
            return Joined::Follow(shard.clone(), Ticket { hash, id }, board);
        }
        let id = table.next_id;
        table.next_id += 1;
        table.led += 1;
        let entry = Entry {
            key: key(),
            id,
            board: None,
        };
        table.entries.insert(hash, entry);
        drop(table);
        Joined::Lead(shard.clone(), Ticket { hash, id })
    }

    /// Close the flights in `shard` whose key `hit` picks to newcomers
    /// (they start a new flight); callers already in one keep it.
    pub(crate) fn invalidate(&self, shard: usize, hit: impl Fn(&K) -> bool) {
        let mut table = self.shard(shard);
        if table.entries.is_empty() {
            return;
        }
        let hashes: Vec<u64> = table
            .entries
            .iter()
            .filter(|(_, e)| hit(&e.key))
            .map(|(h, _)| *h)
            .collect();
        for hash in hashes {
            if let Some(entry) = table.entries.remove(&hash) {
                table.closed.push((hash, entry));
            }
        }
    }

    /// Flights in progress now.
    pub(crate) fn in_flight(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let t = self.shard(i);
                t.entries.len() + t.closed.len()
            })
            .sum()
    }

    /// Reads that made an inner call, and reads that shared one.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (0..SHARDS).fold((0, 0), |(led, joined), i| {
            let t = self.shard(i);
            (led + t.led, joined + t.joined)
        })
    }
}

impl<K, S, R> Shard<K, S, R> {
    fn lock(&self) -> MutexGuard<'_, Table<K, S, R>> {
        // Every critical section is a lookup, insert, remove or flag that
        // cannot panic halfway: a poisoned table is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The driver's call completed: later reads start a new flight, and the
    /// followers get a copy of the outcome (`share` splits it into theirs
    /// and the driver's). Returns the driver's own.
    pub(crate) fn finish(&self, ticket: &Ticket, out: R, share: impl FnOnce(R) -> (S, R)) -> R {
        let entry = self.lock().remove(ticket);
        let Some(board) = entry.and_then(|e| e.board) else {
            // Nobody followed: the outcome is the driver's alone, untouched.
            return out;
        };
        let (copy, own) = share(out);
        board.publish(copy);
        own
    }

    /// Like [`finish`](Self::finish), but the flight stays open with its
    /// outcome: callers who join it until [`end`](Self::end) get the
    /// outcome at once rather than a new call.
    pub(crate) fn settle(&self, ticket: &Ticket, out: R, share: impl FnOnce(R) -> (S, R)) -> R {
        let mut table = self.lock();
        let board = table
            .entry_mut(ticket)
            .map(|e| e.board.get_or_insert_with(Arc::default).clone());
        drop(table);
        let Some(board) = board else {
            // Closed and left by everyone: nobody can join it any more.
            return out;
        };
        let (copy, own) = share(out);
        board.publish(copy);
        own
    }

    /// A settled flight ends: later callers start a new one.
    pub(crate) fn end(&self, ticket: &Ticket) {
        let entry = self.lock().remove(ticket);
        // Dropped after the lock: its board's drop may run anything.
        drop(entry);
    }

    /// Wait on the flight's board too, from its leader: for a call that
    /// someone else drives (a task).
    pub(crate) fn follow(&self, ticket: &Ticket) -> Option<Arc<Board<S, R>>> {
        let mut table = self.lock();
        let board = table
            .entry_mut(ticket)?
            .board
            .get_or_insert_with(Arc::default)
            .clone();
        board.lock().waiting += 1;
        Some(board)
    }

    /// The driver gives up before the outcome (dropped, or its own deadline
    /// passed): a waiting follower takes the call over, mid-flight; with
    /// none, the call is dropped (after the locks are released: its drop
    /// may run anything, even this layer again).
    pub(crate) fn abandon(&self, ticket: &Ticket, call: Call<R>) {
        let mut table = self.lock();
        // Not in the table: nobody can be waiting for it.
        let board = table.entry(ticket).and_then(|e| e.board.clone());
        if let Some(board) = board {
            let mut b = board.lock();
            if b.waiting > 0 {
                b.orphan = Some(call);
                let wakers = b.wakers.clone();
                drop(b);
                drop(table);
                wakers.into_iter().for_each(Waker::wake);
                return;
            }
        }
        let entry = table.remove(ticket);
        drop(table);
        drop(entry);
        drop(call);
    }

    /// A follower gives up before the outcome. The last one out of a flight
    /// whose call nobody drives drops it.
    pub(crate) fn leave(&self, ticket: &Ticket, board: &Board<S, R>) {
        let mut table = self.lock();
        let mut b = board.lock();
        b.waiting = b.waiting.saturating_sub(1);
        if b.waiting > 0 || b.orphan.is_none() {
            return;
        }
        let orphan = b.orphan.take();
        drop(b);
        let entry = table.remove(ticket);
        drop(table);
        drop(entry);
        drop(orphan);
    }
}

/// Where a flight's followers wait.
pub(crate) struct Board<S, R>(Mutex<BoardState<S, R>>);

impl<S, R> Default for Board<S, R> {
    fn default() -> Self {
        Board(Mutex::new(BoardState {
            outcome: None,
            orphan: None,
            waiting: 0,
            wakers: Vec::new(),
        }))
    }
}

struct BoardState<S, R> {
    outcome: Option<S>,
    // The call, while no one drives it (its driver gave up).
    orphan: Option<Call<R>>,
    // Followers still waiting (neither answered nor gone).
    waiting: usize,
    // One slot per follower that polled.
    wakers: Vec<Waker>,
}

/// What a waiting follower finds on the board.
pub(crate) enum Found<S, R> {
    Outcome(S),
    /// The call, to drive from now on.
    Call(Call<R>),
}

impl<S, R> Board<S, R> {
    fn lock(&self) -> MutexGuard<'_, BoardState<S, R>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Leave the outcome for the followers, and wake them.
    fn publish(&self, copy: S) {
        let wakers = {
            let mut b = self.lock();
            b.outcome = Some(copy);
            std::mem::take(&mut b.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<S: Clone, R> Board<S, R> {
    /// Poll for the outcome, or for the call when its driver gave up.
    /// `slot` is this follower's place among the wakers.
    pub(crate) fn poll(&self, slot: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<Found<S, R>> {
        let mut b = self.lock();
        if let Some(out) = &b.outcome {
            let out = out.clone();
            b.waiting = b.waiting.saturating_sub(1);
            return Poll::Ready(Found::Outcome(out));
        }
        if let Some(call) = b.orphan.take() {
            b.waiting = b.waiting.saturating_sub(1);
            return Poll::Ready(Found::Call(call));
        }
        match slot.and_then(|i| b.wakers.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    *w = cx.waker().clone();
                }
            }
            None => {
                b.wakers.push(cx.waker().clone());
                *slot = Some(b.wakers.len() - 1);
            }
        }
        Poll::Pending
    }
}
