//! Settings of the redirect layer.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::TpsBudget;

/// How redirects are followed.
#[derive(Debug, Clone)]
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
    /// Shared retry budget: every request deposits, every hop withdraws, so
    /// redirects cannot become a storm. Share one budget across clones.
    /// Default: 100 retries/s floor plus 50 % of request volume, over 10 s.
    pub budget: Arc<TpsBudget>,
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self {
            max_hops: 5,
            tryagain_backoff: Duration::from_millis(10),
            confirm_timeout: Duration::from_secs(1),
            budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 0.5)),
        }
    }
}
