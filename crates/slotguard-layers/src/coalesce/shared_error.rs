//! Outcomes every caller of one flight can take a copy of.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use slotguard_core::{BoxError, CacheError, CacheResponse};

/// An error shared by the callers of one coalesced read.
///
/// Errors travel as [`BoxError`], which cannot be cloned: a
/// [`CacheError`] is cloned for each caller as is; any other error (tower's
/// `Elapsed`, a custom leaf's) is shared behind an `Arc`, wrapped in this
/// type, whose [`source`](StdError::source) is the original, so
/// [`classify`](slotguard_core::classify) and
/// [`as_cache_error`](slotguard_core::as_cache_error) see through it.
#[derive(Clone)]
pub struct SharedError(Arc<dyn StdError + Send + Sync + 'static>);

impl fmt::Debug for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedError").field(&self.0).finish()
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coalesced read failed: {}", self.0)
    }
}

impl StdError for SharedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// An error in a form every caller can take a copy of.
#[derive(Debug, Clone)]
pub(crate) enum Shareable {
    Cache(CacheError),
    Other(SharedError),
}

impl Shareable {
    pub(crate) fn new(err: BoxError) -> Self {
        match err.downcast::<CacheError>() {
            Ok(e) => Shareable::Cache(*e),
            Err(other) => Shareable::Other(SharedError(Arc::from(other))),
        }
    }

    pub(crate) fn into_box(self) -> BoxError {
        match self {
            Shareable::Cache(e) => Box::new(e),
            Shareable::Other(e) => Box::new(e),
        }
    }
}

/// A flight's outcome, as kept for its followers.
pub(crate) type Outcome = Result<CacheResponse, Shareable>;
