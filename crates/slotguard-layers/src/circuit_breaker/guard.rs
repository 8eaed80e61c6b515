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
        if let Err(e) = std::task::ready!(self.inner.poll_ready(cx)) {
            // The service cannot take calls: a failure of it, as a call's
            // error would be (a refusing breaker counts nothing).
            let out = Err(e.into());
            if let Some(permit) = self.layer.breaker.admit(Instant::now(), false) {
                permit.judged_by(self.layer.judge).finish::<()>(&out);
            }
            return Poll::Ready(out);
        }
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
                ResponseFuture::rejected(BreakerScope::Global, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use futures_util::FutureExt;
    use slotguard_core::{classify, Failure};
    use tower::{service_fn, ServiceExt};

    use super::*;

    fn every_error_fails(err: Option<&BoxError>) -> Outcome {
        match err {
            Some(_) => Outcome::Failure,
            None => Outcome::Success,
        }
    }

    fn layer(failures: u32) -> GuardLayer {
        let config = BreakerConfig::new()
            .with_consecutive_failures(failures)
            .with_minimum_calls(u32::MAX)
            .with_open_duration(Duration::from_secs(3600))
            .with_slow_call_duration(Duration::from_secs(3600));
        GuardLayer::new("test", config, every_error_fails)
    }

    /// Errors are judged by the guard's rule, whatever their class, and an
    /// open guard refuses without calling the service.
    #[tokio::test]
    async fn opens_by_its_own_rule_and_refuses_without_the_service() {
        let guard = layer(2);
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let svc = guard.layer(service_fn({
            let calls = calls.clone();
            move |_: ()| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), BoxError>("no".into()) }
            }
        }));
        for _ in 0..2 {
            svc.clone().oneshot(()).await.unwrap_err();
        }
        assert_eq!(guard.state(), BreakerState::Open);
        let e = svc.clone().oneshot(()).await.unwrap_err();
        assert_eq!(classify(&e), Failure::CircuitOpen);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// Refusing, the guard is ready at once: it does not wait for a service
    /// that is not (here a limit with no slot at all).
    #[tokio::test]
    async fn a_refusing_guard_is_ready_without_its_service() {
        let guard = layer(1);
        let failing = guard.layer(service_fn(|_: ()| async {
            Err::<(), BoxError>("no".into())
        }));
        failing.oneshot(()).await.unwrap_err();
        assert_eq!(guard.state(), BreakerState::Open);
        let never = tower::limit::ConcurrencyLimit::new(
            service_fn(|_: ()| async { Ok::<(), BoxError>(()) }),
            0,
        );
        let mut svc = guard.layer(never);
        assert!(svc.ready().now_or_never().unwrap().is_ok());
        let e = svc.call(()).await.unwrap_err();
        assert_eq!(classify(&e), Failure::CircuitOpen);
    }

    /// A service that fails its readiness fails in the breaker's eyes too.
    #[tokio::test]
    async fn a_readiness_error_is_a_failure() {
        #[derive(Clone)]
        struct Broken;
        impl Service<()> for Broken {
            type Response = ();
            type Error = BoxError;
            type Future = std::future::Ready<Result<(), BoxError>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Ready(Err("broken".into()))
            }
            fn call(&mut self, _: ()) -> Self::Future {
                std::future::ready(Ok(()))
            }
        }
        let guard = layer(1);
        guard.layer(Broken).oneshot(()).await.unwrap_err();
        assert_eq!(guard.state(), BreakerState::Open);
    }
}
