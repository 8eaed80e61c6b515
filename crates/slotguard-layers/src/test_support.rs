//! Fakes shared by the layers' unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use slotguard_core::{BoxError, ClusterView, NodeAddr, NodeView, ShardView, TopologySource};

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
