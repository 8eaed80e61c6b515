//! Response future of [`Coalesce`](super::Coalesce).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use slotguard_core::{BoxError, CacheError, CacheResponse};
use tokio::time::{Instant, Sleep};

use super::flights::{Flights, Shareable, Ticket};

pin_project! {
    /// Response future of [`Coalesce`](super::Coalesce).
    ///
    /// A write (or any request that is not coalesced) is the inner future,
    /// polled in place. A read waits for its flight; a follower also for
    /// its own deadline. Dropping a caller's future never cancels the
    /// flight for the others: whichever caller is still waiting drives it.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Direct { #[pin] fut: F },
        Flight { wait: Wait },
    }
}

/// One caller's wait for a flight. Gives its ticket back when dropped
/// before the flight finished.
pub(crate) struct Wait {
    ticket: Option<Ticket>,
    flights: Arc<Flights>,
    // Followers with a deadline only: the leader's own deadline travels
    // with the call it made.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Wait {
    pub(crate) fn new(ticket: Ticket, flights: Arc<Flights>, deadline: Option<Instant>) -> Self {
        let deadline = deadline
            .filter(|_| !ticket.leader)
            .map(|d| Box::pin(tokio::time::sleep_until(d)));
        Self {
            ticket: Some(ticket),
            flights,
            deadline,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<CacheResponse, BoxError>> {
        let Some(ticket) = self.ticket.as_mut() else {
            return Poll::Ready(Err("polled after completion".into()));
        };
        if let Poll::Ready(out) = Pin::new(&mut ticket.flight).poll(cx) {
            if let Some(ticket) = self.ticket.take() {
                self.flights.finished(&ticket);
            }
            return Poll::Ready(out.map_err(Shareable::into_box));
        }
        if let Some(sleep) = self.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                if let Some(ticket) = self.ticket.take() {
                    self.flights.leave(ticket);
                }
                return Poll::Ready(Err(CacheError::DeadlineExceeded.into()));
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.flights.leave(ticket);
        }
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

    pub(crate) fn flight(wait: Wait) -> Self {
        Self {
            state: State::Flight { wait },
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
            StateProj::Flight { wait } => wait.poll(cx),
        }
    }
}
