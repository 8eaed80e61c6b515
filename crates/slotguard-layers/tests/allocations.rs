//! The healthy path allocates nothing: once every node has been called
//! (breakers and health cells exist), a request through the full default
//! stack makes no heap allocation.
//!
//! `allocation-counter` counts the calling thread's allocations; it is the
//! global allocator of this test binary only.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::FutureExt;
use slotguard_core::{CacheRequest, Consistency, Topology};
use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard_layers::redirect::RedirectLayer;
use slotguard_layers::replica_failover::ReplicaFailoverLayer;
use slotguard_layers::slot_refresh::SlotRefreshLayer;
use slotguard_layers::ServiceBuilderExt;
use tower::{ServiceBuilder, ServiceExt};

#[path = "../benches/support/cluster.rs"]
mod cluster;
use cluster::{view, Leaf, StaticSource};

fn keys() -> Vec<Bytes> {
    (0..64)
        .map(|i| Bytes::from_static(format!("user:{i}").leak().as_bytes()))
        .collect()
}

#[test]
fn the_full_stack_does_not_allocate_per_request() {
    full_stack_allocates_nothing(false);
}

/// With the telemetry layer on top and no OpenTelemetry SDK installed, the
/// healthy path still allocates nothing: the observation record is inline,
/// no span is built, the no-op instruments take prebuilt attributes.
#[test]
fn the_full_stack_under_telemetry_without_an_sdk_does_not_allocate_per_request() {
    full_stack_allocates_nothing(true);
}

#[allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failure
fn full_stack_allocates_nothing(telemetry: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let topology = Topology::new();
    let refresh = rt
        .block_on(SlotRefreshLayer::new(topology.clone(), StaticSource(view())).load())
        .unwrap();
    let telemetry = telemetry.then(|| {
        slotguard_layers::telemetry::TelemetryLayer::builder()
            .topology(topology.clone())
            .build()
    });
    let svc = ServiceBuilder::new()
        .option_layer(telemetry)
        .slot_refresh(refresh)
        .redirect(RedirectLayer::new(topology.clone()))
        .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
        .circuit_breaker(
            CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone()),
        )
        .service(Leaf {
            topology: Some(topology.clone()),
        });
    let keys = keys();
    let _entered = rt.enter();
    // Every future here is ready at once, so polling once runs a request.
    let run = |req: CacheRequest| {
        svc.clone()
            .oneshot(req)
            .now_or_never()
            .expect("an in-memory request is ready at once")
            .expect("the leaf answers")
    };
    let requests = |i: usize| {
        let key = keys[i % keys.len()].clone();
        [
            CacheRequest::get(key.clone()),
            CacheRequest::get(key.clone()).with_consistency(Consistency::Primary),
            CacheRequest::get(key.clone()).with_timeout(Duration::from_secs(1)),
            CacheRequest::set(key.clone(), Bytes::from_static(b"v"), None),
            CacheRequest::delete(key),
        ]
    };
    // Warm up: the first call to a node creates its breaker.
    for i in 0..keys.len() {
        for req in requests(i) {
            run(req);
        }
    }
    // The counter sees this thread's allocations.
    let boxed = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u8))));
    assert_eq!(boxed.count_total, 1);
    let info = allocation_counter::measure(|| {
        for i in 0..1000 {
            for req in requests(i) {
                assert!(run(req).served.node.is_some());
            }
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}
