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
/// Written only by the cluster controller, from what the leaf, the layers
/// and the health probes report to it
/// ([`Topology::report`](crate::Topology::report)); everyone else reads.
#[derive(Debug)]
pub struct NodeHealth {
    ewma_latency_us: AtomicU64,
    // Smoothed mean deviation of the latency (RFC 6298's RTTVAR, β = 1/4).
    latency_dev_us: AtomicU64,
    consecutive_failures: AtomicU32,
    link_up: AtomicBool,
    last_io_ms: AtomicU64,
    in_majority: AtomicBool,
    // Nanoseconds after `clock_base()` until which the node's breaker fails
    // fast; 0 = not open. A deadline rather than a flag, so routing tries the
    // node again when the cool-down ends without waiting for a call to flip it.
    breaker_open_until: AtomicU64,
    probed: AtomicBool,
    // Nanoseconds after `clock_base()` of the last time the node was
    // unreachable (or its breaker opened); 0 = writes may go to it. A time
    // rather than a flag: only a view fetched *after* it can clear it.
    write_fence: AtomicU64,
}

impl Default for NodeHealth {
    fn default() -> Self {
        // Fix the clock's base before any instant this node's fences and
        // deadlines are compared with (earlier instants all map to 0).
        let _ = clock_base();
        Self {
            ewma_latency_us: AtomicU64::new(0),
            latency_dev_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            link_up: AtomicBool::new(true),
            last_io_ms: AtomicU64::new(0),
            in_majority: AtomicBool::new(true),
            breaker_open_until: AtomicU64::new(0),
            probed: AtomicBool::new(false),
            write_fence: AtomicU64::new(0),
        }
    }
}

impl NodeHealth {
    /// Record a successful call and its latency (EWMA, α = 1/8, and its
    /// mean deviation, β = 1/4, as TCP's RTT estimator).
    pub(crate) fn record_success(&self, latency: Duration) {
        let sample = latency.as_micros().min(u64::MAX as u128) as u64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let (new, dev) = if old == 0 {
            (sample, sample / 2)
        } else {
            let dev = self.latency_dev_us.load(Ordering::Relaxed);
            (
                old - old / 8 + sample / 8,
                dev - dev / 4 + old.abs_diff(sample) / 4,
            )
        };
        self.ewma_latency_us.store(new.max(1), Ordering::Relaxed);
        self.latency_dev_us.store(dev, Ordering::Relaxed);
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// A high-percentile estimate of the node's latency: the smoothed
    /// latency plus four mean deviations (TCP's retransmission timeout,
    /// RFC 6298), a lock-free stand-in for a p99; zero before the first
    /// success. Hedged reads wait this long before asking a replica.
    pub fn latency_bound(&self) -> Duration {
        let mean = self.ewma_latency_us.load(Ordering::Relaxed);
        if mean == 0 {
            return Duration::ZERO;
        }
        let dev = self.latency_dev_us.load(Ordering::Relaxed);
        Duration::from_micros(mean.saturating_add(dev.saturating_mul(4)))
    }

    /// Record a failed call (timeout, connection error, ...).
    pub(crate) fn record_failure(&self) {
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
    pub(crate) fn set_replication(&self, link_up: bool, last_io: Duration) {
        self.link_up.store(link_up, Ordering::Relaxed);
        self.probed.store(true, Ordering::Relaxed);
        self.last_io_ms.store(
            last_io.as_millis().min(u64::MAX as u128) as u64,
            Ordering::Relaxed,
        );
    }

    /// Whether a circuit breaker guarding this node fails calls fast right
    /// now (open, cool-down not over). Written by the controller from the
    /// circuit breaker's reports, read by failover to route around the node.
    pub fn breaker_open(&self) -> bool {
        let until = self.breaker_open_until.load(Ordering::Relaxed);
        until != 0 && until > since_base(tokio::time::Instant::now())
    }

    /// Publish that the node's breaker fails fast until `until` (`None`:
    /// it admits calls).
    pub(crate) fn set_breaker_open_until(&self, until: Option<tokio::time::Instant>) {
        let v = until.map_or(0, |u| since_base(u).max(1));
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
    pub(crate) fn set_in_majority(&self, yes: bool) {
        self.in_majority.store(yes, Ordering::Relaxed);
    }

    /// Stop writes to this node until a fresh view confirms it still owns
    /// its slots: it was unreachable, timed out, or its breaker opened, so
    /// it may have been stalled or cut off past a promotion, and a replaced
    /// primary acknowledges writes that are then lost. Later calls move
    /// the fence forward, so only a view fetched after the last fault lifts it.
    /// Returns whether the fence is new (writes were not fenced before),
    /// for the observation [`FenceSet`](crate::Observation::FenceSet).
    pub(crate) fn fence_writes(&self) -> bool {
        let now = since_base(tokio::time::Instant::now()).max(1);
        self.write_fence.fetch_max(now, Ordering::Relaxed) == 0
    }

    /// Whether writes to this node wait for a confirmation
    /// (set by the controller when it fences the node).
    pub fn writes_fenced(&self) -> bool {
        self.write_fence.load(Ordering::Relaxed) != 0
    }

    /// Lift the write fence if it was set no later than `since` (when the
    /// view that confirmed the node as its slots' primary was requested).
    /// Returns whether writes may go to the node now. The rule is the
    /// controller policy's `lifts`, applied here in one compare-and-clear
    /// so that a fault racing the round keeps its fence.
    pub(crate) fn confirm_writes(&self, since: tokio::time::Instant) -> bool {
        // `max(1)` as in `fence_writes`: a fence set at the clock's base
        // instant is 1, and a round requested then must be able to lift it.
        let since = since_base(since).max(1);
        self.write_fence
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |fence| {
                crate::controller::policy::lifts((fence != 0).then_some(fence), since).then_some(0)
            })
            .is_ok()
            || !self.writes_fenced()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[test]
    fn latency_bound_follows_mean_and_spread() {
        let h = NodeHealth::default();
        assert_eq!(h.latency_bound(), Duration::ZERO);
        for _ in 0..200 {
            h.record_success(Duration::from_micros(1_000));
        }
        // steady latency: the bound converges to the mean
        let steady = h.latency_bound();
        assert!(steady >= Duration::from_micros(1_000), "{steady:?}");
        assert!(steady < Duration::from_micros(1_100), "{steady:?}");
        // a jittery node: the bound sits well above its mean
        for i in 0..200 {
            let us = if i % 2 == 0 { 500 } else { 1_500 };
            h.record_success(Duration::from_micros(us));
        }
        assert!(h.latency_bound() > h.ewma_latency() * 2, "{h:?}");
    }

    #[test]
    fn only_a_view_requested_after_the_last_fault_lifts_the_fence() {
        let h = NodeHealth::default();
        assert!(!h.writes_fenced());
        let before = Instant::now();
        h.fence_writes();
        assert!(h.writes_fenced());
        // A view requested before the fault proves nothing.
        assert!(!h.confirm_writes(
            before
                .checked_sub(Duration::from_millis(1))
                .unwrap_or(before)
        ));
        assert!(h.writes_fenced());
        // One requested after it does.
        let later = Instant::now() + Duration::from_millis(1);
        assert!(h.confirm_writes(later));
        assert!(!h.writes_fenced());
        // A later fault fences again; a round requested before it does not
        // lift it, one requested after it does.
        h.fence_writes();
        assert!(!h.confirm_writes(before));
        assert!(h.confirm_writes(Instant::now() + Duration::from_secs(1)));
        // Confirming an unfenced node is a no-op that says yes.
        assert!(h.confirm_writes(before));
    }
}
