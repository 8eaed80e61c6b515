//! Stop calling a sick node (or a sick cluster) for a while, and fail fast.
//!
//! A breaker guards one node ([`CircuitBreakerLayer::per_node`], keyed by
//! the node each request is stamped for; a request without a node passes
//! unguarded) or every call ([`CircuitBreakerLayer::global`]).
//!
//! - **Closed** (admitting): outcomes are counted over a sliding time window
//!   ([`BreakerConfig::window`], 10 s in 1 s buckets). Once the window holds
//!   at least [`BreakerConfig::minimum_calls`] (20), the breaker opens when
//!   the failure rate reaches [`BreakerConfig::failure_rate_threshold`]
//!   (50 %) or the share of calls slower than
//!   [`BreakerConfig::slow_call_duration`] (50 ms, failed or not) reaches
//!   [`BreakerConfig::slow_call_rate_threshold`] (80 %).
//! - **Open**: every call fails fast with [`CacheError::CircuitOpen`], from
//!   `call`, without calling the inner service. `poll_ready` only asks the
//!   inner service: an open breaker never leaves a caller pending.
//! - **HalfOpen**, after [`BreakerConfig::open_duration`] (1 s, checked on
//!   the next call, no timer task): at most
//!   [`BreakerConfig::half_open_probes`] (3) calls are let through; more
//!   fail fast. When that many succeed in time the breaker closes with a
//!   fresh window; a failed or slow probe opens it again for a new
//!   cool-down.
//!
//! A **failure** is a node fault ([`Failure::is_node_fault`]): timeout,
//! connection, `LOADING`, `BUSY`, overloaded, indeterminate; except an inner
//! breaker's `CircuitOpen`, which says nothing new. `CLUSTERDOWN` is a
//! cluster-wide state ([`Blame::Cluster`]), no node's fault: a per-node
//! breaker counts it as nothing (neither failure nor success; a half-open
//! probe answered so gives its slot back), a global breaker as a failure.
//! Anything else (a value, `MOVED`/`ASK`/`TRYAGAIN`, `WRONGTYPE`, invalid
//! input) means the node answered. A call whose future is dropped before it
//! completes counts as nothing.
//!
//! The layer reads the live state for telemetry
//! ([`state`](CircuitBreakerLayer::state),
//! [`states`](CircuitBreakerLayer::states), transition counters), and with
//! [`with_topology`](CircuitBreakerLayer::with_topology) publishes each
//! node's state to its
//! [`NodeHealth::breaker_open`](slotguard_core::NodeHealth::breaker_open)
//! flag, so failover outside can skip nodes that would refuse. Every
//! transition is a `tracing` event (target `slotguard::breaker`:
//! `breaker_open`, `breaker_half_open`, `breaker_closed`).
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! use slotguard_core::{
//!     classify, BreakerScope, CacheError, CacheRequest, CacheResponse, Failure, NodeAddr, Role,
//! };
//! use slotguard_layers::circuit_breaker::{BreakerConfig, BreakerState, CircuitBreakerLayer};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let sick: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//! let calls = Arc::new(AtomicUsize::new(0));
//! // A toy leaf: the node never answers in time.
//! let leaf = service_fn({
//!     let (calls, sick) = (calls.clone(), sick.clone());
//!     move |_req: CacheRequest| {
//!         calls.fetch_add(1, Ordering::Relaxed);
//!         let node = sick.clone();
//!         async move { Err::<CacheResponse, _>(CacheError::Timeout { node }) }
//!     }
//! });
//! let breakers = CircuitBreakerLayer::per_node(BreakerConfig::new().with_minimum_calls(5));
//! let mut svc = ServiceBuilder::new().layer(breakers.clone()).service(leaf);
//! for _ in 0..5 {
//!     let req = CacheRequest::get("k").to_node(sick.clone(), Role::Primary);
//!     let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
//!     assert_eq!(classify(&err), Failure::Timeout);
//! }
//! let scope = BreakerScope::Node(sick.clone());
//! assert_eq!(breakers.state(&scope), BreakerState::Open);
//! // Now calls fail fast and the node is left alone.
//! let req = CacheRequest::get("k").to_node(sick.clone(), Role::Primary);
//! let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
//! assert_eq!(classify(&err), Failure::CircuitOpen);
//! assert_eq!(calls.load(Ordering::Relaxed), 5);
//! # }
//! ```
//!
//! [`CacheError::CircuitOpen`]: slotguard_core::CacheError::CircuitOpen
//! [`Failure::is_node_fault`]: slotguard_core::Failure::is_node_fault
//! [`Blame::Cluster`]: slotguard_core::Blame::Cluster

mod breaker;
mod config;
pub mod future;
mod guard;
mod judge;
mod layer;
mod registry;
mod window;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use slotguard_core::{BoxError, CacheRequest};
use tokio::time::Instant;
use tower::Service;

pub use breaker::BreakerState;
pub use config::BreakerConfig;
pub use layer::CircuitBreakerLayer;

pub(crate) use guard::GuardLayer;
pub(crate) use judge::Outcome;

use future::ResponseFuture;
use registry::Shared;

/// Fails fast while the node (or the cluster) is failing. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<CacheRequest> for CircuitBreaker<S>
where
    S: Service<CacheRequest>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The breaker decides per request in `call` (it needs the node), so
        // readiness is the inner service's alone.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let Some(breaker) = self.shared.breaker_for(&req) else {
            return ResponseFuture::called(self.inner.call(req), None);
        };
        match breaker.admit(Instant::now(), !req.op.is_read()) {
            Some(permit) => ResponseFuture::called(self.inner.call(req), Some(permit)),
            None => {
                self.shared
                    .counters()
                    .rejected
                    .fetch_add(1, Ordering::Relaxed);
                let observed = slotguard_core::Observation::BreakerOpen {
                    node: req.node().cloned(),
                };
                ResponseFuture::rejected(breaker.scope().clone(), Some(observed))
            }
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster_down;
#[cfg(test)]
mod write_tests;
