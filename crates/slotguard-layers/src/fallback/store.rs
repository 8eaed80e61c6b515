//! Loads from the secondary store: one per key at a time, a bounded number
//! in all, behind the store's own breaker, each with a deadline.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use slotguard_core::{BoxError, CacheError, ClusterController, LoadCause, SecondaryRequest};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::config::{FallbackConfig, StoreBreakerConfig};
use crate::circuit_breaker::BreakerState;

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

/// A breaker for the store: opens after a run of failures, lets one probe
/// through after the cool-down.
#[derive(Debug)]
pub(crate) struct StoreBreaker {
    config: StoreBreakerConfig,
    state: Mutex<BreakerInner>,
}

#[derive(Debug, Default)]
struct BreakerInner {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl StoreBreaker {
    pub(crate) fn new(config: StoreBreakerConfig) -> Self {
        StoreBreaker {
            config,
            state: Mutex::new(BreakerInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `Some(is_probe)` when a load may go.
    fn admit(&self, now: Instant) -> Option<bool> {
        let mut s = self.lock();
        match s.open_until {
            None => Some(false),
            Some(until) if now < until => None,
            Some(_) if s.probing => None,
            Some(_) => {
                s.probing = true;
                Some(true)
            }
        }
    }

    fn record(&self, probe: bool, ok: bool, now: Instant) {
        let mut s = self.lock();
        if probe {
            s.probing = false;
        }
        if ok {
            s.failures = 0;
            if probe || s.open_until.is_some_and(|u| now >= u) {
                s.open_until = None;
                tracing::info!(target: "slotguard::fallback", "store_breaker_closed");
            }
            return;
        }
        s.failures = s.failures.saturating_add(1);
        if probe
            || (s.open_until.is_none() && s.failures >= self.config.consecutive_failures.max(1))
        {
            s.open_until = Some(now + self.config.open_duration);
            tracing::info!(target: "slotguard::fallback", "store_breaker_open");
        }
    }

    /// A load admitted but never sent: a probe gives its turn back.
    fn release(&self, probe: bool) {
        if probe {
            self.lock().probing = false;
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        let s = self.lock();
        match s.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

pub(crate) type LoadResult = Result<Option<Bytes>, CacheError>;
type Flight = Shared<BoxFuture<'static, LoadResult>>;

/// In-flight loads by key. Not generic over the store, so invalidations
/// (which detach a key's load) need not know the store's type.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<Bytes, (u64, Flight)>>,
    next: AtomicU64,
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.map.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Flights").field("in_flight", &n).finish()
    }
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, (u64, Flight)>> {
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Later callers for `key` start a new load: the one in flight may have
    /// read the value the invalidation replaced.
    pub(crate) fn detach(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    fn finish(&self, key: &[u8], id: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|(i, _)| *i == id) {
            map.remove(key);
        }
    }
}

/// Calls the store: the store service behind one boxed function, so the
/// layer's `Service` impl needs no bounds on the store (loads are rare; one
/// allocation each costs nothing next to the store's round trip).
pub(crate) type Loader = Arc<
    dyn Fn(SecondaryRequest) -> BoxFuture<'static, Result<Option<Bytes>, BoxError>> + Send + Sync,
>;

/// Wrap a store service as a [`Loader`].
pub(crate) fn loader<St>(store: St) -> Loader
where
    St: Service<SecondaryRequest, Response = Option<Bytes>> + Clone + Send + 'static,
    St::Error: Into<BoxError>,
    St::Future: Send + 'static,
{
    // A mutex so a store that is `Send` but not `Sync` can be shared; only
    // loads take it, to clone the store.
    let store = Mutex::new(store);
    Arc::new(move |req| {
        let svc = store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Box::pin(async move { svc.oneshot(req).await.map_err(Into::into) })
    })
}

/// The store and what guards it.
pub(crate) struct StoreGuard {
    loader: Loader,
    breaker: StoreBreaker,
    limit: Arc<Semaphore>,
    timeout: std::time::Duration,
    max_value_bytes: usize,
    // How long a miss's answer stays shared after its load: the write-back's
    // deadline (zero without write-back).
    linger: std::time::Duration,
    // Runs the loads (and their linger): its shutdown ends them.
    controller: ClusterController,
}

impl fmt::Debug for StoreGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreGuard")
            .field("breaker", &self.breaker)
            .field("free_slots", &self.limit.available_permits())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl StoreGuard {
    pub(crate) fn new(
        loader: Loader,
        config: &FallbackConfig,
        controller: ClusterController,
    ) -> Self {
        StoreGuard {
            loader,
            breaker: StoreBreaker::new(config.store_breaker.clone()),
            limit: Arc::new(Semaphore::new(config.store_concurrency.max(1))),
            timeout: config.store_timeout,
            max_value_bytes: config.max_value_bytes,
            linger: config
                .write_back
                .as_ref()
                .map_or(std::time::Duration::ZERO, |w| w.timeout),
            controller,
        }
    }

    pub(crate) fn breaker(&self) -> &StoreBreaker {
        &self.breaker
    }

    /// Load `key`, joining the load already in flight for it if there is
    /// one; waits at most until `deadline` (the load itself goes on for the
    /// others). Also says whether this caller started the load (it alone
    /// writes the value back).
    pub(crate) async fn load(
        self: &Arc<Self>,
        flights: &Arc<Flights>,
        key: &Bytes,
        cause: LoadCause,
        deadline: Option<Instant>,
    ) -> (LoadResult, bool) {
        let mut leader = false;
        let flight = {
            let mut map = flights.lock();
            match map.get(key) {
                Some((_, f)) => f.clone(),
                None => {
                    let id = flights.next.fetch_add(1, Ordering::Relaxed);
                    let run = {
                        let (guard, flights, key) = (self.clone(), flights.clone(), key.clone());
                        async move {
                            let out = guard.run(&key, cause).await;
                            if cause == LoadCause::Miss && out.is_ok() && !guard.linger.is_zero() {
                                // Callers that missed just after the load
                                // share its answer until the write-back has
                                // had time to land, rather than load again.
                                // An invalidation detaches it at once.
                                let linger = guard.linger;
                                let ended = {
                                    let (flights, key) = (flights.clone(), key.clone());
                                    async move {
                                        tokio::time::sleep(linger).await;
                                        flights.finish(&key, id);
                                    }
                                };
                                if guard.controller.spawn(ended).is_none() {
                                    // Shut down: nobody waits for a write-back.
                                    flights.finish(&key, id);
                                }
                            } else {
                                flights.finish(&key, id);
                            }
                            out
                        }
                    };
                    // Spawned on the controller: the load's outcome does not
                    // depend on which caller stays, and it always ends (its
                    // own deadline, or the controller's shutdown).
                    // After the shutdown the callers run it themselves (the
                    // store still answers; nothing is left behind).
                    let flight = if self.controller.is_shut_down() {
                        run.boxed().shared()
                    } else {
                        let task = self.controller.spawn(run);
                        async move {
                            match task {
                                Some(task) => match task.await {
                                    Ok(Some(out)) => out,
                                    Ok(None) => Err(secondary(SecondaryError::Overloaded)),
                                    Err(e) => Err(secondary(SecondaryError::Store(Arc::new(e)))),
                                },
                                None => Err(secondary(SecondaryError::Overloaded)),
                            }
                        }
                        .boxed()
                        .shared()
                    };
                    map.insert(key.clone(), (id, flight.clone()));
                    leader = true;
                    flight
                }
            }
        };
        let out = match deadline {
            Some(d) => tokio::time::timeout_at(d, flight)
                .await
                .unwrap_or_else(|_| Err(secondary(SecondaryError::Timeout))),
            None => flight.await,
        };
        (out, leader)
    }

    async fn run(&self, key: &Bytes, cause: LoadCause) -> LoadResult {
        let deadline = Instant::now() + self.timeout;
        let Some(probe) = self.breaker.admit(Instant::now()) else {
            return Err(secondary(SecondaryError::CircuitOpen));
        };
        let permit =
            match tokio::time::timeout_at(deadline, self.limit.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                // Not the store's fault: the breaker counts nothing.
                _ => {
                    self.breaker.release(probe);
                    return Err(secondary(SecondaryError::Overloaded));
                }
            };
        let req = SecondaryRequest::load(key.clone())
            .with_cause(cause)
            .with_deadline(deadline);
        let out = tokio::time::timeout_at(deadline, (self.loader)(req)).await;
        drop(permit);
        let now = Instant::now();
        match out {
            Ok(Ok(Some(v))) if v.len() > self.max_value_bytes => {
                // A data problem of one key, not a sick store.
                self.breaker.record(probe, true, now);
                Err(secondary(SecondaryError::Oversize {
                    len: v.len(),
                    max: self.max_value_bytes,
                }))
            }
            Ok(Ok(v)) => {
                self.breaker.record(probe, true, now);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.breaker.record(probe, false, now);
                Err(secondary(SecondaryError::Store(Arc::from(e))))
            }
            Err(_) => {
                self.breaker.record(probe, false, now);
                Err(secondary(SecondaryError::Timeout))
            }
        }
    }
}
