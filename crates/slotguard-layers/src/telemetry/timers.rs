//! Per-failover clocks: from a primary's first failed call to the first
//! replica answer, to the promotion seen in the map, to the first write
//! its successor took.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use slotguard_core::NodeAddr;
use std::time::Instant;

/// A clock that nobody closes (a fault that was no failover) is dropped
/// after this long.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// At most this many clocks at once (one per failing primary).
const MAX_CLOCKS: usize = 64;

#[derive(Debug)]
struct Clock {
    primary: NodeAddr,
    since: Instant,
    replica_answered: bool,
    successor: Option<NodeAddr>,
}

/// The open clocks. The healthy path reads one atomic and takes no lock.
#[derive(Debug, Default)]
pub(crate) struct FailoverTimers {
    open: AtomicUsize,
    clocks: Mutex<Vec<Clock>>,
}

impl FailoverTimers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Clock>> {
        self.clocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any clock runs (else nothing below needs the lock).
    pub(crate) fn any(&self) -> bool {
        self.open.load(Ordering::Relaxed) > 0
    }

    /// A primary failed a call: start its clock unless one runs.
    pub(crate) fn primary_failed(&self, primary: &NodeAddr, now: Instant) {
        let mut clocks = self.lock();
        clocks.retain(|c| now.saturating_duration_since(c.since) < FORGET_AFTER);
        if clocks.len() < MAX_CLOCKS && !clocks.iter().any(|c| &c.primary == primary) {
            clocks.push(Clock {
                primary: primary.clone(),
                since: now,
                replica_answered: false,
                successor: None,
            });
        }
        self.open.store(clocks.len(), Ordering::Relaxed);
    }

    /// A replica answered a read that `primary` failed: seconds since the
    /// first failure, the first time only.
    pub(crate) fn replica_answered(&self, primary: &NodeAddr, now: Instant) -> Option<f64> {
        let mut clocks = self.lock();
        let c = clocks
            .iter_mut()
            .find(|c| &c.primary == primary && !c.replica_answered)?;
        c.replica_answered = true;
        Some(now.saturating_duration_since(c.since).as_secs_f64())
    }

    /// The map shows `to` as the primary in place of `from`.
    pub(crate) fn promotion_seen(
        &self,
        from: &NodeAddr,
        to: &NodeAddr,
        now: Instant,
    ) -> Option<f64> {
        let mut clocks = self.lock();
        let c = clocks
            .iter_mut()
            .find(|c| &c.primary == from && c.successor.is_none())?;
        c.successor = Some(to.clone());
        Some(now.saturating_duration_since(c.since).as_secs_f64())
    }

    /// A write succeeded on `node`: if it is a successor, its failover is
    /// over; seconds since the first failure.
    pub(crate) fn write_succeeded(&self, node: &NodeAddr, now: Instant) -> Option<f64> {
        let mut clocks = self.lock();
        let i = clocks
            .iter()
            .position(|c| c.successor.as_ref() == Some(node))?;
        let c = clocks.swap_remove(i);
        self.open.store(clocks.len(), Ordering::Relaxed);
        Some(now.saturating_duration_since(c.since).as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failover_is_timed_in_its_three_phases() {
        let t = FailoverTimers::default();
        let (p, r): (NodeAddr, NodeAddr) =
            ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:1".parse().unwrap());
        let t0 = Instant::now();
        assert!(!t.any());
        t.primary_failed(&p, t0);
        t.primary_failed(&p, t0 + Duration::from_secs(1));
        assert!(t.any());
        assert_eq!(
            t.replica_answered(&p, t0 + Duration::from_millis(50)),
            Some(0.05)
        );
        assert_eq!(t.replica_answered(&p, t0 + Duration::from_millis(60)), None);
        assert_eq!(
            t.promotion_seen(&p, &r, t0 + Duration::from_secs(2)),
            Some(2.0)
        );
        assert_eq!(t.write_succeeded(&p, t0 + Duration::from_secs(3)), None);
        assert_eq!(
            t.write_succeeded(&r, t0 + Duration::from_secs(3)),
            Some(3.0)
        );
        assert!(!t.any());
    }
}
