//! Response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use slotguard_core::observe::{self, Observation};
use slotguard_core::{BoxError, BreakerScope, CacheError};

use super::breaker::Permit;

pin_project! {
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// An admitted call is polled in place and its outcome recorded when it
    /// completes; dropping the future before that records nothing (and
    /// gives a half-open probe slot back). A refused call is ready at once
    /// with [`CacheError::CircuitOpen`].
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Admitted (`permit` set) or unguarded (no node to key a breaker on).
        Called { #[pin] fut: F, permit: Option<Permit> },
        // Refused in `call`: the inner service was not called. What was
        // observed is reported when the refusal is polled: listeners scope
        // polls, not calls (see `slotguard_core::observe`).
        Rejected { scope: Option<BreakerScope>, observed: Option<Observation> },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F, permit: Option<Permit>) -> Self {
        Self {
            state: State::Called { fut, permit },
        }
    }

    pub(crate) fn rejected(scope: BreakerScope, observed: Option<Observation>) -> Self {
        Self {
            state: State::Rejected {
                scope: Some(scope),
                observed,
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut, permit } => {
                let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                if let Some(permit) = permit.take() {
                    permit.finish(&out);
                }
                Poll::Ready(out)
            }
            StateProj::Rejected { scope, observed } => {
                // Ready at once, yet it spends tokio's cooperative budget
                // like I/O would: a caller looping against open breakers
                // still yields, so its runtime's timers and shutdown run.
                let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                coop.made_progress();
                Poll::Ready(Err(match scope.take() {
                    Some(scope) => {
                        if let Some(o) = observed.take() {
                            observe::record(o);
                        }
                        CacheError::CircuitOpen { scope }.into()
                    }
                    None => "polled after completion".into(),
                }))
            }
        }
    }
}
