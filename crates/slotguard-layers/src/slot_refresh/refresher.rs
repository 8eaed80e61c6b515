//! The background refresher: one task per layer, so at most one refresh is
//! ever in flight, and triggers collapse into the next one.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use slotguard_core::controller::{largest_agreement, RoundFetched};
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

    /// One refresh round: ask several nodes and hand their views to the
    /// controller, which installs the majority view.
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
        // What the round decides (the view installed, majority verdicts,
        // fences lifted, another round) is the controller's.
        let applied = self.topology.report(RoundFetched::new(requested, &views));
        if applied.is_none() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return Err(last_err.unwrap_or_else(|| "no node answered for the topology".into()));
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
