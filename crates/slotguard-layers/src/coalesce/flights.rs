//! The table of reads in flight, sharded by slot, and the board on which a
//! flight's driver leaves its outcome (or, when it gives up, the call
//! itself) for its followers.
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

/// Shards of the table. The slot picks one, so unrelated keys spread over
/// separate locks, and a write finds every flight of its key in one shard.
const SHARDS: usize = 32;

/// The inner call of a flight, boxed so that a driver that gives up can
/// hand it, mid-flight, to a follower.
pub(crate) type Call = BoxFuture<'static, Result<CacheResponse, BoxError>>;

/// What makes two reads identical.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FlightKey {
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

struct Entry {
    key: FlightKey,
    // Tells this flight from a later one for the same key.
    id: u64,
    // Made by the first follower.
    board: Option<Arc<Board>>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<u64, Entry, BuildHasherDefault<IdHasher>>,
    // Flights a write closed to newcomers, still running for their callers
    // (a read after the write starts a new flight in `entries`). Few: only
    // flights in progress when a write to their key went out.
    closed: Vec<(u64, Entry)>,
    next_id: u64,
    led: u64,
    joined: u64,
}

impl Table {
    fn entry(&self, ticket: &Ticket) -> Option<&Entry> {
        match self.entries.get(&ticket.hash) {
            Some(e) if e.id == ticket.id => Some(e),
            _ => self
                .closed
                .iter()
                .find(|(h, e)| *h == ticket.hash && e.id == ticket.id)
                .map(|(_, e)| e),
        }
    }

    /// Take `ticket`'s entry out (if it is still that flight's).
    fn remove(&mut self, ticket: &Ticket) -> Option<Entry> {
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
#[derive(Default)]
pub(crate) struct Shard(Mutex<Table>);

/// The layer's table, shared by every service it made.
pub(crate) struct Flights {
    hasher: RandomState,
    shards: Box<[Arc<Shard>]>,
}

impl fmt::Debug for Flights {
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
pub(crate) enum Joined {
    /// It makes the call and reports the outcome.
    Lead(Arc<Shard>, Ticket),
    /// It waits on the board of another read's call.
    Follow(Arc<Shard>, Ticket, Arc<Board>),
    /// It cannot be coalesced now (a different read with the same hash):
    /// it calls on its own.
    Alone,
}

impl Flights {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
        }
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Table> {
        self.shards[index % SHARDS].lock()
    }

    /// Join the flight of an identical read, or register a new one.
    pub(crate) fn join(&self, req: &CacheRequest) -> Joined {
        let hash = self
            .hasher
            .hash_one((req.key(), req.consistency, &req.route));
        let shard = &self.shards[usize::from(req.slot()) % SHARDS];
        let mut table = shard.lock();
        if let Some(entry) = table.entries.get_mut(&hash) {
            if !entry.key.matches(req) {
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
        let key = FlightKey {
            key: req.key().clone(),
            consistency: req.consistency,
            route: req.route.clone(),
        };
        let entry = Entry {
            key,
            id,
            board: None,
        };
        table.entries.insert(hash, entry);
        drop(table);
        Joined::Lead(shard.clone(), Ticket { hash, id })
    }

    /// A write to `req`'s key went out: reads arriving from now on must not
    /// share a read that started before it (they could see the old value
    /// after the write was acknowledged). Callers already in a flight keep
    /// it.
    pub(crate) fn invalidate(&self, req: &CacheRequest) {
        let mut table = self.shard(usize::from(req.slot()));
        if table.entries.is_empty() {
            return;
        }
        let key = req.key();
        let hashes: Vec<u64> = table
            .entries
            .iter()
            .filter(|(_, e)| e.key.key == *key)
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

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every critical section is a lookup, insert, remove or flag that
        // cannot panic halfway: a poisoned table is still consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The driver's call completed: later reads start a new flight, and the
    /// followers get a copy of the outcome. Returns the driver's own.
    pub(crate) fn finish(
        &self,
        ticket: &Ticket,
        out: Result<CacheResponse, BoxError>,
    ) -> Result<CacheResponse, BoxError> {
        let entry = self.lock().remove(ticket);
        let Some(board) = entry.and_then(|e| e.board) else {
            // Nobody followed: the outcome is the driver's alone, untouched.
            return out;
        };
        let shared = out.map_err(Shareable::new);
        let wakers = {
            let mut b = board.lock();
            b.outcome = Some(shared.clone());
            std::mem::take(&mut b.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
        shared.map_err(Shareable::into_box)
    }

    /// The driver gives up before the outcome (dropped, or its own deadline
    /// passed): a waiting follower takes the call over, mid-flight; with
    /// none, the call is dropped (after the locks are released: its drop
    /// may run anything, even this layer again).
    pub(crate) fn abandon(&self, ticket: &Ticket, call: Call) {
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
    pub(crate) fn leave(&self, ticket: &Ticket, board: &Board) {
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
#[derive(Default)]
pub(crate) struct Board(Mutex<BoardState>);

#[derive(Default)]
struct BoardState {
    outcome: Option<Outcome>,
    // The call, while no one drives it (its driver gave up).
    orphan: Option<Call>,
    // Followers still waiting (neither answered nor gone).
    waiting: usize,
    // One slot per follower that polled.
    wakers: Vec<Waker>,
}

/// What a waiting follower finds on the board.
pub(crate) enum Found {
    Outcome(Result<CacheResponse, BoxError>),
    /// The call, to drive from now on.
    Call(Call),
}

impl Board {
    fn lock(&self) -> MutexGuard<'_, BoardState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Poll for the outcome, or for the call when its driver gave up.
    /// `slot` is this follower's place among the wakers.
    pub(crate) fn poll(&self, slot: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<Found> {
        let mut b = self.lock();
        if let Some(out) = &b.outcome {
            let out = out.clone().map_err(Shareable::into_box);
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
