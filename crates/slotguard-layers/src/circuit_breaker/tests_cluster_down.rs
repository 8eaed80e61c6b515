//! `CLUSTERDOWN` is a cluster-wide state: no per-node breaker trips on it,
//! and none counts it as a success either.

use std::time::Duration;

use slotguard_core::{classify, BreakerScope, CacheError, Failure, Topology};

use super::tests::{fail, node, round_trip, setup, small, succeed, trip};
use super::{BreakerConfig, BreakerState, CircuitBreakerLayer};
use crate::test_support::addr;

async fn cluster_down(
    svc: &mut super::tests::Svc,
    handle: &mut super::tests::Handle,
    port: u16,
    times: usize,
) {
    for _ in 0..times {
        let err = round_trip(svc, handle, port, Err(CacheError::ClusterDown))
            .await
            .unwrap_err();
        // the caller hears it typed, for Fallback to answer
        assert_eq!(classify(&err), Failure::ClusterDown);
    }
}

#[tokio::test(start_paused = true)]
async fn a_clusterdown_storm_opens_no_node_breaker() {
    // the defaults, failure run included
    let topology = Topology::new();
    let layer =
        CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone());
    let (mut svc, mut handle) = setup(&layer);
    for round in 0..10 {
        for port in 1..=3 {
            cluster_down(&mut svc, &mut handle, port, 100).await;
        }
        tokio::time::advance(Duration::from_millis(300 * round)).await;
    }
    for port in 1..=3 {
        assert_eq!(layer.state(&node(port)), BreakerState::Closed);
        assert!(!topology.health(&addr(port)).breaker_open());
    }
    assert_eq!(layer.opened_total(), 0);
    assert_eq!(layer.rejected_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn clusterdown_does_not_count_as_a_success() {
    // 50 % of at least 4 calls: 2 timeouts, a CLUSTERDOWN storm, 2 more
    // timeouts. Were the storm successes, the rate would be 4 / 204.
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    fail(&mut svc, &mut handle, 1, 2).await;
    cluster_down(&mut svc, &mut handle, 1, 200).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 2).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn clusterdown_does_not_break_a_failure_run() {
    let layer = CircuitBreakerLayer::per_node(BreakerConfig {
        consecutive_failures: 3,
        minimum_calls: 1_000,
        ..BreakerConfig::default()
    });
    let (mut svc, mut handle) = setup(&layer);
    fail(&mut svc, &mut handle, 1, 2).await;
    cluster_down(&mut svc, &mut handle, 1, 10).await;
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_half_open_probe_answered_clusterdown_gives_its_slot_back() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    tokio::time::advance(layer.config().open_duration).await;
    // more CLUSTERDOWN probes than probe slots: each one is let through,
    // none opens or closes the breaker
    let probes = layer.config().half_open_probes as usize;
    cluster_down(&mut svc, &mut handle, 1, probes * 3).await;
    assert_eq!(layer.state(&node(1)), BreakerState::HalfOpen);
    assert_eq!(layer.opened_total(), 1);
    // the cluster is back: the probes close it
    succeed(&mut svc, &mut handle, 1, probes).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_global_breaker_counts_clusterdown() {
    // a global breaker guards the cluster, whose state this is
    let layer = CircuitBreakerLayer::global(small());
    let (mut svc, mut handle) = setup(&layer);
    cluster_down(&mut svc, &mut handle, 1, 4).await;
    assert_eq!(layer.state(&BreakerScope::Global), BreakerState::Open);
}
