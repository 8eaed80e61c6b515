//! The breaker's state machine as one global breaker over any service,
//! judging outcomes with a rule of the caller's: how a sibling layer (the
//! fallback's store guard) gets a breaker without a copy of its own.
//!
//! Unlike [`CircuitBreaker`](super::CircuitBreaker), it needs no
//! [`CacheRequest`](slotguard_core::CacheRequest) (there is no node to key
//! on) and records no `BreakerOpen` observation (that one says a cluster
//! node refused).

use std::sync::Arc;
use std::task::{Context, Poll};

use slotguard_core::{BoxError, BreakerScope};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::breaker::{Breaker, BreakerState};
use super::config::BreakerConfig;
use super::future::ResponseFuture;
use super::judge::Outcome;
use super::registry::Shared;

/// What a guarded call's outcome says about the service behind it.
pub(crate) type Judge = fn(Option<&BoxError>) -> Outcome;

/// Applies [`Guarded`]: clones share one breaker.
#[derive(Debug, Clone)]
pub(crate) struct GuardLayer {
    shared: Arc<Shared>,
    breaker: Arc<Breaker>,
    judge: Judge,
}

impl GuardLayer {
    /// A breaker named `name` in its transitions' events (their `scope`),
    /// so they are not taken for the cluster's global breaker.
    pub(crate) fn new(name: &'static str, config: BreakerConfig, judge: Judge) -> Self {
        let shared = Shared::named(name, config);
        let breaker = shared.global_breaker();
        GuardLayer {
            shared: Arc::new(shared),
            breaker,
            judge,
        }
    }

    /// The breaker's state: a read, never a transition.
    pub(crate) fn state(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            layer: self.clone(),
            inner_ready: false,
        }
    }
}

/// A service behind one global breaker.
#[derive(Debug)]
pub(crate) struct Guarded<S> {
    inner: S,
    layer: GuardLayer,
    // Whether `poll_ready` readied the inner service: while the breaker
    // refuses (open, or half-open with its probes out), it does not, so a
    // refused call fails fast without waiting for the inner service (a
    // concurrency limit's slot, say).
    inner_ready: bool,
}

impl<S: Clone> Clone for Guarded<S> {
    fn clone(&self) -> Self {
        // The clone has not been readied (a limit's slot stays with `self`).
        Guarded {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            inner_ready: false,
        }
    }
}

impl<S, R> Service<R> for Guarded<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.layer.breaker.refuses(Instant::now()) {
            // `call` refuses without the inner service.
            self.inner_ready = false;
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(self.inner.poll_ready(cx)).map_err(Into::into)?;
        self.inner_ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let permit = if std::mem::take(&mut self.inner_ready) {
            self.layer.breaker.admit(Instant::now(), false)
        } else {
            None
        };
        match permit {
            Some(permit) => {
                let judged = permit.judged_by(self.layer.judge);
                ResponseFuture::called(self.inner.call(req), Some(judged))
            }
            None => {
                self.layer
                    .shared
                    .counters()
                    .rejected
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ResponseFuture::rejected(BreakerScope::Global)
            }
        }
    }
}
