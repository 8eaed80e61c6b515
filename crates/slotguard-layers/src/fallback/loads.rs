//! The single flight of store loads: one load per key at a time, in the
//! coalesce layer's table of flights (see
//! [`coalesce`](crate::coalesce)), each load run by a task on the
//! controller that every caller, its leader too, waits on.

use std::sync::Arc;

use bytes::Bytes;
use slotguard_core::LoadCause;
use tokio::time::Instant;

use super::store::{secondary, LoadResult, SecondaryError, StoreGuard};
use crate::coalesce::flight::{Flight, Sharing};
use crate::coalesce::flights::{Flights, Joined, Shard, Ticket};

/// In-flight loads by key. Not generic over the store, so invalidations
/// (which detach a key's load) need not know the store's type.
pub(crate) type LoadFlights = Flights<Bytes, LoadResult, LoadResult>;
type LoadShard = Shard<Bytes, LoadResult, LoadResult>;

/// A load's outcome is a clone for everyone; a caller past its own
/// deadline leaves with a timeout (the load goes on for the others).
const LOADS: Sharing<LoadResult, LoadResult> = Sharing {
    share: |out| (out.clone(), out),
    unshare: |out| out,
    expired: || Err(secondary(SecondaryError::Timeout)),
};

impl LoadFlights {
    /// The hash and shard of `key`'s flight.
    fn place(&self, key: &[u8]) -> (u64, usize) {
        let hash = self.hash(key);
        // Any bits of the hash pick a shard as well as any other.
        (hash, hash as usize)
    }

    /// Later callers for `key` start a new load: the one in flight may have
    /// read the value the invalidation replaced.
    pub(crate) fn detach(&self, key: &[u8]) {
        let (_, shard) = self.place(key);
        self.invalidate(shard, |k| k.as_ref() == key);
    }
}

impl StoreGuard {
    /// Load `key`, joining the load already in flight for it if there is
    /// one; waits at most until `deadline` (the load itself goes on for the
    /// others). Also says whether this caller started the load (it alone
    /// writes the value back).
    pub(crate) async fn load(
        self: &Arc<Self>,
        flights: &Arc<LoadFlights>,
        key: &Bytes,
        cause: LoadCause,
        deadline: Option<Instant>,
    ) -> (LoadResult, bool) {
        let (hash, shard) = flights.place(key);
        match flights.join(hash, shard, |k| k == key, || key.clone()) {
            Joined::Follow(shard, ticket, board) => (
                Flight::follow(shard, ticket, board, deadline, LOADS).await,
                false,
            ),
            Joined::Lead(shard, ticket) => {
                (self.lead(shard, ticket, key, cause, deadline).await, true)
            }
            // Another key with the same 64-bit hash in flight: load alone.
            Joined::Alone => {
                let run = self.run(key, cause);
                let out = match deadline {
                    Some(d) => tokio::time::timeout_at(d, run)
                        .await
                        .unwrap_or_else(|_| (LOADS.expired)()),
                    None => run.await,
                };
                (out, true)
            }
        }
    }

    /// Start the load of a flight this caller registered, and wait for it.
    async fn lead(
        self: &Arc<Self>,
        shard: Arc<LoadShard>,
        ticket: Ticket,
        key: &Bytes,
        cause: LoadCause,
        deadline: Option<Instant>,
    ) -> LoadResult {
        if self.controller.is_shut_down() {
            // After the shutdown the callers run it themselves (the store
            // still answers; nothing is left behind): the leader drives it,
            // and hands it to a follower when its own deadline passes.
            let call = Box::pin(self.run(key, cause));
            let flight = Flight::lead(shard, ticket, call, LOADS);
            return match deadline {
                Some(d) => tokio::time::timeout_at(d, flight)
                    .await
                    .unwrap_or_else(|_| (LOADS.expired)()),
                None => flight.await,
            };
        }
        // The leader waits on the board like any follower: its board is made
        // before the task can finish.
        let Some(board) = shard.follow(&ticket) else {
            return Err(secondary(SecondaryError::Overloaded));
        };
        // Spawned on the controller: the load's outcome does not depend on
        // which caller stays, and it always ends (its own deadline, or the
        // controller's shutdown). Refused (shut down meanwhile), the task is
        // dropped unstarted and its flight ends `Overloaded`.
        let open = Open {
            shard: shard.clone(),
            ticket,
            stage: Stage::Loading,
        };
        let _ = self
            .controller
            .spawn(drive(self.clone(), open, key.clone(), cause));
        Flight::follow(shard, ticket, board, deadline, LOADS).await
    }
}

/// The task of one load.
async fn drive(guard: Arc<StoreGuard>, mut open: Open, key: Bytes, cause: LoadCause) {
    let out = guard.run(&key, cause).await;
    if cause == LoadCause::Miss && out.is_ok() && !guard.linger.is_zero() {
        // Callers that missed just after the load share its answer until
        // the write-back has had time to land, rather than load again. An
        // invalidation detaches it at once.
        // The task's own copy is nobody's: every caller waits on the board.
        let _ = open.shard.settle(&open.ticket, out, LOADS.share);
        open.stage = Stage::Settled;
        tokio::time::sleep(guard.linger).await;
    } else {
        let _ = open.shard.finish(&open.ticket, out, LOADS.share);
        open.stage = Stage::Done;
    }
}

/// A load's flight, ended whatever becomes of its task: dropped while
/// loading (the controller shut down, or the load panicked) its callers
/// get an error; dropped while settled (the linger cut short), it ends.
struct Open {
    shard: Arc<LoadShard>,
    ticket: Ticket,
    stage: Stage,
}

enum Stage {
    Loading,
    Settled,
    Done,
}

impl Drop for Open {
    fn drop(&mut self) {
        match self.stage {
            Stage::Loading => {
                let err = if std::thread::panicking() {
                    SecondaryError::Store(Arc::from(
                        Box::<dyn std::error::Error + Send + Sync>::from("store load panicked"),
                    ))
                } else {
                    SecondaryError::Overloaded
                };
                let _ = self
                    .shard
                    .finish(&self.ticket, Err(secondary(err)), LOADS.share);
            }
            Stage::Settled => self.shard.end(&self.ticket),
            Stage::Done => {}
        }
    }
}
