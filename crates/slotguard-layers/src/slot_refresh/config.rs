//! Settings of the slot refresher.

use std::time::Duration;

/// How often and how widely the slot map is refreshed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshConfig {
    /// Refresh at least this often, even without triggers. Default 15 s.
    pub period: Duration,
    /// Minimum gap between two refreshes, so a burst of triggers (a `MOVED`
    /// storm) costs one fetch. Default 100 ms.
    pub min_gap: Duration,
    /// How many nodes to ask per refresh. Default 5.
    pub views: usize,
    /// Once a majority of the nodes asked agree, how long to wait for the
    /// others (a stalled node would otherwise hold the round for its whole
    /// fetch deadline). Default 50 ms.
    pub straggler_grace: Duration,
    /// How long a request with no map yet waits for the first load before
    /// failing. Default 5 s.
    pub initial_wait: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(15),
            min_gap: Duration::from_millis(100),
            views: 5,
            straggler_grace: Duration::from_millis(50),
            initial_wait: Duration::from_secs(5),
        }
    }
}

impl RefreshConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_period => period: Duration,
        with_min_gap => min_gap: Duration,
    }

    /// Set [`views`](Self::views).
    pub fn with_views(mut self, views: usize) -> Self {
        self.views = views.max(1);
        self
    }

    slotguard_core::setters! {
        with_straggler_grace => straggler_grace: Duration,
        with_initial_wait => initial_wait: Duration,
    }
}
