//! Follow `MOVED`, `ASK` and `TRYAGAIN` with the routing in our hands.
//!
//! - **`MOVED`**: the slot is patched in the shared [`Topology`] (a replica
//!   named as owner of its own shard's slot is taken as promoted), a refresh
//!   is requested, and the request is retried on the owner. A `MOVED` to an
//!   address the map does not know is not trusted: the request waits (up to
//!   [`RedirectPolicy::confirm_timeout`] and its deadline) for a refresh, and
//!   goes wherever the refreshed map says.
//! - **`ASK`**: one retry on the target with `ASKING`; the map is unchanged.
//! - **`TRYAGAIN`**: exponential backoff from
//!   [`RedirectPolicy::tryagain_backoff`], same node.
//!
//! At most [`RedirectPolicy::max_hops`] hops (5), then
//! [`CacheError::TooManyRedirects`]. Every hop draws on a shared
//! [`RetryBudget`] that successful requests fill; when it is empty the
//! redirect error is returned as is.
//!
//! # Example
//!
//! ```
//! use slotguard_core::{CacheError, CacheRequest, CacheResponse, NodeAddr, Path, Role, Topology};
//! use slotguard_layers::redirect::RedirectLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let a: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//! let b: NodeAddr = "127.0.0.1:7001".parse().unwrap();
//! // A toy leaf: node `a` is migrating the slot to `b` and says ASK.
//! let leaf = service_fn(move |req: CacheRequest| {
//!     let b = b.clone();
//!     async move {
//!         match req.node() {
//!             Some(n) if n.port() == 7000 => Err(CacheError::Ask { slot: req.slot(), addr: b }),
//!             Some(n) => Ok(CacheResponse::from_node(None, n.clone(), Path::Primary)),
//!             None => Err(CacheError::InvalidInput("unrouted".into())),
//!         }
//!     }
//! });
//! let svc = ServiceBuilder::new().layer(RedirectLayer::new(Topology::new())).service(leaf);
//! let resp = svc.oneshot(CacheRequest::get("k").to_node(a, Role::Primary)).await.unwrap();
//! assert_eq!(resp.served.node.unwrap().port(), 7001);
//! # }
//! ```

mod budget;
pub mod future;
mod layer;
mod policy;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use slotguard_core::controller::{SlotMoved, StaleMap};
use slotguard_core::Observation;
use slotguard_core::{
    as_cache_error, classify, BoxError, CacheError, CacheRequest, Failure, PatchOutcome, Role,
    Route, Topology,
};

use crate::attempt::{Proto, Recover};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub use budget::RetryBudget;
pub use layer::RedirectLayer;
pub use policy::RedirectPolicy;

use future::ResponseFuture;

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) policy: RedirectPolicy,
}

/// Follows cluster redirects. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Redirect<S> {
    inner: S,
    proto: Arc<Proto<S, Shared>>,
}

impl<S> Service<CacheRequest> for Redirect<S>
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
        let fut = self.inner.call(req.clone());
        ResponseFuture::new(
            fut,
            Some(Recovery {
                req,
                proto: self.proto.clone(),
            }),
        )
    }
}

/// What the response future keeps to follow a redirect.
pub struct Recovery<S> {
    req: CacheRequest,
    proto: Arc<Proto<S, Shared>>,
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
        // A write refused with CLUSTERDOWN was not applied (the node refused
        // it before executing it): like TRYAGAIN, it is retried after a short
        // backoff within its deadline, since a write has no secondary path
        // and the state lasts only around a promotion. Reads are not held
        // back: replicas and the fallback answer them.
        let write_cluster_down = failure == Failure::ClusterDown && !self.req.op.is_read();
        if write_cluster_down
            || matches!(failure, Failure::Moved | Failure::Ask | Failure::TryAgain)
        {
            let svc = self.proto.service();
            let shared = self.proto.shared.clone();
            Ok(Box::pin(follow(svc, self.req, err, shared)))
        } else {
            Err(err)
        }
    }

    fn succeeded(&self) {
        self.proto.shared.policy.budget.deposit();
    }
}

fn to_primary(addr: slotguard_core::NodeAddr, asking: bool) -> Route {
    Route::Node {
        addr,
        role: Role::Primary,
        asking,
    }
}

fn deadline_passed(req: &CacheRequest) -> bool {
    req.deadline.is_some_and(|d| d <= Instant::now())
}

/// The retry loop after the first redirect.
pub(crate) async fn follow<S>(
    svc: S,
    mut req: CacheRequest,
    mut err: BoxError,
    shared: Arc<Shared>,
) -> Result<S::Response, BoxError>
where
    S: Service<CacheRequest> + Clone,
    S::Error: Into<BoxError>,
{
    let policy = &shared.policy;
    let topology = &shared.topology;
    let mut tryagains = 0u32;
    // When the write was first refused with CLUSTERDOWN: its ride-out is
    // bounded by `cluster_down_write_wait` from then.
    let mut cluster_down_since: Option<Instant> = None;
    loop {
        let Some(cache_err) = as_cache_error(&err).cloned() else {
            return Err(err);
        };
        let retry_in_place = matches!(cache_err, CacheError::TryAgain)
            || (matches!(cache_err, CacheError::ClusterDown) && !req.op.is_read());
        if !retry_in_place
            && !matches!(cache_err, CacheError::Moved { .. } | CacheError::Ask { .. })
        {
            return Err(err);
        }
        if req.attempts.redirects >= policy.max_hops {
            return Err(CacheError::TooManyRedirects { slot: req.slot() }.into());
        }
        if !policy.budget.withdraw() {
            return Err(err);
        }
        slotguard_core::observe::record(match &cache_err {
            CacheError::Moved { slot, addr } => Observation::Moved {
                slot: *slot,
                to: addr.clone(),
            },
            CacheError::Ask { slot, addr } => Observation::Ask {
                slot: *slot,
                to: addr.clone(),
            },
            _ => Observation::TryAgain { slot: req.slot() },
        });
        let route = match cache_err {
            CacheError::Moved { slot, addr } => {
                match moved_route(topology, policy, slot, addr, &req).await {
                    Ok(route) => route,
                    Err(Stop::Untrusted) => return Err(err),
                    Err(Stop::WriteRefused) => {
                        return Err(CacheError::ShardUnavailable { slot }.into())
                    }
                }
            }
            CacheError::Ask { addr, .. } => to_primary(addr, true),
            CacheError::TryAgain | CacheError::ClusterDown => {
                let mut backoff = policy
                    .tryagain_backoff
                    .saturating_mul(1u32 << tryagains.min(6));
                if matches!(cache_err, CacheError::ClusterDown) {
                    let now = Instant::now();
                    let since = *cluster_down_since.get_or_insert(now);
                    let left = policy
                        .cluster_down_write_wait
                        .saturating_sub(now.saturating_duration_since(since));
                    if left.is_zero() {
                        return Err(err);
                    }
                    backoff = backoff.min(left);
                }
                tryagains += 1;
                in_place_after(&req, backoff).await
            }
            _ => return Err(err),
        };
        if deadline_passed(&req) {
            return Err(err);
        }
        req.attempts.redirects += 1;
        req.route = route;
        match svc.clone().oneshot(req.clone()).await {
            Ok(resp) => {
                policy.budget.deposit();
                return Ok(resp);
            }
            Err(e) => err = e.into(),
        }
    }
}

/// Why a `MOVED` is not followed.
enum Stop {
    /// The named owner is unknown and no refresh confirmed it in time: the
    /// `MOVED` is the answer.
    Untrusted,
    /// A write to an owner whose writes no fresh view confirmed in time.
    WriteRefused,
}

/// Where a request goes after `MOVED` to `addr`. The controller patches
/// the map (and schedules a refresh unless an earlier patch or refresh
/// already knew).
async fn moved_route(
    topology: &Topology,
    policy: &RedirectPolicy,
    slot: u16,
    addr: slotguard_core::NodeAddr,
    req: &CacheRequest,
) -> Result<Route, Stop> {
    let owner = match topology.report(SlotMoved::new(slot, &addr)) {
        PatchOutcome::Patched | PatchOutcome::Unchanged => addr,
        // Not trusted until a refresh confirms where the slot is.
        PatchOutcome::UnknownNode => confirm(topology, slot, req, policy.confirm_timeout)
            .await
            .ok_or(Stop::Untrusted)?,
    };
    if req.op.is_read() || writes_confirmed(topology, &owner) {
        return Ok(to_primary(owner, false));
    }
    // The new owner was unreachable since the last view that confirmed it
    // (e.g. a replica stalled earlier and now promoted), or the majority
    // does not follow it: the write fence that `slot_refresh` applies to
    // stamped writes applies to a redirected one too. It waits, within its
    // deadline, for the refresh this MOVED asked for to confirm the slot's
    // primary, else it is refused with the same typed error.
    topology.report(StaleMap::UnconfirmedOwner { slot });
    let wait = policy.confirm_timeout.min(WRITE_CONFIRM_WAIT);
    match confirm_write(topology, slot, req, wait).await {
        Some(owner) => Ok(to_primary(owner, false)),
        None => Err(Stop::WriteRefused),
    }
}

/// The same route again after `backoff` (or at the request's deadline,
/// whichever comes first), without `ASKING`: `TRYAGAIN`, or a write
/// refused with `CLUSTERDOWN`.
async fn in_place_after(req: &CacheRequest, backoff: Duration) -> Route {
    let wake = req.deadline.map_or(Instant::now() + backoff, |d| {
        d.min(Instant::now() + backoff)
    });
    tokio::time::sleep_until(wake).await;
    match &req.route {
        Route::Node { addr, role, .. } => Route::Node {
            addr: addr.clone(),
            role: *role,
            asking: false,
        },
        Route::Slot => Route::Slot,
    }
}

/// The longest a redirected write waits for a refresh to confirm its new
/// owner: a refused write is typed within 250 ms (DESIGN.md §9), which
/// leaves the rest of the path 50 ms, and a refresh the `MOVED` asked for
/// normally lands in a few milliseconds.
const WRITE_CONFIRM_WAIT: Duration = Duration::from_millis(200);

/// Whether the map's node `addr` may take writes: not fenced since its last
/// fault, and followed by the majority. A node the map does not know may
/// not. Reads the map only (never creates a health cell).
fn writes_confirmed(topology: &Topology, addr: &slotguard_core::NodeAddr) -> bool {
    topology
        .map()
        .node(addr)
        .is_some_and(|(_, n)| !n.health.writes_fenced() && n.health.in_majority())
}

/// Wait, until `timeout` or the request's deadline, for refreshes to make
/// the primary of `slot` one whose writes are confirmed
/// ([`writes_confirmed`]); return it, or `None` when none did in time.
async fn confirm_write(
    topology: &Topology,
    slot: u16,
    req: &CacheRequest,
    timeout: Duration,
) -> Option<slotguard_core::NodeAddr> {
    let mut until = Instant::now() + timeout;
    if let Some(d) = req.deadline {
        until = until.min(d);
    }
    loop {
        let generation = {
            let map = topology.map();
            if let Some(p) = map.primary_for_slot(slot) {
                if !p.health.writes_fenced() && p.health.in_majority() {
                    return Some(p.addr.clone());
                }
            }
            map.generation()
        };
        // A round installs its map, then lifts fences: one that woke us may
        // still be finishing, so look once more before asking for another.
        tokio::time::timeout_at(until, topology.changed_since(generation))
            .await
            .ok()?;
        tokio::task::yield_now().await;
        let lifted = topology
            .map()
            .primary_for_slot(slot)
            .is_some_and(|p| !p.health.writes_fenced() && p.health.in_majority());
        if !lifted {
            topology.report(StaleMap::UnconfirmedOwner { slot });
        }
    }
}

/// Wait for a refresh after an untrusted `MOVED`; return the slot's owner
/// in the refreshed map, or `None` when no refresh came in time or the slot
/// is uncovered.
async fn confirm(
    topology: &Topology,
    slot: u16,
    req: &CacheRequest,
    timeout: Duration,
) -> Option<slotguard_core::NodeAddr> {
    let generation = topology.load().generation();
    let mut until = Instant::now() + timeout;
    if let Some(d) = req.deadline {
        until = until.min(d);
    }
    tokio::time::timeout_at(until, topology.changed_since(generation))
        .await
        .ok()?;
    let map = topology.load();
    map.primary_for_slot(slot).map(|p| p.addr.clone())
}

#[cfg(test)]
mod tests;
