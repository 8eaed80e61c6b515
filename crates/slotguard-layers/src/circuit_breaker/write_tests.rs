//! Writes and the breaker: opening fences the node's writes, and a write is
//! never a half-open probe.

use std::time::Duration;

use futures_util::FutureExt;
use slotguard_core::{CacheRequest, Role, Topology};
use tower::{Service, ServiceExt};

use super::tests::{fail, node, ok, refused_request, setup, small};
use super::{BreakerState, CircuitBreakerLayer};
use crate::test_support::addr;

fn write_to(port: u16) -> CacheRequest {
    CacheRequest::set("k", "v", None).to_node(addr(port), Role::Primary)
}

#[tokio::test(start_paused = true)]
async fn opening_fences_writes_and_a_half_open_breaker_probes_with_reads_only() {
    let topology = Topology::new();
    // Node 1 is in the map, so that a refresh round can confirm it.
    crate::test_support::install(&topology, &crate::test_support::view(1, &[(0, 16383, 1)]));
    let layer = CircuitBreakerLayer::per_node(small()).with_topology(topology.clone());
    let (mut svc, mut handle) = setup(&layer);
    fail(&mut svc, &mut handle, 1, 4).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    let health = topology.health(&addr(1));
    assert!(health.writes_fenced(), "an open breaker fences writes");
    assert!(topology.refresh_requests() > 0, "and asks for a view");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(layer.state(&node(1)), BreakerState::HalfOpen);

    // While the node is unconfirmed a write fails fast, without a probe.
    refused_request(&mut svc, &mut handle, write_to(1), node(1)).await;

    // A fresh view confirms the node: writes pass, still not as probes.
    assert!(crate::test_support::confirm(
        &topology,
        &addr(1),
        tokio::time::Instant::now()
    ));
    let fut = svc.ready().await.unwrap().call(write_to(1));
    let (r, send) = handle.next_request().now_or_never().unwrap().unwrap();
    assert!(!r.op.is_read());
    send.send_response(ok(1));
    fut.await.unwrap();
    assert_eq!(layer.state(&node(1)), BreakerState::HalfOpen);

    // Reads are the probes: three close it.
    for _ in 0..3 {
        let fut = svc
            .ready()
            .await
            .unwrap()
            .call(CacheRequest::get("k").to_node(addr(1), Role::Primary));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        send.send_response(ok(1));
        fut.await.unwrap();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn without_a_topology_a_half_open_breaker_refuses_writes() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    fail(&mut svc, &mut handle, 1, 4).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    refused_request(&mut svc, &mut handle, write_to(1), node(1)).await;
}
