//! Response future of [`ReplicaFailover`](super::ReplicaFailover).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use slotguard_core::{classify, BoxError, CacheRequest, Failure};
use tokio::time::Sleep;
use tower::Service;

use super::{fails_over, Recovery};
use crate::attempt::Recover;

pin_project! {
    /// Response future of [`ReplicaFailover`](super::ReplicaFailover).
    ///
    /// The first attempt is polled in place (no allocation on the healthy
    /// path). A read that may hedge also holds its hedge timer: when it
    /// fires with the first attempt still pending, one boxed hedge to a
    /// replica runs beside it and the first good answer wins; the other is
    /// dropped (the leaf reads and discards an abandoned command's reply,
    /// so its connection stays in step). A failover moves the rest of the
    /// request into one boxed loop.
    pub struct ResponseFuture<S, F, T> {
        #[pin]
        first: F,
        // The first attempt returned (its error, if any, is in `first_err`).
        first_done: bool,
        #[pin]
        timer: Option<Sleep>,
        hedge: Option<BoxFuture<'static, Result<T, BoxError>>>,
        // The first attempt failed in a way a replica may answer while the
        // hedge was running: the hedge's answer is awaited first.
        first_err: Option<BoxError>,
        following: Option<BoxFuture<'static, Result<T, BoxError>>>,
        recovery: Option<Recovery<S>>,
    }
}

impl<S, F, T> fmt::Debug for ResponseFuture<S, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("first_done", &self.first_done)
            .field("hedging", &self.hedge.is_some())
            .field("following", &self.following.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, F, T> ResponseFuture<S, F, T> {
    pub(crate) fn new(first: F, timer: Option<Sleep>, recovery: Option<Recovery<S>>) -> Self {
        Self {
            first,
            first_done: false,
            timer,
            hedge: None,
            first_err: None,
            following: None,
            recovery,
        }
    }
}

/// What to do after the first attempt failed with `err`.
fn recover_from<S, T>(
    recovery: Option<Recovery<S>>,
    err: BoxError,
) -> Result<BoxFuture<'static, Result<T, BoxError>>, BoxError>
where
    Recovery<S>: Recover<T>,
{
    match recovery {
        Some(r) => r.recover(err),
        None => Err(err),
    }
}

impl<S, F, E> Future for ResponseFuture<S, F, S::Response>
where
    S: Service<CacheRequest> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    F: Future<Output = Result<S::Response, E>>,
    E: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(fut) = this.following.as_mut() {
            return fut.as_mut().poll(cx);
        }
        if !*this.first_done {
            if let Poll::Ready(out) = this.first.poll(cx) {
                *this.first_done = true;
                this.timer.set(None);
                match out {
                    Ok(resp) => return Poll::Ready(Ok(resp)),
                    Err(e) => {
                        let err: BoxError = e.into();
                        if this.hedge.is_some() && fails_over(classify(&err)) {
                            // The hedge may still answer: wait for it.
                            *this.first_err = Some(err);
                        } else {
                            // Not a node fault (e.g. MOVED: the hedged
                            // replica may be of the wrong shard), or no
                            // hedge: the usual recovery.
                            *this.hedge = None;
                            return follow_or_fail(this.following, this.recovery.take(), err, cx);
                        }
                    }
                }
            }
        }
        if let Some(timer) = this.timer.as_mut().as_pin_mut() {
            if timer.poll(cx).is_ready() {
                this.timer.set(None);
                *this.hedge = this.recovery.as_mut().and_then(Recovery::start_hedge);
            }
        }
        let Some(hedge) = this.hedge.as_mut() else {
            return Poll::Pending;
        };
        match hedge.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(resp)) => {
                if let Some(r) = this.recovery.as_ref() {
                    r.hedge_won();
                }
                Poll::Ready(Ok(resp))
            }
            Poll::Ready(Err(err)) => {
                *this.hedge = None;
                if !*this.first_done && classify(&err) == Failure::ClusterDown {
                    // The cluster refuses reads (a full-coverage cluster
                    // while a slot has no owner), and the primary, which
                    // did not answer within its hedge delay, is most likely
                    // why: waiting out its attempt timeout would only delay
                    // the error, and with it the near-cache or store
                    // answer of a fallback layer above (the demo's stall
                    // phases: 100–150 ms reads before this).
                    return Poll::Ready(Err(err));
                }
                // Otherwise the hedge's own failure is no answer; the first
                // attempt's outcome decides, as if there had been no hedge.
                match this.first_err.take() {
                    Some(err) => follow_or_fail(this.following, this.recovery.take(), err, cx),
                    None => Poll::Pending,
                }
            }
        }
    }
}

/// Start the failover loop for `err` (and poll it once), or fail with it.
fn follow_or_fail<S, T>(
    following: &mut Option<BoxFuture<'static, Result<T, BoxError>>>,
    recovery: Option<Recovery<S>>,
    err: BoxError,
    cx: &mut Context<'_>,
) -> Poll<Result<T, BoxError>>
where
    Recovery<S>: Recover<T>,
{
    match recover_from(recovery, err) {
        Ok(fut) => following.insert(fut).as_mut().poll(cx),
        Err(err) => Poll::Ready(Err(err)),
    }
}
