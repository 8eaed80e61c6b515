//! The default stack over a real cluster on loopback, with and without the
//! telemetry layer on top (no OpenTelemetry SDK installed): what the layer
//! costs a request that goes to Redis, where the in-memory bench of
//! `slotguard-layers` (`--bench stack`) shows it over a leaf that answers
//! at once.
//!
//! `cargo bench -p slotguard --bench loopback` (needs `redis-server`; the
//! bench says so and measures nothing without it)
//!
//! Both services share one stack (the handle's layers in the handle's
//! order, without a store: coalesce → invalidation_log → slot_refresh →
//! redirect → replica_failover → circuit_breaker → `NodeService`), so the
//! only difference is the telemetry layer. Two measurements:
//!
//! - criterion, `loopback/default_stack` and
//!   `loopback/default_stack_telemetry_no_sdk`: GETs one after another on a
//!   current-thread runtime, as `one_thread/*` in the stack bench;
//! - paired GETs (`SLOTGUARD_BENCH_PAIRS`, default 20,000): one GET
//!   through the stack, one through the stack under telemetry and one
//!   through the stack again (an A/A control), each timed, the order
//!   rotating, so all three see the machine at the same moment. It prints
//!   the medians and the difference of each median from the first with
//!   its 95 % bootstrap interval: the control's interval is
//!   this machine's noise, which the telemetry layer's difference is to
//!   be compared with.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::Criterion;
use slotguard_core::{BoxError, CacheRequest, CacheResponse, ClusterController, Leaf, NodeAddr};
use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard_layers::coalesce::CoalesceLayer;
use slotguard_layers::invalidation::InvalidationLogLayer;
use slotguard_layers::redirect::RedirectLayer;
use slotguard_layers::replica_failover::ReplicaFailoverLayer;
use slotguard_layers::slot_refresh::SlotRefreshLayer;
use slotguard_layers::telemetry::TelemetryLayer;
use slotguard_layers::ServiceBuilderExt;
use slotguard_node::{NodeConfig, NodeService};
use slotguard_testkit::{ClusterSpec, LocalCluster};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

type Svc = BoxCloneSyncService<CacheRequest, CacheResponse, BoxError>;

const KEYS: usize = 1000;
const WARM_UP: usize = 2000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("bench:{}", i % KEYS))
}

async fn gets(svc: &Svc, from: usize, n: usize) {
    for i in from..from + n {
        let resp = svc.clone().oneshot(CacheRequest::get(key(i))).await;
        assert!(resp.is_ok(), "{:?}", resp.err());
        let _ = black_box(resp);
    }
}

/// The handle's stack without a store, and the same stack under the
/// telemetry layer with no SDK.
async fn stacks(seeds: Vec<NodeAddr>) -> (Svc, Svc, ClusterController) {
    let controller = ClusterController::new();
    let topology = controller.topology().clone();
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let source = leaf.topology_source(seeds);
    let refresh = SlotRefreshLayer::new(topology.clone(), source)
        .load()
        .await
        .expect("topology");
    let stack = ServiceBuilder::new()
        .coalesce(CoalesceLayer::new())
        .invalidation_log(InvalidationLogLayer::new(topology.clone()))
        .slot_refresh(refresh)
        .redirect(RedirectLayer::new(topology.clone()))
        .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
        .circuit_breaker(
            CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone()),
        )
        .service(leaf);
    let bare = BoxCloneSyncService::new(stack.clone());
    let telemetry = TelemetryLayer::builder().topology(topology).build();
    let with = BoxCloneSyncService::new(ServiceBuilder::new().telemetry(telemetry).service(stack));
    (bare, with, controller)
}

/// The difference of the medians, `median(y) - median(x)`, and its 95 %
/// bootstrap interval (the GETs resampled as triplets, so the pairing is
/// kept; latencies have long tails, so no normal approximation).
fn paired(x: &[f64], y: &[f64]) -> (f64, f64, f64) {
    let mid = median(&mut y.to_vec()) - median(&mut x.to_vec());
    // A fixed-seed xorshift: the interval is the same for the same data.
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = x.len();
    let mut diffs: Vec<f64> = (0..200)
        .map(|_| {
            let (mut xs, mut ys) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for _ in 0..n {
                let k = (next() % n as u64) as usize;
                xs.push(x[k]);
                ys.push(y[k]);
            }
            median(&mut ys) - median(&mut xs)
        })
        .collect();
    diffs.sort_by(f64::total_cmp);
    (mid, diffs[5], diffs[194])
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = match LocalCluster::start(ClusterSpec::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loopback bench: no cluster ({e}); nothing measured");
            return;
        }
    };
    let seeds = cluster.seeds().iter().map(|s| s.parse().unwrap()).collect();
    let (bare, with, controller) = rt.block_on(stacks(seeds));
    rt.block_on(async {
        let value = Bytes::from(vec![b'v'; 64]);
        for i in 0..KEYS {
            let set = CacheRequest::set(key(i), value.clone(), None);
            bare.clone().oneshot(set).await.expect("set");
        }
        // Warm both: connections, the map, the allocator.
        gets(&bare, 0, WARM_UP).await;
        gets(&with, 0, WARM_UP).await;
    });

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
        .configure_from_args();
    for (name, svc) in [
        ("loopback/default_stack", &bare),
        ("loopback/default_stack_telemetry_no_sdk", &with),
    ] {
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    gets(svc, 0, iters as usize).await;
                    start.elapsed()
                })
            })
        });
    }

    let n: usize = std::env::var("SLOTGUARD_BENCH_PAIRS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000);
    // Per GET: the stack (a), the stack under telemetry (b), the stack
    // again (c: the A/A control, what this method calls a difference when
    // there is none).
    let (mut a, mut b, mut c) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    rt.block_on(async {
        for i in 0..n {
            // One GET through each in turn, the order rotating, so all
            // three see the machine at the same moment.
            let time = |svc: &Svc| {
                let req = CacheRequest::get(key(i));
                let svc = svc.clone();
                async move {
                    let start = Instant::now();
                    let resp = svc.oneshot(req).await;
                    let ns = start.elapsed().as_nanos() as f64;
                    assert!(resp.is_ok(), "{:?}", resp.err());
                    ns
                }
            };
            for turn in 0..3 {
                match (i + turn) % 3 {
                    0 => a.push(time(&bare).await),
                    1 => b.push(time(&with).await),
                    _ => c.push(time(&bare).await),
                }
            }
        }
    });
    let ma = median(&mut a.clone());
    let telemetry = paired(&a, &b);
    let control = paired(&a, &c);
    println!(
        "paired GETs ({n} through each, order rotating): median default_stack {ma:.0} ns, \
         with telemetry (no SDK) {:.0} ns, default_stack again {:.0} ns",
        median(&mut b),
        median(&mut c),
    );
    for (name, (mid, lo, hi)) in [
        ("telemetry (no SDK) - default_stack", telemetry),
        ("default_stack again - default_stack (control)", control),
    ] {
        println!(
            "  {name}: difference of the medians {mid:+.0} ns, 95 % interval {lo:+.0} … {hi:+.0} ns \
             ({:+.2} % … {:+.2} %)",
            lo / ma * 100.0,
            hi / ma * 100.0,
        );
    }
    rt.block_on(controller.shutdown());
    drop(cluster);
}
