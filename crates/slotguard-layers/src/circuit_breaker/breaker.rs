//! The state machine of one breaker, its sliding window, and the registry
//! of breakers a layer shares with its services.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use arc_swap::ArcSwap;
use slotguard_core::topology::AddrMap;
use slotguard_core::{classify, BoxError, BreakerScope, CacheRequest, Failure, Topology};
use tokio::time::Instant;

use super::config::BreakerConfig;

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
}

/// Whether an outcome is a failure of the node for the breaker.
///
/// A refusal by an inner breaker is not: it says nothing the inner breaker
/// has not already counted.
pub(crate) fn is_failure(err: &BoxError) -> bool {
    let failure = classify(err);
    failure.is_node_fault() && failure != Failure::CircuitOpen
}

/// Transition counters, shared by every breaker of a layer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) half_opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

/// What every breaker of a layer shares.
pub(crate) struct Common {
    pub(crate) config: BreakerConfig,
    pub(crate) counters: Counters,
    // Read on transitions only (rare), so a lock costs nothing on the hot
    // path; a lock rather than a plain field so `with_topology` works on a
    // layer that was already cloned.
    topology: RwLock<Option<Topology>>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the topology itself: every breaker would print the slot map.
        let publishing = self
            .topology
            .read()
            .is_ok_and(|topology| topology.is_some());
        f.debug_struct("Common")
            .field("config", &self.config)
            .field("counters", &self.counters)
            .field("publishing_to_topology", &publishing)
            .finish()
    }
}

impl Common {
    fn topology(&self) -> Option<Topology> {
        self.topology
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// Counts of one bucket of the sliding window.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    // Which bucket-length interval since the window's origin this is; a
    // ring slot holding an older index is stale.
    index: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Totals over the live buckets of a window.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    calls: u32,
    failures: u32,
    slow: u32,
}

/// A sliding time window: a ring of buckets, allocated once per breaker.
#[derive(Debug)]
struct Window {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    origin: Instant,
}

impl Window {
    fn new(config: &BreakerConfig, origin: Instant) -> Self {
        let n = config.window_buckets.max(1);
        let bucket_nanos =
            (config.window.as_nanos() / u128::from(n)).clamp(1, u128::from(u64::MAX));
        Self {
            buckets: vec![Bucket::default(); n as usize].into_boxed_slice(),
            bucket_nanos: bucket_nanos as u64,
            origin,
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / u128::from(self.bucket_nanos)).min(u128::from(u64::MAX)) as u64
    }

    fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Totals {
        let index = self.index(now);
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(index % len) as usize];
        if bucket.index != index {
            *bucket = Bucket {
                index,
                ..Bucket::default()
            };
        }
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failure));
        bucket.slow = bucket.slow.saturating_add(u32::from(slow));
        self.totals(index)
    }

    fn totals(&self, index: u64) -> Totals {
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| b.index <= index && b.index.saturating_add(len) > index)
            .fold(Totals::default(), |t, b| Totals {
                calls: t.calls.saturating_add(b.calls),
                failures: t.failures.saturating_add(b.failures),
                slow: t.slow.saturating_add(b.slow),
            })
    }

    fn reset(&mut self) {
        self.buckets.fill(Bucket::default());
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    // Bumped on every transition: an outcome of a call admitted in an
    // earlier period (e.g. before the breaker opened) is not counted.
    epoch: u64,
    window: Window,
    opened_at: Instant,
    probes_in_flight: u32,
    probes_ok: u32,
    // Failures in a row while closed (reset by any success).
    failure_run: u32,
}

/// One breaker: a scope and its state machine.
pub(crate) struct Breaker {
    scope: BreakerScope,
    common: Arc<Common>,
    inner: Mutex<Inner>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must never wait for (or deadlock on) a
        // call in progress; the shared settings are the layer's to print.
        let mut d = f.debug_struct("Breaker");
        d.field("scope", &self.scope);
        match self.inner.try_lock() {
            Ok(inner) => d.field("state", &inner.state),
            Err(_) => d.field("state", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl Breaker {
    fn new(scope: BreakerScope, common: Arc<Common>) -> Self {
        let now = Instant::now();
        let window = Window::new(&common.config, now);
        Self {
            scope,
            common,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                epoch: 0,
                window,
                opened_at: now,
                probes_in_flight: 0,
                probes_ok: 0,
                failure_run: 0,
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

    /// The current state, after a due cool-down ends.
    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        inner.state
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

    /// Admit a call, or `None` when it must fail fast.
    pub(crate) fn admit(self: &Arc<Self>, now: Instant) -> Option<Permit> {
        let mut inner = self.lock();
        self.advance(&mut inner, now);
        let probe = match inner.state {
            BreakerState::Closed => false,
            BreakerState::Open => return None,
            BreakerState::HalfOpen => {
                if inner.probes_in_flight.saturating_add(inner.probes_ok) >= self.probes() {
                    return None;
                }
                inner.probes_in_flight += 1;
                true
            }
        };
        Some(Permit {
            breaker: self.clone(),
            epoch: inner.epoch,
            probe,
            start: now,
            armed: true,
        })
    }

    fn record(&self, epoch: u64, probe: bool, failure: bool, slow: bool, now: Instant) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        match inner.state {
            BreakerState::Closed => {
                let totals = inner.window.record(now, failure, slow);
                inner.failure_run = if failure {
                    inner.failure_run.saturating_add(1)
                } else {
                    0
                };
                let run = self.common.config.consecutive_failures;
                if self.trips(totals) || (run > 0 && inner.failure_run >= run) {
                    self.transition(&mut inner, BreakerState::Open, now);
                }
            }
            BreakerState::HalfOpen if probe => {
                inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
                // A slow probe is no evidence of recovery; and it must not
                // keep its slot either, or the breaker would stay half-open
                // with no slot left.
                if failure || slow {
                    self.transition(&mut inner, BreakerState::Open, now);
                } else {
                    inner.probes_ok += 1;
                    if inner.probes_ok >= self.probes() {
                        self.transition(&mut inner, BreakerState::Closed, now);
                    }
                }
            }
            _ => {}
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
        if totals.calls < config.minimum_calls.max(1) {
            return false;
        }
        let calls = f64::from(totals.calls);
        f64::from(totals.failures) / calls >= config.failure_rate_threshold
            || f64::from(totals.slow) / calls >= config.slow_call_rate_threshold
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        inner.state = to;
        inner.epoch += 1;
        inner.probes_in_flight = 0;
        inner.probes_ok = 0;
        inner.failure_run = 0;
        let counters = &self.common.counters;
        match to {
            BreakerState::Open => {
                inner.opened_at = now;
                counters.opened.fetch_add(1, Ordering::Relaxed);
            }
            BreakerState::HalfOpen => {
                counters.half_opened.fetch_add(1, Ordering::Relaxed);
            }
            BreakerState::Closed => {
                inner.window.reset();
                counters.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Published under the breaker's lock, so racing transitions reach
        // the topology in the order they happened.
        if let (BreakerScope::Node(addr), Some(topology)) = (&self.scope, self.common.topology()) {
            // Open: routing avoids the node until the cool-down ends, then
            // sends it the half-open probes.
            let until = (to == BreakerState::Open).then(|| now + self.common.config.open_duration);
            topology.health(addr).set_breaker_open_until(until);
        }
        emit(&self.scope, to);
    }
}

/// One `tracing` event per transition, named after the new state.
fn emit(scope: &BreakerScope, to: BreakerState) {
    macro_rules! event {
        ($name:literal) => {
            match scope {
                BreakerScope::Node(addr) => tracing::info!(
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
}

impl Permit {
    /// Record the call's outcome.
    pub(crate) fn finish<T>(mut self, out: &Result<T, BoxError>) {
        self.armed = false;
        let now = Instant::now();
        let failure = out.as_ref().err().is_some_and(is_failure);
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

#[derive(Debug)]
enum Breakers {
    // Looked up on every call, so reads are lock-free; the mutex only
    // orders the writers (a first call to a node), which copy the map.
    PerNode {
        map: ArcSwap<AddrMap<Arc<Breaker>>>,
        write: Mutex<()>,
    },
    Global(Arc<Breaker>),
}

/// The breakers of one layer, shared with every service it made.
#[derive(Debug)]
pub(crate) struct Shared {
    common: Arc<Common>,
    breakers: Breakers,
}

impl Shared {
    fn common(config: BreakerConfig) -> Arc<Common> {
        Arc::new(Common {
            config,
            counters: Counters::default(),
            topology: RwLock::new(None),
        })
    }

    pub(crate) fn per_node(config: BreakerConfig) -> Self {
        Self {
            common: Self::common(config),
            breakers: Breakers::PerNode {
                map: ArcSwap::from_pointee(AddrMap::default()),
                write: Mutex::new(()),
            },
        }
    }

    pub(crate) fn global(config: BreakerConfig) -> Self {
        let common = Self::common(config);
        Self {
            breakers: Breakers::Global(Arc::new(Breaker::new(
                BreakerScope::Global,
                common.clone(),
            ))),
            common,
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.common.counters
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.common.config
    }

    /// Publish breaker states to `topology` from now on, and the current
    /// ones right away.
    pub(crate) fn set_topology(&self, topology: Topology) {
        *self
            .common
            .topology
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(topology.clone());
        if let Breakers::PerNode { map, .. } = &self.breakers {
            for (addr, breaker) in map.load().iter() {
                // Under the breaker's lock, like a transition, so a racing
                // transition cannot be overwritten with an older state.
                let inner = breaker.lock();
                let until = (inner.state == BreakerState::Open)
                    .then(|| inner.opened_at + self.common.config.open_duration);
                topology.health(addr).set_breaker_open_until(until);
            }
        }
    }

    /// The breaker guarding `req`; `None` for a request without a node when
    /// breakers are per node.
    pub(crate) fn breaker_for(&self, req: &CacheRequest) -> Option<Arc<Breaker>> {
        match &self.breakers {
            Breakers::Global(breaker) => Some(breaker.clone()),
            Breakers::PerNode { map, write } => {
                let addr = req.node()?;
                if let Some(breaker) = map.load().get(addr) {
                    return Some(breaker.clone());
                }
                // First call to this node: the only allocating path.
                let _writer = write
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let current = map.load_full();
                if let Some(breaker) = current.get(addr) {
                    return Some(breaker.clone());
                }
                let breaker = Arc::new(Breaker::new(
                    BreakerScope::Node(addr.clone()),
                    self.common.clone(),
                ));
                let mut next = AddrMap::clone(&current);
                next.insert(addr.clone(), breaker.clone());
                map.store(Arc::new(next));
                Some(breaker)
            }
        }
    }

    pub(crate) fn state(&self, scope: &BreakerScope) -> BreakerState {
        let now = Instant::now();
        match (&self.breakers, scope) {
            (Breakers::Global(breaker), BreakerScope::Global) => breaker.state(now),
            (Breakers::PerNode { map, .. }, BreakerScope::Node(addr)) => {
                let breaker = map.load().get(addr).cloned();
                breaker.map_or(BreakerState::Closed, |b| b.state(now))
            }
            _ => BreakerState::Closed,
        }
    }

    pub(crate) fn states(&self) -> Vec<(BreakerScope, BreakerState)> {
        let now = Instant::now();
        match &self.breakers {
            Breakers::Global(breaker) => vec![(BreakerScope::Global, breaker.state(now))],
            Breakers::PerNode { map, .. } => {
                // A snapshot: reading a state may run a transition (a log
                // event, a topology update) while calls go on.
                let breakers: Vec<Arc<Breaker>> = map.load().values().cloned().collect();
                let mut states: Vec<_> = breakers
                    .iter()
                    .map(|b| (b.scope.clone(), b.state(now)))
                    .collect();
                states.sort_by(|a, b| match (&a.0, &b.0) {
                    (BreakerScope::Node(x), BreakerScope::Node(y)) => x.cmp(y),
                    _ => std::cmp::Ordering::Equal,
                });
                states
            }
        }
    }
}
