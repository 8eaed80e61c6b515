//! The per-request record and the scope it is installed in (see the
//! module docs of [`observe`](super)).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
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
/// nothing and is cheap to move in and out of the task-local scope on
/// every poll. The first observation allocates its fixed-capacity list
/// (a request that was redirected, failed over or fell back).
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

thread_local! {
    // The record of the request being polled on this thread (`None`: no
    // listener). A plain cell rather than a tokio task-local: entering and
    // leaving a scope is two cell swaps, with no lazy initialisation or
    // borrow flag (this runs around every poll of every request).
    static CURRENT: Cell<Option<Record>> = const { Cell::new(None) };
}

/// Report an observation about the request being served. A no-op unless a
/// listener installed a record with [`scope`]/[`scoped`] around the call.
pub fn record(observation: Observation) {
    // Outside a scope the cell holds `None`: nobody listens.
    let _ = CURRENT.try_with(|cell| {
        if let Some(mut rec) = cell.take() {
            rec.push(observation);
            cell.set(Some(rec));
        }
    });
}

/// Whether a listener collects observations for the current request (to
/// skip building one that nobody reads).
pub fn listening() -> bool {
    CURRENT
        .try_with(|cell| {
            let rec = cell.take();
            let yes = rec.is_some();
            cell.set(rec);
            yes
        })
        .unwrap_or(false)
}

/// A record installed on this thread; the previous one comes back when it
/// is left, also on panic.
struct Installed {
    // `Some` until restored: what the cell held before.
    prev: Option<Option<Record>>,
}

impl Installed {
    fn enter(record: Record) -> Self {
        let prev = CURRENT.try_with(|cell| cell.replace(Some(record))).ok();
        Self { prev }
    }

    /// Leave the scope: the record as the inner code left it.
    fn exit(mut self) -> Record {
        self.restore().unwrap_or_default()
    }

    fn restore(&mut self) -> Option<Record> {
        let prev = self.prev.take()?;
        CURRENT.try_with(|cell| cell.replace(prev)).ok().flatten()
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// Run `f` (a service's `call`, which may already observe something) with
/// a fresh record installed; return its result and the record.
pub fn scope<R>(f: impl FnOnce() -> R) -> (R, Record) {
    let installed = Installed::enter(Record::new());
    let out = f();
    (out, installed.exit())
}

pin_project_lite::pin_project! {
    /// A future run with a [`Record`] installed: every observation made
    /// while it is polled goes into the record, which
    /// [`Scoped::take_record`] hands back once it is done.
    pub struct Scoped<F> {
        #[pin]
        inner: F,
        // Between polls (one pointer: the future stays small).
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
    /// record: [`scope`] and [`Scoped::new`] in one step, building the
    /// (often large) future in place rather than moving it out of a tuple.
    #[inline(always)]
    pub fn call(make: impl FnOnce() -> F) -> Self {
        let installed = Installed::enter(Record::new());
        // Fields are evaluated in the order written: `make` runs with the
        // record installed, and the struct is the return value, so the
        // future can be built in the caller's slot instead of copied there.
        Self {
            inner: make(),
            record: installed.exit(),
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let installed = Installed::enter(std::mem::take(this.record));
        let out = this.inner.poll(cx);
        *this.record = installed.exit();
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
