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
    /// Longest a write refused with `CLUSTERDOWN` (not applied) is retried
    /// in place, from its first refusal; then the `CLUSTERDOWN` is its
    /// answer. Default 150 ms: the `TRYAGAIN` backoff's first four hops
    /// (10 + 20 + 40 + 80 ms), and a typed answer within the 250 ms that
    /// DESIGN.md §9 gives a write.
    ///
    /// Why bounded by time: `CLUSTERDOWN` lasts from a primary's failure
    /// until its replica is promoted (seconds with a 1 s node timeout, 15 s
    /// and more on Redis's default), so a longer ride-out mostly ends in
    /// the same refusal, later, and a caller waiting on it serves nothing
    /// else meanwhile. With every hop's backoff (~310 ms, the previous
    /// rule), `slotguard demo`'s `full-coverage-sigstop` had writes taking
    /// up to 326 ms and then failing anyway (`too_many_redirects`), and
    /// its slowest second at 39–41 % of the healthy rate. Why not shorter:
    /// the brief `CLUSTERDOWN` around a manual failover is ridden out
    /// (the demo's `manual-failover` refuses no write). Reads are never
    /// held back (replicas and the fallback answer them).
    pub cluster_down_write_wait: Duration,
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
            .field("cluster_down_write_wait", &self.cluster_down_write_wait)
            .field("confirm_timeout", &self.confirm_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for RedirectPolicy {
    fn default() -> Self {
        Self {
            max_hops: 5,
            tryagain_backoff: Duration::from_millis(10),
            cluster_down_write_wait: Duration::from_millis(150),
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
        with_cluster_down_write_wait => cluster_down_write_wait: Duration,
        with_confirm_timeout => confirm_timeout: Duration,
        with_budget => budget: Arc<dyn Budget + Send + Sync>,
    }
}
