//! Response future of [`Coalesce`](super::Coalesce).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use slotguard_core::{BoxError, CacheError, CacheResponse};
use tokio::time::{Instant, Sleep};

use super::flights::{Board, Call, Found, Shard, Ticket};

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
        Flight { flight: Flight },
    }
}

/// One caller's part in a flight.
pub(crate) struct Flight {
    shard: Arc<Shard>,
    ticket: Ticket,
    role: Role,
    // Followers with a deadline only: the leader's own deadline travels
    // with the call it made.
    deadline: Option<Pin<Box<Sleep>>>,
}

enum Role {
    Driving(Call),
    Waiting {
        board: Arc<Board>,
        slot: Option<usize>,
    },
    Done,
}

impl Flight {
    pub(crate) fn lead(shard: Arc<Shard>, ticket: Ticket, call: Call) -> Self {
        Self {
            shard,
            ticket,
            role: Role::Driving(call),
            deadline: None,
        }
    }

    pub(crate) fn follow(
        shard: Arc<Shard>,
        ticket: Ticket,
        board: Arc<Board>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            shard,
            ticket,
            role: Role::Waiting { board, slot: None },
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<CacheResponse, BoxError>> {
        loop {
            match &mut self.role {
                Role::Driving(call) => {
                    if let Poll::Ready(out) = call.as_mut().poll(cx) {
                        self.role = Role::Done;
                        return Poll::Ready(self.shard.finish(&self.ticket, out));
                    }
                }
                Role::Waiting { board, slot } => match board.poll(slot, cx) {
                    Poll::Ready(Found::Outcome(out)) => {
                        self.role = Role::Done;
                        return Poll::Ready(out);
                    }
                    Poll::Ready(Found::Call(call)) => {
                        self.role = Role::Driving(call);
                        continue;
                    }
                    Poll::Pending => {}
                },
                Role::Done => return Poll::Ready(Err("polled after completion".into())),
            }
            break;
        }
        if let Some(sleep) = self.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                self.give_up();
                return Poll::Ready(Err(CacheError::DeadlineExceeded.into()));
            }
        }
        Poll::Pending
    }

    /// Leave the flight without its outcome.
    fn give_up(&mut self) {
        match std::mem::replace(&mut self.role, Role::Done) {
            Role::Driving(call) => self.shard.abandon(&self.ticket, call),
            Role::Waiting { board, .. } => self.shard.leave(&self.ticket, &board),
            Role::Done => {}
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.give_up();
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

    pub(crate) fn flight(flight: Flight) -> Self {
        Self {
            state: State::Flight { flight },
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
            StateProj::Flight { flight } => flight.poll(cx),
        }
    }
}
