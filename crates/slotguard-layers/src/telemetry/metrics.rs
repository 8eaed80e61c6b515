//! The instruments, created once per layer, and what feeds them.
//!
//! Names are the OpenTelemetry ones; a Prometheus exporter adds `_total` to
//! counters and the unit (`_seconds`) to instruments with a unit, which
//! gives the exposition names the alert rules use (see
//! `docs/observability.md`).

use std::sync::Arc;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;
use slotguard_core::observe::{BreakerPhase, Observation, Observer, StoreOutcome};
use slotguard_core::Topology;

use super::tally::{add, bump, Tally};
use super::timers::FailoverTimers;
use super::{health_ok, Probes};

/// Read paths, in the order of [`ReadPath`]'s discriminants.
pub(crate) const READ_PATHS: [&str; 6] = [
    "primary_hit",
    "primary_failover",
    "secondary_fallback",
    "near_cache",
    "error",
    "client_cache",
];

/// Which path answered a read (or that it failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadPath {
    PrimaryHit = 0,
    PrimaryFailover = 1,
    SecondaryFallback = 2,
    NearCache = 3,
    Error = 4,
    // Last: the statuses before it kept their places when it was added.
    ClientCache = 5,
}

/// Operations, for `db.operation.name` on the duration histogram.
pub(crate) const OPS: [&str; 4] = ["GET", "SET", "DEL", "OTHER"];

/// One series of a histogram: the instrument with a fixed attribute set.
///
/// With the `otel-bound-instruments` feature it is the SDK's bound handle,
/// which records without looking the attribute set up (a SipHash of every
/// key and value, then a compare, on each call: two thirds of the SDK's
/// cost per request in `cargo bench -p slotguard-layers --bench stack`).
/// Without it, the attribute set is passed on each call.
pub(crate) struct Series {
    #[cfg(feature = "otel-bound-instruments")]
    bound: opentelemetry::metrics::BoundHistogram<f64>,
    #[cfg(not(feature = "otel-bound-instruments"))]
    histogram: Histogram<f64>,
    #[cfg(not(feature = "otel-bound-instruments"))]
    attrs: Box<[KeyValue]>,
}

impl Series {
    fn new(histogram: &Histogram<f64>, attrs: &[KeyValue]) -> Self {
        Self {
            #[cfg(feature = "otel-bound-instruments")]
            bound: histogram.bind(attrs),
            #[cfg(not(feature = "otel-bound-instruments"))]
            histogram: histogram.clone(),
            #[cfg(not(feature = "otel-bound-instruments"))]
            attrs: attrs.into(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, value: f64) {
        #[cfg(feature = "otel-bound-instruments")]
        self.bound.record(value);
        #[cfg(not(feature = "otel-bound-instruments"))]
        self.histogram.record(value, &self.attrs);
    }
}

pub(crate) struct Instruments {
    // For a failed operation's duration (with `error.type`).
    pub(crate) duration: Histogram<f64>,
    // Every series of the per-request path: `db.client.operation.duration`
    // by op for success, the routing latency by path.
    pub(crate) ok_durations: [Series; 4],
    pub(crate) read_latency: [Series; 6],
    pub(crate) redirects: Counter<u64>,
    pub(crate) coalesced: Counter<u64>,
    pub(crate) store_loads: Counter<u64>,
    pub(crate) writes_refused: Counter<u64>,
    pub(crate) first_replica: Histogram<f64>,
    pub(crate) first_write: Histogram<f64>,
    // Attribute sets built once: the request path builds none.
    pub(crate) redirect_attrs: [[KeyValue; 1]; 3],
    pub(crate) store_attrs: [[KeyValue; 1]; 3],
}

/// Latency buckets (seconds): sub-millisecond cluster answers up to the
/// failover and store deadlines.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ]
}

/// Failover phases last from milliseconds to the node timeout and more.
fn failover_buckets() -> Vec<f64> {
    vec![
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    ]
}

impl Instruments {
    /// The instruments, and whether `meter` collects at all (see
    /// [`register_read_counters`]).
    pub(crate) fn new(meter: &Meter, tally: &Arc<Tally>) -> (Self, bool) {
        let metering = register_read_counters(meter, tally);
        let ins = Self::create(meter);
        // Every series of a known label set exists from the start, at 0:
        // a rate over a series that appears only with its first event
        // misses that event, and alert rules see no data at all.
        for attrs in &ins.redirect_attrs {
            ins.redirects.add(0, attrs);
        }
        for attrs in &ins.store_attrs {
            ins.store_loads.add(0, attrs);
        }
        for c in [&ins.coalesced, &ins.writes_refused] {
            c.add(0, &[]);
        }
        (ins, metering)
    }

    fn create(meter: &Meter) -> Self {
        let kv = |k: &'static str, v: &'static str| KeyValue::new(k, v);
        let latency = meter
            .f64_histogram("redis_fallback_routing_latency")
            .with_unit("s")
            .with_description("Read latency by the path that answered")
            .with_boundaries(latency_buckets())
            .build();
        let duration = meter
            .f64_histogram("db.client.operation.duration")
            .with_unit("s")
            .with_description("Duration of cache operations (OpenTelemetry semantic conventions)")
            .with_boundaries(latency_buckets())
            .build();
        Self {
            ok_durations: OPS.map(|op| {
                Series::new(
                    &duration,
                    &[kv("db.system.name", "redis"), kv("db.operation.name", op)],
                )
            }),
            read_latency: READ_PATHS.map(|p| Series::new(&latency, &[kv("path", p)])),
            duration,
            redirects: meter
                .u64_counter("slotguard_redirects")
                .with_description("MOVED, ASK and TRYAGAIN replies followed")
                .build(),
            coalesced: meter
                .u64_counter("slotguard_coalesced")
                .with_description("Reads that shared another caller's in-flight call")
                .build(),
            store_loads: meter
                .u64_counter("slotguard_store_loads")
                .with_description("Loads from the secondary store, by outcome")
                .build(),
            writes_refused: meter
                .u64_counter("slotguard_writes_refused")
                .with_description("Writes refused before sending (fenced, breaker open, no owner)")
                .build(),
            first_replica: meter
                .f64_histogram("slotguard_failover_first_replica_answer")
                .with_unit("s")
                .with_description("From a primary's first failed call to the first replica answer")
                .with_boundaries(failover_buckets())
                .build(),
            first_write: meter
                .f64_histogram("slotguard_failover_first_write")
                .with_unit("s")
                .with_description(
                    "From a primary's first failed call to the first write on its successor",
                )
                .with_boundaries(failover_buckets())
                .build(),
            redirect_attrs: ["moved", "ask", "tryagain"].map(|k| [kv("kind", k)]),
            store_attrs: [StoreOutcome::Hit, StoreOutcome::Miss, StoreOutcome::Error]
                .map(|o| [kv("outcome", o.name())]),
        }
    }
}

/// The per-read counters, as observable counters over the atomics behind
/// `stats()`: a read then pays one relaxed atomic add for both instead of
/// an SDK attribute lookup per counter (the exporter reads the atomics when
/// it collects). Every status exists from the start, at 0. One telemetry
/// layer per meter (scope): the SDK keeps the last value observed per
/// series, so two layers on one meter would not add up.
///
/// Returns whether the meter will collect: the API's no-op meter (no SDK
/// installed) and an SDK meter with no reader both drop an observable
/// instrument's callbacks when it is built; a collecting one keeps them.
/// The OpenTelemetry API has no other way to ask, and without this the
/// request path would read the clock and call no-op instruments for
/// nothing. Either counter kept counts: a view that drops one of them
/// (`Aggregation::Drop`) does not switch the others off; one that drops
/// both does.
fn register_read_counters(meter: &Meter, tally: &Arc<Tally>) -> bool {
    let c = tally.clone();
    let marker = Arc::new(());
    let held = marker.clone();
    let status: [[KeyValue; 1]; 6] = READ_PATHS.map(|p| [KeyValue::new("status", p)]);
    meter
        .u64_observable_counter("redis_fallback_routing_attempts")
        .with_description("Reads answered (or failed), by the path that answered them")
        .with_callback(move |o| {
            let _kept = &held;
            for (n, attrs) in c.reads().into_iter().zip(&status) {
                o.observe(n, attrs);
            }
        })
        .build();
    let c = tally.clone();
    let held = marker.clone();
    meter
        .u64_observable_counter("slotguard_near_cache_hits")
        .with_description(
            "Reads answered by the near-cache (client-side caching's hits and answers to failed reads)",
        )
        .with_callback(move |o| {
            let _kept = &held;
            let reads = c.reads();
            let hits = reads[ReadPath::NearCache as usize] + reads[ReadPath::ClientCache as usize];
            o.observe(hits, &[]);
        })
        .build();
    Arc::strong_count(&marker) > 1
}

/// The per-stack instruments, fed by the topology's observer.
pub(crate) struct StackObserver {
    transitions: Counter<u64>,
    refreshes: Counter<u64>,
    fences: Counter<u64>,
    replayed: Counter<u64>,
    promotion_seen: Histogram<f64>,
    tally: Arc<Tally>,
    timers: Arc<FailoverTimers>,
}

impl StackObserver {
    pub(crate) fn new(meter: &Meter, tally: Arc<Tally>, timers: Arc<FailoverTimers>) -> Self {
        let this = Self::create(meter, tally, timers);
        // Known label sets start at 0 (see `Instruments::new`).
        for trigger in ["initial", "periodic", "requested", "manual"] {
            for outcome in ["changed", "unchanged", "failed"] {
                this.refreshes.add(
                    0,
                    &[
                        KeyValue::new("trigger", trigger),
                        KeyValue::new("outcome", outcome),
                    ],
                );
            }
        }
        for action in ["set", "lifted"] {
            this.fences.add(0, &[KeyValue::new("action", action)]);
        }
        this.replayed.add(0, &[]);
        this
    }

    fn create(meter: &Meter, tally: Arc<Tally>, timers: Arc<FailoverTimers>) -> Self {
        Self {
            transitions: meter
                .u64_counter("slotguard_breaker_transitions")
                .with_description("Circuit breaker transitions, by node and new state")
                .build(),
            refreshes: meter
                .u64_counter("slotguard_topology_refreshes")
                .with_description("Slot map refresh rounds, by trigger and outcome")
                .build(),
            fences: meter
                .u64_counter("slotguard_write_fences")
                .with_description("Write fences set on and lifted from primaries")
                .build(),
            replayed: meter
                .u64_counter("slotguard_invalidations_replayed")
                .with_description("Deletes replayed to a slot's new owner after a failover")
                .build(),
            promotion_seen: meter
                .f64_histogram("slotguard_failover_promotion_seen")
                .with_unit("s")
                .with_description("From a primary's first failed call to its successor in the map")
                .with_boundaries(failover_buckets())
                .build(),
            tally,
            timers,
        }
    }
}

impl Observer for StackObserver {
    fn observe(&self, observation: &Observation) {
        match observation {
            Observation::BreakerTransition { node, to } => {
                let node = node
                    .as_ref()
                    .map_or_else(|| "global".into(), |n| n.to_string());
                self.transitions.add(
                    1,
                    &[KeyValue::new("node", node), KeyValue::new("to", to.name())],
                );
                if *to == BreakerPhase::Open {
                    self.tally.count(|c| bump(&c.breaker_opened));
                }
            }
            Observation::TopologyRefresh { trigger, outcome } => {
                self.refreshes.add(
                    1,
                    &[
                        KeyValue::new("trigger", trigger.name()),
                        KeyValue::new("outcome", outcome.name()),
                    ],
                );
                self.tally.count(|c| bump(&c.refreshes));
            }
            Observation::FenceSet { .. } => {
                self.fences.add(1, &[KeyValue::new("action", "set")]);
                self.tally.count(|c| bump(&c.fences_set));
            }
            Observation::FenceLifted { .. } => {
                self.fences.add(1, &[KeyValue::new("action", "lifted")]);
            }
            Observation::InvalidationsReplayed { count } => {
                self.replayed.add(*count, &[]);
                self.tally.count(|c| add(&c.invalidations_replayed, *count));
            }
            Observation::PrimaryChanged { from, to } => {
                if let Some(secs) = self
                    .timers
                    .promotion_seen(from, to, std::time::Instant::now())
                {
                    self.promotion_seen.record(secs, &[]);
                }
            }
            _ => {}
        }
    }
}

/// Register the observable instruments: their callbacks read state (never
/// change it) when an exporter collects.
pub(crate) fn register_gauges(
    meter: &Meter,
    topology: Option<Topology>,
    probes: Probes,
    unowned: Arc<UnownedClock>,
) {
    if let Some(topology) = topology {
        let t = topology.clone();
        meter
            .u64_observable_gauge("redis_cluster_slots_assigned")
            .with_description("Slots the current map assigns to a primary")
            .with_callback(move |o| o.observe(t.map().covered_slots() as u64, &[]))
            .build();
        let t = topology.clone();
        meter
            .u64_observable_gauge("redis_cluster_slots_ok")
            .with_description("Slots whose primary is answering (breaker closed, in the majority)")
            .with_callback(move |o| o.observe(slots_ok(&t), &[]))
            .build();
        meter
            .f64_observable_counter("slotguard_slots_unowned")
            .with_unit("s")
            .with_description("Seconds slot ranges had no answering owner, summed over ranges")
            .with_callback(move |o| o.observe(unowned.sample(&topology), &[]))
            .build();
    }
    if let Some(breakers) = probes.breakers {
        meter
            .u64_observable_gauge("slotguard_breaker_state")
            .with_description("Circuit breaker state per node: 0 closed, 1 half-open, 2 open")
            .with_callback(move |o| {
                for (scope, state) in breakers.states() {
                    let node = match scope {
                        slotguard_core::BreakerScope::Node(addr) => addr.to_string(),
                        _ => "global".to_owned(),
                    };
                    o.observe(
                        u64::from(state.phase().level()),
                        &[KeyValue::new("node", node)],
                    );
                }
            })
            .build();
    }
    if let Some(fallback) = probes.fallback {
        let f = fallback.clone();
        meter
            .u64_observable_gauge("slotguard_store_breaker_state")
            .with_description("The store guard's breaker: 0 closed, 1 half-open, 2 open")
            .with_callback(move |o| o.observe(u64::from(f.store_breaker().level()), &[]))
            .build();
        let f = fallback.clone();
        meter
            .u64_observable_gauge("slotguard_near_cache_entries")
            .with_description("Entries in the near-cache")
            .with_callback(move |o| o.observe(f.near_cache_size().0, &[]))
            .build();
        meter
            .u64_observable_gauge("slotguard_near_cache_bytes")
            .with_description("Bytes weighed by the near-cache")
            .with_callback(move |o| o.observe(fallback.near_cache_size().1, &[]))
            .build();
    }
}

/// Slots whose primary answers: covered, breaker not open, in the
/// majority, no run of failures (`redis_cluster_slots_ok`).
pub fn slots_ok(topology: &Topology) -> u64 {
    let map = topology.map();
    map.shards()
        .iter()
        .filter(|s| health_ok(&s.primary.health))
        .map(|s| {
            s.slots
                .iter()
                .map(|&(lo, hi)| u64::from(hi.saturating_sub(lo)) + 1)
                .sum::<u64>()
        })
        .sum()
}

/// Integrates "slot ranges without an answering owner" over time, sampled
/// when an exporter collects and whenever a request saw a fault.
#[derive(Debug, Default)]
pub(crate) struct UnownedClock {
    // (last sample, ranges unowned then, seconds so far)
    state: std::sync::Mutex<(Option<std::time::Instant>, u32, f64)>,
}

impl UnownedClock {
    /// Add the time since the last sample, weighted by the ranges unowned
    /// then; return the total.
    pub(crate) fn sample(&self, topology: &Topology) -> f64 {
        let now = std::time::Instant::now();
        let unowned = {
            let map = topology.map();
            let bad = map
                .shards()
                .iter()
                .filter(|s| !health_ok(&s.primary.health))
                .count() as u32;
            bad + u32::from(map.covered_slots() < usize::from(slotguard_core::SLOT_COUNT))
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prev) = st.0 {
            st.2 += now.saturating_duration_since(prev).as_secs_f64() * f64::from(st.1);
        }
        st.0 = Some(now);
        st.1 = unowned;
        st.2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    // The request path skips the clock and the instruments exactly when
    // nothing collects: this is how it knows.
    #[test]
    fn a_meter_collects_only_with_an_sdk_reader() {
        let counters = Tally::new();
        let noop = opentelemetry::metrics::noop::NoopMeterProvider::new().meter("t");
        assert!(!register_read_counters(&noop, &counters));
        let no_reader = SdkMeterProvider::builder().build();
        assert!(!register_read_counters(&no_reader.meter("t"), &counters));
        let with_reader = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
            .build();
        assert!(register_read_counters(&with_reader.meter("t"), &counters));
        let _ = with_reader.shutdown();
        // a view that drops the routing counter leaves the rest collected
        let dropping = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(InMemoryMetricExporter::default()).build())
            .with_view(|i: &opentelemetry_sdk::metrics::Instrument| {
                (i.name() == "redis_fallback_routing_attempts").then(|| {
                    opentelemetry_sdk::metrics::Stream::builder()
                        .with_aggregation(opentelemetry_sdk::metrics::Aggregation::Drop)
                        .build()
                        .unwrap()
                })
            })
            .build();
        assert!(register_read_counters(&dropping.meter("t"), &counters));
        let _ = dropping.shutdown();
    }
}
