//! Per-request cost of the layers over an in-memory leaf.
//!
//! `cargo bench -p slotguard-layers --bench stack`
//!
//! The leaf answers at once from a ready future, so what is measured is the
//! layers' own work: routing, bookkeeping, clones, locks. Each case runs
//!
//! - `one_thread/*`: a current-thread runtime, one request after another,
//!   each on a fresh clone of the service (`svc.clone().oneshot(req)`, as
//!   axum calls a service);
//! - `eight_tasks/*`: the same loop in 8 tasks on a multi-thread runtime
//!   (one worker per core); the time reported is wall time per call, so on
//!   N cores with no contention it would be about 1/N of the one-thread
//!   figure, and shared locks or contended counters push it up.
//!
//! With `SLOTGUARD_BENCH_CALLS=CASE:N`, the bench makes exactly N calls of
//! the one case named (`full_stack`, say) and measures nothing: under
//! `valgrind --tool=callgrind`, the total of a run with N calls minus that
//! of a run with 0, divided by N, is the case's instructions per request,
//! the same on every run of the same binary however busy the machine.
//!
//! With `SLOTGUARD_BENCH_CPU=1`, `one_thread/*` report the thread's CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`) instead of wall time: on a machine
//! shared with other work, time spent preempted is not counted.
//!
//! Cases: the bare leaf (requests stamped by the caller from a precomputed
//! table), the leaf recording node health the way `NodeService` does, each
//! layer alone over the leaf, and the full default stack as the README
//! builds it (slot_refresh → redirect → replica_failover →
//! circuit_breaker → leaf), `invalidation_log` with nothing logged, and
//! that stack under `coalesce` (every request a different key: the healthy
//! miss path, each read its own flight), `passthrough` (tower's
//! `MapResponse` with the identity: what wrapping a call and its future
//! costs any layer) alone and on top of the full stack, and `telemetry` alone and on top
//! of the full stack: with no OpenTelemetry SDK (the API's no-op
//! providers, what an application that installs none gets) and with the
//! SDK's meter and tracer providers (`sdk`: every span sampled and ended;
//! no span processor, so what is measured is the layer and the SDK's
//! recording, not an exporter; `sdk_sampled`: 1 % of spans sampled;
//! `sdk_metrics`: the SDK's meters and no tracer). Requests to `slot_refresh` and the
//! full stack are routed by slot, so their figure includes the stamping
//! that the bare leaf's caller did from its table.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use slotguard_core::controller::ViewLoaded;
use slotguard_core::{CacheRequest, CacheResponse, NodeAddr, Role, Topology};
use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard_layers::coalesce::CoalesceLayer;
use slotguard_layers::invalidation::InvalidationLogLayer;
use slotguard_layers::redirect::RedirectLayer;
use slotguard_layers::replica_failover::ReplicaFailoverLayer;
use slotguard_layers::slot_refresh::SlotRefreshLayer;
use slotguard_layers::telemetry::TelemetryLayer;
use slotguard_layers::ServiceBuilderExt;
use tokio::runtime::Runtime;
use tower::{Service, ServiceBuilder, ServiceExt};

#[path = "support/criterion.rs"]
mod settings;

#[path = "support/cluster.rs"]
mod cluster;
use cluster::{node, view, Leaf, StaticSource};

const TASKS: u64 = 8;
const KEYS: usize = 4096;

/// Keys spread over every slot, with the primary owning each.
struct Keys {
    keys: Vec<(bytes::Bytes, NodeAddr)>,
}

impl Keys {
    fn new(topology: &Topology) -> Self {
        let map = topology.load();
        let keys = (0..KEYS)
            .map(|i| {
                // Static keys: cloning one touches no shared counter, so
                // the figures are the layers' own.
                let key = bytes::Bytes::from_static(format!("user:{i}").leak().as_bytes());
                let slot = slotguard_core::key_slot(&key);
                let owner = map.primary_for_slot(slot).map(|p| p.addr.clone());
                (key, owner.unwrap_or_else(|| node(7000)))
            })
            .collect();
        Self { keys }
    }

    /// A GET routed by slot.
    fn by_slot(&self, i: usize) -> CacheRequest {
        CacheRequest::get(self.keys[i % KEYS].0.clone())
    }

    /// A GET the caller stamped with its owner.
    fn stamped(&self, i: usize) -> CacheRequest {
        let (key, owner) = &self.keys[i % KEYS];
        CacheRequest::get(key.clone()).to_node(owner.clone(), Role::Primary)
    }
}

type MakeRequest = fn(&Keys, usize) -> CacheRequest;

async fn run<S>(svc: &S, keys: &Keys, make: MakeRequest, from: usize, n: u64)
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone,
    S::Error: std::fmt::Debug,
{
    for i in 0..n as usize {
        let resp = svc.clone().oneshot(make(keys, from + i)).await;
        debug_assert!(resp.is_ok(), "{:?}", resp.err());
        let _ = black_box(resp);
    }
}

fn bench_case<S>(
    c: &mut Criterion,
    rt: &Rts,
    name: &str,
    svc: S,
    keys: &Arc<Keys>,
    make: MakeRequest,
) where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    if let Ok(only) = std::env::var("SLOTGUARD_BENCH_CALLS") {
        // `CASE:N`: N calls of one case and nothing else, for an exact
        // instruction count under callgrind (subtract a run with N = 0).
        if let Some((case, n)) = only.split_once(':') {
            if case == name {
                let n = n
                    .parse()
                    .unwrap_or_else(|e| panic!("SLOTGUARD_BENCH_CALLS: {e}"));
                rt.single.block_on(run(&svc, keys, make, 0, n));
            }
        }
        return;
    }
    let cpu = std::env::var_os("SLOTGUARD_BENCH_CPU").is_some();
    c.bench_function(&format!("one_thread/{name}"), |b| {
        b.iter_custom(|iters| {
            rt.single.block_on(async {
                let (start, cpu_start) = (Instant::now(), thread_cpu());
                run(&svc, keys, make, 0, iters).await;
                match (cpu, cpu_start, thread_cpu()) {
                    (true, Some(a), Some(b)) => b.saturating_sub(a),
                    _ => start.elapsed(),
                }
            })
        })
    });
    c.bench_function(&format!("eight_tasks/{name}"), |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            let elapsed = rt.multi.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let (svc, keys) = (svc.clone(), keys.clone());
                        // Tasks start at different keys so they do not walk
                        // the nodes in lockstep.
                        let from = t as usize * (KEYS / TASKS as usize);
                        tokio::spawn(async move { run(&svc, &keys, make, from, per_task).await })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
                start.elapsed()
            });
            // Criterion wants the time of `iters` calls; we made
            // `per_task × TASKS` of them.
            elapsed.mul_f64(iters as f64 / (per_task * TASKS) as f64)
        })
    });
}

/// CPU time of the calling thread so far, `None` where there is no such
/// clock.
fn thread_cpu() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()?;
    Some(Duration::from(t))
}

struct Rts {
    single: Runtime,
    multi: Runtime,
}

fn stack(c: &mut Criterion) {
    let rts = Rts {
        single: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}")),
        multi: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}")),
    };
    let topology = Topology::new();
    topology.report(ViewLoaded::new(&view()));
    let keys = Arc::new(Keys::new(&topology));
    let leaf = Leaf { topology: None };
    // The refresher task of `slot_refresh` is spawned by `load` on the
    // multi-thread runtime; it idles for its 15 s period during a run.
    let refresh = |t: &Topology| {
        let layer = SlotRefreshLayer::new(t.clone(), StaticSource(view()));
        rts.multi
            .block_on(layer.load())
            .unwrap_or_else(|e| panic!("load: {e}"))
    };
    let breakers = |t: &Topology| {
        CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(t.clone())
    };

    bench_case(c, &rts, "leaf", leaf.clone(), &keys, Keys::stamped);
    let with_health = Leaf {
        topology: Some(topology.clone()),
    };
    bench_case(
        c,
        &rts,
        "leaf_recording_health",
        with_health,
        &keys,
        Keys::stamped,
    );
    let svc = ServiceBuilder::new()
        .slot_refresh(refresh(&topology))
        .service(leaf.clone());
    bench_case(c, &rts, "slot_refresh", svc, &keys, Keys::by_slot);
    let svc = ServiceBuilder::new()
        .redirect(RedirectLayer::new(topology.clone()))
        .service(leaf.clone());
    bench_case(c, &rts, "redirect", svc, &keys, Keys::stamped);
    let svc = ServiceBuilder::new()
        .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
        .service(leaf.clone());
    bench_case(c, &rts, "replica_failover", svc, &keys, Keys::stamped);
    let svc = ServiceBuilder::new()
        .circuit_breaker(breakers(&topology))
        .service(leaf.clone());
    bench_case(c, &rts, "circuit_breaker", svc, &keys, Keys::stamped);
    // Every request a new key, one after another: each leads its own
    // flight, so this is the cost of the layer on a healthy miss path.
    let svc = ServiceBuilder::new()
        .coalesce(CoalesceLayer::new())
        .service(leaf.clone());
    bench_case(c, &rts, "coalesce", svc, &keys, Keys::stamped);
    // Reads with no recent delete logged: one atomic load per read.
    let svc = ServiceBuilder::new()
        .invalidation_log(InvalidationLogLayer::new(topology.clone()))
        .service(leaf.clone());
    bench_case(c, &rts, "invalidation_log", svc, &keys, Keys::stamped);
    let svc = ServiceBuilder::new()
        .slot_refresh(refresh(&topology))
        .redirect(RedirectLayer::new(topology.clone()))
        .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
        .circuit_breaker(breakers(&topology))
        .service(leaf.clone());
    bench_case(c, &rts, "full_stack", svc.clone(), &keys, Keys::by_slot);
    // The floor of any layer: tower's `MapResponse` with the identity, a
    // layer that does nothing but wrap the call and its future (compare
    // `telemetry_no_sdk`), alone and over the full stack just measured.
    let passthrough = || ServiceBuilder::new().map_response(|r: CacheResponse| r);
    bench_case(
        c,
        &rts,
        "passthrough",
        passthrough().service(leaf.clone()),
        &keys,
        Keys::stamped,
    );
    bench_case(
        c,
        &rts,
        "full_stack_passthrough",
        passthrough().service(svc),
        &keys,
        Keys::by_slot,
    );
    telemetry_cases(c, &rts, &topology, &keys, &refresh, &breakers, &leaf);
    let svc = ServiceBuilder::new()
        .coalesce(CoalesceLayer::new())
        .slot_refresh(refresh(&topology))
        .redirect(RedirectLayer::new(topology.clone()))
        .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
        .circuit_breaker(breakers(&topology))
        .service(leaf);
    bench_case(c, &rts, "full_stack_coalesced", svc, &keys, Keys::by_slot);
}

/// The telemetry layer with no SDK and with the SDK, alone and over the
/// full stack (compare with `leaf` and `full_stack`).
fn telemetry_cases(
    c: &mut Criterion,
    rts: &Rts,
    topology: &Topology,
    keys: &Arc<Keys>,
    refresh: &dyn Fn(&Topology) -> SlotRefreshLayer,
    breakers: &dyn Fn(&Topology) -> CircuitBreakerLayer,
    leaf: &Leaf,
) {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::TracerProvider as _;
    let meters = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(
            opentelemetry_sdk::metrics::PeriodicReader::builder(
                opentelemetry_sdk::metrics::InMemoryMetricExporter::default(),
            )
            .with_interval(Duration::from_secs(3600))
            .build(),
        )
        .build();
    let tracers = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let no_sdk = || TelemetryLayer::new();
    let sdk = || {
        TelemetryLayer::builder()
            .meter(meters.meter("slotguard"))
            .tracer(tracers.tracer("slotguard"))
            .build()
    };
    // The SDK's meter provider, spans left to the API's no-op tracer.
    let sdk_metrics = || {
        TelemetryLayer::builder()
            .meter(meters.meter("slotguard"))
            .build()
    };
    // Spans sampled at 1 %, as a busy service would trace.
    let sampled = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::TraceIdRatioBased(0.01))
        .build();
    let sdk_sampled = || {
        TelemetryLayer::builder()
            .meter(meters.meter("slotguard"))
            .tracer(sampled.tracer("slotguard"))
            .build()
    };
    for (name, layer) in [
        ("no_sdk", no_sdk()),
        ("sdk", sdk()),
        ("sdk_metrics", sdk_metrics()),
        ("sdk_sampled", sdk_sampled()),
    ] {
        let svc = ServiceBuilder::new()
            .telemetry(layer.clone())
            .service(leaf.clone());
        bench_case(
            c,
            rts,
            &format!("telemetry_{name}"),
            svc,
            keys,
            Keys::stamped,
        );
        let svc = ServiceBuilder::new()
            .telemetry(layer)
            .slot_refresh(refresh(topology))
            .redirect(RedirectLayer::new(topology.clone()))
            .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
            .circuit_breaker(breakers(topology))
            .service(leaf.clone());
        bench_case(
            c,
            rts,
            &format!("full_stack_telemetry_{name}"),
            svc,
            keys,
            Keys::by_slot,
        );
    }
}

criterion_group! {
    name = benches;
    // Short enough for a shared 2-core machine (~1.5 min for all cases).
    config = settings::short(50);
    targets = stack
}
criterion_main!(benches);
