//! Response future of [`ReplicaFailover`](super::ReplicaFailover).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use slotguard_core::{BoxError, CacheRequest};
use tower::Service;

use super::Recovery;
use crate::attempt::Attempt;

pin_project! {
    /// Response future of [`ReplicaFailover`](super::ReplicaFailover).
    ///
    /// The first attempt is polled in place; only a failover moves the
    /// request into one boxed loop over the shard's replicas.
    pub struct ResponseFuture<S, F, T> {
        #[pin]
        inner: Attempt<F, T, Recovery<S>>,
    }
}

impl<S, F, T> fmt::Debug for ResponseFuture<S, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, F, T> ResponseFuture<S, F, T> {
    pub(crate) fn new(fut: F, recovery: Recovery<S>) -> Self {
        Self {
            inner: Attempt::new(fut, Some(recovery)),
        }
    }
}

impl<S, F, T, E> Future for ResponseFuture<S, F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    S: Service<CacheRequest, Response = T> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    T: Send + 'static,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
