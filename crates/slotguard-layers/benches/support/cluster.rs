//! In-memory cluster fixture shared by the benches and `tests/allocations.rs`
//! (included with `#[path]`, so it is not a bench target of its own): a
//! three-shard view, a topology source answering with it, and a leaf that
//! answers at once.

use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use slotguard_core::controller::CallEnded;
use slotguard_core::{
    BoxError, CacheError, CacheRequest, CacheResponse, ClusterView, NodeAddr, NodeView, Path, Role,
    Route, ShardView, Topology, TopologySource,
};
use tower::Service;

pub(crate) fn node(port: u16) -> NodeAddr {
    NodeAddr::new("127.0.0.1", port)
}

/// 3 primaries (7000..7002) with one replica each (7003..7005).
pub(crate) fn view() -> ClusterView {
    let nv = |port| NodeView {
        addr: node(port),
        id: None,
        online: true,
    };
    let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
    ClusterView {
        source: node(7000),
        shards: ranges
            .iter()
            .zip(0u16..)
            .map(|(&range, i)| ShardView {
                slots: vec![range],
                primary: nv(7000 + i),
                replicas: vec![nv(7003 + i)],
            })
            .collect(),
        current_epoch: Some(1),
        state_ok: Some(true),
    }
}

/// Answers every fetch with the same view, at once.
pub(crate) struct StaticSource(pub(crate) ClusterView);

impl TopologySource for StaticSource {
    fn fetch_view(&self, _node: &NodeAddr) -> BoxFuture<'static, Result<ClusterView, BoxError>> {
        let view = self.0.clone();
        Box::pin(async move { Ok(view) })
    }

    fn seeds(&self) -> Vec<NodeAddr> {
        vec![self.0.source.clone()]
    }
}

/// The in-memory leaf: answers at once, served by the stamped node. With a
/// topology it records each outcome in the node's health cell, as
/// `NodeService` does on every completed call.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub(crate) topology: Option<Topology>,
}

impl Service<CacheRequest> for Leaf {
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = Ready<Result<CacheResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let Route::Node { addr, role, .. } = req.route else {
            return ready(Err(CacheError::InvalidInput("unrouted".into()).into()));
        };
        let path = match role {
            Role::Primary => Path::Primary,
            Role::Replica => Path::Replica,
        };
        let out = Ok(CacheResponse::from_node(None, addr.clone(), path));
        if let Some(topology) = &self.topology {
            // Reported as the leaf reports each call (the healthy path).
            let now = tokio::time::Instant::now();
            topology.report(CallEnded::new(
                &addr,
                now.checked_sub(Duration::from_micros(100)).unwrap_or(now),
                &out,
            ));
        }
        ready(out.map_err(Into::into))
    }
}
