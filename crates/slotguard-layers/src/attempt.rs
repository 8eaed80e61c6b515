//! The future shared by retrying layers (`redirect`, `replica_failover`):
//! poll the first attempt in place (no allocation on the healthy path) and,
//! only when it fails in a way the layer recovers from, move the rest of the
//! request into one boxed loop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use slotguard_core::BoxError;

/// What a layer does with the first attempt's error: give it back, or
/// return the future of the follow-up attempts.
pub trait Recover<T>: sealed::Sealed {
    /// Recover from `err`, or give it back.
    fn recover(self, err: BoxError) -> Result<BoxFuture<'static, Result<T, BoxError>>, BoxError>;

    /// The first attempt succeeded.
    fn succeeded(&self) {}
}

mod sealed {
    pub trait Sealed {}
}
pub(crate) use sealed::Sealed;

pin_project! {
    /// Response future of the retrying layers: the first attempt, then (on a
    /// recoverable error) the layer's follow-up attempts.
    pub struct Attempt<F, T, R> {
        #[pin]
        state: State<F, T>,
        recover: Option<R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        First { #[pin] fut: F },
        Following { fut: BoxFuture<'static, Result<T, BoxError>> },
    }
}

impl<F, T, R> fmt::Debug for Attempt<F, T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt").finish_non_exhaustive()
    }
}

impl<F, T, R> Attempt<F, T, R> {
    pub(crate) fn new(fut: F, recover: Option<R>) -> Self {
        Self {
            state: State::First { fut },
            recover,
        }
    }
}

impl<F, T, E, R> Future for Attempt<F, T, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    R: Recover<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First { fut } => {
                    let err: BoxError = match std::task::ready!(fut.poll(cx)) {
                        Ok(resp) => {
                            if let Some(recover) = this.recover.as_ref() {
                                recover.succeeded();
                            }
                            return Poll::Ready(Ok(resp));
                        }
                        Err(e) => e.into(),
                    };
                    let Some(recover) = this.recover.take() else {
                        return Poll::Ready(Err(err));
                    };
                    match recover.recover(err) {
                        Ok(fut) => this.state.set(State::Following { fut }),
                        Err(err) => return Poll::Ready(Err(err)),
                    }
                }
                StateProj::Following { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}
