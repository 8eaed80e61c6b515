//! Response future of [`Fallback`](super::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use slotguard_core::{BoxError, CacheResponse};

use super::state::State as Shared;
use super::ReadCtx;

/// The final answer, or the fallback to run.
pub(super) type Outcome =
    Result<Result<CacheResponse, BoxError>, BoxFuture<'static, Result<CacheResponse, BoxError>>>;

/// What a read does once the cluster answered, chosen in `call` where the
/// service's bounds are known. A function pointer rather than a bound on
/// this future's `Future` impl: bounds on the inner services there would
/// have to be proven again wherever the future is awaited, and the
/// compiler fails to for some stacks inside spawned async blocks
/// ("implementation of `From` is not general enough").
pub(super) type After<S> = fn(ReadCtx<S>, Result<CacheResponse, BoxError>) -> Outcome;

pin_project! {
    /// Response future of [`Fallback`](super::Fallback).
    ///
    /// The cluster call is polled in place, and a value it returns is
    /// handed back without an allocation; only a miss or a cluster failure
    /// moves the read into one boxed fallback (near-cache, then store). A
    /// fresh near-cache answer is ready at once.
    pub struct ResponseFuture<F, S> {
        #[pin]
        state: State<F>,
        ctx: Option<Ctx<S>>,
    }

    impl<F, S> PinnedDrop for ResponseFuture<F, S> {
        fn drop(this: Pin<&mut Self>) {
            // A write dropped before its answer (a caller's timeout, a
            // panic) may still apply: its key is invalidated as after a
            // failed write, or the mark of a write on its way would let
            // the value from before it answer for good.
            if let Some(Ctx::Write(state, key, _)) = this.project().ctx.take() {
                state.invalidate_key(&key);
            }
        }
    }
}

/// What the future does once the cluster answered.
pub(super) enum Ctx<S> {
    /// A read: its context and what to do with the answer.
    Read(ReadCtx<S>, After<S>),
    /// A write of this key: invalidate it again once it is done.
    Write(Arc<Shared>, Bytes, Option<Refill>),
}

/// A `SET` sent with a read-back (client-side caching): the epoch of its
/// first mark and its slot, to keep the value read back if nothing else
/// invalidated the key meanwhile (see `State::after_read_back`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Refill {
    pub(super) sent: u64,
    /// When it was sent (clock nanos).
    pub(super) sent_at: u64,
    pub(super) slot: u16,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Cluster { #[pin] fut: F },
        Fallback { fut: BoxFuture<'static, Result<CacheResponse, BoxError>> },
        Ready { resp: Option<CacheResponse>, yielded: bool },
    }
}

impl<F, S> fmt::Debug for ResponseFuture<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, S> ResponseFuture<F, S> {
    /// A cluster call.
    pub(super) fn cluster(fut: F, ctx: Ctx<S>) -> Self {
        ResponseFuture {
            state: State::Cluster { fut },
            ctx: Some(ctx),
        }
    }

    /// A boxed call: a write that must wait for something first, or a
    /// read hedged to the store.
    pub(super) fn boxed(fut: BoxFuture<'static, Result<CacheResponse, BoxError>>) -> Self {
        ResponseFuture {
            state: State::Fallback { fut },
            ctx: None,
        }
    }

    /// An answer known in `call` (a fresh near-cache entry).
    pub(super) fn ready(resp: CacheResponse) -> Self {
        ResponseFuture {
            state: State::Ready {
                resp: Some(resp),
                yielded: false,
            },
            ctx: None,
        }
    }
}

impl<F, E, S> Future for ResponseFuture<F, S>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Cluster { fut } => {
                    let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                    match this.ctx.take() {
                        Some(Ctx::Read(ctx, after)) => match after(ctx, out) {
                            Ok(done) => return Poll::Ready(done),
                            Err(fut) => this.state.set(State::Fallback { fut }),
                        },
                        Some(Ctx::Write(state, key, refill)) => {
                            // Without a value read back, the key is
                            // invalidated again: a read that began while the
                            // write was on its way may have read (and kept)
                            // the old value, and its mark cannot clear this
                            // one. A read-back's value is the layer's: a
                            // write answers none.
                            let mut out = out;
                            match &mut out {
                                Ok(resp) => match (refill, resp.value.take()) {
                                    (Some(r), Some(value)) => state.after_read_back(
                                        &key,
                                        r,
                                        resp.served.node.clone(),
                                        value,
                                    ),
                                    _ => {
                                        state.invalidate_key(&key);
                                    }
                                },
                                Err(_) => {
                                    state.invalidate_key(&key);
                                }
                            }
                            return Poll::Ready(out);
                        }
                        None => return Poll::Ready(out),
                    }
                }
                StateProj::Fallback { fut } => return fut.as_mut().poll(cx),
                StateProj::Ready { resp, yielded } => {
                    // Known at once, yet answered only after yielding to
                    // the scheduler once, as a network read would: a task
                    // looping on hot keys lets the connections' tasks and
                    // the reads that wait on them run between its hits.
                    // tokio's cooperative budget alone (128 hits, 0.2 ms
                    // of CPU, before a forced yield) held the cluster's
                    // operations back: `bench throughput` GET at 64 and 256
                    // in flight, p99 1.0-2.4x fred's with the budget, 0.2x
                    // with this yield (docs/client-side-caching.md).
                    if !*yielded {
                        *yielded = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    return Poll::Ready(
                        resp.take().ok_or_else(|| "polled after completion".into()),
                    );
                }
            }
        }
    }
}
