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
//! **Hedged reads** (on by default, [`FailoverPolicy::hedge`]): a read that
//! may use a replica and whose primary has not answered within its hedge
//! delay — the primary's own latency bound (mean plus four deviations, a
//! p99 stand-in), within [`HedgePolicy::floor`] and [`HedgePolicy::cap`] —
//! is also sent to the best replica the rules above allow; the first good
//! answer wins and the other attempt is dropped. Hedges draw on a budget
//! (a share of hedge-eligible reads, [`HedgePolicy::budget_ratio`]), so a
//! slow cluster is not hit twice as hard. A read the fallback layer marked
//! (an invalidated key) comes with [`Consistency::Primary`] and never
//! hedges. A hedge's failure is no answer (the primary's outcome decides),
//! except `CLUSTERDOWN`: then the cluster refuses reads (a full-coverage
//! cluster while a slot has no owner, most likely the silent primary's),
//! and the read ends at once with it rather than waiting out the primary's
//! attempt timeout, so a fallback layer above answers from its near-cache
//! or store without that wait. [`ReplicaFailoverLayer::hedge_stats`] counts
//! what hedging did.
//!
//! # Example
//!
//! ```
//! use slotguard_core::controller::ViewLoaded;
//! use slotguard_core::{CacheError, CacheRequest, CacheResponse, ClusterView, NodeView, Path, Role, ShardView, Topology};
//! use slotguard_layers::replica_failover::ReplicaFailoverLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let node = |p: u16| NodeView { addr: format!("127.0.0.1:{p}").parse().unwrap(), id: None, online: true };
//! let topology = Topology::new();
//! // The map, as the refresher's first load reports it to the controller.
//! topology.report(ViewLoaded::new(&ClusterView {
//!     source: "127.0.0.1:7000".parse().unwrap(),
//!     shards: vec![ShardView { slots: vec![(0, 16383)], primary: node(7000), replicas: vec![node(7001)] }],
//!     current_epoch: None,
//!     state_ok: Some(true),
//! }));
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
mod hedge;
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

pub use hedge::{HedgePolicy, HedgeStats};
pub use layer::ReplicaFailoverLayer;
pub use policy::{FailoverPolicy, ReadFrom};

use crate::attempt::{Proto, Recover};
use future::ResponseFuture;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) policy: FailoverPolicy,
    pub(crate) hedger: Option<hedge::Hedger>,
}

/// Where a read that may use replicas goes first, and when it hedges.
struct Plan {
    // A replica chosen up front, instead of the stamped primary.
    replica: Option<Route>,
    // The hedge delay, for a read that goes to its primary.
    hedge_after: Option<Duration>,
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
    /// Where a read that may use replicas goes first, and its hedge delay.
    fn plan(&self, req: &CacheRequest) -> Plan {
        let mut plan = Plan {
            replica: None,
            hedge_after: None,
        };
        let Route::Node {
            addr,
            role: Role::Primary,
            asking: false,
        } = &req.route
        else {
            return plan;
        };
        let map = self.topology.map();
        // A request stamped by the slot map goes to its slot's primary: find
        // the shard by slot (an index) before asking the address index.
        let Some((shard, primary)) = (match map.shard_for_slot(req.slot()) {
            Some(shard) if shard.primary.addr == *addr => Some((shard, &shard.primary)),
            _ => map.node(addr),
        }) else {
            return plan;
        };
        if primary.role != Role::Primary {
            return plan;
        }
        plan.replica = self.replica_first(req, shard, primary);
        if plan.replica.is_none() && !shard.replicas.is_empty() {
            plan.hedge_after = self
                .hedger
                .as_ref()
                .map(|h| h.policy.delay(&primary.health));
        }
        plan
    }

    /// A replica to send a read to instead of its primary, when the primary
    /// is unusable or the [`ReadFrom`] policy prefers one.
    fn replica_first(
        &self,
        req: &CacheRequest,
        shard: &slotguard_core::Shard,
        primary: &slotguard_core::NodeInfo,
    ) -> Option<Route> {
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
            return ResponseFuture::new(fut, None, Some(recovery));
        }
        let shared = &proto.shared;
        let mut first = req.clone();
        let mut first_replica = None;
        let mut timer = None;
        let plan = shared.plan(&req);
        if let Some(route) = plan.replica {
            first_replica = route_node(&route).cloned();
            first.route = route;
        } else {
            let now = Instant::now();
            if let Some(t) = shared.policy.primary_attempt_timeout {
                // Leave the rest of the deadline for a replica.
                let cap = now + t;
                first.deadline = Some(req.deadline.map_or(cap, |d| d.min(cap)));
            }
            if let (Some(after), Some(hedger)) = (plan.hedge_after, shared.hedger.as_ref()) {
                hedger.deposit();
                timer = Some(tokio::time::sleep_until(now + after));
            }
        }
        let fut = self.inner.call(first);
        ResponseFuture::new(
            fut,
            timer,
            Some(Recovery {
                proto,
                retry: Some(Retry {
                    req,
                    first_replica,
                    hedged: None,
                }),
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
    // The replica a hedge went to, not to be tried again by a failover.
    hedged: Option<NodeAddr>,
}

impl<S> Recovery<S>
where
    S: Service<CacheRequest> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
{
    /// The hedge of a read still waiting on its primary: to the best
    /// eligible replica of the shard as the map says now, if the budget
    /// pays for it.
    fn start_hedge(&mut self) -> Option<BoxFuture<'static, Result<S::Response, BoxError>>> {
        let shared = &self.proto.shared;
        let hedger = shared.hedger.as_ref()?;
        let retry = self.retry.as_mut()?;
        let req = &retry.req;
        let node = {
            let map = shared.topology.map();
            let shard = map.shard_for_slot(req.slot())?;
            // The freshness gate of a failover: link up (or within the
            // read's staleness budget), in the majority, breaker not open.
            let replica = select::best_replica(shard, req.consistency, &shared.policy, &[])?;
            replica.addr.clone()
        };
        if !hedger.withdraw() {
            return None;
        }
        tracing::debug!(target: "slotguard::failover", node = %node, slot = req.slot(), "hedged_read");
        let mut attempt = CacheRequest::clone(req).with_route(replica_route(node.clone()));
        attempt.attempts.failovers += 1;
        retry.hedged = Some(node);
        let svc = self.proto.service();
        Some(Box::pin(async move {
            svc.oneshot(attempt).await.map_err(Into::into)
        }))
    }
}

impl<S> Recovery<S> {
    /// A hedge's answer came first: the read was answered by a replica in
    /// place of a primary that did not answer within its latency bound,
    /// which telemetry reports as a replica failover (span event, failover
    /// clocks) like one taken after a fault.
    fn hedge_won(&self) {
        if let Some(h) = self.proto.shared.hedger.as_ref() {
            h.won();
        }
        if let Some(retry) = &self.retry {
            if let Some(to) = &retry.hedged {
                slotguard_core::observe::record(slotguard_core::Observation::ReplicaFailover {
                    from: retry.req.node().cloned(),
                    to: to.clone(),
                });
            }
        }
    }
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
        self.proto
            .shared
            .topology
            .report(slotguard_core::controller::StaleMap::FailedOver { failure });
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
        hedged,
    } = retry;
    let mut tried: Vec<NodeAddr> = first_replica
        .or_else(|| req.node().cloned())
        .into_iter()
        .collect();
    // The hedge was a replica attempt too: it counts, but its replica may
    // be asked again (it may answer now, e.g. once a promotion ended the
    // CLUSTERDOWN it hedged into).
    if hedged.is_some() {
        req.attempts.failovers += 1;
    }
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
mod hedge_tests;
#[cfg(test)]
mod tests;
