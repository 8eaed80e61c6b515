//! The cluster's slot map, node health, and where views of it come from.
//!
//! [`Topology`] is a cheap-clone handle shared by every layer. Reads are
//! lock-free (`arc-swap`): a request routes against an immutable [`SlotMap`]
//! snapshot, and a refresh or a `MOVED` patch swaps in a new one. Node health
//! lives in [`NodeHealth`] cells that survive map swaps, so what one request
//! learns about a node (latency, failures) is seen by the next.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;

use crate::addr::NodeAddr;
use crate::error::BoxError;
use crate::request::Role;
use crate::slot::SLOT_COUNT;

const UNCOVERED: u16 = u16::MAX;

fn clock_base() -> tokio::time::Instant {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

fn since_base(t: tokio::time::Instant) -> u64 {
    t.saturating_duration_since(clock_base())
        .as_nanos()
        .min(u64::MAX as u128 - 1) as u64
}

/// Live health of one node, shared by every map generation.
///
/// Written by the leaf and the layers from observed call outcomes, and by the
/// health probes (`INFO replication`, `CLUSTER INFO`).
#[derive(Debug)]
pub struct NodeHealth {
    ewma_latency_us: AtomicU64,
    consecutive_failures: AtomicU32,
    link_up: AtomicBool,
    last_io_ms: AtomicU64,
    in_majority: AtomicBool,
    // Nanoseconds after `clock_base()` until which the node's breaker fails
    // fast; 0 = not open. A deadline rather than a flag, so routing tries the
    // node again when the cool-down ends without waiting for a call to flip it.
    breaker_open_until: AtomicU64,
    probed: AtomicBool,
}

impl Default for NodeHealth {
    fn default() -> Self {
        Self {
            ewma_latency_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            link_up: AtomicBool::new(true),
            last_io_ms: AtomicU64::new(0),
            in_majority: AtomicBool::new(true),
            breaker_open_until: AtomicU64::new(0),
            probed: AtomicBool::new(false),
        }
    }
}

impl NodeHealth {
    /// Record a successful call and its latency (EWMA, α = 1/8).
    pub fn record_success(&self, latency: Duration) {
        let sample = latency.as_micros().min(u64::MAX as u128) as u64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.ewma_latency_us.store(new.max(1), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Record a failed call (timeout, connection error, ...).
    pub fn record_failure(&self) {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Smoothed latency of successful calls; zero before the first one.
    pub fn ewma_latency(&self) -> Duration {
        Duration::from_micros(self.ewma_latency_us.load(Ordering::Relaxed))
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// For replicas: `master_link_status:up` at the last probe.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed)
    }

    /// For replicas: `master_last_io_seconds_ago` at the last probe.
    pub fn last_io(&self) -> Duration {
        Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// Record a replica's replication link state from a probe.
    pub fn set_replication(&self, link_up: bool, last_io: Duration) {
        self.link_up.store(link_up, Ordering::Relaxed);
        self.probed.store(true, Ordering::Relaxed);
        self.last_io_ms.store(
            last_io.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Whether a circuit breaker guarding this node fails calls fast right
    /// now (open, cool-down not over). Published by the circuit-breaker
    /// layer, read by failover to route around the node.
    pub fn breaker_open(&self) -> bool {
        let until = self.breaker_open_until.load(Ordering::Relaxed);
        until != 0 && until > since_base(tokio::time::Instant::now())
    }

    /// Publish that the node's breaker fails fast until `until` (`None`:
    /// it admits calls).
    pub fn set_breaker_open_until(&self, until: Option<tokio::time::Instant>) {
        let v = until.map_or(0, |u| since_base(u).max(1));
        self.breaker_open_until.store(v, Ordering::Relaxed);
    }

    /// Publish the node's breaker as open until told otherwise (`true`) or
    /// admitting (`false`).
    pub fn set_breaker_open(&self, open: bool) {
        let v = if open { u64::MAX } else { 0 };
        self.breaker_open_until.store(v, Ordering::Relaxed);
    }

    /// Whether a health probe has reported on this node yet (before that,
    /// `link_up` is an optimistic default).
    pub fn probed(&self) -> bool {
        self.probed.load(Ordering::Relaxed)
    }

    /// Whether the node agreed with the majority view at the last refresh.
    pub fn in_majority(&self) -> bool {
        self.in_majority.load(Ordering::Relaxed)
    }

    /// Mark the node as inside or outside the majority view.
    pub fn set_in_majority(&self, yes: bool) {
        self.in_majority.store(yes, Ordering::Relaxed);
    }
}

/// One node in a [`SlotMap`].
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Where to reach it.
    pub addr: NodeAddr,
    /// Its cluster node id, when the source reported it.
    pub id: Option<Arc<str>>,
    /// Its role in its shard.
    pub role: Role,
    /// Live health, shared across map generations.
    pub health: Arc<NodeHealth>,
}

/// A primary, its replicas, and the slot ranges they serve.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The primary.
    pub primary: NodeInfo,
    /// Its replicas.
    pub replicas: Vec<NodeInfo>,
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
}

/// An immutable snapshot of slot ownership.
#[derive(Clone)]
pub struct SlotMap {
    generation: u64,
    shards: Vec<Shard>,
    slot_to_shard: Box<[u16]>,
    source: Option<NodeAddr>,
}

impl fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotMap")
            .field("generation", &self.generation)
            .field("covered_slots", &self.covered_slots())
            .field("shards", &self.shards)
            .field("source", &self.source)
            .finish()
    }
}

impl SlotMap {
    fn empty() -> Self {
        Self {
            generation: 0,
            shards: Vec::new(),
            slot_to_shard: vec![UNCOVERED; SLOT_COUNT as usize].into_boxed_slice(),
            source: None,
        }
    }

    /// Bumped on every install or patch; 0 means nothing was ever loaded.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The node whose view this map was built from.
    pub fn source(&self) -> Option<&NodeAddr> {
        self.source.as_ref()
    }

    /// Every shard.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard serving `slot`, if the slot is covered.
    pub fn shard_for_slot(&self, slot: u16) -> Option<&Shard> {
        let idx = *self.slot_to_shard.get(slot as usize)?;
        self.shards.get(idx as usize)
    }

    /// The primary serving `slot`, if the slot is covered.
    pub fn primary_for_slot(&self, slot: u16) -> Option<&NodeInfo> {
        self.shard_for_slot(slot).map(|s| &s.primary)
    }

    /// How many of the 16384 slots have an owner.
    pub fn covered_slots(&self) -> usize {
        self.slot_to_shard
            .iter()
            .filter(|&&s| s != UNCOVERED)
            .count()
    }

    /// Every node, primaries first within each shard.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
    }

    /// The node with this address and its shard.
    pub fn node(&self, addr: &NodeAddr) -> Option<(&Shard, &NodeInfo)> {
        self.shards.iter().find_map(|s| {
            std::iter::once(&s.primary)
                .chain(s.replicas.iter())
                .find(|n| &n.addr == addr)
                .map(|n| (s, n))
        })
    }
}

/// One node's view of the cluster, as a [`TopologySource`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The node that answered.
    pub source: NodeAddr,
    /// Shards with at least one slot (empty primaries are left out).
    pub shards: Vec<ShardView>,
    /// `cluster_current_epoch` of the answering node, when known.
    pub current_epoch: Option<u64>,
    /// `cluster_state:ok` at the answering node, when known.
    pub state_ok: Option<bool>,
}

impl ClusterView {
    /// How many of the 16384 slots have an owner in this view (overlapping
    /// ranges count once).
    pub fn covered_slots(&self) -> usize {
        let mut slots = vec![false; SLOT_COUNT as usize];
        for &(lo, hi) in self.shards.iter().flat_map(|s| s.slots.iter()) {
            for slot in lo..=hi.min(SLOT_COUNT - 1) {
                slots[slot as usize] = true;
            }
        }
        slots.iter().filter(|&&c| c).count()
    }
}

/// One shard in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    /// The primary.
    pub primary: NodeView,
    /// Its replicas.
    pub replicas: Vec<NodeView>,
}

/// One node in a [`ShardView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Where to reach it.
    pub addr: NodeAddr,
    /// Its cluster node id.
    pub id: Option<String>,
    /// Whether the reporting node considers it healthy (`health: online`).
    pub online: bool,
}

/// Outcome of [`Topology::patch_slot`].
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
    health: Mutex<HashMap<NodeAddr, Arc<NodeHealth>>>,
    generation: AtomicU64,
    // Wakes the refresher; one stored permit, so a burst of requests
    // collapses into one refresh.
    refresh: tokio::sync::Notify,
    refresh_requests: AtomicU64,
    // Current generation, for callers waiting on a refresh to confirm
    // something.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            health: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            refresh: tokio::sync::Notify::new(),
            refresh_requests: AtomicU64::new(0),
            changed: tokio::sync::watch::Sender::new(0),
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

impl Topology {
    /// An empty topology (generation 0, no slot covered).
    pub fn new() -> Self {
        Self::default()
    }

    /// The current map (lock-free).
    pub fn load(&self) -> Arc<SlotMap> {
        self.inner.map.load_full()
    }

    /// Whether a map was ever installed.
    pub fn is_loaded(&self) -> bool {
        self.inner.map.load().generation > 0
    }

    /// The health cell of `addr` (created on first use; it outlives maps).
    pub fn health(&self, addr: &NodeAddr) -> Arc<NodeHealth> {
        let mut reg = self
            .inner
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        reg.entry(addr.clone()).or_default().clone()
    }

    fn next_generation(&self) -> u64 {
        self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn node_info(&self, v: &NodeView, role: Role) -> NodeInfo {
        NodeInfo {
            addr: v.addr.clone(),
            id: v.id.as_deref().map(Arc::from),
            role,
            health: self.health(&v.addr),
        }
    }

    /// Build a map from `view` and make it current. Returns the new map.
    ///
    /// Overlapping ranges are resolved in the view's order (the last shard
    /// wins); slots out of range are ignored.
    pub fn install(&self, view: &ClusterView) -> Arc<SlotMap> {
        let mut map = SlotMap::empty();
        map.source = Some(view.source.clone());
        for sv in &view.shards {
            let idx = map.shards.len() as u16;
            map.shards.push(Shard {
                primary: self.node_info(&sv.primary, Role::Primary),
                replicas: sv
                    .replicas
                    .iter()
                    .map(|r| self.node_info(r, Role::Replica))
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
        // Forget health of nodes that left, so the registry stays bounded.
        {
            let mut reg = self
                .inner
                .health
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            reg.retain(|addr, _| map.node(addr).is_some());
        }
        map.generation = self.next_generation();
        let map = Arc::new(map);
        self.inner.map.store(map.clone());
        self.inner.changed.send_replace(map.generation);
        map
    }

    /// Ask the refresher (the `slot_refresh` layer) for a new map soon.
    /// Requests made while one is pending collapse into one refresh.
    pub fn request_refresh(&self) {
        self.inner.refresh_requests.fetch_add(1, Ordering::Relaxed);
        self.inner.refresh.notify_one();
    }

    /// How many times [`request_refresh`](Self::request_refresh) was called.
    pub fn refresh_requests(&self) -> u64 {
        self.inner.refresh_requests.load(Ordering::Relaxed)
    }

    /// Wait for the next [`request_refresh`](Self::request_refresh) (for the
    /// refresher).
    pub async fn refresh_requested(&self) {
        self.inner.refresh.notified().await;
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
    pub fn patch_slot(&self, slot: u16, addr: &NodeAddr) -> PatchOutcome {
        if slot >= SLOT_COUNT {
            return PatchOutcome::UnknownNode;
        }
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
            return PatchOutcome::Patched;
        }
    }
    PatchOutcome::UnknownNode
}

/// Where views of the cluster come from (implemented by `slotguard-fred`).
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
mod tests {
    use super::*;

    fn nv(port: u16) -> NodeView {
        NodeView {
            addr: NodeAddr::new("127.0.0.1", port),
            id: None,
            online: true,
        }
    }

    fn view() -> ClusterView {
        ClusterView {
            source: NodeAddr::new("127.0.0.1", 1),
            shards: vec![
                ShardView {
                    slots: vec![(0, 8191)],
                    primary: nv(1),
                    replicas: vec![nv(11)],
                },
                ShardView {
                    slots: vec![(8192, 16383)],
                    primary: nv(2),
                    replicas: vec![nv(12)],
                },
            ],
            current_epoch: None,
            state_ok: Some(true),
        }
    }

    #[test]
    fn install_and_lookup() {
        let t = Topology::new();
        assert!(!t.is_loaded());
        let m = t.install(&view());
        assert_eq!(m.covered_slots(), 16384);
        assert_eq!(m.primary_for_slot(100).unwrap().addr.port(), 1);
        assert_eq!(m.primary_for_slot(16383).unwrap().addr.port(), 2);
        assert!(t.is_loaded());
    }

    #[test]
    fn patch_moves_and_promotes() {
        let t = Topology::new();
        t.install(&view());
        let g = t.load().generation();
        assert_eq!(
            t.patch_slot(5, &NodeAddr::new("127.0.0.1", 2)),
            PatchOutcome::Patched
        );
        assert_eq!(t.load().primary_for_slot(5).unwrap().addr.port(), 2);
        assert!(t.load().generation() > g);
        assert_eq!(
            t.patch_slot(5, &NodeAddr::new("127.0.0.1", 2)),
            PatchOutcome::Unchanged
        );
        assert_eq!(
            t.patch_slot(5, &NodeAddr::new("127.0.0.1", 99)),
            PatchOutcome::UnknownNode
        );
        // replica 11 of shard 0 promoted
        assert_eq!(
            t.patch_slot(0, &NodeAddr::new("127.0.0.1", 11)),
            PatchOutcome::Patched
        );
        let m = t.load();
        let s = m.shard_for_slot(0).unwrap();
        assert_eq!(s.primary.addr.port(), 11);
        assert_eq!(s.replicas[0].addr.port(), 1);
        assert_eq!(s.replicas[0].role, Role::Replica);
    }

    #[test]
    fn health_survives_installs() {
        let t = Topology::new();
        t.install(&view());
        let a = NodeAddr::new("127.0.0.1", 1);
        t.load().node(&a).unwrap().1.health.record_failure();
        t.install(&view());
        assert_eq!(
            t.load().node(&a).unwrap().1.health.consecutive_failures(),
            1
        );
    }
}
