//! Keep the slot map fresh and stamp each request with its node.
//!
//! [`SlotRefresh`] routes every [`Route::Slot`] request to the primary that
//! owns its slot in the current [`Topology`] (lock-free), and keeps that map
//! fresh with one background task per layer:
//!
//! - **initial load**: [`SlotRefreshLayer::load`] loads the map before you
//!   serve and starts the refresher; with [`SlotRefreshLayer::new`] and
//!   [`SlotRefreshLayer::start`], a request made before the first map
//!   *waits* for it (bounded by [`RefreshConfig::initial_wait`] and the
//!   request deadline). Once a map exists, requests never wait for a
//!   refresh. The refresher runs on the topology's
//!   [`ClusterController`](slotguard_core::ClusterController), never started
//!   from a request;
//! - **periodic** refresh every [`RefreshConfig::period`] (15 s);
//! - **triggered** refresh on `MOVED` (by the redirect layer), connection
//!   failures, `CLUSTERDOWN` and uncovered slots, through
//!   reports to the topology's controller ([`Topology::report`]), which
//!   schedules one refresh per burst. Triggers collapse: at most one refresh is
//!   in flight and two are at least [`RefreshConfig::min_gap`] apart;
//! - **majority view**: each round asks several nodes
//!   ([`RefreshConfig::views`]); the view most of them agree on wins (ties:
//!   highest config epoch). Nodes reporting `cluster_state:fail` do not vote,
//!   and nodes whose view disagrees are marked outside the majority
//!   ([`NodeHealth::in_majority`](slotguard_core::NodeHealth::in_majority)).
//!
//! A request whose slot no node serves fails fast with
//! [`CacheError::ShardUnavailable`] and triggers a refresh.
//!
//! **Writes go only to a confirmed primary.** A primary that let a write
//! time out, could not be reached or had its breaker opened is fenced
//! by the controller ([`NodeHealth::writes_fenced`](slotguard_core::NodeHealth::writes_fenced)):
//! a stalled or partitioned primary may be replaced meanwhile and would
//! acknowledge writes that are then lost. Writes to its slots fail fast with
//! `ShardUnavailable` (and ask for a refresh) until a refresh round
//! *requested after the last fault* shows the node, in its own view and in
//! the majority's, as the primary of its slots; a primary outside the
//! majority gets no writes either. Reads are not held back: failover
//! answers them from a replica.
//!
//! # Example
//!
//! ```no_run
//! use slotguard_core::{CacheRequest, Topology};
//! use slotguard_node::{NodeConfig, NodeService, NodeTopologySource};
//! use slotguard_layers::slot_refresh::SlotRefreshLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), slotguard_core::BoxError> {
//! let topology = Topology::new();
//! let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
//! let source = NodeTopologySource::new(&leaf, vec!["127.0.0.1:7000".parse()?]);
//! let refresh = SlotRefreshLayer::new(topology, source).load().await?;
//! let svc = ServiceBuilder::new().layer(refresh).service(leaf);
//! let resp = svc.oneshot(CacheRequest::get("user:42")).await?;
//! # Ok(()) }
//! ```

mod config;
pub mod future;
mod layer;
mod refresher;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use slotguard_core::controller::StaleMap;
use slotguard_core::Observation;
use slotguard_core::{BoxError, CacheError, CacheRequest, Role, Route, SlotMap, Topology};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub use config::RefreshConfig;
pub use layer::SlotRefreshLayer;
pub use refresher::RefreshStats;

use future::ResponseFuture;
use refresher::Refresher;

/// Routes requests by the current slot map and keeps it fresh. See the
/// [module docs](self).
#[derive(Clone)]
pub struct SlotRefresh<S> {
    inner: S,
    refresher: Arc<Refresher>,
}

impl<S: fmt::Debug> fmt::Debug for SlotRefresh<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotRefresh")
            .field("inner", &self.inner)
            .field("refresher", &self.refresher)
            .finish()
    }
}

/// Stamp `req` with the primary owning its slot in `topology`'s map.
/// Requests already routed to a node are left alone.
pub fn stamp(topology: &Topology, req: &mut CacheRequest) -> Result<(), CacheError> {
    if let Route::Slot = req.route {
        check(&topology.map(), topology, req).map_err(|(e, observed)| {
            if let Some(o) = observed {
                slotguard_core::observe::record(o);
            }
            e
        })?;
    }
    Ok(())
}

/// [`stamp`] against a map already loaded, handing back what it observed
/// with its error rather than recording it: in `call`, the refusal's
/// future reports it when polled (listeners scope polls, not calls: see
/// [`slotguard_core::observe`]).
fn check(
    map: &SlotMap,
    topology: &Topology,
    req: &mut CacheRequest,
) -> Result<(), (CacheError, Option<Observation>)> {
    if let Route::Slot = req.route {
        let Some(primary) = map.primary_for_slot(req.slot()) else {
            topology.report(StaleMap::UncoveredSlot { slot: req.slot() });
            return Err((CacheError::ShardUnavailable { slot: req.slot() }, None));
        };
        // A write goes only to a confirmed primary: not to one the majority
        // does not follow, and not to one that was unreachable since the
        // last view that confirmed it (it may have been replaced meanwhile
        // and would acknowledge writes that are then lost). Reads go on:
        // failover sends them elsewhere.
        if !req.op.is_read() && (primary.health.writes_fenced() || !primary.health.in_majority()) {
            topology.report(StaleMap::FencedWrite { slot: req.slot() });
            return Err((
                CacheError::ShardUnavailable { slot: req.slot() },
                Some(Observation::WriteFenced { slot: req.slot() }),
            ));
        }
        req.route = Route::Node {
            addr: primary.addr.clone(),
            role: Role::Primary,
            asking: false,
        };
    }
    Ok(())
}

impl<S> Service<CacheRequest> for SlotRefresh<S>
where
    S: Service<CacheRequest> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: CacheRequest) -> Self::Future {
        let topology = &self.refresher.topology;
        // One map load serves both the check and the stamp.
        let map = topology.map();
        if map.generation() == 0 {
            drop(map);
            // Take the ready inner service; a clone stays for later calls.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            let wait = self.refresher.config.initial_wait;
            let deadline = req
                .deadline
                .map_or(Instant::now() + wait, |d| d.min(Instant::now() + wait));
            let t = topology.clone();
            let fut = async move {
                if tokio::time::timeout_at(deadline, t.changed_since(0))
                    .await
                    .is_err()
                {
                    return Err(BoxError::from(CacheError::ShardUnavailable {
                        slot: req.slot(),
                    }));
                }
                stamp(&t, &mut req)?;
                inner.oneshot(req).await.map_err(Into::into)
            };
            return ResponseFuture::waiting(Box::pin(fut), topology.clone());
        }
        let stamped = check(&map, topology, &mut req);
        drop(map);
        match stamped {
            Ok(()) => ResponseFuture::called(self.inner.call(req), topology.clone()),
            Err((e, observed)) => ResponseFuture::failed(e.into(), observed, topology.clone()),
        }
    }
}

#[cfg(test)]
mod tests;
