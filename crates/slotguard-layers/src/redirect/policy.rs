//! Settings of the redirect layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;

use super::budget::RetryBudget;

/// How redirects are followed.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedirectPolicy {
    /// Most `MOVED`/`ASK`/`TRYAGAIN` hops per request; then
    /// [`CacheError::TooManyRedirects`](slotguard_core::CacheError::TooManyRedirects).
    /// Default 5.
    pub max_hops: u8,
    /// First `TRYAGAIN` backoff, doubled per hop. Default 10 ms.
    pub tryagain_backoff: Duration,
    /// Longest wait for a refresh to confirm a `MOVED` to an address the map
    /// does not know. Default 1 s (also bounded by the request deadline).
    pub confirm_timeout: Duration,
    /// Shared retry budget: every request that succeeds deposits, every
    /// hop withdraws, so redirects cannot become a storm. Share one budget
    /// across clones. Default: a lock-free [`RetryBudget`], 100 retries/s
    /// floor plus 50 % of successful requests, over 10 s. Any tower
    /// [`Budget`] fits (e.g. `TpsBudget`, which takes a lock per call).
    pub budget: Arc<dyn Budget + Send + Sync>,
}

impl fmt::Debug for RedirectPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedirectPolicy")
            .field("max_hops", &self.max_hops)
            .field("tryagain_backoff", &self.tryagain_backoff)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self {
            max_hops: 5,
            tryagain_backoff: Duration::from_millis(10),
            confirm_timeout: Duration::from_secs(1),
            budget: Arc::new(RetryBudget::default()),
        }
    }
}

impl RedirectPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_max_hops => max_hops: u8,
        with_tryagain_backoff => tryagain_backoff: Duration,
        with_confirm_timeout => confirm_timeout: Duration,
        with_budget => budget: Arc<dyn Budget + Send + Sync>,
    }
}
