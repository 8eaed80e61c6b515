//! The state machine of one breaker.
//!
//! Every call through a breaker is admitted and recorded, so a closed
//! breaker does both without its lock: the state and its epoch are one
//! atomic word, the window and the run of failures are atomics. The lock
//! orders what is rare: transitions, half-open probes, and the cool-down
//! check of an open breaker.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use slotguard_core::controller::BreakerChanged;
use slotguard_core::observe::BreakerPhase;
use slotguard_core::{BoxError, BreakerScope, Topology};
use tokio::time::Instant;

use super::judge::{judge, Outcome};
use super::registry::Common;
use super::window::{Totals, Window};

/// The state of one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Admitting every call and judging their outcomes.
    Closed,
    /// Refusing every call until the cool-down is over.
    Open,
    /// Admitting a few probe calls to decide between closed and open.
    HalfOpen,
}

impl BreakerState {
    /// A short lowercase name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The same state, as observations report it.
    pub fn phase(self) -> BreakerPhase {
        match self {
            BreakerState::Closed => BreakerPhase::Closed,
            BreakerState::Open => BreakerPhase::Open,
            BreakerState::HalfOpen => BreakerPhase::HalfOpen,
        }
    }
}

/// `(epoch << 2) | state`: what a call reads to be admitted.
fn pack(epoch: u64, state: BreakerState) -> u64 {
    let code = match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    };
    (epoch << 2) | code
}

fn unpack(word: u64) -> (u64, BreakerState) {
    let state = match word & 3 {
        0 => BreakerState::Closed,
        1 => BreakerState::Open,
        _ => BreakerState::HalfOpen,
    };
    (word >> 2, state)
}

/// What only the lock holder changes.
#[derive(Debug)]
struct Inner {
    state: BreakerState,
    // Bumped on every transition: an outcome of a call admitted in an
    // earlier period (e.g. before the breaker opened) is not counted.
    epoch: u64,
    opened_at: Instant,
    probes_in_flight: u32,
    probes_ok: u32,
}

/// One breaker: a scope and its state machine.
pub(crate) struct Breaker {
    scope: BreakerScope,
    common: Arc<Common>,
    // `pack(epoch, state)`, written under `inner`'s lock on every
    // transition, read without it by every call.
    current: AtomicU64,
    // While open: nanoseconds (on the window's clock) when the cool-down
    // ends, so calls refused during it take no lock either.
    open_until: AtomicU64,
    window: Window,
    // With both rate thresholds above 0, only a failed or slow outcome in
    // the window can trip a rate (see `Window::record`).
    rates_need_bad: bool,
    // Failures in a row while closed (reset by any success).
    failure_run: AtomicU32,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The shared settings are the layer's to print.
        let (_, state) = unpack(self.current.load(Ordering::Acquire));
        f.debug_struct("Breaker")
            .field("scope", &self.scope)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub(super) fn new(scope: BreakerScope, common: Arc<Common>) -> Self {
        let now = Instant::now();
        let window = Window::new(&common.config, now);
        let config = &common.config;
        let rates_need_bad =
            config.failure_rate_threshold > 0.0 && config.slow_call_rate_threshold > 0.0;
        Self {
            scope,
            rates_need_bad,
            common,
            current: AtomicU64::new(pack(0, BreakerState::Closed)),
            open_until: AtomicU64::new(0),
            window,
            failure_run: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                epoch: 0,
                opened_at: now,
                probes_in_flight: 0,
                probes_ok: 0,
            }),
        }
    }

    pub(crate) fn scope(&self) -> &BreakerScope {
        &self.scope
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing inside panics while holding the lock; if something did,
        // the counts are still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn probes(&self) -> u32 {
        self.common.config.half_open_probes.max(1)
    }

    /// The current state: an open breaker whose cool-down is over reads
    /// as half-open. A read, never a transition (the next call makes it).
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        let inner = self.lock();
        if inner.state == BreakerState::Open
            && now.saturating_duration_since(inner.opened_at) >= self.common.config.open_duration
        {
            return BreakerState::HalfOpen;
        }
        inner.state
    }

    /// Publish the current state to `topology`, under the lock like a
    /// transition, so a racing transition cannot be overwritten with an
    /// older state.
    pub(super) fn publish(&self, topology: &Topology) {
        let BreakerScope::Node(addr) = &self.scope else {
            return;
        };
        let inner = self.lock();
        let until = (inner.state == BreakerState::Open)
            .then(|| inner.opened_at + self.common.config.open_duration);
        topology.report(BreakerChanged::new(addr, inner.state.phase(), until, false));
    }

    /// Open → half-open once the cool-down is over. Checked lazily (on calls
    /// and state reads), so no timer task is needed.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if inner.state == BreakerState::Open
            && now.saturating_duration_since(inner.opened_at) >= self.common.config.open_duration
        {
            self.transition(inner, BreakerState::HalfOpen, now);
        }
    }

    /// Admit a call, or `None` when it must fail fast. A `write` is never
    /// a half-open probe: the node may be a primary replaced while it was
    /// failing, which would acknowledge the write and lose it. While
    /// half-open a write passes (uncounted) only once the topology confirms
    /// the node's writes (see `NodeHealth::writes_fenced`), else it fails
    /// fast like a call over the probe limit.
    pub(crate) fn admit(self: &Arc<Self>, now: Instant, write: bool) -> Option<Permit> {
        let (epoch, state) = unpack(self.current.load(Ordering::Acquire));
        match state {
            // The common case, without the lock.
            BreakerState::Closed => return Some(self.permit(epoch, false, now)),
            BreakerState::Open
                if self.window.nanos(now) < self.open_until.load(Ordering::Acquire) =>
            {
                return None
            }
            _ => {}
        }
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        let probe = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open => return None,
            BreakerState::HalfOpen if write => {
                drop(inner);
                if !self.writes_confirmed() {
                    return None;
                }
                // Not a probe: its outcome is not counted (the permit's
                // epoch is a half-open one, which `record_closed` ignores).
                false
            }
            BreakerState::HalfOpen => {
                if inner.probes_in_flight.saturating_add(inner.probes_ok) >= self.probes() {
                    return None;
                }
                inner.probes_in_flight += 1;
                true
            }
        };
        Some(self.permit(self.epoch_now(), probe, now))
    }

    /// Whether a call (not a write) now would be refused: open within its
    /// cool-down, or half-open with every probe slot taken. A read, never
    /// a transition (a cool-down that is over reads as a free probe slot).
    pub(crate) fn refuses(&self, now: Instant) -> bool {
        let (_, state) = unpack(self.current.load(Ordering::Acquire));
        match state {
            BreakerState::Closed => false,
            BreakerState::Open => self.window.nanos(now) < self.open_until.load(Ordering::Acquire),
            BreakerState::HalfOpen => {
                let inner = self.lock();
                inner.state == BreakerState::HalfOpen
                    && inner.probes_in_flight.saturating_add(inner.probes_ok) >= self.probes()
            }
        }
    }

    fn epoch_now(&self) -> u64 {
        unpack(self.current.load(Ordering::Acquire)).0
    }

    /// Whether the topology says writes may go to this breaker's node
    /// again: not fenced, in the majority. Without a topology, or for a
    /// global breaker, nobody can confirm it: no.
    fn writes_confirmed(&self) -> bool {
        let (BreakerScope::Node(addr), Some(topology)) = (&self.scope, self.common.topology())
        else {
            return false;
        };
        let health = topology.health(addr);
        !health.writes_fenced() && health.in_majority()
    }

    fn permit(self: &Arc<Self>, epoch: u64, probe: bool, start: Instant) -> Permit {
        Permit {
            breaker: self.clone(),
            epoch,
            probe,
            start,
            armed: true,
            judge: None,
        }
    }

    fn record(&self, epoch: u64, probe: bool, failure: bool, slow: bool, now: Instant) {
        if !probe {
            self.record_closed(epoch, failure, slow, now);
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != epoch || inner.state != BreakerState::HalfOpen {
            return;
        }
        inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        // A slow probe is no evidence of recovery; and it must not keep its
        // slot either, or the breaker would stay half-open with no slot left.
        if failure || slow {
            self.transition(&mut inner, BreakerState::Open, now);
        } else {
            inner.probes_ok += 1;
            if inner.probes_ok >= self.probes() {
                self.transition(&mut inner, BreakerState::Closed, now);
            }
        }
    }

    /// The outcome of a call admitted while closed: counted without the
    /// lock, which is taken only to open the breaker.
    fn record_closed(&self, epoch: u64, failure: bool, slow: bool, now: Instant) {
        // Only calls of the current closed period count (a permit's epoch
        // names one period, and only closed periods issue non-probe ones).
        if self.current.load(Ordering::Acquire) != pack(epoch, BreakerState::Closed) {
            return;
        }
        let totals = self.window.record(now, failure, slow, self.rates_need_bad);
        let run = if failure {
            self.failure_run
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        } else {
            // Read first: a store on every success would make every call
            // write the same cache line.
            if self.failure_run.load(Ordering::Relaxed) != 0 {
                self.failure_run.store(0, Ordering::Relaxed);
            }
            0
        };
        let max_run = self.common.config.consecutive_failures;
        let rate_trips = totals.is_some_and(|t| self.trips(t));
        if !(rate_trips || (max_run > 0 && run >= max_run)) {
            return;
        }
        let mut inner = self.lock();
        // Another outcome may have opened it first.
        if inner.epoch == epoch && inner.state == BreakerState::Closed {
            self.transition(&mut inner, BreakerState::Open, now);
        }
    }

    /// A probe ended without an outcome (its future was dropped).
    fn release_probe(&self, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch && inner.state == BreakerState::HalfOpen {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    fn trips(&self, totals: Totals) -> bool {
        let config = &self.common.config;
        if totals.calls < u64::from(config.minimum_calls.max(1)) {
            return false;
        }
        let calls = totals.calls as f64;
        totals.failures as f64 / calls >= config.failure_rate_threshold
            || totals.slow as f64 / calls >= config.slow_call_rate_threshold
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        inner.state = to;
        inner.epoch += 1;
        inner.probes_in_flight = 0;
        inner.probes_ok = 0;
        self.failure_run.store(0, Ordering::Relaxed);
        let counters = &self.common.counters;
        match to {
            BreakerState::Open => {
                inner.opened_at = now;
                let until = now + self.common.config.open_duration;
                self.open_until
                    .store(self.window.nanos(until), Ordering::Release);
                counters.opened.fetch_add(1, Ordering::Relaxed);
            }
            BreakerState::HalfOpen => {
                counters.half_opened.fetch_add(1, Ordering::Relaxed);
            }
            BreakerState::Closed => {
                // Before the new state is visible: the first outcomes of
                // the new period land in a fresh window.
                self.window.reset();
                counters.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.current.store(pack(inner.epoch, to), Ordering::Release);
        // Published under the breaker's lock, so racing transitions reach
        // the topology in the order they happened.
        if let (BreakerScope::Node(addr), Some(topology)) = (&self.scope, self.common.topology()) {
            // The controller records the open-until (routing avoids the
            // node until the cool-down ends, then sends it the half-open
            // probes) and, on opening, fences the node's writes and asks
            // for a refresh.
            let until = (to == BreakerState::Open).then(|| now + self.common.config.open_duration);
            topology.report(BreakerChanged::new(addr, to.phase(), until, true));
        }
        emit(&self.scope, self.common.name, to);
    }
}

/// One `tracing` event per transition, named after the new state; a named
/// global breaker's `scope` is its name.
fn emit(scope: &BreakerScope, name: Option<&'static str>, to: BreakerState) {
    let scope_node = match scope {
        BreakerScope::Node(addr) => Some(addr),
        _ => None,
    };
    let scope: &dyn fmt::Display = match &name {
        Some(name) => name,
        None => scope,
    };
    macro_rules! event {
        ($name:literal) => {
            match scope_node {
                Some(addr) => tracing::info!(
                    name: $name,
                    target: "slotguard::breaker",
                    node = %addr,
                    state = to.name(),
                    $name
                ),
                _ => tracing::info!(
                    name: $name,
                    target: "slotguard::breaker",
                    scope = %scope,
                    state = to.name(),
                    $name
                ),
            }
        };
    }
    match to {
        BreakerState::Open => event!("breaker_open"),
        BreakerState::HalfOpen => event!("breaker_half_open"),
        BreakerState::Closed => event!("breaker_closed"),
    }
}

/// An admitted call. Dropped before [`finish`](Self::finish) (the caller
/// gave up), it counts nothing but gives its probe slot back.
#[derive(Debug)]
pub(crate) struct Permit {
    breaker: Arc<Breaker>,
    epoch: u64,
    probe: bool,
    start: Instant,
    armed: bool,
    // The rule outcomes are judged by, when not the cluster's (`judge`).
    judge: Option<super::guard::Judge>,
}

impl Permit {
    /// Judge the outcome with `rule` instead of the cluster's rule.
    pub(crate) fn judged_by(mut self, rule: super::guard::Judge) -> Self {
        self.judge = Some(rule);
        self
    }

    /// Record the call's outcome.
    pub(crate) fn finish<T>(mut self, out: &Result<T, BoxError>) {
        let err = out.as_ref().err();
        let outcome = match self.judge {
            Some(rule) => rule(err),
            None => judge(&self.breaker.scope, err),
        };
        let failure = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            // Dropped armed: a probe gives its slot back, nothing counted.
            Outcome::Neutral => return,
        };
        self.armed = false;
        let now = Instant::now();
        let config = &self.breaker.common.config;
        let slow = now.saturating_duration_since(self.start) > config.slow_call_duration;
        self.breaker
            .record(self.epoch, self.probe, failure, slow, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.armed && self.probe {
            self.breaker.release_probe(self.epoch);
        }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
