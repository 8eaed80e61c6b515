//! The store's guard: the store service behind the project's breaker (one
//! global breaker over it), tower's concurrency limit and tower's timeout,
//! composed once per configuration (the single flight of its loads is in
//! `loads`).

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use slotguard_core::{
    as_cache_error, BoxError, CacheError, ClusterController, LoadCause, SecondaryRequest,
};
use tokio::time::Instant;
use tower::limit::ConcurrencyLimitLayer;
use tower::timeout::TimeoutLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::config::{FallbackConfig, StoreBreakerConfig};
use crate::circuit_breaker::{BreakerConfig, BreakerState, GuardLayer, Outcome};

/// Why a store load failed. Travels inside
/// [`CacheError::Secondary`], so [`classify`](slotguard_core::classify)
/// says [`Failure::Secondary`](slotguard_core::Failure::Secondary).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SecondaryError {
    /// The store did not answer within the load's deadline.
    #[error("store load timed out")]
    Timeout,
    /// The store's breaker is open: the store was not called.
    #[error("store circuit open")]
    CircuitOpen,
    /// As many loads as allowed are in flight and none finished in time.
    #[error("store is overloaded: too many loads in flight")]
    Overloaded,
    /// The store answered a value larger than allowed (not returned, not
    /// cached).
    #[error("store value of {len} bytes is over the {max} byte limit")]
    Oversize {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store returned an error.
    #[error("store error: {0}")]
    Store(Arc<dyn StdError + Send + Sync + 'static>),
}

pub(crate) fn secondary(err: SecondaryError) -> CacheError {
    CacheError::Secondary(Arc::new(err))
}

pub(crate) type LoadResult = Result<Option<Bytes>, CacheError>;

/// Loads through the store's guard: the guard over the store service
/// behind one boxed function, so the layer's `Service` impl needs no bounds
/// on the store (loads are rare; one allocation each costs nothing next to
/// the store's round trip).
pub(crate) type Loader =
    Arc<dyn Fn(Bytes, LoadCause) -> BoxFuture<'static, LoadResult> + Send + Sync>;

/// Makes the [`Loader`] of one configuration (a layer given new settings
/// composes its guard again).
pub(crate) type MakeLoader = Arc<dyn Fn(&FallbackConfig, &GuardLayer) -> Loader + Send + Sync>;

/// Keep `store` to compose guards over.
pub(crate) fn make_loader<St>(store: St) -> MakeLoader
where
    St: Service<SecondaryRequest, Response = Option<Bytes>> + Clone + Send + 'static,
    St::Error: Into<BoxError>,
    St::Future: Send + 'static,
{
    // A mutex so a store that is `Send` but not `Sync` can be shared; only
    // a new configuration takes it, to clone the store.
    let store = Mutex::new(store);
    Arc::new(move |config, breaker| {
        let store = store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        loader(store, config, breaker)
    })
}

/// The store's breaker: a global breaker over the store service that opens
/// on a run of failed loads only (no rates: loads are too few for a
/// window's share to mean much) and recovers on one probe.
pub(crate) fn store_breaker(config: &StoreBreakerConfig) -> GuardLayer {
    let config = BreakerConfig::new()
        .with_consecutive_failures(config.consecutive_failures.max(1))
        .with_open_duration(config.open_duration)
        .with_half_open_probes(1)
        .with_minimum_calls(u32::MAX)
        .with_slow_call_duration(std::time::Duration::MAX);
    // Every error below the breaker is the store's: its own, or a load
    // past the timeout. A wait for a load slot is above it (see `loader`).
    GuardLayer::new("store", config, |err| match err {
        Some(_) => Outcome::Failure,
        None => Outcome::Success,
    })
}

/// Compose the guard over `store`: breaker → concurrency limit → timeout
/// → store (outermost first).
///
/// The breaker is outside the timeout, so a timed-out load counts as a
/// failure; and outside the limit, whose slot is taken in `poll_ready`,
/// before the breaker admits the load in `call`: the wait for a slot is
/// bounded on its own here (`Overloaded`, not the store's fault, so the
/// breaker never sees it). An open breaker answers `poll_ready` without
/// waiting for a slot, so its loads still fail fast. The timeout runs from
/// the call, once the load has its slot.
fn loader<St>(store: St, config: &FallbackConfig, breaker: &GuardLayer) -> Loader
where
    St: Service<SecondaryRequest, Response = Option<Bytes>> + Clone + Send + 'static,
    St::Error: Into<BoxError>,
    St::Future: Send + 'static,
{
    let timeout = config.store_timeout;
    let max = config.max_value_bytes;
    let stack = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(ConcurrencyLimitLayer::new(config.store_concurrency.max(1)))
        .layer(TimeoutLayer::new(timeout))
        .service(store);
    let stack = Mutex::new(stack);
    Arc::new(move |key, cause| {
        let mut svc = stack
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Box::pin(async move {
            match tokio::time::timeout_at(Instant::now() + timeout, svc.ready()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(secondary(store_error(e))),
                // Not the store's fault: the breaker counts nothing.
                Err(_) => return Err(secondary(SecondaryError::Overloaded)),
            }
            let req = SecondaryRequest::load(key)
                .with_cause(cause)
                .with_deadline(Instant::now() + timeout);
            match svc.call(req).await {
                // A data problem of one key, not a sick store: the breaker
                // saw a success.
                Ok(Some(v)) if v.len() > max => {
                    Err(secondary(SecondaryError::Oversize { len: v.len(), max }))
                }
                Ok(v) => Ok(v),
                Err(e) => Err(secondary(store_error(e))),
            }
        })
    })
}

/// What an error out of the guard's stack means.
fn store_error(e: BoxError) -> SecondaryError {
    if matches!(as_cache_error(&e), Some(CacheError::CircuitOpen { .. })) {
        SecondaryError::CircuitOpen
    } else if e.is::<tower::timeout::error::Elapsed>() {
        SecondaryError::Timeout
    } else {
        SecondaryError::Store(Arc::from(e))
    }
}

/// The store's guard, and the single flight of its loads.
pub(crate) struct StoreGuard {
    load: Loader,
    breaker: GuardLayer,
    // How long a miss's answer stays shared after its load: the write-back's
    // deadline (zero without write-back).
    pub(super) linger: std::time::Duration,
    // Runs the loads (and their linger): its shutdown ends them.
    pub(super) controller: ClusterController,
}

impl fmt::Debug for StoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreGuard")
            .field("breaker", &self.breaker.state())
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

impl StoreGuard {
    pub(crate) fn new(
        make: &MakeLoader,
        config: &FallbackConfig,
        controller: ClusterController,
    ) -> Self {
        let breaker = store_breaker(&config.store_breaker);
        StoreGuard {
            load: make(config, &breaker),
            breaker,
            linger: config
                .write_back
                .as_ref()
                .map_or(std::time::Duration::ZERO, |w| w.timeout),
            controller,
        }
    }

    /// The breaker's state: a read, never a transition.
    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// One load through the guard.
    pub(super) fn run(&self, key: &Bytes, cause: LoadCause) -> BoxFuture<'static, LoadResult> {
        (self.load)(key.clone(), cause)
    }
}
