//! The sliding time window of one breaker, updated without a lock.
//!
//! Every call through a closed breaker records its outcome here, so the
//! window is made of atomics: calls on different cores add to it without
//! waiting for each other. The price is at bucket boundaries: a bucket is
//! rolled over to a new interval by one compare-and-swap and then zeroed,
//! and an outcome added by another thread between the two is lost. That is
//! at most a few outcomes per bucket per node, against rates judged over
//! thousands; in a single thread (and so in every test) nothing is lost.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::config::BreakerConfig;

/// Counts of one bucket of the window.
#[derive(Debug, Default)]
struct Bucket {
    // Which bucket-length interval since the window's origin this is; a
    // ring slot holding an older index is stale.
    index: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// Totals over the live buckets of a window.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Totals {
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) slow: u64,
}

/// A sliding time window: a ring of buckets, allocated once per breaker.
#[derive(Debug)]
pub(super) struct Window {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    origin: Instant,
    // 1 + bucket index of the latest failed or slow outcome (0: none yet).
    // While it is out of the window, a good outcome cannot make any rate
    // reach a (positive) threshold, so the healthy path skips summing the
    // buckets.
    last_bad: AtomicU64,
}

impl Window {
    pub(super) fn new(config: &BreakerConfig, origin: Instant) -> Self {
        let n = config.window_buckets.max(1);
        let bucket_nanos =
            (config.window.as_nanos() / u128::from(n)).clamp(1, u128::from(u64::MAX));
        Self {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            bucket_nanos: bucket_nanos as u64,
            origin,
            last_bad: AtomicU64::new(0),
        }
    }

    /// Nanoseconds from the window's origin to `now` (u64: 584 years).
    pub(super) fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }

    fn index(&self, now: Instant) -> u64 {
        // A u64 division: a u128 one costs several times more per call.
        self.nanos(now) / self.bucket_nanos
    }

    /// Count one outcome at `now`; the totals of the window after it, or
    /// `None` when `rates_can_trip_only_on_bad` and neither this outcome
    /// nor any other in the window failed or was slow (no rate is above 0).
    ///
    /// Under a race, a good outcome may miss a bad one recorded at the same
    /// moment on another thread; that one's own totals are judged, so a
    /// trip is late by one call at most.
    pub(super) fn record(
        &self,
        now: Instant,
        failure: bool,
        slow: bool,
        rates_can_trip_only_on_bad: bool,
    ) -> Option<Totals> {
        let index = self.index(now);
        let len = self.buckets.len() as u64;
        let bucket = &self.buckets[(index % len) as usize];
        let at = bucket.index.load(Ordering::Acquire);
        // Roll an old bucket over to this interval. Whoever wins the swap
        // zeroes it; a caller whose clock read lags behind a newer bucket
        // counts into that one.
        if at < index
            && bucket
                .index
                .compare_exchange(at, index, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.calls.store(0, Ordering::Relaxed);
            bucket.failures.store(0, Ordering::Relaxed);
            bucket.slow.store(0, Ordering::Relaxed);
        }
        bucket.calls.fetch_add(1, Ordering::Relaxed);
        if failure {
            bucket.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            bucket.slow.fetch_add(1, Ordering::Relaxed);
        }
        if failure || slow {
            // `fetch_max`: a racing caller with an older clock read must not
            // move it back.
            self.last_bad
                .fetch_max(index.saturating_add(1), Ordering::AcqRel);
        } else if rates_can_trip_only_on_bad {
            let last_bad = self.last_bad.load(Ordering::Acquire);
            if last_bad == 0 || (last_bad - 1).saturating_add(len) <= index {
                return None;
            }
        }
        Some(self.totals(index))
    }

    fn totals(&self, index: u64) -> Totals {
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|b| {
                let at = b.index.load(Ordering::Acquire);
                at <= index && at.saturating_add(len) > index
            })
            .fold(Totals::default(), |t, b| Totals {
                calls: t.calls.saturating_add(b.calls.load(Ordering::Relaxed)),
                failures: t
                    .failures
                    .saturating_add(b.failures.load(Ordering::Relaxed)),
                slow: t.slow.saturating_add(b.slow.load(Ordering::Relaxed)),
            })
    }

    /// Forget every outcome (a breaker closing starts a fresh window).
    pub(super) fn reset(&self) {
        for b in self.buckets.iter() {
            b.index.store(0, Ordering::Release);
            b.calls.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
            b.slow.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window() -> Window {
        // 10 s in 1 s buckets
        Window::new(&BreakerConfig::default(), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_slide_out_bucket_by_bucket() {
        let w = window();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        w.record(t0, true, false, false);
        let t = w.record(at(5_500), false, true, false).unwrap();
        assert_eq!((t.calls, t.failures, t.slow), (2, 1, 1));
        // the first bucket (0..1 s) is out once 10 s have passed
        let t = w.record(at(10_000), false, false, false).unwrap();
        assert_eq!((t.calls, t.failures, t.slow), (2, 0, 1));
        // a ring slot reused a whole window later starts from zero
        let t = w.record(at(15_500), false, false, false).unwrap();
        assert_eq!((t.calls, t.failures, t.slow), (2, 0, 0));
        w.reset();
        let t = w.record(at(15_600), false, false, false).unwrap();
        assert_eq!(t.calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn good_outcomes_skip_the_sum_only_while_nothing_bad_is_in_the_window() {
        let w = window();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(
            w.record(t0, false, false, true).is_none(),
            "nothing bad yet"
        );
        // a bad outcome is always judged, and makes good ones judged too
        // while it is in the window
        assert_eq!(w.record(at(100), false, true, true).unwrap().slow, 1);
        let t = w.record(at(9_900), false, false, true).unwrap();
        assert_eq!((t.calls, t.slow), (3, 1));
        assert!(w.record(at(10_000), false, false, true).is_none());
        // unless the caller says a rate may trip without any bad outcome
        assert_eq!(w.record(at(10_100), false, false, false).unwrap().calls, 3);
    }

    #[test]
    fn outcomes_from_many_threads_all_count_within_a_bucket() {
        let config = BreakerConfig {
            window: Duration::from_secs(3600),
            window_buckets: 1,
            ..BreakerConfig::default()
        };
        let now = Instant::now();
        let w = Window::new(&config, now);
        std::thread::scope(|s| {
            for i in 0..8 {
                let w = &w;
                s.spawn(move || {
                    for n in 0..1000 {
                        w.record(now, (i + n) % 2 == 0, false, true);
                    }
                });
            }
        });
        let t = w.totals(w.index(now));
        assert_eq!((t.calls, t.failures), (8000, 4000));
    }
}
