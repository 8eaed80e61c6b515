//! One caller's part in a flight: driving its call, or waiting for its
//! outcome (and taking the call over when its driver gives up).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use super::flights::{Board, Call, Found, Shard, Ticket};

/// How a flight's outcome is shared: `share` splits the driver's outcome
/// into the followers' copy and its own, `unshare` turns a copy back, and
/// `expired` is a follower's answer when its deadline passes first.
pub(crate) struct Sharing<S, R> {
    pub(crate) share: fn(R) -> (S, R),
    pub(crate) unshare: fn(S) -> R,
    pub(crate) expired: fn() -> R,
}

impl<S, R> Clone for Sharing<S, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S, R> Copy for Sharing<S, R> {}

/// One caller's part in a flight.
pub(crate) struct Flight<K, S, R> {
    shard: Arc<Shard<K, S, R>>,
    ticket: Ticket,
    role: Role<S, R>,
    sharing: Sharing<S, R>,
    // Followers with a deadline only: a leader's own deadline travels
    // with the call it made.
    deadline: Option<Pin<Box<Sleep>>>,
}

enum Role<S, R> {
    Driving(Call<R>),
    Waiting {
        board: Arc<Board<S, R>>,
        slot: Option<usize>,
    },
    Done,
}

impl<K, S: Clone, R> Flight<K, S, R> {
    pub(crate) fn lead(
        shard: Arc<Shard<K, S, R>>,
        ticket: Ticket,
        call: Call<R>,
        sharing: Sharing<S, R>,
    ) -> Self {
        Self {
            shard,
            ticket,
            role: Role::Driving(call),
            sharing,
            deadline: None,
        }
    }

    pub(crate) fn follow(
        shard: Arc<Shard<K, S, R>>,
        ticket: Ticket,
        board: Arc<Board<S, R>>,
        deadline: Option<Instant>,
        sharing: Sharing<S, R>,
    ) -> Self {
        Self {
            shard,
            ticket,
            role: Role::Waiting { board, slot: None },
            sharing,
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
    }

    /// Poll for the outcome. Not polled again once it returned it.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<R> {
        loop {
            match &mut self.role {
                Role::Driving(call) => {
                    if let Poll::Ready(out) = call.as_mut().poll(cx) {
                        self.role = Role::Done;
                        let share = self.sharing.share;
                        return Poll::Ready(self.shard.finish(&self.ticket, out, share));
                    }
                }
                Role::Waiting { board, slot } => match board.poll(slot, cx) {
                    Poll::Ready(Found::Outcome(out)) => {
                        self.role = Role::Done;
                        return Poll::Ready((self.sharing.unshare)(out));
                    }
                    Poll::Ready(Found::Call(call)) => {
                        self.role = Role::Driving(call);
                        continue;
                    }
                    Poll::Pending => {}
                },
                // Polled after completion (tower's futures never are).
                Role::Done => return Poll::Pending,
            }
            break;
        }
        if let Some(sleep) = self.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                self.give_up();
                return Poll::Ready((self.sharing.expired)());
            }
        }
        Poll::Pending
    }
}

impl<K, S, R> Flight<K, S, R> {
    /// Leave the flight without its outcome.
    fn give_up(&mut self) {
        match std::mem::replace(&mut self.role, Role::Done) {
            Role::Driving(call) => self.shard.abandon(&self.ticket, call),
            Role::Waiting { board, .. } => self.shard.leave(&self.ticket, &board),
            Role::Done => {}
        }
    }
}

impl<K, S, R> Future for Flight<K, S, R>
where
    S: Clone,
{
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        // `Unpin`: every field is a box, an `Arc` or plain data.
        Flight::poll(self.get_mut(), cx)
    }
}

impl<K, S, R> Drop for Flight<K, S, R> {
    fn drop(&mut self) {
        self.give_up();
    }
}
