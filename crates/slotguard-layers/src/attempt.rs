//! The future shared by retrying layers (`redirect`, `replica_failover`):
//! poll the first attempt in place (no allocation on the healthy path) and,
//! only when it fails in a way the layer recovers from, move the rest of the
//! request into one boxed loop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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

/// What every service made by one [`Layer::layer`](tower::Layer::layer)
/// call of a retrying layer shares: its settings, and a spare clone of the
/// inner service that follow-up attempts are sent through.
///
/// Why a spare made once, rather than a clone per call: the healthy path
/// then keeps no inner service in its response future (a smaller future,
/// and no reference counts touched per call for it); only a retry clones
/// the spare. The mutex makes the spare shareable for services that are
/// `Send` but not `Sync` (e.g. `BoxCloneService`); only retries take it.
#[derive(Debug)]
pub(crate) struct Proto<S, Shared> {
    svc: Mutex<S>,
    pub(crate) shared: Arc<Shared>,
}

impl<S: Clone, Shared> Proto<S, Shared> {
    pub(crate) fn new(svc: S, shared: Arc<Shared>) -> Self {
        Self {
            svc: Mutex::new(svc),
            shared,
        }
    }

    /// A clone of the spare, for a follow-up attempt.
    pub(crate) fn service(&self) -> S {
        self.svc
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

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
