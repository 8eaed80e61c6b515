//! The background refresher: one task per layer, so at most one refresh is
//! ever in flight, and triggers collapse into the next one.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use slotguard_core::observe::{Observation, RefreshOutcome, RefreshTrigger};
use slotguard_core::{BoxError, ClusterView, NodeAddr, Topology, TopologySource};

use super::config::RefreshConfig;

/// Counters of the refresher, for tests and telemetry.
#[derive(Debug, Default)]
pub struct RefreshStats {
    refreshes: AtomicU64,
    views_fetched: AtomicU64,
    failures: AtomicU64,
}

impl RefreshStats {
    /// Refresh rounds run.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }
    /// Views requested from nodes (one per node asked).
    pub fn views_fetched(&self) -> u64 {
        self.views_fetched.load(Ordering::Relaxed)
    }
    /// Rounds in which no node answered.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

pub(crate) struct Refresher {
    pub(crate) topology: Topology,
    pub(crate) source: Arc<dyn TopologySource>,
    pub(crate) config: RefreshConfig,
    pub(crate) stats: Arc<RefreshStats>,
    started: AtomicBool,
    /// Set by shutdown: the background task stops at its next wait.
    stop: tokio::sync::watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<Option<()>>>>,
}

impl fmt::Debug for Refresher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refresher")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Refresher {
    pub(crate) fn new(
        topology: Topology,
        source: Arc<dyn TopologySource>,
        config: RefreshConfig,
    ) -> Self {
        Self {
            topology,
            source,
            config,
            stats: Arc::new(RefreshStats::default()),
            started: AtomicBool::new(false),
            stop: tokio::sync::watch::Sender::new(false),
            task: std::sync::Mutex::new(None),
        }
    }

    /// Stop the background task and wait for it to end; it does not start
    /// again. A refresh round in progress is abandoned.
    pub(crate) async fn shutdown(&self) {
        // Marked started so that no later request starts it again.
        self.started.store(true, Ordering::Release);
        self.stop.send_replace(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Start the background task once, on the topology's controller (needs
    /// a tokio runtime; the controller's shutdown stops it). The task holds
    /// only a weak reference: it ends when the layer is dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.started.load(Ordering::Relaxed) || self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let topology = self.topology.clone();
        let (period, min_gap) = (self.config.period, self.config.min_gap);
        let mut stop = self.stop.subscribe();
        let task = self.topology.controller().spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                _ = run(weak, topology, period, min_gap) => {}
            }
        });
        if task.is_none() {
            // No runtime, or the controller is shut down: a later start
            // may try again (it does nothing after a shutdown).
            self.started.store(false, Ordering::Release);
        }
        *self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = task;
    }

    /// [`refresh_once`](Self::refresh_once), reported to the stack's
    /// observer with what started it and how it ended.
    pub(crate) async fn round(&self, trigger: RefreshTrigger) -> Result<(), BoxError> {
        let before = self.topology.load();
        let out = self.refresh_once().await;
        self.topology.observe(|| Observation::TopologyRefresh {
            trigger,
            outcome: match &out {
                Err(_) => RefreshOutcome::Failed,
                Ok(()) if routing(&self.topology.load()) != routing(&before) => {
                    RefreshOutcome::Changed
                }
                Ok(()) => RefreshOutcome::Unchanged,
            },
        });
        out
    }

    /// One refresh round: ask several nodes, install the majority view.
    pub(crate) async fn refresh_once(&self) -> Result<(), BoxError> {
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        // Only faults before this instant can be lifted by this round.
        let requested = Instant::now();
        let map = self.topology.load();
        // Primaries first (they know their slots best), then replicas, then
        // the configured seeds, without duplicates.
        let mut candidates: Vec<NodeAddr> = Vec::new();
        let primaries = map.shards().iter().map(|s| &s.primary.addr);
        let replicas = map
            .shards()
            .iter()
            .flat_map(|s| s.replicas.iter().map(|r| &r.addr));
        for addr in primaries
            .chain(replicas)
            .cloned()
            .chain(self.source.seeds())
        {
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        candidates.truncate(self.config.views.max(1));
        // A fenced primary is lifted only by its own answer: always ask it.
        for shard in map.shards() {
            if shard.primary.health.writes_fenced() && !candidates.contains(&shard.primary.addr) {
                candidates.push(shard.primary.addr.clone());
            }
        }
        self.stats
            .views_fetched
            .fetch_add(candidates.len() as u64, Ordering::Relaxed);
        // Once a strict majority of the nodes asked agree, wait only a short
        // grace for the rest: a stalled node must not hold the new map back
        // for its whole fetch deadline (that is exactly when the map is
        // changing), while healthy stragglers — maybe the one node that
        // already knows of a promotion — still get to answer.
        let mut pending: FuturesUnordered<_> = candidates
            .iter()
            .map(|n| self.source.fetch_view(n))
            .collect();
        let mut views: Vec<ClusterView> = Vec::new();
        let mut last_err = None;
        let needed = candidates.len() / 2 + 1;
        let mut grace_until: Option<Instant> = None;
        loop {
            let next = match grace_until {
                None => pending.next().await,
                Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            let Some(r) = next else { break };
            match r {
                Ok(v) => views.push(v),
                Err(e) => last_err = Some(e),
            }
            if grace_until.is_none() && largest_agreement(&views) >= needed {
                grace_until = Some(Instant::now() + self.config.straggler_grace);
            }
        }
        if views.is_empty() && !map.shards().is_empty() {
            // Every known node failed: try the seeds one after another.
            if let Ok(v) = self.source.fetch_first(self.source.seeds()).await {
                views.push(v);
            }
        }
        let Some(chosen) = choose_view(&views) else {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return Err(last_err.unwrap_or_else(|| "no node answered for the topology".into()));
        };
        let fingerprint_of_chosen = fingerprint(chosen);
        let installed = self.topology.install(chosen);
        // A node is stale (partitioned, or a resumed primary that was
        // replaced) when its own view makes it a primary, the majority's
        // does not, and its epoch is older. Disagreeing about single slots is
        // normal while a migration or a promotion spreads by gossip: such
        // nodes stay routable, and a view that differs without being older
        // asks for another round to converge.
        let chosen_epoch = chosen.current_epoch.unwrap_or(0);
        let mut ahead = false;
        // Nodes whose own answer makes them a primary with slots: only they
        // can have their writes confirmed by this round.
        let self_primary: Vec<&NodeAddr> = views
            .iter()
            .filter(|v| is_primary_in(v, &v.source))
            .map(|v| &v.source)
            .collect();
        let agree: HashMap<&NodeAddr, bool> = views
            .iter()
            .map(|v| {
                let epoch = v.current_epoch.unwrap_or(0);
                let differs = fingerprint(v) != fingerprint_of_chosen;
                // Equal epochs are ambiguous: at a promotion the voters share
                // the new epoch before the new owner's config reaches them.
                // Only a strictly older epoch proves the node is behind.
                ahead |= differs && epoch >= chosen_epoch;
                let stale = epoch < chosen_epoch && claims_more(v, chosen, &v.source);
                (&v.source, !stale && v.state_ok != Some(false))
            })
            .collect();
        if ahead {
            self.topology.request_refresh();
        }
        // A node is in the majority when its own view (if it answered)
        // agrees and the majority does not report it failed (a paused,
        // replaced primary shows up as failed there).
        let online: HashMap<&NodeAddr, bool> = chosen
            .shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
            .map(|n| (&n.addr, n.online))
            .collect();
        for node in installed.nodes() {
            let verdict = agree.get(&node.addr).copied().unwrap_or(true)
                && online.get(&node.addr).copied().unwrap_or(true);
            node.health.set_in_majority(verdict);
        }
        // Writes go again to a fenced primary once this round — requested
        // after its last fault — heard it answer as the primary of its
        // slots, agreeing with the majority, which also has it as primary.
        for shard in installed.shards() {
            let p = &shard.primary;
            if p.health.writes_fenced()
                && p.health.in_majority()
                && agree.get(&p.addr).copied().unwrap_or(false)
                && self_primary.contains(&&p.addr)
                && !shard.slots.is_empty()
                && p.health.confirm_writes(requested)
            {
                self.topology.observe(|| Observation::FenceLifted {
                    node: p.addr.clone(),
                });
            }
        }
        Ok(())
    }
}

async fn run(weak: Weak<Refresher>, topology: Topology, period: Duration, min_gap: Duration) {
    loop {
        let trigger = if topology.is_loaded() {
            tokio::select! {
                _ = topology.refresh_requested() => RefreshTrigger::Requested,
                _ = tokio::time::sleep(period) => RefreshTrigger::Periodic,
            }
        } else {
            RefreshTrigger::Initial
        };
        let Some(refresher) = weak.upgrade() else {
            return;
        };
        if let Err(e) = refresher.round(trigger).await {
            tracing::debug!(error = %e, "slot map refresh failed");
        }
        drop(refresher);
        // The gap bounds the refresh rate however many triggers arrive; with
        // no map yet it paces the retries (each round is bounded by the
        // source's fetch deadlines).
        tokio::time::sleep(min_gap).await;
    }
}

/// Each shard's slot ranges and primary: a round that leaves them as they
/// were changed nothing a request sees.
fn routing(map: &slotguard_core::SlotMap) -> Vec<(&[(u16, u16)], &NodeAddr)> {
    map.shards()
        .iter()
        .map(|s| (s.slots.as_slice(), &s.primary.addr))
        .collect()
}

/// Slot ranges with their primary, sorted: equal fingerprints, equal routing.
type Fingerprint<'a> = Vec<(u16, u16, &'a NodeAddr)>;

/// What makes two views agree: the same primary for every slot range.
fn fingerprint(view: &ClusterView) -> Fingerprint<'_> {
    let mut out: Vec<(u16, u16, &NodeAddr)> = view
        .shards
        .iter()
        .flat_map(|s| {
            s.slots
                .iter()
                .map(move |&(lo, hi)| (lo, hi, &s.primary.addr))
        })
        .collect();
    out.sort();
    out
}

/// Whether `view` makes `node` a primary with slots while `chosen` (the
/// majority) does not have it as a primary at all: a replaced or
/// partitioned primary that still thinks it owns its slots. A node that the
/// majority also has as a primary but that disagrees about single slots is
/// a migration in flight (the importing node learns first), not stale.
fn claims_more(view: &ClusterView, chosen: &ClusterView, node: &NodeAddr) -> bool {
    is_primary_in(view, node) && !is_primary_in(chosen, node)
}

/// Whether `view` has `node` as the primary of some slots.
fn is_primary_in(view: &ClusterView, node: &NodeAddr) -> bool {
    view.shards
        .iter()
        .any(|s| &s.primary.addr == node && !s.slots.is_empty())
}

/// Size of the largest group of healthy views that agree.
fn largest_agreement(views: &[ClusterView]) -> usize {
    let fps: Vec<_> = views
        .iter()
        .filter(|v| v.state_ok != Some(false))
        .map(fingerprint)
        .collect();
    fps.iter()
        .map(|fp| fps.iter().filter(|other| *other == fp).count())
        .max()
        .unwrap_or(0)
}

/// The view to install: among the groups of agreeing views, the one covering
/// the most slots (a node caught mid-promotion may list a shard without its
/// slots, and an uncovered slot fails every request for it), then the one
/// holding the highest `cluster_current_epoch` (Redis resolves ownership
/// conflicts by epoch, and a minority partition cannot raise it: only a
/// majority elects), then the largest (a migration in flight: same epochs,
/// different views). Views from nodes that report `cluster_state:fail` only
/// count when no other node answered.
pub(crate) fn choose_view(views: &[ClusterView]) -> Option<&ClusterView> {
    let healthy: Vec<&ClusterView> = views.iter().filter(|v| v.state_ok != Some(false)).collect();
    let pool: Vec<&ClusterView> = if healthy.is_empty() {
        views.iter().collect()
    } else {
        healthy
    };
    let mut groups: Vec<(Fingerprint<'_>, Vec<&ClusterView>)> = Vec::new();
    for v in pool {
        let fp = fingerprint(v);
        match groups.iter_mut().find(|(g, _)| *g == fp) {
            Some((_, members)) => members.push(v),
            None => groups.push((fp, vec![v])),
        }
    }
    groups
        .into_iter()
        .max_by_key(|(_, members)| {
            let epoch = members
                .iter()
                .filter_map(|v| v.current_epoch)
                .max()
                .unwrap_or(0);
            (members[0].covered_slots(), epoch, members.len())
        })
        .and_then(|(_, members)| {
            members
                .into_iter()
                .max_by_key(|v| v.current_epoch.unwrap_or(0))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotguard_core::{NodeView, ShardView};

    fn addr(port: u16) -> NodeAddr {
        NodeAddr::new("127.0.0.1", port)
    }

    fn view(source: u16, owner: u16, epoch: u64, ok: bool) -> ClusterView {
        let nv = |p: u16| NodeView {
            addr: NodeAddr::new("127.0.0.1", p),
            id: None,
            online: true,
        };
        ClusterView {
            source: NodeAddr::new("127.0.0.1", source),
            shards: vec![ShardView {
                slots: vec![(0, 16383)],
                primary: nv(owner),
                replicas: vec![],
            }],
            current_epoch: Some(epoch),
            state_ok: Some(ok),
        }
    }

    #[test]
    fn the_highest_epoch_wins_then_the_majority() {
        // a promotion known to one node so far
        let views = vec![
            view(1, 1, 9, true),
            view(2, 2, 3, true),
            view(3, 2, 3, true),
        ];
        assert_eq!(
            choose_view(&views).unwrap().shards[0].primary.addr.port(),
            1
        );
        // same epoch: the majority
        let views = vec![
            view(1, 1, 3, true),
            view(2, 2, 3, true),
            view(3, 2, 3, true),
        ];
        assert_eq!(
            choose_view(&views).unwrap().shards[0].primary.addr.port(),
            2
        );
    }

    #[test]
    fn a_view_with_uncovered_slots_loses() {
        let mut partial = view(1, 1, 9, true);
        partial.shards[0].slots = vec![(0, 100)];
        let views = vec![partial, view(2, 2, 3, true)];
        assert_eq!(
            choose_view(&views).unwrap().shards[0].primary.addr.port(),
            2
        );
    }

    #[test]
    fn failing_nodes_do_not_vote() {
        let views = vec![
            view(1, 1, 3, false),
            view(2, 1, 3, false),
            view(3, 2, 3, true),
        ];
        assert_eq!(
            choose_view(&views).unwrap().shards[0].primary.addr.port(),
            2
        );
        // ...unless nobody else answered
        let views = vec![view(1, 1, 3, false)];
        assert_eq!(
            choose_view(&views).unwrap().shards[0].primary.addr.port(),
            1
        );
        assert!(choose_view(&[]).is_none());
    }

    #[test]
    fn only_claiming_foreign_slots_makes_a_node_stale() {
        let two = |source: u16, a: u16, b: u16| {
            let mut v = view(source, a, 1, true);
            v.shards[0].slots = vec![(0, 8191)];
            let mut other = view(source, b, 1, true).shards.remove(0);
            other.slots = vec![(8192, 16383)];
            v.shards.push(other);
            v
        };
        let chosen = two(1, 1, 2);
        // node 3 still thinks it owns the first half (a replaced primary)
        let stale = two(3, 3, 2);
        assert!(claims_more(&stale, &chosen, &addr(3)));
        // node 2 disagrees about node 1's slots only (a migration spreading)
        let mut other = two(2, 4, 2);
        other.shards[0].slots = vec![(0, 100)];
        assert!(!claims_more(&other, &chosen, &addr(2)));
        // node 2 claims a slot of node 1's first (an importing node learns
        // of its new slot before the others): still a primary for the majority
        let mut importing = two(2, 1, 2);
        importing.shards[0].slots = vec![(0, 8190)];
        importing.shards[1].slots = vec![(8191, 16383)];
        assert!(!claims_more(&importing, &chosen, &addr(2)));
    }

    #[test]
    fn ties_go_to_the_highest_epoch() {
        let views = vec![view(1, 1, 3, true), view(2, 2, 4, true)];
        assert_eq!(
            choose_view(&views).unwrap().shards[0].primary.addr.port(),
            2
        );
    }
}
