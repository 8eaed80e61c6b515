//! Answer reads from a replica when the primary cannot.
//!
//! A read whose [`Consistency`] allows it (`ReplicaOk`, the default, or
//! `StaleOk(budget)`), failing on its primary with a timeout, a connection
//! error, an open breaker, `CLUSTERDOWN`, `LOADING` or `BUSY`, goes to the
//! best replica of that shard:
//!
//! - in the majority view, breaker not open;
//! - `ReplicaOk`: replication link up; a replica whose link is down only when
//!   no linked one is eligible and it heard from its primary at most
//!   [`FailoverPolicy::max_unlinked_staleness`] ago (a killed primary's
//!   replica holds everything up to the kill);
//! - `StaleOk(budget)`: heard from its primary at most `budget` ago;
//! - then fewest recent failures, lowest latency (EWMA).
//!
//! The primary attempt of such a read gets its own short deadline
//! ([`FailoverPolicy::primary_attempt_timeout`]) so a stalled primary leaves
//! time for the replica within the request deadline; a primary whose breaker
//! is open or that is outside the majority is skipped up front. Later
//! attempts back off exponentially with full jitter from
//! [`FailoverPolicy::backoff_base`], at most
//! [`FailoverPolicy::max_failovers`] of them, never past the deadline. Every
//! failover asks the refresher for a new map, so a promotion is picked up.
//!
//! Writes never go to replicas: a write failing on its primary returns its
//! typed error at once (`Timeout`, `CircuitOpen`, `Connection`) and asks for
//! a refresh; after a promotion, writes go to the new primary as soon as the
//! map (majority view, or a `MOVED` from the old primary) says so.
//!
//! Healthy reads follow [`ReadFrom`] (primary-preferred by default).
//!
//! # Example
//!
//! ```
//! use slotguard_core::{CacheError, CacheRequest, CacheResponse, ClusterView, NodeView, Path, Role, ShardView, Topology};
//! use slotguard_layers::replica_failover::ReplicaFailoverLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let node = |p: u16| NodeView { addr: format!("127.0.0.1:{p}").parse().unwrap(), id: None, online: true };
//! let topology = Topology::new();
//! topology.install(&ClusterView {
//!     source: "127.0.0.1:7000".parse().unwrap(),
//!     shards: vec![ShardView { slots: vec![(0, 16383)], primary: node(7000), replicas: vec![node(7001)] }],
//!     current_epoch: None,
//!     state_ok: Some(true),
//! });
//! // A toy leaf whose primary is down.
//! let leaf = service_fn(|req: CacheRequest| async move {
//!     let node = req.node().cloned().unwrap();
//!     if node.port() == 7000 {
//!         Err(CacheError::Connection { node, detail: "down".into() })
//!     } else {
//!         Ok(CacheResponse::from_node(Some("v".into()), node, Path::Replica))
//!     }
//! });
//! let svc = ServiceBuilder::new().layer(ReplicaFailoverLayer::new(topology)).service(leaf);
//! let req = CacheRequest::get("k").to_node("127.0.0.1:7000".parse().unwrap(), Role::Primary);
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.served.path, Path::Replica);
//! # }
//! ```

pub mod future;
mod layer;
mod policy;
mod select;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use slotguard_core::{
    classify, BoxError, CacheRequest, Consistency, Failure, NodeAddr, Role, Route, Topology,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub use layer::ReplicaFailoverLayer;
pub use policy::{FailoverPolicy, ReadFrom};

use crate::attempt::{Proto, Recover};
use future::ResponseFuture;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) policy: FailoverPolicy,
}

/// Fails reads over to replicas. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ReplicaFailover<S> {
    inner: S,
    proto: Arc<Proto<S, Shared>>,
}

/// Failures after which a read tries another node of its shard.
fn fails_over(failure: Failure) -> bool {
    // Node faults, as the shared classification defines them; an
    // indeterminate outcome only concerns writes, which never fail over.
    // CLUSTERDOWN is no node's fault, yet a replica may still answer
    // (`cluster-allow-reads-when-down yes`), so a read tries one.
    (failure.is_node_fault() && failure != Failure::Indeterminate) || failure.is_cluster_wide()
}

fn replica_route(addr: NodeAddr) -> Route {
    Route::Node {
        addr,
        role: Role::Replica,
        asking: false,
    }
}

impl Shared {
    /// Where a read that may use replicas goes first.
    fn first_route(&self, req: &CacheRequest) -> Option<Route> {
        let Route::Node {
            addr,
            role: Role::Primary,
            asking: false,
        } = &req.route
        else {
            return None;
        };
        let map = self.topology.map();
        // A request stamped by the slot map goes to its slot's primary: find
        // the shard by slot (an index) before asking the address index.
        let (shard, primary) = match map.shard_for_slot(req.slot()) {
            Some(shard) if shard.primary.addr == *addr => (shard, &shard.primary),
            _ => map.node(addr)?,
        };
        if primary.role != Role::Primary {
            return None;
        }
        let skip_primary = select::primary_unusable(primary);
        let best = || select::best_replica(shard, req.consistency, &self.policy, &[]);
        let prefer_replica = match self.policy.read_from {
            ReadFrom::PrimaryPreferred => false,
            ReadFrom::ReplicaPreferred => true,
            ReadFrom::LowestLatency => best().is_some_and(|r| {
                let p = primary.health.ewma_latency();
                !p.is_zero() && !r.health.ewma_latency().is_zero() && r.health.ewma_latency() < p
            }),
        };
        if !(skip_primary || prefer_replica) {
            return None;
        }
        best().map(|r| replica_route(r.addr.clone()))
    }
}

impl<S> Service<CacheRequest> for ReplicaFailover<S>
where
    S: Service<CacheRequest> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let may_fail_over = req.op.is_read() && req.consistency != Consistency::Primary;
        let proto = self.proto.clone();
        if !may_fail_over {
            // A write (or a primary-only read) is never sent again: its
            // recovery only asks for a refresh, so nothing is kept for a
            // retry.
            let fut = self.inner.call(req);
            let recovery = Recovery { proto, retry: None };
            return ResponseFuture::new(fut, Some(recovery));
        }
        let shared = &proto.shared;
        let mut first = req.clone();
        let mut first_replica = None;
        if let Some(route) = shared.first_route(&req) {
            first_replica = route_node(&route).cloned();
            first.route = route;
        } else if let Some(t) = shared.policy.primary_attempt_timeout {
            // Leave the rest of the deadline for a replica.
            let cap = Instant::now() + t;
            first.deadline = Some(req.deadline.map_or(cap, |d| d.min(cap)));
        }
        let fut = self.inner.call(first);
        ResponseFuture::new(
            fut,
            Some(Recovery {
                proto,
                retry: Some(Retry { req, first_replica }),
            }),
        )
    }
}

fn route_node(route: &Route) -> Option<&NodeAddr> {
    match route {
        Route::Node { addr, .. } => Some(addr),
        Route::Slot => None,
    }
}

/// What the response future keeps to fail a request over.
pub struct Recovery<S> {
    proto: Arc<Proto<S, Shared>>,
    // `None` for requests that never fail over (writes).
    retry: Option<Retry>,
}

struct Retry {
    req: CacheRequest,
    // Where the first attempt went when it was not the request's own node
    // (a replica chosen up front); kept only then, so the healthy path
    // holds no list of tried nodes.
    first_replica: Option<NodeAddr>,
}

impl<S> crate::attempt::Sealed for Recovery<S> {}

impl<S> fmt::Debug for Recovery<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery").finish_non_exhaustive()
    }
}

impl<S> Recover<S::Response> for Recovery<S>
where
    S: Service<CacheRequest> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
{
    fn recover(
        self,
        err: BoxError,
    ) -> Result<BoxFuture<'static, Result<S::Response, BoxError>>, BoxError> {
        let failure = classify(&err);
        if !fails_over(failure) {
            return Err(err);
        }
        // The map may be behind a promotion: look again (rate-limited).
        self.proto.shared.topology.request_refresh();
        match self.retry {
            Some(retry) => {
                let svc = self.proto.service();
                let shared = self.proto.shared.clone();
                Ok(Box::pin(follow(svc, shared, retry, err)))
            }
            None => Err(err),
        }
    }
}

/// Full jitter: a uniformly random wait in `[0, base × 2ⁿ]`.
fn jittered(base: Duration, n: u32) -> Duration {
    let cap = base.saturating_mul(1u32 << n.min(10));
    // RandomState is seeded randomly per process and per instance: enough
    // randomness for jitter without another dependency.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    cap.mul_f64((r % 10_000) as f64 / 10_000.0)
}

async fn follow<S>(
    svc: S,
    shared: Arc<Shared>,
    retry: Retry,
    mut err: BoxError,
) -> Result<S::Response, BoxError>
where
    S: Service<CacheRequest> + Clone,
    S::Error: Into<BoxError>,
{
    let Retry {
        mut req,
        first_replica,
    } = retry;
    let mut tried: Vec<NodeAddr> = first_replica
        .or_else(|| req.node().cloned())
        .into_iter()
        .collect();
    let policy = &shared.policy;
    loop {
        if req.attempts.failovers >= policy.max_failovers {
            return Err(err);
        }
        let map = shared.topology.load();
        let Some(shard) = map.shard_for_slot(req.slot()) else {
            return Err(err);
        };
        // A refresh may have promoted a new primary since the request was
        // stamped: that node is the best answer. Else the best replica.
        let next =
            if !tried.contains(&shard.primary.addr) && !select::primary_unusable(&shard.primary) {
                Some((shard.primary.addr.clone(), Role::Primary))
            } else {
                select::best_replica(shard, req.consistency, policy, &tried)
                    .map(|r| (r.addr.clone(), Role::Replica))
            };
        let Some((node, role)) = next else {
            return Err(err);
        };
        drop(map);
        if req.attempts.failovers > 0 {
            let wait = jittered(policy.backoff_base, u32::from(req.attempts.failovers) - 1);
            let wake = Instant::now() + wait;
            tokio::time::sleep_until(req.deadline.map_or(wake, |d| d.min(wake))).await;
        }
        if req.deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(err);
        }
        req.attempts.failovers += 1;
        slotguard_core::observe::record(slotguard_core::Observation::ReplicaFailover {
            from: tried.last().cloned(),
            to: node.clone(),
        });
        tried.push(node.clone());
        tracing::debug!(target: "slotguard::failover", node = %node, slot = req.slot(), "replica_failover");
        let attempt = CacheRequest::clone(&req).with_route(Route::Node {
            addr: node,
            role,
            asking: false,
        });
        match svc.clone().oneshot(attempt).await {
            Ok(resp) => return Ok(resp),
            Err(e) => {
                let e: BoxError = e.into();
                let failure = classify(&e);
                if !fails_over(failure) {
                    return Err(e);
                }
                // Once any node said the cluster is down, the caller hears
                // that (a cluster-wide state, for Fallback to answer), not
                // a replica's refusal that follows from it.
                if !classify(&err).is_cluster_wide() || failure.is_cluster_wide() {
                    err = e;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
