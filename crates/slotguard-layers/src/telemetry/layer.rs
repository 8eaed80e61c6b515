//! [`TelemetryLayer`] and its builder.

use std::fmt;
use std::sync::Arc;

use opentelemetry::global;
use opentelemetry::metrics::Meter;
use opentelemetry::trace::Tracer;
use slotguard_core::observe::BreakerPhase;
use slotguard_core::Topology;
use tower::Layer;

use super::metrics::{register_gauges, Instruments, StackObserver, UnownedClock};
use super::span::{SpanSink, WallClock};
use super::stats::TelemetryStats;
use super::tally::Tally;
use super::timers::FailoverTimers;
use super::{Probes, Shared, Telemetry};
use crate::circuit_breaker::CircuitBreakerLayer;
use crate::fallback::FallbackLayer;

/// The instrumentation scope name of slotguard's meter and tracer.
pub const SCOPE: &str = "slotguard";

/// Outermost layer: one span and the metrics per request, from the
/// request's outcome and its observations (see the [module](super)).
#[derive(Clone)]
pub struct TelemetryLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for TelemetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryLayer")
            .field("tracing", &self.shared.tracer.is_some())
            .field("metering", &self.shared.metering)
            .field("record_keys", &self.shared.record_keys)
            .finish_non_exhaustive()
    }
}

impl Default for TelemetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TelemetryLayer {
    /// Report to the global meter and tracer providers, no gauges (see
    /// [`builder`](Self::builder) for those).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Settings: providers, the stack's topology and breakers for the
    /// gauges, keys on spans.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::default()
    }

    /// What was counted so far (for applications without OpenTelemetry).
    pub fn stats(&self) -> TelemetryStats {
        self.shared.tally.snapshot()
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // With no meter and no tracer listening, a service (cloned for
        // every request by axum and tonic) holds no reference count: only
        // the id of this layer's counters, which this layer keeps alive.
        let listening = self.shared.metering || self.shared.tracer.is_some();
        Telemetry {
            inner,
            tally: self.shared.tally.id(),
            shared: listening.then(|| self.shared.clone()),
        }
    }
}

/// What the store guard of a [`FallbackLayer`] shows the gauges.
pub(crate) trait FallbackProbe: Send + Sync + 'static {
    fn store_breaker(&self) -> BreakerPhase;
    fn near_cache_size(&self) -> (u64, u64);
}

impl<St: Send + Sync + 'static> FallbackProbe for FallbackLayer<St> {
    fn store_breaker(&self) -> BreakerPhase {
        self.store_breaker_state().phase()
    }

    fn near_cache_size(&self) -> (u64, u64) {
        FallbackLayer::near_cache_size(self)
    }
}

/// Settings of a [`TelemetryLayer`].
#[derive(Clone, Default)]
#[must_use]
pub struct TelemetryBuilder {
    meter: Option<Meter>,
    tracer: Option<Arc<dyn SpanSink>>,
    topology: Option<Topology>,
    probes: Probes,
    record_keys: bool,
}

impl fmt::Debug for TelemetryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBuilder")
            .field("meter", &self.meter.is_some())
            .field("tracer", &self.tracer.is_some())
            .field("topology", &self.topology.is_some())
            .field("record_keys", &self.record_keys)
            .finish_non_exhaustive()
    }
}

impl TelemetryBuilder {
    /// Use this meter (default: the global provider's, scope `slotguard`).
    /// One telemetry layer per meter: the per-read counters are observable
    /// (read from this layer's counters when the exporter collects), so two
    /// layers on one meter would report the same series twice, not summed.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Use this tracer (default: the global provider's, scope `slotguard`,
    /// as installed when [`build`](Self::build) runs). The tracer keeps its
    /// own type, so its spans are built without a box each; the global
    /// provider's tracer is a `BoxedTracer`, which allocates one per span.
    pub fn tracer<T>(mut self, tracer: T) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        self.tracer = Some(Arc::new(tracer));
        self
    }

    /// The stack's topology: slot gauges, failover clocks, and the stack's
    /// own events (breaker transitions, refreshes, fences) through its
    /// observer, which this layer registers. One telemetry layer per
    /// topology.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// The stack's circuit breakers, for `slotguard_breaker_state` (read
    /// without changing them).
    pub fn breakers(mut self, breakers: &CircuitBreakerLayer) -> Self {
        self.probes.breakers = Some(breakers.clone());
        self
    }

    /// The stack's fallback layer, for the store breaker and near-cache
    /// gauges.
    pub fn fallback<St: Send + Sync + 'static>(mut self, fallback: &FallbackLayer<St>) -> Self {
        self.probes.fallback = Some(Arc::new(fallback.clone()));
        self
    }

    /// Put each request's key on its span (`redis.key`). Off by default:
    /// keys can hold personal data.
    pub fn record_keys(mut self, yes: bool) -> Self {
        self.record_keys = yes;
        self
    }

    /// Create the instruments, register the gauges and the topology's
    /// observer.
    pub fn build(self) -> TelemetryLayer {
        let meter = self.meter.unwrap_or_else(|| global::meter(SCOPE));
        let tracer: Arc<dyn SpanSink> = self
            .tracer
            .unwrap_or_else(|| Arc::new(global::tracer(SCOPE)));
        // A tracer of no SDK makes spans with no valid context: then no
        // span is built at all (nothing measurable when nobody listens).
        let tracing = tracer.records();
        let tally = Tally::new();
        let timers = Arc::new(FailoverTimers::default());
        let unowned = Arc::new(UnownedClock::default());
        let (instruments, metering) = Instruments::new(&meter, &tally);
        if let Some(topology) = &self.topology {
            topology.set_observer(Arc::new(StackObserver::new(
                &meter,
                tally.clone(),
                timers.clone(),
            )));
        }
        register_gauges(&meter, self.topology.clone(), self.probes, unowned.clone());
        TelemetryLayer {
            shared: Arc::new(Shared {
                instruments,
                tracer: tracing.then_some(tracer),
                metering,
                record_keys: self.record_keys,
                tally,
                wall: WallClock::new(),
                timers,
                topology: self.topology,
                unowned,
            }),
        }
    }
}
