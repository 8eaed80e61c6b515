//! The plain counters behind [`TelemetryStats`], one shard per thread.
//!
//! Every request bumps one of these, also when no OpenTelemetry SDK
//! listens, so the bump must cost next to nothing: a request's future
//! carries only its layer's tally id (no reference count to take and drop),
//! and it bumps its own thread's shard with a plain load and store (one
//! writer per shard: no locked instruction, and no cache line bounced
//! between cores as one shared counter would be at high concurrency).
//! Readers ([`Tally::snapshot`], the observable counters) sum the shards.
//!
//! A thread finds its shard in a thread-local list, first by id; the first
//! time a thread counts for a tally, it looks the tally up in a global
//! registry and adds a shard to it. A thread that exits folds its counts
//! into the tally's `retired` counters, so no count is lost and the shards
//! of short-lived threads (a blocking pool's) do not pile up.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::stats::{Counters, TelemetryStats};

/// Every live tally by id: where a thread finds the tally it has no shard
/// of yet.
static REGISTRY: Mutex<Vec<(u64, Weak<Tally>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One telemetry layer's counters: a shard per thread that counted.
#[derive(Debug)]
pub(crate) struct Tally {
    id: u64,
    shards: Mutex<Shards>,
}

#[derive(Debug, Default)]
struct Shards {
    live: Vec<Arc<Counters>>,
    // What threads that exited had counted.
    retired: Counters,
}

impl Tally {
    pub(crate) fn new() -> Arc<Self> {
        let tally = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::default(),
        });
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|(_, t)| t.strong_count() > 0);
        registry.push((tally.id, Arc::downgrade(&tally)));
        tally
    }

    /// What a request's future keeps to count with.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Bump this thread's shard of this tally.
    pub(crate) fn count(self: &Arc<Self>, f: impl FnOnce(&Counters)) {
        count_local(self.id, || Some(self.clone()), f);
    }

    /// Everything counted so far, summed over the shards.
    pub(crate) fn snapshot(&self) -> TelemetryStats {
        self.sum().snapshot()
    }

    /// Reads by path, summed over the shards (the observable counters).
    pub(crate) fn reads(&self) -> [u64; 6] {
        self.sum().reads()
    }

    fn sum(&self) -> Counters {
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let sum = Counters::default();
        sum.absorb(&shards.retired);
        for shard in &shards.live {
            sum.absorb(shard);
        }
        sum
    }

    fn add_shard(&self) -> Arc<Counters> {
        let shard = Arc::new(Counters::default());
        self.shards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live
            .push(shard.clone());
        shard
    }

    fn retire(&self, shard: &Arc<Counters>) {
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        shards.retired.absorb(shard);
        shards.live.retain(|s| !Arc::ptr_eq(s, shard));
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|(id, t)| *id != self.id && t.strong_count() > 0);
    }
}

/// Bump this thread's shard of the tally `id` (from a request's future).
/// Counts nothing when the tally is gone (its layer and every service it
/// made were dropped: nobody can read the count).
pub(crate) fn count(id: u64, f: impl FnOnce(&Counters)) {
    count_local(id, || lookup(id), f);
}

fn lookup(id: u64) -> Option<Arc<Tally>> {
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    registry
        .iter()
        .find(|(i, _)| *i == id)
        .and_then(|(_, t)| t.upgrade())
}

/// This thread's shards, one per tally it counted for.
#[derive(Default)]
struct Local {
    shards: Vec<(u64, Arc<Counters>, Weak<Tally>)>,
}

impl Drop for Local {
    // The thread exits: its counts go to the tallies' retired counters.
    fn drop(&mut self) {
        for (_, shard, tally) in self.shards.drain(..) {
            if let Some(tally) = tally.upgrade() {
                tally.retire(&shard);
            }
        }
    }
}

thread_local! {
    // Const-initialised: no lazy-initialisation check on each access.
    static LOCAL: RefCell<Local> = const { RefCell::new(Local { shards: Vec::new() }) };
}

#[inline]
fn count_local(id: u64, tally: impl FnOnce() -> Option<Arc<Tally>>, f: impl FnOnce(&Counters)) {
    // During thread teardown the local list may be gone: the count is lost
    // with the thread, which no request outlives.
    let _ = LOCAL.try_with(|local| {
        // A shared borrow: the bump itself goes through the shard's atomics.
        let Ok(shards) = local.try_borrow() else {
            return;
        };
        if let Some((_, shard, _)) = shards.shards.iter().find(|(i, _, _)| *i == id) {
            f(shard);
            return;
        }
        drop(shards);
        join(local, id, tally, f);
    });
}

/// First count for the tally `id` on this thread (rare): drop the shards
/// of tallies that are gone, then join this one.
#[cold]
#[inline(never)]
fn join(
    local: &RefCell<Local>,
    id: u64,
    tally: impl FnOnce() -> Option<Arc<Tally>>,
    f: impl FnOnce(&Counters),
) {
    let Ok(mut local) = local.try_borrow_mut() else {
        return;
    };
    local.shards.retain(|(_, _, t)| t.strong_count() > 0);
    let (shard, weak) = match tally() {
        Some(tally) => (tally.add_shard(), Arc::downgrade(&tally)),
        // The tally is gone (its layer was dropped, so nobody can read
        // it): count into a shard of nobody's, so that this thread does
        // not look the id up under the registry's lock on every request.
        // It is dropped at the next join.
        None => (Arc::default(), Weak::new()),
    };
    f(&shard);
    local.shards.push((id, shard, weak));
}

/// Add one to a counter of this thread's shard: a plain load and store,
/// since the shard has one writer (readers may see the count a moment
/// late, never torn).
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Add `n` to a counter of this thread's shard (see [`bump`]).
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_every_thread_are_summed_and_survive_their_threads() {
        let tally = Tally::new();
        let id = tally.id();
        count(id, |c| bump(&c.writes));
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..1000 {
                            count(id, |c| bump(&c.reads[0]));
                        }
                        tally.count(|c| bump(&c.refreshes));
                    })
                })
                .collect();
            // A join waits for the thread's exit, thread-local destructors
            // included (the scope's own wait ends with the closure).
            for t in threads {
                t.join().unwrap();
            }
        });
        let stats = tally.snapshot();
        assert_eq!(stats.reads.primary_hit, 4000);
        assert_eq!(stats.refreshes, 4);
        assert_eq!(stats.writes, 1);
        assert_eq!(tally.reads()[0], 4000);
        // the four threads exited: their shards were folded
        assert_eq!(tally.shards.lock().unwrap().live.len(), 1);
    }

    #[test]
    fn a_dropped_tally_counts_nothing_and_leaves_the_registry() {
        let tally = Tally::new();
        let id = tally.id();
        count(id, |c| bump(&c.writes));
        drop(tally);
        count(id, |c| bump(&c.writes));
        assert!(lookup(id).is_none());
        assert!(!REGISTRY.lock().unwrap().iter().any(|(i, _)| *i == id));
    }

    #[test]
    fn a_thread_remembers_a_dropped_tally_instead_of_asking_the_registry_again() {
        std::thread::spawn(|| {
            let tally = Tally::new();
            let id = tally.id();
            drop(tally);
            count(id, |c| bump(&c.writes));
            // The id is now known on this thread (a shard of nobody's):
            // the next count finds it without the registry's lock.
            let known = LOCAL.with_borrow(|l| {
                l.shards
                    .iter()
                    .filter(|(i, _, t)| *i == id && t.strong_count() == 0)
                    .count()
            });
            assert_eq!(known, 1);
            count(id, |c| bump(&c.writes));
            let known = LOCAL.with_borrow(|l| l.shards.iter().filter(|(i, _, _)| *i == id).count());
            assert_eq!(known, 1);
        })
        .join()
        .unwrap();
    }
}
