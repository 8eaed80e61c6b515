//! Live health of one node, shared by every map generation.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

fn clock_base() -> tokio::time::Instant {
    static BASE: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(tokio::time::Instant::now)
}

fn since_base(t: tokio::time::Instant) -> u64 {
    t.saturating_duration_since(clock_base())
        .as_nanos()
        .min(u64::MAX as u128 - 1) as u64
}

/// Live health of one node, shared by every map generation.
///
/// Written by the leaf and the layers from observed call outcomes, and by the
/// health probes (`INFO replication`, `CLUSTER INFO`).
#[derive(Debug)]
pub struct NodeHealth {
    ewma_latency_us: AtomicU64,
    consecutive_failures: AtomicU32,
    link_up: AtomicBool,
    last_io_ms: AtomicU64,
    in_majority: AtomicBool,
    // Nanoseconds after `clock_base()` until which the node's breaker fails
    // fast; 0 = not open. A deadline rather than a flag, so routing tries the
    // node again when the cool-down ends without waiting for a call to flip it.
    breaker_open_until: AtomicU64,
    probed: AtomicBool,
}

impl Default for NodeHealth {
    fn default() -> Self {
        Self {
            ewma_latency_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            link_up: AtomicBool::new(true),
            last_io_ms: AtomicU64::new(0),
            in_majority: AtomicBool::new(true),
            breaker_open_until: AtomicU64::new(0),
            probed: AtomicBool::new(false),
        }
    }
}

impl NodeHealth {
    /// Record a successful call and its latency (EWMA, α = 1/8).
    pub fn record_success(&self, latency: Duration) {
        let sample = latency.as_micros().min(u64::MAX as u128) as u64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.ewma_latency_us.store(new.max(1), Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Record a failed call (timeout, connection error, ...).
    pub fn record_failure(&self) {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Smoothed latency of successful calls; zero before the first one.
    pub fn ewma_latency(&self) -> Duration {
        Duration::from_micros(self.ewma_latency_us.load(Ordering::Relaxed))
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// For replicas: `master_link_status:up` at the last probe.
    pub fn link_up(&self) -> bool {
        self.link_up.load(Ordering::Relaxed)
    }

    /// For replicas: `master_last_io_seconds_ago` at the last probe.
    pub fn last_io(&self) -> Duration {
        Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed))
    }

    /// Record a replica's replication link state from a probe.
    pub fn set_replication(&self, link_up: bool, last_io: Duration) {
        self.link_up.store(link_up, Ordering::Relaxed);
        self.probed.store(true, Ordering::Relaxed);
        self.last_io_ms.store(
            last_io.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Whether a circuit breaker guarding this node fails calls fast right
    /// now (open, cool-down not over). Published by the circuit-breaker
    /// layer, read by failover to route around the node.
    pub fn breaker_open(&self) -> bool {
        let until = self.breaker_open_until.load(Ordering::Relaxed);
        until != 0 && until > since_base(tokio::time::Instant::now())
    }

    /// Publish that the node's breaker fails fast until `until` (`None`:
    /// it admits calls).
    pub fn set_breaker_open_until(&self, until: Option<tokio::time::Instant>) {
        let v = until.map_or(0, |u| since_base(u).max(1));
        self.breaker_open_until.store(v, Ordering::Relaxed);
    }

    /// Publish the node's breaker as open until told otherwise (`true`) or
    /// admitting (`false`).
    pub fn set_breaker_open(&self, open: bool) {
        let v = if open { u64::MAX } else { 0 };
        self.breaker_open_until.store(v, Ordering::Relaxed);
    }

    /// Whether a health probe has reported on this node yet (before that,
    /// `link_up` is an optimistic default).
    pub fn probed(&self) -> bool {
        self.probed.load(Ordering::Relaxed)
    }

    /// Whether the node agreed with the majority view at the last refresh.
    pub fn in_majority(&self) -> bool {
        self.in_majority.load(Ordering::Relaxed)
    }

    /// Mark the node as inside or outside the majority view.
    pub fn set_in_majority(&self, yes: bool) {
        self.in_majority.store(yes, Ordering::Relaxed);
    }
}
