//! The request the fallback layer sends to the secondary (authoritative)
//! store.

use bytes::Bytes;
use tokio::time::Instant;

/// Why the fallback layer loads a key from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LoadCause {
    /// The cluster answered and does not hold the key (cache-aside miss).
    Miss,
    /// The cluster could not answer (a fault of any class).
    ClusterFailure,
}

impl LoadCause {
    /// A short lowercase name for spans and metrics.
    pub fn name(self) -> &'static str {
        match self {
            LoadCause::Miss => "miss",
            LoadCause::ClusterFailure => "cluster_failure",
        }
    }
}

/// Load one key from the secondary store.
///
/// A store is any `Service<SecondaryRequest, Response = Option<Bytes>>`:
/// `Some(value)` when it holds the key, `None` when it does not.
///
/// ```
/// use slotguard_core::{LoadCause, SecondaryRequest};
/// use std::time::Duration;
///
/// let req = SecondaryRequest::load("user:42").with_timeout(Duration::from_millis(200));
/// assert_eq!(req.key().as_ref(), b"user:42");
/// assert_eq!(req.cause, LoadCause::Miss);
/// assert!(req.deadline.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SecondaryRequest {
    key: Bytes,
    /// Why it is loaded.
    pub cause: LoadCause,
    /// Answer by then, if set (the fallback layer always sets one).
    pub deadline: Option<Instant>,
}

impl SecondaryRequest {
    /// Load `key` (cause [`LoadCause::Miss`], no deadline).
    pub fn load(key: impl Into<Bytes>) -> Self {
        SecondaryRequest {
            key: key.into(),
            cause: LoadCause::Miss,
            deadline: None,
        }
    }

    /// The key.
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// Set why the key is loaded.
    pub fn with_cause(mut self, cause: LoadCause) -> Self {
        self.cause = cause;
        self
    }

    /// Set an absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Set a deadline `timeout` from now.
    pub fn with_timeout(self, timeout: std::time::Duration) -> Self {
        self.with_deadline(Instant::now() + timeout)
    }
}
