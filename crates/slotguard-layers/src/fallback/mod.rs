//! The secondary path: a near-cache of hot keys and the authoritative
//! store, for reads the cluster cannot answer or does not hold.
//!
//! The store is any `Service<SecondaryRequest, Response = Option<Bytes>>`
//! (a database, an HTTP API, `slotguard-store`'s SQLite example).
//!
//! # Reads
//!
//! - **Hit**: the cluster's value is returned as it came; a key read
//!   [`admit_after`](NearCacheConfig::admit_after) times within the
//!   admission window is kept in the near-cache (values up to
//!   [`max_entry_bytes`](NearCacheConfig::max_entry_bytes), all entries up
//!   to [`max_bytes`](NearCacheConfig::max_bytes)).
//! - **Miss** (the cluster answered, without the key): when a replica
//!   answered because the primary failed, the near-cache entry if it may
//!   answer a failed read (below); else the key is loaded from the store ([`Path::Secondary`]) and, when the primary answered,
//!   written back with a TTL ([`WriteBack`]): fire-and-forget, with its own
//!   deadline and a bound on write-backs in flight, so it never delays the
//!   answer nor piles up on a sick cluster.
//! - **Cluster failure** of any class (timeouts, connection, open
//!   breakers, `CLUSTERDOWN`, `ShardUnavailable`, overload, unresolved
//!   redirects, protocol errors): the near-cache entry when it is at most
//!   [`fresh_for`](NearCacheConfig::fresh_for) +
//!   [`max_stale`](NearCacheConfig::max_stale) old (a `StaleOk(d)` read:
//!   `d`; a `Primary` read: never) and was not invalidated
//!   ([`Path::NearCache`], `Served.age` its age), else the store. Caller
//!   errors (`InvalidInput`, server replies such as `WRONGTYPE`) are
//!   returned as they are.
//! - **Client-side caching** (on by default,
//!   [`tracked_for`](NearCacheConfig::tracked_for) 2 s): a healthy read of
//!   a key whose entry was read from its slot's primary over a connection
//!   with RESP3 client tracking, less than `tracked_for` ago, is answered
//!   by the near-cache while that connection lives and no invalidation of
//!   the key arrived ([`Path::ClientCache`]; docs/client-side-caching.md).
//!   It needs the leaf's invalidation bus
//!   ([`FallbackLayer::with_invalidations`]); without one, no entry is
//!   trusted. Other healthy reads go to the cluster unless
//!   [`fresh_for`](NearCacheConfig::fresh_for) is raised (0 by default).
//!
//! The cluster attempt of a read gets at most
//! [`cluster_read_timeout`](FallbackConfig::cluster_read_timeout) (300 ms)
//! and never the last quarter of the caller's remaining time, so the
//! fallback has time within the caller's deadline; a read of a marked key
//! (below), which only its primary may answer, may be given less with
//! [`marked_read_timeout`](FallbackConfig::marked_read_timeout) (off by
//! default) before the store answers it: a stalled primary cannot hedge it
//! to a replica. Instead, by default, a marked read whose primary has not
//! answered within its hedge delay (the primary's latency bound, 5–25 ms,
//! [`marked_hedge`](FallbackConfig::marked_hedge)) also asks the store, and
//! the first good answer wins.
//!
//! # The store is protected
//!
//! One load per key at a time: callers of a key whose load is in flight
//! share it (each waits at most until its own deadline; the load goes on
//! for the others), and a miss's answer stays shared for the write-back's
//! deadline after the load, so a herd's stragglers do not load again before
//! the write-back lands (an invalidation of the key ends the sharing). At most
//! [`store_concurrency`](FallbackConfig::store_concurrency) loads at once,
//! each with [`store_timeout`](FallbackConfig::store_timeout). A breaker
//! opens after a run of failed loads and lets one probe through after its
//! cool-down. Store errors, timeouts and values over
//! [`max_value_bytes`](FallbackConfig::max_value_bytes) are typed errors
//! ([`CacheError::Secondary`](slotguard_core::CacheError::Secondary) holding a [`SecondaryError`]) and are never
//! cached or written back.
//!
//! The guard is composed, once per configuration, from pieces the project
//! already has, over the store service (outermost first):
//!
//! 1. **single flight**: the [`coalesce`](crate::coalesce) layer's table of
//!    flights, keyed by the key; each load runs as a task on the
//!    controller (after its shutdown, in the callers: the leader drives it
//!    and hands it to a follower when its deadline passes);
//! 2. **breaker**: the [`circuit_breaker`](crate::circuit_breaker) state
//!    machine as one global breaker over the store, opening on
//!    [`consecutive_failures`](StoreBreakerConfig::consecutive_failures)
//!    (no rates), one half-open probe;
//! 3. **concurrency limit**: `tower::limit::ConcurrencyLimit`;
//! 4. **timeout**: `tower::timeout::Timeout`.
//!
//! Why this order: the breaker is outside the timeout, so a load that
//! times out counts as a failure, and judges every error from below as the
//! store's. The limit takes its slot in `poll_ready`, before the breaker
//! admits the load in `call`; that wait is bounded on its own, by
//! [`store_timeout`](FallbackConfig::store_timeout) from the load's start,
//! and past it the load fails `Overloaded`, which the breaker never sees (a
//! busy guard is not a sick store). An open breaker answers `poll_ready`
//! without waiting for a slot, so its loads fail fast. The timeout runs
//! from the call, once the load has its slot. An oversize value is
//! rejected above the breaker, which saw a success (one key's data
//! problem, not a sick store). The single flight is outermost, so one key's
//! herd makes one load, which takes one slot and counts once.
//!
//! # Invalidation
//!
//! A `Set` or `Delete` through the layer (both before it is sent and again
//! once it is done, so a read that overlapped it cannot clear the mark), an
//! [`Invalidation::Keys`](slotguard_core::invalidation::Invalidation::Keys)
//! from the bus ([`FallbackLayer::with_invalidations`]) or
//! [`FallbackLayer::invalidate`] *marks* the key: it is evicted, a load in
//! flight for it is no longer shared with later callers, and until a read
//! that started after the mark is answered by the **primary**, reads of the
//! key are sent with `Consistency::Primary` (no replica), never answered
//! from the near-cache, and not written back. When the cluster cannot
//! answer them, the store does; a store answer does not clear the mark,
//! since a replica may still hold the old value. One exception, under
//! client-side caching only: while a `Set` or `Delete` of this layer is
//! still on its way, a tracked entry kept before it may answer reads of
//! the key (they overlap the write, so the value before it is a right
//! answer); it is evicted once the write is done, and a `Set` then keeps
//! the value it read back ([`CacheRequest::read_back`](slotguard_core::CacheRequest::read_back),
//! docs/client-side-caching.md). A write dropped before its answer
//! invalidates its key as a failed one does. A `Set` or `Delete` that
//! **fails** on the cluster leaves the key marked the same way: the write
//! may have applied (or not), so only the primary or the store is trusted
//! for it. Marks expire after
//! [`invalidation_ttl`](FallbackConfig::invalidation_ttl) (5 min) and are
//! bounded by [`max_invalidations`](FallbackConfig::max_invalidations)
//! (past it, the oldest mark of the key's shard is dropped).
//!
//! A value read before an invalidation and returned after it is never
//! kept: every read records an epoch when it starts, and a fill checks it
//! against the invalidations since. An
//! [`Invalidation::Node`](slotguard_core::invalidation::Invalidation::Node)
//! flushes the entries read through that node;
//! [`Received::Lost`](slotguard_core::invalidation::Received::Lost) flushes
//! everything. With [`FallbackLayer::with_topology`], a slot's entries are
//! flushed when the slot changes owner, and an entry read from a slot's
//! previous owner is never served. The task applying these is started by
//! [`FallbackLayer::start`] on the topology's controller (never from a
//! request) and ends when the layer and every service made from it are
//! dropped, or the controller shuts down; store loads and write-backs run
//! on the same controller.
//!
//! Cache-aside races within one process are closed: a write-back is skipped
//! when its key was invalidated after the read that loaded the value began,
//! and a `Set`/`Delete` of a key whose write-back is in flight is sent once
//! that write-back ends (at most [`WriteBack::timeout`] later), so the `DEL`
//! reaches the node after the write-back's `SET`. What remains possible: a
//! reader in *another process* that loaded a value from the store just
//! before it changed may write it back after this process's `DEL`; it lives
//! until the write-back TTL.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use slotguard_core::{CacheError, CacheRequest, CacheResponse, NodeAddr, Path, SecondaryRequest};
//! use slotguard_layers::fallback::FallbackLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // A toy store and a toy cluster whose node is down.
//! let store = service_fn(|req: SecondaryRequest| async move {
//!     Ok::<_, CacheError>(Some(Bytes::from(format!("value of {:?}", req.key()))))
//! });
//! let cluster = service_fn(|_req: CacheRequest| async move {
//!     let node: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//!     Err::<CacheResponse, _>(CacheError::Connection { node, detail: "down".into() })
//! });
//! let svc = ServiceBuilder::new().layer(FallbackLayer::new(store)).service(cluster);
//! let resp = svc.oneshot(CacheRequest::get("user:1")).await.unwrap();
//! assert_eq!(resp.served.path, Path::Secondary);
//! assert!(resp.value.is_some());
//! # }
//! ```

mod clock;
mod config;
pub mod future;
mod hedge;
mod layer;
mod loads;
mod marks;
mod near;
mod read;
mod state;
mod store;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::observe::{self, Observation, StoreOutcome};
use slotguard_core::{
    BoxError, CacheRequest, CacheResponse, Consistency, Failure, Op, Path, Served,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

pub use config::{FallbackConfig, MarkedHedge, NearCacheConfig, StoreBreakerConfig, WriteBack};
pub use layer::FallbackLayer;
pub use store::SecondaryError;

use future::ResponseFuture;
use read::ReadCtx;
use state::State;
use store::StoreGuard;

/// Answers reads from the near-cache or the store when the cluster cannot.
/// See the [module docs](self).
pub struct Fallback<S, St> {
    inner: S,
    core: Arc<Core<S>>,
    // The store is called through the shared core; the type stays in the
    // service's name.
    _store: std::marker::PhantomData<fn() -> St>,
}

impl<S: Clone, St> Clone for Fallback<S, St> {
    fn clone(&self) -> Self {
        Fallback {
            inner: self.inner.clone(),
            core: self.core.clone(),
            _store: std::marker::PhantomData,
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Fallback<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("store", &self.core.store)
            .finish_non_exhaustive()
    }
}

/// What the services made by one `layer` call share; the spare inner
/// service sends write-backs (only misses clone it).
pub(crate) struct Core<S> {
    state: Arc<State>,
    store: Arc<StoreGuard>,
    config: Arc<FallbackConfig>,
    spare: Mutex<S>,
}

/// Failures a read falls back on: anything that says the cluster could not
/// answer, not that the request was wrong.
fn falls_back(failure: Failure) -> bool {
    !matches!(
        failure,
        Failure::InvalidInput | Failure::Server | Failure::Secondary | Failure::Other
    )
}

fn secondary_response(value: Option<Bytes>) -> CacheResponse {
    CacheResponse {
        value,
        deleted: 0,
        served: Served {
            path: Path::Secondary,
            node: None,
            age: Some(Duration::ZERO),
        },
    }
}

/// A read answered by the near-cache: its value, the node it was read
/// from, and its age.
fn near_response(
    value: Bytes,
    node: Option<slotguard_core::NodeAddr>,
    age: Duration,
) -> CacheResponse {
    answer_from(Path::NearCache, value, node, age)
}

fn answer_from(
    path: Path,
    value: Bytes,
    node: Option<slotguard_core::NodeAddr>,
    age: Duration,
) -> CacheResponse {
    CacheResponse {
        value: Some(value),
        deleted: 0,
        served: Served {
            path,
            node,
            age: Some(age),
        },
    }
}

/// The observation of a finished store load, by the read that started it.
fn record_load(out: &Result<Option<Bytes>, BoxError>) {
    let outcome = match out {
        Ok(Some(_)) => StoreOutcome::Hit,
        Ok(None) => StoreOutcome::Miss,
        Err(_) => StoreOutcome::Error,
    };
    observe::record(Observation::StoreLoad { outcome });
}

impl<S, St> Service<CacheRequest> for Fallback<S, St>
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: CacheRequest) -> Self::Future {
        let state = &self.core.state;
        if !req.op.is_read() {
            // Before the write is sent: a read racing it cannot keep the
            // old value, nor serve it once the write is done (see the
            // module docs for failed writes, and for what client-side
            // caching serves while the write is on its way).
            let key = req.key().clone();
            let (sent, pending) = state.before_write(&key);
            let Some(mut pending) = pending else {
                // Client-side caching: the write of a key whose entry
                // answered reads reads it back in the same round trip, so
                // the value it leaves is tracked and kept, and the next read
                // of a key written often hits instead of going to the
                // primary.
                let refill = (matches!(req.op, Op::Set { .. }) && state.read_back_worthwhile(&key))
                    .then(|| future::Refill {
                        sent,
                        sent_at: state.clock.now(),
                        slot: req.slot(),
                    });
                if refill.is_some() {
                    req.read_back = true;
                }
                let write = future::Ctx::Write(state.clone(), key, refill);
                return ResponseFuture::cluster(self.inner.call(req), write);
            };
            // A write-back of this key is in flight: send the write after
            // it, or the old value could land after this write. This write
            // is not seen through until it is done: its key is invalidated
            // now (a caller that drops it leaves the key invalidated).
            state.invalidate_key(&key);
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            let wait = self
                .core
                .config
                .write_back
                .as_ref()
                .map_or(Duration::ZERO, |w| w.timeout);
            let state = state.clone();
            return ResponseFuture::boxed(Box::pin(async move {
                let _ = tokio::time::timeout(wait, pending.changed()).await;
                let out = inner.oneshot(req).await.map_err(Into::into);
                state.invalidate_key(&key);
                out
            }));
        }
        let start = state.begin();
        let consistency = req.consistency;
        // Before the marks: a tracked entry may answer a read that overlaps
        // a write of ours still on its way (the marks say when).
        if consistency != Consistency::Primary && state.client_side_caching() {
            if let Some((value, node, age)) = state.serve_tracked(req.key(), req.slot()) {
                // A hit, not a fallback: its own path, so dashboards and
                // alerts on the fallback share do not count it.
                return ResponseFuture::ready(answer_from(Path::ClientCache, value, node, age));
            }
        }
        let marked = state.marks.get(req.key()).is_some();
        if marked {
            req.consistency = Consistency::Primary;
        }
        if !marked {
            let budget = state.fresh_budget(consistency);
            if !budget.is_zero() {
                if let Some((value, node, age)) = state.serve(req.key(), req.slot(), budget) {
                    return ResponseFuture::ready(near_response(value, node, age));
                }
            }
        }
        let deadline = req.deadline;
        let now = Instant::now();
        let config = &self.core.config;
        let cap = match (marked, config.marked_read_timeout) {
            (true, Some(m)) => Some(config.cluster_read_timeout.map_or(m, |t| t.min(m))),
            _ => config.cluster_read_timeout,
        };
        if let Some(t) = cap {
            req.deadline = Some(cluster_deadline(now, t, deadline));
        }
        // Only a marked read hedges to the store (see `hedge`); measured
        // on the primary's own latency, so a fast node hedges early.
        let hedge = config
            .marked_hedge
            .filter(|_| marked)
            .map(|h| h.delay(state.primary_latency_bound(req.slot())));
        let ctx = ReadCtx {
            core: self.core.clone(),
            key: req.key().clone(),
            slot: req.slot(),
            start,
            started_at: state.clock.nanos(now),
            marked,
            consistency,
            deadline,
            hedge_load: None,
        };
        if let Some(delay) = hedge {
            return ResponseFuture::boxed(Box::pin(ctx.hedged(self.inner.call(req), delay)));
        }
        let ctx = future::Ctx::Read(ctx, ReadCtx::after_cluster);
        ResponseFuture::cluster(self.inner.call(req), ctx)
    }
}

/// The cluster attempt's deadline: at most `cap` from `now`, and never
/// the last quarter of the caller's own time, so a cluster that times out
/// still leaves the store time to answer (a 200 ms caller: 150 ms for the
/// cluster, 50 ms for the store).
pub(crate) fn cluster_deadline(now: Instant, cap: Duration, caller: Option<Instant>) -> Instant {
    let capped = now + cap;
    match caller {
        None => capped,
        Some(d) => {
            let reserve = d.saturating_duration_since(now) / 4;
            capped.min(d - reserve)
        }
    }
}

#[cfg(test)]
mod tests;
