//! Response future of [`Coalesce`](super::Coalesce).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use pin_project_lite::pin_project;
use slotguard_core::{BoxError, CacheError, CacheResponse};

use super::flight::{Flight, Sharing};
use super::flights::{share_read, FlightKey, ReadFlights};
use super::shared_error::{Outcome, Shareable};

/// A read's part in a flight.
pub(crate) type ReadFlight = Flight<FlightKey, Outcome, Result<CacheResponse, BoxError>>;

/// How reads share their outcome: a follower past its deadline leaves with
/// [`CacheError::DeadlineExceeded`].
pub(crate) const READS: Sharing<Outcome, Result<CacheResponse, BoxError>> = Sharing {
    share: share_read,
    unshare: |out| out.map_err(Shareable::into_box),
    expired: || Err(CacheError::DeadlineExceeded.into()),
};

pin_project! {
    /// Response future of [`Coalesce`](super::Coalesce).
    ///
    /// A write (or a read that cannot be coalesced now) is the inner future,
    /// polled in place. A read takes part in a flight: it drives the call
    /// or waits for its outcome (a follower also for its own deadline).
    /// Dropping a caller's future never fails the others: a driver that
    /// goes hands the call, mid-flight, to a waiting follower.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Direct { #[pin] fut: F },
        // A write: once it is done, reads arriving from then on must not
        // share one that started while it was on its way either (see
        // `Coalesce::call`).
        Write { #[pin] fut: F, done: Option<(Arc<ReadFlights>, u16, Bytes)> },
        // `coalesced`: a follower, reported (`Coalesced`) at its first poll
        // (listeners scope polls, not calls: see `slotguard_core::observe`).
        Flight { flight: ReadFlight, coalesced: bool },
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn direct(fut: F) -> Self {
        Self {
            state: State::Direct { fut },
        }
    }

    pub(crate) fn write(fut: F, flights: Arc<ReadFlights>, slot: u16, key: Bytes) -> Self {
        Self {
            state: State::Write {
                fut,
                done: Some((flights, slot, key)),
            },
        }
    }

    pub(crate) fn flight(flight: ReadFlight, coalesced: bool) -> Self {
        Self {
            state: State::Flight { flight, coalesced },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Direct { fut } => fut.poll(cx).map_err(Into::into),
            StateProj::Write { fut, done } => {
                let out = std::task::ready!(fut.poll(cx)).map_err(Into::into);
                if let Some((flights, slot, key)) = done.take() {
                    flights.invalidate_key(slot, &key);
                }
                Poll::Ready(out)
            }
            StateProj::Flight { flight, coalesced } => {
                if std::mem::take(coalesced) {
                    slotguard_core::observe::record(slotguard_core::Observation::Coalesced);
                }
                flight.poll(cx)
            }
        }
    }
}
