//! Response future of [`SlotRefresh`](super::SlotRefresh).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use slotguard_core::controller::StaleMap;
use slotguard_core::observe::Observation;
use slotguard_core::{classify, BoxError, Topology};

pin_project! {
    /// Response future of [`SlotRefresh`](super::SlotRefresh).
    pub struct ResponseFuture<F, T> {
        #[pin]
        state: State<F, T>,
        topology: Topology,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, T> {
        // The common case: the request was stamped and sent.
        Called { #[pin] fut: F },
        // No map yet: wait for the first load, then stamp and send.
        Waiting { fut: BoxFuture<'static, Result<T, BoxError>> },
        // Failed in `call` (e.g. uncovered slot). What was observed is
        // reported when the failure is polled: listeners scope polls, not
        // calls (see `slotguard_core::observe`).
        Failed { err: Option<BoxError>, observed: Option<Observation> },
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(crate) fn called(fut: F, topology: Topology) -> Self {
        Self {
            state: State::Called { fut },
            topology,
        }
    }

    pub(crate) fn waiting(
        fut: BoxFuture<'static, Result<T, BoxError>>,
        topology: Topology,
    ) -> Self {
        Self {
            state: State::Waiting { fut },
            topology,
        }
    }

    pub(crate) fn failed(err: BoxError, observed: Option<Observation>, topology: Topology) -> Self {
        Self {
            state: State::Failed {
                err: Some(err),
                observed,
            },
            topology,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.state.project() {
            StateProj::Called { fut } => std::task::ready!(fut.poll(cx)).map_err(Into::into),
            StateProj::Waiting { fut } => std::task::ready!(fut.as_mut().poll(cx)),
            StateProj::Failed { err, observed } => {
                // Failed in `call` (nothing routable): ready at once, but it
                // spends the cooperative budget so a caller looping on it
                // still yields to its runtime.
                let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                coop.made_progress();
                if let Some(o) = observed.take() {
                    slotguard_core::observe::record(o);
                }
                return Poll::Ready(Err(err
                    .take()
                    .unwrap_or_else(|| "polled after completion".into())));
            }
        };
        if let Err(e) = &out {
            // The controller decides whether the failure says the map may
            // be wrong (a node unreachable, the cluster down). MOVED is the
            // redirect layer's to report.
            this.topology.report(StaleMap::RequestFailed {
                failure: classify(e),
            });
        }
        Poll::Ready(out)
    }
}
