//! Settings of the slot refresher.

use std::time::Duration;

/// How often and how widely the slot map is refreshed.
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    /// Refresh at least this often, even without triggers. Default 15 s.
    pub period: Duration,
    /// Minimum gap between two refreshes, so a burst of triggers (a `MOVED`
    /// storm) costs one fetch. Default 100 ms.
    pub min_gap: Duration,
    /// How many nodes to ask per refresh; the majority view wins. Default 5.
    pub views: usize,
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
            initial_wait: Duration::from_secs(5),
        }
    }
}
