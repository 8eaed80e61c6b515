//! Telemetry: one OpenTelemetry span and the metrics per request,
//! outermost in the stack.
//!
//! The layer sees each request's outcome and its [observations]: what the
//! inner layers and the leaf did to it (redirected, failed over, answered
//! from the near-cache or the store, refused by a breaker or a write
//! fence). Inner layers report into a small record that this layer
//! installs around each poll of the inner future (see
//! [`slotguard_core::observe`]: layers report from `poll`, a refusal
//! made in `call` when it is polled); it
//! comes back with responses and errors alike; the healthy path allocates
//! nothing for it. Events of the stack as a whole (breaker transitions, refresh
//! rounds, write fences, promotions) reach it through the topology's
//! observer, which [`TelemetryBuilder::topology`] registers.
//!
//! Only the OpenTelemetry *API* is used: the application installs an SDK
//! and an exporter (Prometheus, OTLP), or none, in which case the API's
//! no-op providers make this layer cost next to nothing (no span is built
//! at all). [`TelemetryLayer::stats`] counts the same reads per path in
//! plain atomics for applications without OpenTelemetry.
//!
//! # Spans
//!
//! One span per request, kind `Client`, named after the command (`GET`,
//! `SET`, `DEL`), after the database semantic conventions:
//! `db.system.name` = `redis`, `db.operation.name`, `server.address` and
//! `server.port` of the node that answered (or last failed it),
//! `redis.node_role`, `fallback.path`, `redis.slot`, `error.type` (the
//! error's [`Failure`](slotguard_core::Failure) class) with an error status
//! on failure, and the key as `redis.key` only with
//! [`TelemetryBuilder::record_keys`]. Events: `slot_moved` (with the new
//! owner), `ask_redirect`, `tryagain`, `replica_failover`, `breaker_open`,
//! `secondary_fallback`, `near_cache_hit`, `coalesced`,
//! `invalidation_replayed`, `write_fenced`, `node_fault`, `store_load`.
//!
//! # Metrics
//!
//! Listed with their Prometheus names in `docs/observability.md`:
//! `redis_fallback_routing_attempts_total{status}` (one per read, by the
//! path that answered: `primary_hit`, `primary_failover`,
//! `secondary_fallback`, `near_cache`, `error`),
//! `redis_fallback_routing_latency_seconds{path}`,
//! `db_client_operation_duration_seconds`, slot, breaker, redirect,
//! refresh, store, near-cache, fence and failover metrics.
//!
//! # Example
//!
//! ```
//! use slotguard_core::{BoxError, CacheRequest, CacheResponse, Path, Topology};
//! use slotguard_layers::telemetry::TelemetryLayer;
//! use slotguard_layers::ServiceBuilderExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let topology = Topology::new();
//! // Global providers (no-op until the application installs an SDK).
//! let telemetry = TelemetryLayer::builder().topology(topology.clone()).build();
//! let leaf = service_fn(|req: CacheRequest| async move {
//!     let node = "127.0.0.1:7000".parse()?;
//!     Ok::<_, BoxError>(CacheResponse::from_node(None, node, Path::Primary))
//! });
//! let svc = ServiceBuilder::new().telemetry(telemetry.clone()).service(leaf);
//! svc.oneshot(CacheRequest::get("user:42")).await?;
//! assert_eq!(telemetry.stats().reads.primary_hit, 1);
//! # Ok(()) }
//! ```
//!
//! [observations]: slotguard_core::Observation

mod future;
mod layer;
mod metrics;
mod span;
mod stats;
mod tally;
mod timers;

use std::sync::Arc;
use std::task::{Context, Poll};

use slotguard_core::{BoxError, CacheRequest, CacheResponse, NodeHealth, Op, Topology};
use tower::Service;

pub use self::future::ResponseFuture;
pub use self::layer::{TelemetryBuilder, TelemetryLayer, SCOPE};
pub use self::metrics::slots_ok;
pub use self::stats::{PathCounts, TelemetryStats};

use self::future::{op_index, Listen, Meta};
use self::layer::FallbackProbe;
use self::metrics::{Instruments, UnownedClock};
use self::span::{SpanSink, SpanStart, WallClock};
use self::tally::Tally;
use self::timers::FailoverTimers;
use crate::circuit_breaker::CircuitBreakerLayer;

/// What the gauges read.
#[derive(Clone, Default)]
pub(crate) struct Probes {
    breakers: Option<CircuitBreakerLayer>,
    fallback: Option<Arc<dyn FallbackProbe>>,
}

/// Shared by the layer and every service it made.
pub(crate) struct Shared {
    instruments: Instruments,
    // `None` when no SDK listens: no span is built.
    tracer: Option<Arc<dyn SpanSink>>,
    // Whether an SDK meter listens (see `TelemetryBuilder::build`): without
    // one, no clock is read and no instrument is called; the plain counters
    // behind `stats()` are all a request pays for.
    metering: bool,
    record_keys: bool,
    tally: Arc<Tally>,
    wall: WallClock,
    timers: Arc<FailoverTimers>,
    topology: Option<Topology>,
    unowned: Arc<UnownedClock>,
}

/// A primary that answers: breaker not open, in the majority, no run of
/// failures.
pub(crate) fn health_ok(h: &NodeHealth) -> bool {
    !h.breaker_open() && h.in_majority() && h.consecutive_failures() < 3
}

/// The service of [`TelemetryLayer`].
#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    // The layer's counters: the layer keeps them, and whoever reads them
    // (`TelemetryLayer::stats`) holds the layer. Counts made after every
    // clone of the layer is gone go nowhere: nobody could read them.
    tally: u64,
    // Only while a meter or tracer listens (they keep the shared state
    // alive for their callbacks and spans).
    shared: Option<Arc<Shared>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Telemetry<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, E> Service<CacheRequest> for Telemetry<S>
where
    S: Service<CacheRequest, Response = CacheResponse, Error = E>,
    E: Into<BoxError>,
{
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: CacheRequest) -> Self::Future {
        if let Some(shared) = &self.shared {
            let shared = shared.clone();
            return self.call_listening(shared, req);
        }
        // Nobody listens. Nothing in this function borrows `req` (the match
        // reads its operation's discriminant only: `Op::is_read`, which
        // takes a reference), so it goes on to the inner service without a
        // copy (callgrind: ~30 instructions a request).
        let read = matches!(req.op, Op::Get);
        // No scope around the inner `call`: layers report from their
        // futures' polls (a refusal made in `call` reports when it is
        // polled), and leaving a scope between the inner call and building
        // this future would make the compiler copy the whole stack's
        // future (callgrind over the full stack: ~130 instructions a
        // request).
        ResponseFuture::new(self.inner.call(req), self.tally, read, None)
    }
}

impl<S> Telemetry<S> {
    /// [`Service::call`] when a meter or a tracer listens: what they need
    /// is taken from the request first. Not inlined, so that its borrows
    /// of the request stay out of the quiet path.
    #[inline(never)]
    fn call_listening(
        &mut self,
        shared: Arc<Shared>,
        req: CacheRequest,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<CacheRequest>,
    {
        let op = op_index(&req.op);
        let read = req.op.is_read();
        let span = shared.tracer.as_ref().map(|_| {
            let key = shared.record_keys.then(|| req.key().clone());
            SpanStart::now(key, req.slot())
        });
        let listen = Listen {
            shared,
            meta: Meta {
                // std's clock: tokio's (test-util) looks up a runtime first.
                start: Some(std::time::Instant::now()),
                op,
                read,
                span,
            },
        };
        ResponseFuture::new(self.inner.call(req), self.tally, read, Some(listen))
    }
}

#[cfg(test)]
mod tests;
