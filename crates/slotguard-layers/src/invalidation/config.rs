//! Settings of [`InvalidationLogLayer`](super::InvalidationLogLayer).

use std::time::Duration;

/// How long and how many deletes are kept, and how they are replayed.
///
/// ```
/// use std::time::Duration;
/// use slotguard_layers::invalidation::LogConfig;
/// let config = LogConfig::new()
///     .with_window(Duration::from_secs(60))
///     .with_capacity(10_000);
/// assert_eq!(config.window_len(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LogConfig {
    /// How long a delete is remembered: a failover that loses it must be
    /// noticed (map refreshed) within this. Default 30 s.
    pub window: Duration,
    /// At most this many keys are remembered; the oldest go first (counted
    /// in [`InvalidationLogLayer::evicted_total`](super::InvalidationLogLayer::evicted_total)).
    /// Default 65,536.
    pub capacity: usize,
    /// Deadline of one replayed `DEL`. Default 1 s.
    pub replay_timeout: Duration,
    /// While some delete is not confirmed on its slot's current owner, the
    /// replay is retried this often (and on every map change). Default 250 ms.
    pub retry_interval: Duration,
    /// Replayed `DEL`s in flight at once. Default 16.
    pub replay_concurrency: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            capacity: 65_536,
            replay_timeout: Duration::from_secs(1),
            retry_interval: Duration::from_millis(250),
            replay_concurrency: 16,
        }
    }
}

impl LogConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_window => window: Duration,
    }

    /// The configured [`window`](Self::window).
    pub fn window_len(&self) -> Duration {
        self.window
    }

    /// Set [`capacity`](Self::capacity) (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    slotguard_core::setters! {
        with_replay_timeout => replay_timeout: Duration,
        with_retry_interval => retry_interval: Duration,
    }

    /// Set [`replay_concurrency`](Self::replay_concurrency) (at least 1).
    pub fn with_replay_concurrency(mut self, n: usize) -> Self {
        self.replay_concurrency = n.max(1);
        self
    }
}
