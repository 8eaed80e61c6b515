//! Response future of [`Fallback`](super::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use slotguard_core::{BoxError, CacheRequest, CacheResponse, SecondaryRequest};
use tower::Service;

use super::ReadCtx;

pin_project! {
    /// Response future of [`Fallback`](super::Fallback).
    ///
    /// The cluster call is polled in place, and a value it returns is
    /// handed back without an allocation; only a miss or a cluster failure
    /// moves the read into one boxed fallback (near-cache, then store). A
    /// fresh near-cache answer is ready at once.
    pub struct ResponseFuture<F, S, St> {
        #[pin]
        state: State<F>,
        ctx: Option<ReadCtx<S, St>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Cluster { #[pin] fut: F },
        Fallback { fut: BoxFuture<'static, Result<CacheResponse, BoxError>> },
        Ready { resp: Option<CacheResponse> },
    }
}

impl<F, S, St> fmt::Debug for ResponseFuture<F, S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, S, St> ResponseFuture<F, S, St> {
    /// A cluster call; `ctx` is `None` for writes (nothing to fall back to).
    pub(super) fn cluster(fut: F, ctx: Option<ReadCtx<S, St>>) -> Self {
        ResponseFuture {
            state: State::Cluster { fut },
            ctx,
        }
    }

    /// A write that must wait for something first.
    pub(super) fn boxed(fut: BoxFuture<'static, Result<CacheResponse, BoxError>>) -> Self {
        ResponseFuture {
            state: State::Fallback { fut },
            ctx: None,
        }
    }

    /// An answer known in `call` (a fresh near-cache entry).
    pub(super) fn ready(resp: CacheResponse) -> Self {
        ResponseFuture {
            state: State::Ready { resp: Some(resp) },
            ctx: None,
        }
    }
}

impl<F, E, S, St> Future for ResponseFuture<F, S, St>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Into<BoxError>,
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    St: Service<SecondaryRequest, Response = Option<Bytes>> + Clone + Send + 'static,
    St::Error: Into<BoxError>,
    St::Future: Send + 'static,
{
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Cluster { fut } => {
                    let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                    let Some(ctx) = this.ctx.take() else {
                        return Poll::Ready(out);
                    };
                    match ctx.after_cluster(out) {
                        Ok(done) => return Poll::Ready(done),
                        Err(fut) => this.state.set(State::Fallback { fut }),
                    }
                }
                StateProj::Fallback { fut } => return fut.as_mut().poll(cx),
                StateProj::Ready { resp } => {
                    // Ready at once, yet it spends tokio's cooperative
                    // budget like I/O would: a caller looping on hot keys
                    // still yields.
                    let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                    coop.made_progress();
                    return Poll::Ready(
                        resp.take().ok_or_else(|| "polled after completion".into()),
                    );
                }
            }
        }
    }
}
