//! The cluster's slot map, node health, and where views of it come from.
//!
//! [`Topology`] is a cheap-clone handle shared by every layer. Reads are
//! lock-free (`arc-swap`): a request routes against an immutable [`SlotMap`]
//! snapshot, and a refresh or a `MOVED` patch swaps in a new one. Node health
//! lives in [`NodeHealth`] cells that survive map swaps, so what one request
//! learns about a node (latency, failures) is seen by the next.

mod health;
mod map;
mod observer;
mod view;

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption, Guard};
use futures_util::future::BoxFuture;

use crate::addr::NodeAddr;
use crate::controller::Tasks;
use crate::error::BoxError;
use crate::observe::{Observation, Observer};
use crate::request::Role;
use crate::slot::SLOT_COUNT;

pub use health::NodeHealth;
pub use map::{AddrHasher, AddrMap, NodeInfo, Shard, SlotMap};
pub use view::{ClusterView, NodeView, ShardView};

type Registry = AddrMap<Arc<NodeHealth>>;

/// How the map took a `MOVED` ([`SlotMoved`](crate::controller::SlotMoved)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOutcome {
    /// The slot now points at the node's shard.
    Patched,
    /// The map already said so.
    Unchanged,
    /// The address is not a node of this map: wait for a refresh.
    UnknownNode,
}

/// Shared handle to the current [`SlotMap`] (cheap to clone).
#[derive(Clone, Default)]
pub struct Topology {
    inner: Arc<Inner>,
}

struct Inner {
    map: ArcSwap<SlotMap>,
    // Health cells by address. Read on every completed call (the leaf
    // records each outcome), so reads are lock-free; the mutex only orders
    // writers (a first call to a new node, an install), which copy the map.
    health: ArcSwap<Registry>,
    health_write: Mutex<()>,
    generation: AtomicU64,
    // Wakes the refresher; one stored permit, so a burst of requests
    // collapses into one refresh.
    refresh: tokio::sync::Notify,
    // Set when a refresh is scheduled, cleared when the refresher takes it:
    // the controller schedules no other while one is pending.
    refresh_pending: AtomicBool,
    refresh_requests: AtomicU64,
    refreshes_scheduled: AtomicU64,
    // Current generation, for callers waiting on a refresh to confirm
    // something.
    changed: tokio::sync::watch::Sender<u64>,
    // Who listens to the stack's own events (see `set_observer`); one
    // atomic load when nobody does.
    observer: ArcSwapOption<Box<dyn Observer>>,
    // The owner's tasks (see `controller`): whoever holds the topology can
    // hand a task to its controller, none can run one of its own.
    tasks: Tasks,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            health: ArcSwap::from_pointee(Registry::default()),
            health_write: Mutex::new(()),
            generation: AtomicU64::new(0),
            refresh: tokio::sync::Notify::new(),
            refresh_pending: AtomicBool::new(false),
            refresh_requests: AtomicU64::new(0),
            refreshes_scheduled: AtomicU64::new(0),
            changed: tokio::sync::watch::Sender::new(0),
            observer: ArcSwapOption::empty(),
            tasks: Tasks::default(),
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("map", &self.inner.map.load())
            .finish()
    }
}

/// The current [`SlotMap`], borrowed from a [`Topology`]
/// ([`Topology::map`]).
pub struct MapRef(Guard<Arc<SlotMap>>);

impl Deref for MapRef {
    type Target = SlotMap;

    fn deref(&self) -> &SlotMap {
        &self.0
    }
}

impl fmt::Debug for MapRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl MapRef {
    /// The map as an owned `Arc`, to keep past the borrow.
    pub fn to_arc(&self) -> Arc<SlotMap> {
        Arc::clone(&self.0)
    }
}

impl Topology {
    /// An empty topology (generation 0, no slot covered).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current map (lock-free), to keep: an owned `Arc`.
    pub fn load(&self) -> Arc<SlotMap> {
        self.inner.map.load_full()
    }

    /// The current map, borrowed: lock-free and without touching the map's
    /// reference count, so it costs less than [`load`](Self::load) on a
    /// request path. Hold it briefly (not across an `.await`); use
    /// [`load`](Self::load) to keep the map.
    pub fn map(&self) -> MapRef {
        MapRef(self.inner.map.load())
    }

    /// The owner's task tracker and token.
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// Whether a map was ever installed.
    pub fn is_loaded(&self) -> bool {
        self.inner.map.load().generation > 0
    }

    /// The health cell of `addr` (it outlives maps), for reading: lock-free,
    /// and pure — a node with no cell yet gets a fresh one that is not
    /// registered (all defaults), so a read never inserts. What happens to
    /// a node is [`report`](Self::report)ed to the controller, which
    /// writes the cell.
    pub fn health(&self, addr: &NodeAddr) -> Arc<NodeHealth> {
        match self.inner.health.load().get(addr) {
            Some(cell) => cell.clone(),
            None => Arc::new(NodeHealth::default()),
        }
    }

    /// Run `f` on the health cell of `addr` (created on first use), without
    /// taking a lock or cloning the cell: for the controller recording each
    /// call's outcome.
    pub(crate) fn with_health<R>(&self, addr: &NodeAddr, f: impl FnOnce(&NodeHealth) -> R) -> R {
        {
            let registry = self.inner.health.load();
            if let Some(cell) = registry.get(addr) {
                return f(cell);
            }
        }
        f(&self.insert_health(addr))
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner
            .health_write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn insert_health(&self, addr: &NodeAddr) -> Arc<NodeHealth> {
        let _writer = self.write_lock();
        let current = self.inner.health.load_full();
        if let Some(cell) = current.get(addr) {
            return cell.clone();
        }
        let mut next = Registry::clone(&current);
        let cell = Arc::new(NodeHealth::default());
        next.insert(addr.clone(), cell.clone());
        self.inner.health.store(Arc::new(next));
        cell
    }

    fn next_generation(&self) -> u64 {
        self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Build a map from `view` and make it current. Returns the new map.
    ///
    /// Overlapping ranges are resolved in the view's order (the last shard
    /// wins); slots out of range are ignored. The controller's to call.
    pub(crate) fn install(&self, view: &ClusterView) -> Arc<SlotMap> {
        let nodes = || {
            view.shards
                .iter()
                .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
        };
        // The registry keeps the cells of the view's nodes (new ones start
        // fresh) and forgets nodes that left, so it stays bounded.
        let registry = {
            let _writer = self.write_lock();
            let current = self.inner.health.load();
            let mut next = Registry::default();
            for node in nodes() {
                next.entry(node.addr.clone())
                    .or_insert_with(|| current.get(&node.addr).cloned().unwrap_or_default());
            }
            let next = Arc::new(next);
            self.inner.health.store(next.clone());
            next
        };
        let node_info = |v: &NodeView, role: Role| NodeInfo {
            addr: v.addr.clone(),
            id: v.id.as_deref().map(Arc::from),
            role,
            health: registry.get(&v.addr).cloned().unwrap_or_default(),
        };
        let mut map = SlotMap::empty();
        map.source = Some(view.source.clone());
        for sv in &view.shards {
            let idx = map.shards.len() as u16;
            map.shards.push(Shard {
                primary: node_info(&sv.primary, Role::Primary),
                replicas: sv
                    .replicas
                    .iter()
                    .map(|r| node_info(r, Role::Replica))
                    .collect(),
                slots: sv.slots.clone(),
            });
            for &(lo, hi) in &sv.slots {
                let hi = hi.min(SLOT_COUNT - 1);
                for slot in lo..=hi {
                    map.slot_to_shard[slot as usize] = idx;
                }
            }
        }
        map.reindex();
        map.generation = self.next_generation();
        let map = Arc::new(map);
        let old = self.inner.map.swap(map.clone());
        if self.is_observed() {
            self.report_promotions(&old, &map);
        }
        self.inner.changed.send_replace(map.generation);
        map
    }

    /// Count one ask for a refresh and mark a refresh pending; returns
    /// whether one was pending already (the controller then schedules none).
    pub(crate) fn mark_refresh_pending(&self) -> bool {
        self.inner.refresh_requests.fetch_add(1, Ordering::Relaxed);
        self.inner.refresh_pending.swap(true, Ordering::AcqRel)
    }

    /// Wake the refresher (the `slot_refresh` layer) for a new map soon.
    /// The controller's to call, once per pending refresh.
    pub(crate) fn request_refresh(&self) {
        self.inner
            .refreshes_scheduled
            .fetch_add(1, Ordering::Relaxed);
        self.inner.refresh.notify_one();
    }

    /// How many reports asked for a refresh (collapsed into fewer rounds:
    /// [`refreshes_scheduled`](Self::refreshes_scheduled)).
    pub fn refresh_requests(&self) -> u64 {
        self.inner.refresh_requests.load(Ordering::Relaxed)
    }

    /// How many refreshes the controller scheduled: one per burst of asks
    /// made before the refresher took the pending one.
    pub fn refreshes_scheduled(&self) -> u64 {
        self.inner.refreshes_scheduled.load(Ordering::Relaxed)
    }

    /// Wait for the next scheduled refresh (for the refresher); it is no
    /// longer pending once this returns, so asks made from now on schedule
    /// the next one.
    pub async fn refresh_requested(&self) {
        self.inner.refresh.notified().await;
        self.inner.refresh_pending.store(false, Ordering::Release);
    }

    /// Wait until the map's generation is above `generation` (a refresh or a
    /// patch happened). Callers bound this with their own deadline.
    pub async fn changed_since(&self, generation: u64) {
        let mut rx = self.inner.changed.subscribe();
        // The sender lives as long as `self`, so this only ends on a change.
        let _ = rx.wait_for(|g| *g > generation).await;
    }

    /// Point `slot` at the shard of `addr` (after a `MOVED`).
    ///
    /// When `addr` is a replica of the shard that owned the slot, that replica
    /// was promoted: it becomes the shard's primary and the old primary its
    /// replica. An address the map does not know is not trusted
    /// ([`PatchOutcome::UnknownNode`]): a refresh must confirm it first.
    /// The controller's to call.
    pub(crate) fn patch_slot(&self, slot: u16, addr: &NodeAddr) -> PatchOutcome {
        if slot >= SLOT_COUNT {
            return PatchOutcome::UnknownNode;
        }
        // A replica of the slot's shard named by `MOVED`: promoted.
        let promoted_from = self.is_observed().then(|| {
            let map = self.inner.map.load();
            let shard = map.shard_for_slot(slot)?;
            shard
                .replicas
                .iter()
                .any(|r| &r.addr == addr)
                .then(|| shard.primary.addr.clone())
        });
        let mut outcome = PatchOutcome::UnknownNode;
        self.inner.map.rcu(|cur| {
            let mut map = SlotMap::clone(cur);
            outcome = patch(&mut map, slot, addr);
            if outcome == PatchOutcome::Patched {
                map.generation = self.next_generation();
            }
            map
        });
        if outcome == PatchOutcome::Patched {
            self.inner
                .changed
                .send_replace(self.inner.map.load().generation);
            if let Some(Some(from)) = promoted_from {
                self.observe(|| Observation::PrimaryChanged {
                    from,
                    to: addr.clone(),
                });
            }
        }
        outcome
    }
}

fn patch(map: &mut SlotMap, slot: u16, addr: &NodeAddr) -> PatchOutcome {
    let owner = map.slot_to_shard[slot as usize];
    if let Some(idx) = map.shards.iter().position(|s| &s.primary.addr == addr) {
        if owner == idx as u16 {
            return PatchOutcome::Unchanged;
        }
        map.slot_to_shard[slot as usize] = idx as u16;
        return PatchOutcome::Patched;
    }
    // A replica of the owning shard answering MOVED for its own shard's slot
    // means it was promoted.
    if let Some(shard) = map.shards.get_mut(owner as usize) {
        if let Some(pos) = shard.replicas.iter().position(|r| &r.addr == addr) {
            let mut promoted = shard.replicas.remove(pos);
            promoted.role = Role::Primary;
            let mut demoted = std::mem::replace(&mut shard.primary, promoted);
            demoted.role = Role::Replica;
            shard.replicas.push(demoted);
            map.reindex();
            return PatchOutcome::Patched;
        }
    }
    PatchOutcome::UnknownNode
}

/// Where views of the cluster come from (implemented by `slotguard-node`).
pub trait TopologySource: Send + Sync + 'static {
    /// Ask one node for its view. Must finish within the source's own
    /// deadline: a paused node yields a timeout error, never a hang.
    fn fetch_view(&self, node: &NodeAddr) -> BoxFuture<'static, Result<ClusterView, BoxError>>;

    /// Nodes to ask when no map is known yet.
    fn seeds(&self) -> Vec<NodeAddr>;

    /// Ask `nodes` one after another and return the first view, or the last
    /// error when none answered.
    fn fetch_first(
        &self,
        nodes: Vec<NodeAddr>,
    ) -> BoxFuture<'static, Result<ClusterView, BoxError>> {
        let futs: Vec<_> = nodes.iter().map(|n| self.fetch_view(n)).collect();
        Box::pin(async move {
            let mut last: BoxError = "no node to ask for the cluster topology".into();
            for fut in futs {
                match fut.await {
                    Ok(view) => return Ok(view),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}

#[cfg(test)]
mod tests;
