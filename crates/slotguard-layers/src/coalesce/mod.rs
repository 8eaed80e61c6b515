//! Single-flight: identical reads in flight at the same time share one call.
//!
//! A herd of requests for one hot key — typically a miss that Fallback
//! below answers from the secondary store — makes one inner call; the
//! others wait for its outcome and get a copy of it.
//!
//! - **Identical** means same key, same [`Consistency`] and same route
//!   (requests outside the routing layers are all routed by slot). Only
//!   reads ([`Op::is_read`]) are coalesced.
//! - **Writes are never coalesced**, and a write to a key closes that key's
//!   flights to newcomers when it is sent and again when it is done: a
//!   read arriving after a write was sent never shares a read that started
//!   before it, and one arriving after the write was acknowledged never
//!   shares a read that started while it was on its way (either could
//!   return the old value: a read that overlaps a write may, from a replica
//!   or from client-side caching). Readers already waiting keep theirs.
//! - **Errors are shared too**: a [`CacheError`] reaches every caller as a
//!   `CacheError` (it is `Clone`); any other error as a [`SharedError`]
//!   whose `source()` is the original, so
//!   [`classify`](slotguard_core::classify) gives the same class to all.
//! - **A dropped caller never fails the others**, the leader included: a
//!   leader that goes hands its call, mid-flight, to a waiting follower,
//!   which drives it from then on (no task is spawned, no second call is
//!   made). When every caller is gone, the call is dropped.
//! - **A follower never waits past its own deadline**
//!   ([`CacheRequest::deadline`]): it then fails with
//!   [`CacheError::DeadlineExceeded`] (class `Timeout`) and leaves the flight
//!   to the others. The call itself runs with the leader's request, deadline
//!   included; a follower whose deadline is later still gets the leader's
//!   outcome (a timeout too).
//!
//! The table of flights is sharded by slot, behind short locks never held
//! across an await; the inner service is called in `call`, outside them.
//! A read nobody follows costs one hash, two short locks and one boxed
//! future; the first follower makes the board the others wait on.
//! Place it outermost, above Fallback (DESIGN.md §3): a herd of identical
//! misses then makes one secondary load.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! use slotguard_core::{CacheRequest, CacheResponse, NodeAddr, Path};
//! use slotguard_layers::coalesce::CoalesceLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let calls = Arc::new(AtomicUsize::new(0));
//! // A slow toy leaf that counts its calls.
//! let leaf = service_fn({
//!     let calls = calls.clone();
//!     move |_req: CacheRequest| {
//!         calls.fetch_add(1, Ordering::Relaxed);
//!         async move {
//!             tokio::task::yield_now().await;
//!             let node: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//!             Ok::<_, slotguard_core::BoxError>(CacheResponse::from_node(
//!                 Some("v".into()),
//!                 node,
//!                 Path::Primary,
//!             ))
//!         }
//!     }
//! });
//! let coalesce = CoalesceLayer::new();
//! let svc = ServiceBuilder::new().layer(coalesce.clone()).service(leaf);
//! let reads = (0..100).map(|_| svc.clone().oneshot(CacheRequest::get("hot")));
//! let answers = futures_util::future::join_all(reads).await;
//! assert!(answers.iter().all(|a| a.as_ref().unwrap().value.as_deref() == Some(&b"v"[..])));
//! assert_eq!(calls.load(Ordering::Relaxed), 1);
//! assert_eq!(coalesce.joined_total(), 99);
//! # }
//! ```
//!
//! [`Consistency`]: slotguard_core::Consistency
//! [`Op::is_read`]: slotguard_core::Op::is_read
//! [`CacheError`]: slotguard_core::CacheError
//! [`CacheError::DeadlineExceeded`]: slotguard_core::CacheError::DeadlineExceeded
//! [`CacheRequest::deadline`]: slotguard_core::CacheRequest::deadline

pub(crate) mod flight;
pub(crate) mod flights;
pub mod future;
mod layer;
mod shared_error;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use slotguard_core::{BoxError, CacheRequest, CacheResponse};
use tower::Service;

pub use layer::CoalesceLayer;
pub use shared_error::SharedError;

use flight::Flight;
use flights::{Call, Joined, ReadFlights};
use future::{ResponseFuture, READS};
use futures_util::TryFutureExt;

/// Coalesces identical in-flight reads. See the [module docs](self).
#[derive(Clone)]
pub struct Coalesce<S> {
    inner: S,
    flights: Arc<ReadFlights>,
}

impl<S: fmt::Debug> fmt::Debug for Coalesce<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("inner", &self.inner)
            .field("flights", &self.flights)
            .finish()
    }
}

impl<S> Service<CacheRequest> for Coalesce<S>
where
    S: Service<CacheRequest, Response = CacheResponse>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
{
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        if !req.op.is_read() {
            // Closed when the write is sent, and again when it is done: a
            // read that started while it was on its way may answer the
            // value from before it (a replica's, or the fallback's entry
            // answering reads that overlap our write), which is right for
            // that read, not for one that starts after the write was
            // acknowledged.
            self.flights.invalidate_read(&req);
            let (slot, key) = (req.slot(), req.key().clone());
            let fut = self.inner.call(req);
            return ResponseFuture::write(fut, self.flights.clone(), slot, key);
        }
        match self.flights.join_read(&req) {
            Joined::Lead(shard, ticket) => {
                // Called here, outside any lock; boxed so that, should
                // this caller go, a follower can take the call over.
                let call: Call<_> = Box::pin(self.inner.call(req).map_err(Into::into));
                ResponseFuture::flight(Flight::lead(shard, ticket, call, READS), false)
            }
            // The service readied for this call stays ready for the next.
            Joined::Follow(shard, ticket, board) => {
                let flight = Flight::follow(shard, ticket, board, req.deadline, READS);
                ResponseFuture::flight(flight, true)
            }
            Joined::Alone => ResponseFuture::direct(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests;
