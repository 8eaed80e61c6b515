//! The per-request record and the scope it is installed in (see the
//! module docs of [`observe`](super)).

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Observation;

/// How many observations one request's [`Record`] keeps; later ones are
/// counted in [`Record::dropped`]. A request that is redirected, fails over
/// and falls back makes about four.
pub const RECORD_CAPACITY: usize = 6;

/// What happened to one request, in the order it happened.
///
/// One pointer while empty: an empty record (the healthy path) allocates
/// nothing and keeps the future that holds it small. The first
/// observation allocates its fixed-capacity list (a request that was
/// redirected, failed over or fell back).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Record {
    list: Option<Box<List>>,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct List {
    items: [Option<Observation>; RECORD_CAPACITY],
    len: u8,
    dropped: u16,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("observations", &self.iter().collect::<Vec<_>>())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one observation (counted as dropped when full).
    pub fn push(&mut self, observation: Observation) {
        let list = self.list.get_or_insert_with(Box::default);
        match list.items.get_mut(usize::from(list.len)) {
            Some(slot) => {
                *slot = Some(observation);
                list.len += 1;
            }
            None => list.dropped = list.dropped.saturating_add(1),
        }
    }

    /// The observations kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Observation> {
        let kept = self
            .list
            .as_deref()
            .map_or(&[][..], |l| &l.items[..usize::from(l.len)]);
        kept.iter().flatten()
    }

    /// How many observations are kept.
    pub fn len(&self) -> usize {
        self.list.as_ref().map_or(0, |l| usize::from(l.len))
    }

    /// Whether nothing was observed.
    pub fn is_empty(&self) -> bool {
        self.list.is_none()
    }

    /// Observations that did not fit.
    pub fn dropped(&self) -> u16 {
        self.list.as_ref().map_or(0, |l| l.dropped)
    }
}

impl Record {
    /// Append what `other` holds (and what it dropped) after this record's
    /// own observations.
    fn append(&mut self, other: Record) {
        if self.list.is_none() {
            // The usual case (one poll or one call observed): no copy.
            *self = other;
            return;
        }
        let Some(list) = other.list else { return };
        for o in list.items.into_iter().flatten() {
            self.push(o);
        }
        if let Some(mine) = self.list.as_mut() {
            mine.dropped = mine.dropped.saturating_add(list.dropped);
        }
    }
}

// How scopes are tracked on a thread. Entering and leaving a scope runs
// around every poll of every request, so on the healthy path (nothing
// observed) it touches only two plain `Cell`s whose types need no drop:
// such thread-locals are bare TLS slots, with no lazy initialisation, no
// registered destructor and no state to check on access.
//
// Scopes on one thread nest strictly (a scope is entered and left within
// one poll or one call), so the nesting depth names the innermost one.
// An observation goes into `OBSERVED` under the current depth; leaving a
// scope moves its entry, if any, into the record the scope's owner keeps
// (a future may be polled on another thread next time).
thread_local! {
    // 0: no scope, nobody listens.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    // Whether `OBSERVED` holds anything: leaving a scope looks no further
    // on the healthy path.
    static PENDING: Cell<bool> = const { Cell::new(false) };
    // One record per scope on this thread that observed something, by
    // depth, innermost last (at most the nesting depth, in practice one).
    static OBSERVED: RefCell<Vec<(u32, Record)>> = const { RefCell::new(Vec::new()) };
}

/// Report an observation about the request being served. A no-op unless a
/// listener installed a record ([`Scope`], [`Scoped`], [`scope`]) around
/// the poll (or the call) it is made in. Call it from a future's `poll`:
/// the telemetry layer scopes polls only (see the [module docs](super)).
pub fn record(observation: Observation) {
    let depth = DEPTH.get();
    // Nobody listens: one thread-local read.
    if depth == 0 {
        return;
    }
    // During thread teardown the list may be gone: the observation is lost
    // with the thread.
    let _ = OBSERVED.try_with(|observed| {
        let Ok(mut observed) = observed.try_borrow_mut() else {
            return;
        };
        match observed.last_mut() {
            Some((d, rec)) if *d == depth => rec.push(observation),
            _ => {
                let mut rec = Record::new();
                rec.push(observation);
                observed.push((depth, rec));
            }
        }
        PENDING.set(true);
    });
}

/// Whether a listener collects observations for the current request (to
/// skip building one that nobody reads).
pub fn listening() -> bool {
    DEPTH.get() != 0
}

/// Enter a scope: the depth of the new scope.
#[inline(always)]
fn enter() -> u32 {
    let depth = DEPTH.get().saturating_add(1);
    DEPTH.set(depth);
    depth
}

/// Leave the scope at `depth`: what it observed goes into `record`.
#[inline(always)]
fn leave(depth: u32, record: &mut Record) {
    DEPTH.set(depth - 1);
    if PENDING.get() {
        collect(depth, record);
    }
}

/// The rare path of [`leave`]: the scope, or one inside it, observed
/// something.
#[cold]
fn collect(depth: u32, record: &mut Record) {
    let _ = OBSERVED.try_with(|observed| {
        let Ok(mut observed) = observed.try_borrow_mut() else {
            return;
        };
        // Entries deeper than this scope belong to scopes that unwound
        // (a panic): drop them with this one's.
        while let Some((d, _)) = observed.last() {
            if *d < depth {
                break;
            }
            if let Some((d, rec)) = observed.pop() {
                if d == depth {
                    record.append(rec);
                }
            }
        }
        PENDING.set(!observed.is_empty());
    });
}

/// A scope entered on this thread: observations made until it is left go
/// into the record it hands back (see the [module docs](super)).
///
/// For a listener that builds its own future around an inner call (as
/// the telemetry layer does, so the request is passed straight to the
/// inner service and the future built in place); [`scope`] and [`Scoped`]
/// do the same for a closure and a future. Leave it on the same thread,
/// before returning from the `call` or `poll` that entered it: scopes on
/// a thread nest. If the code run inside panics, dropping the scope
/// leaves it (a task's panic is caught by the runtime and the thread goes
/// on serving); on the normal path [`Scope::finish`] or [`Scope::leave`]
/// leave it at no extra cost.
///
/// Not `Send`: a scope left on another thread would unbalance both
/// threads' nesting.
#[must_use = "a scope is left by `finish` or `leave`"]
pub struct Scope(u32, PhantomData<*const ()>);

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Scope").field(&self.0).finish()
    }
}

impl Scope {
    /// Enter a scope: two thread-local cell accesses.
    #[inline(always)]
    pub fn enter() -> Self {
        Self(enter(), PhantomData)
    }

    /// Leave the scope, appending what it observed to `record`.
    #[inline(always)]
    pub fn leave(self, record: &mut Record) {
        let depth = std::mem::ManuallyDrop::new(self).0;
        leave(depth, record);
    }

    /// Leave the scope: what it observed.
    #[inline(always)]
    pub fn finish(self) -> Record {
        let mut record = Record::new();
        self.leave(&mut record);
        record
    }
}

impl Drop for Scope {
    // Only on unwinding: the normal path leaves with `leave`/`finish`.
    fn drop(&mut self) {
        leave(self.0, &mut Record::new());
    }
}

/// Run `f` (a service's `call`, which may already observe something) with
/// a fresh record installed; return its result and the record.
pub fn scope<R>(f: impl FnOnce() -> R) -> (R, Record) {
    let guard = Scope::enter();
    let out = f();
    (out, guard.finish())
}

pin_project_lite::pin_project! {
    /// A future run with a [`Record`] installed: every observation made
    /// while it is polled goes into the record, which
    /// [`Scoped::take_record`] hands back once it is done.
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        // What was observed so far (one pointer, null while empty: the
        // future stays small).
        record: Record,
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped").finish_non_exhaustive()
    }
}

impl<F: Future> Scoped<F> {
    /// Run `fut` with `record` (usually from [`scope`]) installed.
    pub fn new(record: Record, fut: F) -> Self {
        Self { inner: fut, record }
    }

    /// Call `make` (a service's `call`, which may observe already) with a
    /// fresh record installed, and run the future it makes with that
    /// record: [`scope`] and [`Scoped::new`] in one step.
    #[inline(always)]
    pub fn call(make: impl FnOnce() -> F) -> Self {
        let guard = Scope::enter();
        // Fields are evaluated in the order written: `make` runs inside
        // the scope.
        Self {
            inner: make(),
            record: guard.finish(),
        }
    }

    /// The record, once the future is done (what was observed so far
    /// before; an empty one when taken already).
    pub fn take_record(self: Pin<&mut Self>) -> Record {
        std::mem::take(self.project().record)
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let guard = Scope::enter();
        let out = this.inner.poll(cx);
        guard.leave(this.record);
        out
    }
}

/// Run `fut` with a fresh record and return its output and the record.
pub async fn scoped<F: Future>(fut: F) -> (F::Output, Record) {
    let mut fut = std::pin::pin!(Scoped::new(Record::new(), fut));
    let out = fut.as_mut().await;
    (out, fut.take_record())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_record_counts_what_it_drops() {
        let mut rec = Record::new();
        for _ in 0..RECORD_CAPACITY + 2 {
            rec.push(Observation::Coalesced);
        }
        assert_eq!(rec.len(), RECORD_CAPACITY);
        assert_eq!(rec.dropped(), 2);
    }

    #[test]
    fn observations_outside_a_scope_go_nowhere() {
        assert!(!listening());
        record(Observation::NearCacheHit);
        let ((), rec) = scope(|| {
            assert!(listening());
            record(Observation::NearCacheHit);
        });
        assert_eq!(rec.iter().collect::<Vec<_>>(), [&Observation::NearCacheHit]);
    }

    #[test]
    fn nested_scopes_each_get_their_own_observations() {
        let ((inner, mid), outer) = scope(|| {
            record(Observation::Coalesced);
            let (mid, inner) = scope(|| {
                record(Observation::NearCacheHit);
                // A scope that observes nothing, inside one that did.
                let ((), empty) = scope(|| {});
                assert!(empty.is_empty());
                record(Observation::TryAgain { slot: 2 });
            });
            record(Observation::TryAgain { slot: 3 });
            (inner, mid)
        });
        let () = mid;
        assert_eq!(
            inner.iter().collect::<Vec<_>>(),
            [
                &Observation::NearCacheHit,
                &Observation::TryAgain { slot: 2 }
            ]
        );
        assert_eq!(
            outer.iter().collect::<Vec<_>>(),
            [&Observation::Coalesced, &Observation::TryAgain { slot: 3 }]
        );
        assert!(!listening());
    }

    #[test]
    fn a_panic_inside_a_scope_leaves_it() {
        let caught = std::panic::catch_unwind(|| {
            scope(|| {
                record(Observation::Coalesced);
                let _ = scope(|| {
                    record(Observation::NearCacheHit);
                    panic!("inner");
                });
            })
        });
        assert!(caught.is_err());
        // Nothing stays installed, and the dead scopes' observations do
        // not reach the next one.
        assert!(!listening());
        let ((), rec) = scope(|| record(Observation::TryAgain { slot: 1 }));
        assert_eq!(
            rec.iter().collect::<Vec<_>>(),
            [&Observation::TryAgain { slot: 1 }]
        );
        assert!(!PENDING.get());
    }

    #[test]
    fn a_scope_that_drops_observations_counts_them() {
        let ((), rec) = scope(|| {
            for _ in 0..RECORD_CAPACITY + 3 {
                record(Observation::Coalesced);
            }
        });
        assert_eq!(rec.len(), RECORD_CAPACITY);
        assert_eq!(rec.dropped(), 3);
    }

    #[tokio::test]
    async fn a_scope_collects_across_awaits() {
        let (n, rec) = scoped(async {
            record(Observation::TryAgain { slot: 1 });
            tokio::task::yield_now().await;
            record(Observation::Coalesced);
            7
        })
        .await;
        assert_eq!(n, 7);
        assert_eq!(rec.len(), 2);
    }
}
