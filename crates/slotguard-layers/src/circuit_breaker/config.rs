//! Settings of the circuit breaker.

use std::time::Duration;

/// When a breaker opens and how it recovers.
///
/// Rates are judged over a sliding time window made of
/// [`window_buckets`](Self::window_buckets) buckets: the window slides one
/// bucket at a time, so an outcome stops counting between `window` and
/// `window` + one bucket after it was recorded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Open when at least this share of the calls in the window failed (a
    /// node fault: timeout, connection, `LOADING`, `BUSY`, overloaded,
    /// indeterminate; `CLUSTERDOWN` only for a global breaker). Default 0.5.
    pub failure_rate_threshold: f64,
    /// Open when at least this share of the calls in the window were slow.
    /// Default 0.8.
    pub slow_call_rate_threshold: f64,
    /// A call that takes longer than this is slow, whether it succeeded or
    /// not. Default 50 ms.
    pub slow_call_duration: Duration,
    /// Fewest calls in the window before the rates are judged (at least 1).
    /// Default 20.
    pub minimum_calls: u32,
    /// Open after this many failures in a row, whatever the window says
    /// (0 turns it off). Default 5.
    ///
    /// Why: rates over a time window react slowly on a busy node. A
    /// primary that served 20,000 calls in the last 10 s and then stalls
    /// needs 20,000 failures to reach a 50 % failure rate, while every
    /// caller pays a full timeout per call. A stalled node fails every call,
    /// so a short run of failures opens the breaker within one timeout.
    pub consecutive_failures: u32,
    /// Length of the sliding window. Default 10 s.
    pub window: Duration,
    /// How many buckets the window is cut into (at least 1). Default 10
    /// (one-second buckets).
    pub window_buckets: u32,
    /// How long an open breaker refuses calls before it lets probes through.
    /// Default 1 s.
    pub open_duration: Duration,
    /// Calls admitted while half-open (at least 1); when that many succeed
    /// in time, the breaker closes. Default 3.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 0.8,
            slow_call_duration: Duration::from_millis(50),
            minimum_calls: 20,
            consecutive_failures: 5,
            window: Duration::from_secs(10),
            window_buckets: 10,
            open_duration: Duration::from_secs(1),
            half_open_probes: 3,
        }
    }
}

impl BreakerConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_failure_rate_threshold => failure_rate_threshold: f64,
        with_slow_call_rate_threshold => slow_call_rate_threshold: f64,
        with_slow_call_duration => slow_call_duration: Duration,
    }

    /// Set [`minimum_calls`](Self::minimum_calls).
    pub fn with_minimum_calls(mut self, minimum_calls: u32) -> Self {
        self.minimum_calls = minimum_calls.max(1);
        self
    }

    slotguard_core::setters! {
        with_consecutive_failures => consecutive_failures: u32,
        with_window => window: Duration,
    }

    /// Set [`window_buckets`](Self::window_buckets).
    pub fn with_window_buckets(mut self, window_buckets: u32) -> Self {
        self.window_buckets = window_buckets.max(1);
        self
    }

    slotguard_core::setters! {
        with_open_duration => open_duration: Duration,
    }

    /// Set [`half_open_probes`](Self::half_open_probes).
    pub fn with_half_open_probes(mut self, half_open_probes: u32) -> Self {
        self.half_open_probes = half_open_probes.max(1);
        self
    }
}
