//! Response future of [`Redirect`](super::Redirect).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use slotguard_core::{classify, BoxError, CacheRequest};
use tower::retry::budget::Budget;
use tower::Service;

use super::{follow, Shared};

pin_project! {
    /// Response future of [`Redirect`](super::Redirect).
    ///
    /// The first attempt is polled in place (no allocation on the healthy
    /// path); only a redirect moves the rest of the request into one boxed
    /// retry loop.
    pub struct ResponseFuture<S, F, T> {
        #[pin]
        state: State<F, T>,
        retry: Option<(S, CacheRequest, Arc<Shared>)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        First { #[pin] fut: F },
        Following { fut: BoxFuture<'static, Result<T, BoxError>> },
    }
}

impl<S, F, T> fmt::Debug for ResponseFuture<S, F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, F, T> ResponseFuture<S, F, T> {
    pub(crate) fn new(fut: F, service: S, req: CacheRequest, shared: Arc<Shared>) -> Self {
        shared.policy.budget.deposit();
        Self {
            state: State::First { fut },
            retry: Some((service, req, shared)),
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First { fut } => {
                    let err: BoxError = match std::task::ready!(fut.poll(cx)) {
                        Ok(resp) => return Poll::Ready(Ok(resp)),
                        Err(e) => e.into(),
                    };
                    let follows = matches!(
                        classify(&err),
                        slotguard_core::Failure::Moved
                            | slotguard_core::Failure::Ask
                            | slotguard_core::Failure::TryAgain
                    );
                    match this.retry.take() {
                        Some((svc, req, shared)) if follows => {
                            let fut = Box::pin(follow(svc, req, err, shared));
                            this.state.set(State::Following { fut });
                        }
                        _ => return Poll::Ready(Err(err)),
                    }
                }
                StateProj::Following { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}
