//! What every service of one fallback layer shares, whatever its store:
//! the near-cache, the invalidation marks, the in-flight loads, and the
//! task that applies invalidations and slot moves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::invalidation::{Invalidation, InvalidationReceiver, Received};
use slotguard_core::{ClusterController, Consistency, NodeAddr, SlotMap, Topology, SLOT_COUNT};
use tokio::sync::{oneshot, watch, Semaphore};

use super::clock::Clock;
use super::config::FallbackConfig;
use super::loads::LoadFlights;
use super::marks::Marks;
use super::near::{Fill, NearCache, Tracked};

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) clock: Clock,
    pub(crate) near: Option<NearCache>,
    pub(crate) marks: Marks,
    pub(crate) flights: Arc<LoadFlights>,
    pub(crate) topology: Option<Topology>,
    // Runs the watch, the store loads and the write-backs: the topology's
    // controller, or the layer's own without a topology.
    pub(crate) controller: ClusterController,
    pub(crate) write_backs: Arc<Semaphore>,
    // Bumped by every invalidation; a read records it when it starts, so a
    // fill can tell whether an invalidation happened meanwhile.
    epoch: AtomicU64,
    // Entries filled by reads that started before this epoch are never
    // served (a flush of everything).
    flushed: AtomicU64,
    // Fills of reads that started before this epoch are dropped (a node's
    // or slot's flush: rare, so rejecting every in-flight fill is cheap).
    fills_from: AtomicU64,
    watch: Mutex<Option<Watch>>,
    started: AtomicBool,
    // Write-backs in flight by key; each entry's sender is dropped when its
    // write-back ends. A write of the key waits for it, so its `DEL`/`SET`
    // reaches the node after the write-back's `SET`, never before.
    writing_back: Mutex<HashMap<Bytes, watch::Receiver<()>>>,
    // Each node's tracking session as the bus told it: `generation << 1 |
    // live`. Changed by every `Node` (not live) and `Tracking` (live) event;
    // a client-side cached entry answers only while its node's word is the
    // one it was filled under.
    sessions: Mutex<HashMap<NodeAddr, Arc<AtomicU64>>>,
    // Dropped with the state: the watch task sees its channel close and
    // ends (it holds the state only weakly).
    _stop: Option<oneshot::Sender<()>>,
}

/// What the watch task needs, taken when it is spawned.
#[derive(Debug)]
struct Watch {
    bus: Option<InvalidationReceiver>,
    stop: oneshot::Receiver<()>,
}

impl State {
    pub(crate) fn new(
        config: &FallbackConfig,
        bus: Option<InvalidationReceiver>,
        topology: Option<Topology>,
        controller: ClusterController,
    ) -> Arc<State> {
        let clock = Clock::new();
        let near = config.near_cache.clone().map(NearCache::new);
        let needs_watch = near.is_some() && (bus.is_some() || topology.is_some());
        let (watch, stop) = if needs_watch {
            let (tx, rx) = oneshot::channel();
            (Some(Watch { bus, stop: rx }), Some(tx))
        } else {
            (None, None)
        };
        let state = State {
            clock,
            near,
            marks: Marks::new(clock, config.invalidation_ttl, config.max_invalidations),
            flights: Arc::new(LoadFlights::new()),
            topology,
            controller,
            write_backs: Arc::new(Semaphore::new(
                config.write_back.as_ref().map_or(0, |w| w.max_in_flight),
            )),
            epoch: AtomicU64::new(1),
            flushed: AtomicU64::new(0),
            fills_from: AtomicU64::new(0),
            started: AtomicBool::new(watch.is_none()),
            watch: Mutex::new(watch),
            writing_back: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            _stop: stop,
        };
        Arc::new(state)
    }

    /// The epoch a read starts at.
    pub(crate) fn begin(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    fn bump(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Start the watch task once, on the controller (from inside a
    /// runtime; the controller's shutdown stops it).
    pub(crate) fn start_watch(self: &Arc<Self>) {
        if self.started.load(Ordering::Relaxed) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let taken = self
            .watch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        self.started.store(true, Ordering::Relaxed);
        if let Some(w) = taken {
            // The map to compare the next one with is taken now, not when
            // the task first runs: a change in between is not missed.
            let map = self.topology.as_ref().map(Topology::load);
            let task = watch(Arc::downgrade(self), w, self.topology.clone(), map);
            let _ = self.controller.spawn(task);
        }
    }

    /// `key` changed: never serve it from the near-cache or a replica until
    /// an authoritative read that started after now. Returns the mark's
    /// epoch.
    pub(crate) fn invalidate_key(&self, key: &Bytes) -> u64 {
        let e = self.bump();
        self.marks.mark(key, e);
        if let Some(near) = &self.near {
            near.evict(key);
        }
        self.flights.detach(key);
        e
    }

    /// A `SET` of `key`, first marked at `refill.sent`, succeeded and read
    /// the key back on the same connection right after it: `value` is the
    /// node's value then, read over `node`'s connection, which tracks the
    /// key again from that read on.
    ///
    /// The key is invalidated again, as after any write (reads that began
    /// while the write was on its way may have read the old value). When
    /// nothing else invalidated it since the write was sent (its mark is
    /// still the write's own, and no node, slot or full flush happened),
    /// the read-back counts as an authoritative read that began now: the
    /// mark is cleared and the value kept, tracked. An invalidation of a
    /// later write by another client arrives on that same connection after
    /// the read-back's reply, and evicts it like any tracked entry.
    pub(crate) fn after_read_back(
        &self,
        key: &Bytes,
        refill: super::future::Refill,
        node: Option<NodeAddr>,
        value: Bytes,
    ) {
        let Some(near) = &self.near else {
            self.invalidate_key(key);
            return;
        };
        let sent = refill.sent;
        let owner = self.owner(refill.slot);
        // Taken before the checks: a session that ended after them leaves
        // the entry unservable; one that ended before fails them.
        let tracked = self.tracked(node.as_ref(), owner.as_ref());
        let e = self.bump();
        // A flush since the write was sent and before `e` is seen here; one
        // after `e` is newer than the fill's epoch, and `fill` sees it.
        let keep = tracked.is_some() && self.unflushed_since(sent);
        let cleared = self.marks.remark(key, sent, e, keep);
        near.evict(key);
        self.flights.detach(key);
        if cleared && near.admit(key, value.len(), refill.sent_at) {
            let fill = Fill {
                value,
                node,
                owner,
                slot: refill.slot,
                epoch: e,
                // Read after the write was sent: at most this old.
                fetched: refill.sent_at,
                tracked,
            };
            self.fill(key, fill);
        }
    }

    fn writing_back(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, watch::Receiver<()>>> {
        self.writing_back
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A write of `key` goes through: mark it, and say which write-back of
    /// it (if any) the write must wait for, with the epoch of the mark.
    ///
    /// The key is marked, not evicted: until the write is done, a tracked
    /// entry kept before it may answer reads (they overlap the write); what
    /// a read fetches meanwhile is not kept, and the write's second mark
    /// evicts.
    pub(crate) fn before_write(&self, key: &Bytes) -> (u64, Option<watch::Receiver<()>>) {
        let pending = self.writing_back();
        let e = self.bump();
        self.marks.mark_write(key, e);
        self.flights.detach(key);
        (e, pending.get(key).cloned())
    }

    /// Register a write-back of a value read by a read that began at
    /// `start`; `None` when the key was invalidated since (the value may be
    /// the replaced one) or one is in flight already. The write-back ends
    /// when the returned sender is dropped.
    pub(crate) fn begin_write_back(&self, key: &Bytes, start: u64) -> Option<watch::Sender<()>> {
        let mut pending = self.writing_back();
        if self.marks.invalidated_since(key, start) || self.marks.get(key).is_some() {
            return None;
        }
        if pending.get(key).is_some_and(|rx| rx.has_changed().is_ok()) {
            return None;
        }
        let (tx, rx) = watch::channel(());
        pending.insert(key.clone(), rx);
        Some(tx)
    }

    pub(crate) fn end_write_back(&self, key: &Bytes, tx: watch::Sender<()>) {
        let mut pending = self.writing_back();
        if pending
            .get(key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            pending.remove(key);
        }
        drop(tx);
    }

    pub(crate) fn flush_all(&self) {
        let e = self.bump();
        self.flushed.fetch_max(e, Ordering::SeqCst);
        self.fills_from.fetch_max(e, Ordering::SeqCst);
        if let Some(near) = &self.near {
            near.evict_all();
        }
    }

    fn flush_node(&self, node: &NodeAddr) {
        let e = self.bump();
        self.fills_from.fetch_max(e, Ordering::SeqCst);
        if let Some(near) = &self.near {
            near.evict_where(|entry| entry.node.as_ref() == Some(node));
        }
    }

    fn flush_slots(&self, moved: &[bool]) {
        let e = self.bump();
        self.fills_from.fetch_max(e, Ordering::SeqCst);
        if let Some(near) = &self.near {
            near.evict_where(|entry| moved.get(entry.slot as usize).copied().unwrap_or(true));
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<NodeAddr, Arc<AtomicU64>>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `node`'s tracking session word (created not live).
    fn session(&self, node: &NodeAddr) -> Arc<AtomicU64> {
        self.sessions()
            .entry(node.clone())
            .or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }

    /// A new session of `node` begins, live (tracking on) or not.
    fn new_session(&self, node: &NodeAddr, live: bool) {
        let s = self.session(node);
        let _ = s.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
            Some((((w >> 1) + 1) << 1) | u64::from(live))
        });
    }

    /// Events were lost: no session's entries may answer any more (the
    /// liveness stays as last told: a lost `Node` event's entries are
    /// flushed anyway, and a node's next connect says it again).
    fn renew_sessions(&self) {
        for s in self.sessions().values() {
            let _ = s.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
                Some((((w >> 1) + 1) << 1) | (w & 1))
            });
        }
    }

    /// For a value read from `node`: its live tracking session, if client-
    /// side caching is on and the node is the slot's `owner` (only a
    /// primary's reads are trusted on the healthy path).
    pub(crate) fn tracked(
        &self,
        node: Option<&NodeAddr>,
        owner: Option<&NodeAddr>,
    ) -> Option<Tracked> {
        let near = self.near.as_ref()?;
        if near.config.tracked_for.is_zero() {
            return None;
        }
        let node = node?;
        if owner != Some(node) {
            return None;
        }
        let session = self.session(node);
        let word = session.load(Ordering::SeqCst);
        (word & 1 == 1).then_some(Tracked { session, word })
    }

    /// No node, slot or full flush since epoch `start`.
    fn unflushed_since(&self, start: u64) -> bool {
        start >= self.fills_from.load(Ordering::SeqCst)
            && start >= self.flushed.load(Ordering::SeqCst)
    }

    fn may_fill(&self, key: &[u8], start: u64) -> bool {
        self.unflushed_since(start) && self.marks.may_keep(key, start)
    }

    /// The slot's primary in the current map.
    pub(crate) fn owner(&self, slot: u16) -> Option<NodeAddr> {
        let topology = self.topology.as_ref()?;
        let map = topology.map();
        map.primary_for_slot(slot).map(|p| p.addr.clone())
    }

    /// The latency bound of the slot's primary (zero when not known: no
    /// topology, or no answer from it yet).
    pub(crate) fn primary_latency_bound(&self, slot: u16) -> Duration {
        let Some(topology) = &self.topology else {
            return Duration::ZERO;
        };
        match topology.map().primary_for_slot(slot) {
            Some(p) => topology.health(&p.addr).latency_bound(),
            None => Duration::ZERO,
        }
    }

    /// Keep a value read by a read that started at `start`, unless an
    /// invalidation happened since.
    pub(crate) fn fill(&self, key: &Bytes, fill: Fill) {
        let Some(near) = &self.near else { return };
        let start = fill.epoch;
        if !self.may_fill(key, start) {
            near.unkeep(key);
            return;
        }
        // An invalidation racing an insert either evicted after it, or is
        // seen here. A refresh of the same entry needs no second look: an
        // invalidation evicts the entry, before (then this read inserts,
        // and looks) or after (then the refreshed entry is gone).
        if near.fill(key, fill) && !self.may_fill(key, start) {
            near.evict(key);
        }
    }

    /// A near-cache answer for `key`, if it may answer a read of
    /// `consistency` with this much staleness allowed.
    pub(crate) fn serve(
        &self,
        key: &Bytes,
        slot: u16,
        budget: Duration,
    ) -> Option<(Bytes, Option<NodeAddr>, Duration)> {
        let near = self.near.as_ref()?;
        let entry = near.get(key)?;
        if entry.epoch < self.flushed.load(Ordering::SeqCst) {
            return None;
        }
        let age = entry.age(&self.clock);
        if age > budget {
            return None;
        }
        if entry.slot != slot || (entry.owner.is_some() && entry.owner != self.owner(slot)) {
            return None;
        }
        if self.marks.get(key).is_some() {
            return None;
        }
        Some((entry.value.clone(), entry.node.clone(), age))
    }

    /// A client-side cached answer for a healthy read of `key`: an entry
    /// read from the slot's current primary over a tracking connection
    /// that is still the node's live one, at most
    /// [`tracked_for`](super::NearCacheConfig::tracked_for) old, and not
    /// invalidated since.
    pub(crate) fn serve_tracked(
        &self,
        key: &Bytes,
        slot: u16,
    ) -> Option<(Bytes, Option<NodeAddr>, Duration)> {
        let near = self.near.as_ref()?;
        let entry = near.get(key)?;
        if !entry.tracking_live() || entry.epoch < self.flushed.load(Ordering::SeqCst) {
            return None;
        }
        let age = entry.age(&self.clock);
        if age > near.config.tracked_for || entry.slot != slot {
            return None;
        }
        if entry.owner.is_none() || entry.owner != self.owner(slot) {
            return None;
        }
        if self.marks.serving_blocked(key) {
            return None;
        }
        entry.note_served();
        Some((entry.value.clone(), entry.node.clone(), age))
    }

    /// Whether a write of `key` is worth reading back: its tracked entry
    /// answered a read since it was kept. A key only written (or not read
    /// since its last write) is not: its next read fills it, and a load of
    /// writes pays no extra read per write.
    pub(crate) fn read_back_worthwhile(&self, key: &Bytes) -> bool {
        self.client_side_caching() && self.near.as_ref().is_some_and(|n| n.served(key))
    }

    /// Whether healthy reads may be answered by tracked entries.
    pub(crate) fn client_side_caching(&self) -> bool {
        self.near
            .as_ref()
            .is_some_and(|n| !n.config.tracked_for.is_zero())
    }

    /// How stale a near-cache answer may be for a healthy read.
    pub(crate) fn fresh_budget(&self, consistency: Consistency) -> Duration {
        let Some(near) = &self.near else {
            return Duration::ZERO;
        };
        match consistency {
            Consistency::Primary => Duration::ZERO,
            Consistency::ReplicaOk => near.config.fresh_for,
            Consistency::StaleOk(d) => d.max(near.config.fresh_for),
        }
    }

    /// How stale a near-cache answer may be while the cluster is failing.
    pub(crate) fn degraded_budget(&self, consistency: Consistency) -> Option<Duration> {
        let near = self.near.as_ref()?;
        match consistency {
            Consistency::Primary => None,
            Consistency::ReplicaOk => {
                Some(near.config.fresh_for.saturating_add(near.config.max_stale))
            }
            Consistency::StaleOk(d) => Some(d),
        }
    }
}

async fn next_event(bus: &mut Option<InvalidationReceiver>) -> Option<Received> {
    match bus {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_map(topology: &Option<Topology>, generation: u64) {
    match topology {
        Some(t) => t.changed_since(generation).await,
        None => std::future::pending().await,
    }
}

/// Slots whose primary differs between two maps.
fn moved_slots(old: &SlotMap, new: &SlotMap) -> Vec<bool> {
    (0..SLOT_COUNT)
        .map(|s| {
            old.primary_for_slot(s).map(|p| &p.addr) != new.primary_for_slot(s).map(|p| &p.addr)
        })
        .collect()
}

/// Applies invalidations and slot moves to the near-cache until the state
/// is dropped.
async fn watch(
    state: Weak<State>,
    w: Watch,
    topology: Option<Topology>,
    mut map: Option<Arc<SlotMap>>,
) {
    let Watch { mut bus, mut stop } = w;
    loop {
        let generation = map.as_ref().map_or(0, |m| m.generation());
        tokio::select! {
            _ = &mut stop => return,
            event = next_event(&mut bus) => {
                let Some(state) = state.upgrade() else { return };
                match event {
                    Some(Received::Event(Invalidation::Keys { keys, .. })) => {
                        for key in &keys {
                            state.invalidate_key(key);
                        }
                    }
                    Some(Received::Event(Invalidation::Node { node })) => {
                        // The session ends before the flush: an entry filled
                        // meanwhile is unservable either way.
                        state.new_session(&node, false);
                        state.flush_node(&node);
                    }
                    Some(Received::Event(Invalidation::Tracking { node })) => {
                        state.new_session(&node, true);
                    }
                    // Lost events, an event of a kind this version does not
                    // know, or a bus that is gone: nothing cached can be
                    // trusted any more.
                    Some(_) => {
                        state.renew_sessions();
                        state.flush_all();
                    }
                    None => {
                        state.renew_sessions();
                        state.flush_all();
                        bus = None;
                        if topology.is_none() {
                            return;
                        }
                    }
                }
            }
            _ = next_map(&topology, generation) => {
                let Some(state) = state.upgrade() else { return };
                let Some(t) = &topology else { return };
                let new = t.load();
                if let Some(old) = &map {
                    let moved = moved_slots(old, &new);
                    if moved.iter().any(|m| *m) {
                        state.flush_slots(&moved);
                    }
                }
                map = Some(new);
            }
        }
    }
}
