//! Fakes shared by the layers' unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use slotguard_core::controller::{
    BreakerChanged, CallEnded, LinkStatus, Probed, RoundFetched, ViewLoaded,
};
use slotguard_core::observe::BreakerPhase;
use slotguard_core::{
    BoxError, CacheError, ClusterView, NodeAddr, NodeView, ShardView, SlotMap, Topology,
    TopologySource,
};

pub(crate) fn addr(port: u16) -> NodeAddr {
    NodeAddr::new("127.0.0.1", port)
}

/// A view with one shard per `(lo, hi, primary port)`, replica = port + 100.
pub(crate) fn view(source: u16, shards: &[(u16, u16, u16)]) -> ClusterView {
    let nv = |p: u16| NodeView {
        addr: addr(p),
        id: None,
        online: true,
    };
    ClusterView {
        source: addr(source),
        shards: shards
            .iter()
            .map(|&(lo, hi, p)| ShardView {
                slots: vec![(lo, hi)],
                primary: nv(p),
                replicas: vec![nv(p + 100)],
            })
            .collect(),
        current_epoch: Some(1),
        state_ok: Some(true),
    }
}

/// One shard over every slot: `primary` and its `replicas`.
pub(crate) fn one_shard(primary: u16, replicas: &[u16]) -> ClusterView {
    let nv = |p: u16| NodeView {
        addr: addr(p),
        id: None,
        online: true,
    };
    ClusterView {
        source: addr(primary),
        shards: vec![ShardView {
            slots: vec![(0, 16383)],
            primary: nv(primary),
            replicas: replicas.iter().map(|&p| nv(p)).collect(),
        }],
        current_epoch: Some(1),
        state_ok: Some(true),
    }
}

/// Two shards: slots 0..=8191 on port 1, the rest on port 2.
pub(crate) fn two_shards() -> ClusterView {
    view(1, &[(0, 8191, 1), (8192, 16383, 2)])
}

/// A source that answers every node with the same view, after `delay`,
/// and counts fetches.
#[derive(Clone)]
pub(crate) struct FakeSource {
    pub(crate) view: Arc<Mutex<ClusterView>>,
    pub(crate) fetches: Arc<AtomicU64>,
    pub(crate) delay: Duration,
}

impl FakeSource {
    pub(crate) fn new(view: ClusterView, delay: Duration) -> Self {
        Self {
            view: Arc::new(Mutex::new(view)),
            fetches: Arc::new(AtomicU64::new(0)),
            delay,
        }
    }

    pub(crate) fn set(&self, view: ClusterView) {
        *self.view.lock().unwrap() = view;
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl TopologySource for FakeSource {
    fn fetch_view(&self, node: &NodeAddr) -> BoxFuture<'static, Result<ClusterView, BoxError>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut v = self.view.lock().unwrap().clone();
        v.source = node.clone();
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(v)
        })
    }

    fn seeds(&self) -> Vec<NodeAddr> {
        vec![addr(1)]
    }
}

// Test setup reports to the topology's controller, as the stack's own
// components do: nothing writes the topology directly.

/// Install `view` as the first load does.
pub(crate) fn install(topology: &Topology, view: &ClusterView) -> Arc<SlotMap> {
    topology.report(ViewLoaded::new(view))
}

/// `node` could not be reached, as a leaf reports it: the controller
/// counts a failure, fences its writes and asks for a refresh.
pub(crate) fn unreachable(topology: &Topology, node: &NodeAddr) {
    let outcome = Err(CacheError::Connection {
        node: node.clone(),
        detail: "test".into(),
    });
    topology.report(CallEnded::new(node, tokio::time::Instant::now(), &outcome));
}

/// A probe of `node` answered after `latency` (`None`: failed).
pub(crate) fn probed(topology: &Topology, node: &NodeAddr, latency: Option<Duration>) {
    topology.report(Probed::new(node, latency));
}

/// A probe read `node`'s replication link.
pub(crate) fn link(topology: &Topology, node: &NodeAddr, up: bool, last_io: Duration) {
    topology.report(LinkStatus::new(node, up, last_io));
}

/// `node`'s breaker publishes itself open for an hour (`open`) or
/// admitting calls.
pub(crate) fn breaker_open(topology: &Topology, node: &NodeAddr, open: bool) {
    topology.report(BreakerChanged::new(
        node,
        if open {
            BreakerPhase::Open
        } else {
            BreakerPhase::Closed
        },
        open.then(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
        false,
    ));
}

/// The current map as `source` would report it, `down` marked failed.
fn current_view(topology: &Topology, source: &NodeAddr, down: Option<&NodeAddr>) -> ClusterView {
    let nv = |a: &NodeAddr| NodeView {
        addr: a.clone(),
        id: None,
        online: Some(a) != down,
    };
    ClusterView {
        source: source.clone(),
        shards: topology
            .load()
            .shards()
            .iter()
            .map(|s| ShardView {
                slots: s.slots.clone(),
                primary: nv(&s.primary.addr),
                replicas: s.replicas.iter().map(|r| nv(&r.addr)).collect(),
            })
            .collect(),
        current_epoch: Some(1),
        state_ok: Some(true),
    }
}

/// A refresh round requested at `requested` in which `node` answered with
/// the current map: returns whether it lifted `node`'s write fence.
pub(crate) fn confirm(
    topology: &Topology,
    node: &NodeAddr,
    requested: tokio::time::Instant,
) -> bool {
    let views = [current_view(topology, node, None)];
    topology
        .report(RoundFetched::new(requested, &views))
        .is_some_and(|r| r.lifted.contains(node))
}

/// A refresh round whose majority reports `node` failed: outside the
/// majority from now on.
pub(crate) fn outvote(topology: &Topology, node: &NodeAddr) {
    let views = [current_view(topology, node, Some(node))];
    topology.report(RoundFetched::new(tokio::time::Instant::now(), &views));
}
