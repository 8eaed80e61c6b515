//! Hedged replica reads: a read still waiting on its primary after the
//! node's usual worst latency is also sent to a replica; the first good
//! answer wins.
//!
//! Why: without a hedge, a read on a stalled primary waits for the primary
//! attempt's deadline before it tries a replica (measured before hedging:
//! the slowest GET of a 6 s stall took 255 ms, and the worst second fell to
//! 81–86 % of the healthy rate). The delay is the primary's own high
//! percentile ([`NodeHealth::latency_bound`]), floored so ordinary jitter
//! does not hedge and capped so a stalled node costs at most the cap.
//! Hedges draw on a budget (a share of the reads that may hedge, over a
//! window), so a slow cluster is not hit twice as hard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use slotguard_core::NodeHealth;
use tower::retry::budget::Budget;

use crate::redirect::RetryBudget;

/// How reads hedge to replicas. On by default for reads that may be
/// answered by a replica (see [`FailoverPolicy::hedge`](super::FailoverPolicy::hedge)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HedgePolicy {
    /// Shortest hedge delay, whatever the primary's latency. Default 5 ms.
    pub floor: Duration,
    /// Longest hedge delay; also the delay while the primary has no latency
    /// yet. Default 25 ms.
    pub cap: Duration,
    /// Hedges allowed per read that may hedge, averaged over `budget_window`
    /// (`0.2`: one hedge per five reads). Default 0.2.
    pub budget_ratio: f32,
    /// Hedges per second allowed whatever the traffic. Default 10.
    pub budget_min_per_sec: u32,
    /// The window the budget averages over (1 s to 60 s). Default 10 s.
    pub budget_window: Duration,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            floor: Duration::from_millis(5),
            cap: Duration::from_millis(25),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl HedgePolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the hedge delay kept within `floor..=cap`.
    pub fn with_delay_bounds(mut self, floor: Duration, cap: Duration) -> Self {
        self.floor = floor;
        self.cap = cap.max(floor);
        self
    }

    /// With a budget of `ratio` hedges per read plus `min_per_sec`, over
    /// `window`.
    pub fn with_budget(mut self, ratio: f32, min_per_sec: u32, window: Duration) -> Self {
        self.budget_ratio = ratio;
        self.budget_min_per_sec = min_per_sec;
        self.budget_window = window;
        self
    }

    /// How long a read on a node with `health` waits before it hedges.
    pub(crate) fn delay(&self, health: &NodeHealth) -> Duration {
        let bound = health.latency_bound();
        if bound.is_zero() {
            return self.cap;
        }
        bound.clamp(self.floor, self.cap.max(self.floor))
    }
}

/// What hedging did so far (counts since the layer was built).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HedgeStats {
    /// Hedges sent to a replica.
    pub sent: u64,
    /// Hedges whose answer won (came first, and was good).
    pub won: u64,
    /// Hedges the budget refused (the read waited on its primary alone).
    pub refused: u64,
}

/// A layer's hedging state: its policy, budget and counters.
#[derive(Debug)]
pub(crate) struct Hedger {
    pub(crate) policy: HedgePolicy,
    budget: RetryBudget,
    sent: AtomicU64,
    won: AtomicU64,
    refused: AtomicU64,
}

impl Hedger {
    pub(crate) fn new(policy: HedgePolicy) -> Self {
        Self {
            budget: RetryBudget::new(
                policy.budget_window,
                policy.budget_min_per_sec,
                policy.budget_ratio,
            ),
            policy,
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// A read that may hedge was sent: it earns its share of a hedge.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Whether the budget pays for one more hedge (counted either way).
    pub(crate) fn withdraw(&self) -> bool {
        let ok = self.budget.withdraw();
        let counter = if ok { &self.sent } else { &self.refused };
        counter.fetch_add(1, Ordering::Relaxed);
        ok
    }

    pub(crate) fn won(&self) {
        self.won.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> HedgeStats {
        HedgeStats {
            sent: self.sent.load(Ordering::Relaxed),
            won: self.won.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_is_the_latency_bound_within_floor_and_cap() {
        use crate::test_support::{addr, install, probed, view};
        let p = HedgePolicy::default();
        // The node's cell, written by the controller from probe reports.
        let t = slotguard_core::Topology::new();
        install(&t, &view(1, &[(0, 16383, 1)]));
        let h = t.health(&addr(1));
        assert_eq!(p.delay(&h), p.cap, "no latency yet: the cap");
        for _ in 0..100 {
            probed(&t, &addr(1), Some(Duration::from_micros(200)));
        }
        assert_eq!(p.delay(&h), p.floor, "a fast node: the floor");
        for _ in 0..100 {
            probed(&t, &addr(1), Some(Duration::from_millis(12)));
        }
        let d = p.delay(&h);
        assert!(d > p.floor && d < p.cap, "{d:?}");
        for _ in 0..100 {
            probed(&t, &addr(1), Some(Duration::from_secs(1)));
        }
        assert_eq!(p.delay(&h), p.cap, "a slow node: the cap");
    }

    #[test]
    fn the_budget_pays_for_a_share_of_reads() {
        let h = Hedger::new(HedgePolicy::default().with_budget(0.1, 0, Duration::from_secs(10)));
        assert!(!h.withdraw(), "nothing deposited, no floor");
        for _ in 0..100 {
            h.deposit();
        }
        let paid = (0..100).filter(|_| h.withdraw()).count();
        assert_eq!(paid, 10, "one hedge per ten reads");
        let s = h.stats();
        assert_eq!((s.sent, s.refused, s.won), (10, 91, 0));
    }
}
