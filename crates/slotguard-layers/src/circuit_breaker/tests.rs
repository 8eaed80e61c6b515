use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use slotguard_core::{
    as_cache_error, classify, BoxError, BreakerScope, CacheError, CacheRequest, CacheResponse,
    Failure, Path, Role, Topology,
};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_test::mock;

use super::{BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakerLayer};
use crate::test_support::addr;

pub(super) type Handle = mock::Handle<CacheRequest, CacheResponse>;
pub(super) type Svc = CircuitBreaker<mock::Mock<CacheRequest, CacheResponse>>;

pub(super) fn setup(layer: &CircuitBreakerLayer) -> (Svc, Handle) {
    let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
    (layer.layer(svc), handle)
}

/// Small numbers so tests stay short; the defaults otherwise.
pub(super) fn small() -> BreakerConfig {
    BreakerConfig {
        minimum_calls: 4,
        ..rates_only()
    }
}

/// Defaults without the failure-run rule, to test the window rates alone.
fn rates_only() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: 0,
        ..BreakerConfig::default()
    }
}

pub(super) fn node(port: u16) -> BreakerScope {
    BreakerScope::Node(addr(port))
}

fn req_to(port: u16) -> CacheRequest {
    CacheRequest::get("k").to_node(addr(port), Role::Primary)
}

pub(super) fn ok(port: u16) -> CacheResponse {
    CacheResponse::from_node(None, addr(port), Path::Primary)
}

fn timeout(port: u16) -> CacheError {
    CacheError::Timeout { node: addr(port) }
}

/// One call to `port` that reaches the leaf and gets `outcome`.
pub(super) async fn round_trip(
    svc: &mut Svc,
    handle: &mut Handle,
    port: u16,
    outcome: Result<(), CacheError>,
) -> Result<CacheResponse, BoxError> {
    let fut = svc.ready().await.unwrap().call(req_to(port));
    // unconstrained: tokio's coop budget must not make `recv` yield here
    let (r, send) = tokio::task::unconstrained(handle.next_request())
        .now_or_never()
        .expect("the call reached the leaf")
        .unwrap();
    assert_eq!(r.node(), Some(&addr(port)));
    match outcome {
        Ok(()) => send.send_response(ok(port)),
        Err(e) => send.send_error(e),
    }
    fut.await
}

pub(super) async fn fail(svc: &mut Svc, handle: &mut Handle, port: u16, times: usize) {
    for _ in 0..times {
        let err = round_trip(svc, handle, port, Err(timeout(port)))
            .await
            .unwrap_err();
        assert_eq!(classify(&err), Failure::Timeout);
    }
}

pub(super) async fn succeed(svc: &mut Svc, handle: &mut Handle, port: u16, times: usize) {
    for _ in 0..times {
        round_trip(svc, handle, port, Ok(())).await.unwrap();
    }
}

/// A read of `port` that must fail fast (see [`refused_request`]).
async fn refused(svc: &mut Svc, handle: &mut Handle, port: u16, scope: BreakerScope) {
    refused_request(svc, handle, req_to(port), scope).await;
}

/// A call that must fail fast: ready at once, `CircuitOpen` for `scope`,
/// and nothing reaches the leaf.
pub(super) async fn refused_request(
    svc: &mut Svc,
    handle: &mut Handle,
    req: CacheRequest,
    scope: BreakerScope,
) {
    // readiness is never held back by the breaker
    let ready = svc.ready().now_or_never().expect("ready at once").unwrap();
    let err = ready
        .call(req)
        .now_or_never()
        .expect("fails fast")
        .unwrap_err();
    assert_eq!(classify(&err), Failure::CircuitOpen);
    assert!(matches!(
        as_cache_error(&err),
        Some(CacheError::CircuitOpen { scope: s }) if *s == scope
    ));
    assert!(
        handle.next_request().now_or_never().is_none(),
        "no request reached the leaf"
    );
}

/// Open the breaker of `port` with `minimum_calls` failures.
pub(super) async fn trip(
    svc: &mut Svc,
    handle: &mut Handle,
    layer: &CircuitBreakerLayer,
    port: u16,
) {
    let n = layer.config().minimum_calls as usize;
    fail(svc, handle, port, n).await;
    assert_eq!(layer.state(&node(port)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_minimum_calls_then_opens() {
    let layer = CircuitBreakerLayer::per_node(rates_only());
    let (mut svc, mut handle) = setup(&layer);
    fail(&mut svc, &mut handle, 1, 19).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    assert_eq!(layer.opened_total(), 0);
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    assert_eq!(layer.opened_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn opens_when_the_failure_rate_reaches_the_threshold() {
    let layer = CircuitBreakerLayer::per_node(rates_only());
    let (mut svc, mut handle) = setup(&layer);
    succeed(&mut svc, &mut handle, 1, 11).await;
    fail(&mut svc, &mut handle, 1, 9).await;
    // 9 / 20 = 45 %
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 1).await;
    // 10 / 21 ≈ 48 %
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 1).await;
    // 11 / 22 = 50 %
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_fails_fast_without_calling_the_leaf() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    for _ in 0..5 {
        refused(&mut svc, &mut handle, 1, node(1)).await;
    }
    assert_eq!(layer.rejected_total(), 5);
    assert_eq!(layer.opened_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_probes_then_closes() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    tokio::time::advance(Duration::from_millis(999)).await;
    refused(&mut svc, &mut handle, 1, node(1)).await;
    tokio::time::advance(Duration::from_millis(1)).await;

    // three probes reach the leaf, a fourth call fails fast
    let mut probes = Vec::new();
    for _ in 0..3 {
        let fut = svc.ready().await.unwrap().call(req_to(1));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        probes.push((fut, send));
    }
    assert_eq!(layer.state(&node(1)), BreakerState::HalfOpen);
    refused(&mut svc, &mut handle, 1, node(1)).await;

    for (fut, send) in probes {
        send.send_response(ok(1));
        fut.await.unwrap();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    assert_eq!(layer.closed_total(), 1);
    // closed with a fresh window: three failures are below minimum_calls
    fail(&mut svc, &mut handle, 1, 3).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_reopens_with_a_new_cool_down() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;

    let first = svc.ready().await.unwrap().call(req_to(1));
    let (_r, first_send) = handle.next_request().now_or_never().unwrap().unwrap();
    let second = svc.ready().await.unwrap().call(req_to(1));
    let (_r, second_send) = handle.next_request().now_or_never().unwrap().unwrap();

    tokio::time::advance(Duration::from_millis(10)).await;
    first_send.send_error(CacheError::Connection {
        node: addr(1),
        detail: "refused".into(),
    });
    first.await.unwrap_err();
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    assert_eq!(layer.opened_total(), 2);

    // a probe of the earlier half-open period succeeding changes nothing
    second_send.send_response(ok(1));
    second.await.unwrap();
    assert_eq!(layer.state(&node(1)), BreakerState::Open);

    // the new cool-down counts from the probe's failure
    tokio::time::advance(Duration::from_millis(999)).await;
    refused(&mut svc, &mut handle, 1, node(1)).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    succeed(&mut svc, &mut handle, 1, 3).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_an_earlier_period_are_not_counted() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    // a call admitted while closed, answered only after a full recovery
    let late = svc.ready().await.unwrap().call(req_to(1));
    let (_r, late_send) = handle.next_request().now_or_never().unwrap().unwrap();
    trip(&mut svc, &mut handle, &layer, 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;

    // a probe of the first half-open period, answered in the second one
    let stale = svc.ready().await.unwrap().call(req_to(1));
    let (_r, stale_send) = handle.next_request().now_or_never().unwrap().unwrap();
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut probes = Vec::new();
    for _ in 0..3 {
        let fut = svc.ready().await.unwrap().call(req_to(1));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        probes.push((fut, send));
    }
    stale_send.send_response(ok(1));
    stale.await.unwrap();
    refused(&mut svc, &mut handle, 1, node(1)).await;
    let last = probes.pop();
    for (fut, send) in probes {
        send.send_response(ok(1));
        fut.await.unwrap();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::HalfOpen);
    if let Some((fut, send)) = last {
        send.send_response(ok(1));
        fut.await.unwrap();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);

    // the closed-period call fails now: not in the fresh window
    late_send.send_error(timeout(1));
    late.await.unwrap_err();
    fail(&mut svc, &mut handle, 1, 3).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = svc.ready().await.unwrap().call(req_to(1));
    let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
    tokio::time::advance(Duration::from_millis(60)).await;
    send.send_response(ok(1));
    probe.await.unwrap();
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    assert_eq!(layer.opened_total(), 2);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let calls = Arc::new(AtomicUsize::new(0));
    // A leaf answering keys "slow" after 60 ms and others at once.
    let leaf = service_fn({
        let calls = calls.clone();
        move |req: CacheRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if &req.key()[..] == b"slow" {
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
                Ok::<_, CacheError>(ok(1))
            }
        }
    });
    let layer = CircuitBreakerLayer::per_node(rates_only());
    let mut svc = layer.layer(leaf);
    let to_1 = |key: &'static str| CacheRequest::get(key).to_node(addr(1), Role::Primary);
    for _ in 0..4 {
        svc.ready().await.unwrap().call(to_1("fast")).await.unwrap();
    }
    for _ in 0..15 {
        svc.ready().await.unwrap().call(to_1("slow")).await.unwrap();
    }
    // 15 / 19 slow, but below minimum_calls
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    svc.ready().await.unwrap().call(to_1("slow")).await.unwrap();
    // 16 / 20 = 80 %
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(to_1("fast"))
        .await
        .unwrap_err();
    assert_eq!(classify(&err), Failure::CircuitOpen);
    assert_eq!(calls.load(Ordering::SeqCst), 20);
}

#[tokio::test(start_paused = true)]
async fn calls_at_the_slow_call_duration_are_not_slow() {
    let leaf = service_fn(|_req: CacheRequest| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, CacheError>(ok(1))
    });
    let layer = CircuitBreakerLayer::per_node(small());
    let mut svc = layer.layer(leaf);
    for _ in 0..10 {
        svc.ready().await.unwrap().call(req_to(1)).await.unwrap();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn nodes_are_isolated() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    succeed(&mut svc, &mut handle, 2, 1).await;
    trip(&mut svc, &mut handle, &layer, 1).await;
    refused(&mut svc, &mut handle, 1, node(1)).await;
    // node 2 is still called, and its failures are its own
    succeed(&mut svc, &mut handle, 2, 3).await;
    fail(&mut svc, &mut handle, 2, 3).await;
    assert_eq!(layer.state(&node(2)), BreakerState::Closed);
    assert_eq!(
        layer.states(),
        vec![
            (node(1), BreakerState::Open),
            (node(2), BreakerState::Closed)
        ]
    );
    // never-called nodes and the other kind of scope read as closed
    assert_eq!(layer.state(&node(3)), BreakerState::Closed);
    assert_eq!(layer.state(&BreakerScope::Global), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_node_pass_unguarded() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    for _ in 0..10 {
        let fut = svc.ready().await.unwrap().call(CacheRequest::get("k"));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        send.send_error(timeout(1));
        assert_eq!(classify(&fut.await.unwrap_err()), Failure::Timeout);
    }
    assert!(layer.states().is_empty());
    assert_eq!(layer.opened_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn global_scope_guards_every_call() {
    let layer = CircuitBreakerLayer::global(small());
    let (mut svc, mut handle) = setup(&layer);
    // failures on different nodes, and on an unrouted request, add up
    fail(&mut svc, &mut handle, 1, 2).await;
    fail(&mut svc, &mut handle, 2, 1).await;
    let fut = svc.ready().await.unwrap().call(CacheRequest::get("k"));
    let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
    send.send_error(CacheError::ClusterDown);
    fut.await.unwrap_err();
    assert_eq!(layer.state(&BreakerScope::Global), BreakerState::Open);
    assert_eq!(
        layer.states(),
        vec![(BreakerScope::Global, BreakerState::Open)]
    );
    refused(&mut svc, &mut handle, 3, BreakerScope::Global).await;
    // a global layer has no per-node breakers
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_futures_free_probe_slots() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut probes = Vec::new();
    for _ in 0..3 {
        let fut = svc.ready().await.unwrap().call(req_to(1));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        probes.push((fut, send));
    }
    refused(&mut svc, &mut handle, 1, node(1)).await;
    // the caller gives up on one probe: its slot is free again
    drop(probes.pop());
    let fut = svc.ready().await.unwrap().call(req_to(1));
    let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
    probes.push((fut, send));
    refused(&mut svc, &mut handle, 1, node(1)).await;
    assert_eq!(layer.state(&node(1)), BreakerState::HalfOpen);
    for (fut, send) in probes {
        send.send_response(ok(1));
        fut.await.unwrap();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_count_as_nothing() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    for _ in 0..10 {
        let fut = svc.ready().await.unwrap().call(req_to(1));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        drop(fut);
        send.send_error(timeout(1));
    }
    // the window is still empty: three failures are below minimum_calls
    fail(&mut svc, &mut handle, 1, 3).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn redirects_server_errors_and_inner_refusals_count_as_success() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    let answers = [
        CacheError::Moved {
            slot: 1,
            addr: addr(2),
        },
        CacheError::Ask {
            slot: 1,
            addr: addr(2),
        },
        CacheError::TryAgain,
        CacheError::ReadOnly,
        CacheError::Server("WRONGTYPE Operation against a key".into()),
        CacheError::InvalidInput("key too long".into()),
        CacheError::CircuitOpen {
            scope: BreakerScope::Global,
        },
    ];
    for _ in 0..3 {
        for e in &answers {
            round_trip(&mut svc, &mut handle, 1, Err(e.clone()))
                .await
                .unwrap_err();
        }
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    // with 21 successes in the window, 20 failures stay below 50 %
    fail(&mut svc, &mut handle, 1, 20).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn every_node_fault_counts_as_a_failure() {
    let faults = [
        CacheError::Timeout { node: addr(1) },
        CacheError::Connection {
            node: addr(1),
            detail: "reset".into(),
        },
        CacheError::Loading,
        CacheError::Busy,
        CacheError::Indeterminate {
            node: addr(1),
            detail: "no reply".into(),
        },
    ];
    for e in faults {
        let layer = CircuitBreakerLayer::per_node(small());
        let (mut svc, mut handle) = setup(&layer);
        for _ in 0..4 {
            round_trip(&mut svc, &mut handle, 1, Err(e.clone()))
                .await
                .unwrap_err();
        }
        assert_eq!(layer.state(&node(1)), BreakerState::Open, "{e}");
    }
    // tower's load shedder refusing is a fault too
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    for _ in 0..4 {
        let fut = svc.ready().await.unwrap().call(req_to(1));
        let (_r, send) = handle.next_request().now_or_never().unwrap().unwrap();
        send.send_error(tower::load_shed::error::Overloaded::new());
        fut.await.unwrap_err();
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn old_outcomes_slide_out_of_the_window() {
    let layer = CircuitBreakerLayer::per_node(rates_only());
    let (mut svc, mut handle) = setup(&layer);
    fail(&mut svc, &mut handle, 1, 19).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // the 19 failures are 10 s old: gone
    fail(&mut svc, &mut handle, 1, 19).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_within_the_window_still_count() {
    let layer = CircuitBreakerLayer::per_node(rates_only());
    let (mut svc, mut handle) = setup(&layer);
    succeed(&mut svc, &mut handle, 1, 11).await;
    succeed(&mut svc, &mut handle, 2, 11).await;
    tokio::time::advance(Duration::from_millis(9_900)).await;
    // node 1: the successes are still in the window, so 11 failures make
    // 22 calls at 50 %
    fail(&mut svc, &mut handle, 1, 10).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Open);
    // node 2, 100 ms later: its successes slid out, 11 calls are too few
    tokio::time::advance(Duration::from_millis(100)).await;
    fail(&mut svc, &mut handle, 2, 11).await;
    assert_eq!(layer.state(&node(2)), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_counters_and_topology_follow_transitions() {
    let topology = Topology::new();
    let layer = CircuitBreakerLayer::per_node(small()).with_topology(topology.clone());
    let (mut svc, mut handle) = setup(&layer);
    // Read anew each time: reading never creates the node's cell.
    let health = || topology.health(&addr(1));
    assert!(!health().breaker_open());

    trip(&mut svc, &mut handle, &layer, 1).await;
    assert!(health().breaker_open());
    assert_eq!(
        (
            layer.opened_total(),
            layer.half_opened_total(),
            layer.closed_total()
        ),
        (1, 0, 0)
    );

    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(
        health().breaker_open(),
        "routing avoids the node during the cool-down"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    // once the cool-down is over, routing sends the node its probes, with no
    // call needed to flip the flag
    assert!(!health().breaker_open());
    // a due cool-down reads as half-open, but reading never transitions:
    // the first probe call does (issue 16: reads are pure)
    assert_eq!(layer.states(), vec![(node(1), BreakerState::HalfOpen)]);
    assert!(!health().breaker_open(), "half-open admits probes");
    assert_eq!(layer.half_opened_total(), 0);

    succeed(&mut svc, &mut handle, 1, 3).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    assert!(!health().breaker_open());
    assert_eq!(
        (
            layer.opened_total(),
            layer.half_opened_total(),
            layer.closed_total()
        ),
        (1, 1, 1)
    );
    assert!(!topology.health(&addr(2)).breaker_open());
}

#[tokio::test(start_paused = true)]
async fn with_topology_publishes_breakers_already_open() {
    let layer = CircuitBreakerLayer::per_node(small());
    let (mut svc, mut handle) = setup(&layer);
    trip(&mut svc, &mut handle, &layer, 1).await;
    let topology = Topology::new();
    let _layer = layer.clone().with_topology(topology.clone());
    assert!(topology.health(&addr(1)).breaker_open());
    let debug = format!("{layer:?}");
    assert!(debug.contains("Open") && debug.contains("publishing_to_topology: true"));
    // the clone shares its breakers: recovery is published too
    tokio::time::advance(Duration::from_secs(1)).await;
    succeed(&mut svc, &mut handle, 1, 3).await;
    assert!(!topology.health(&addr(1)).breaker_open());
}

#[test]
fn state_names_and_defaults() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<CircuitBreakerLayer>();
    send_sync::<Svc>();
    send::<super::future::ResponseFuture<mock::future::ResponseFuture<CacheResponse>>>();

    assert_eq!(BreakerState::Closed.name(), "closed");
    assert_eq!(BreakerState::Open.name(), "open");
    assert_eq!(BreakerState::HalfOpen.name(), "half_open");
    let c = BreakerConfig::default();
    assert_eq!(c.failure_rate_threshold, 0.5);
    assert_eq!(c.slow_call_rate_threshold, 0.8);
    assert_eq!(c.slow_call_duration, Duration::from_millis(50));
    assert_eq!(c.minimum_calls, 20);
    assert_eq!(c.consecutive_failures, 5);
    assert_eq!(c.window, Duration::from_secs(10));
    assert_eq!(c.window_buckets, 10);
    assert_eq!(c.open_duration, Duration::from_secs(1));
    assert_eq!(c.half_open_probes, 3);
}

#[tokio::test(start_paused = true)]
async fn a_run_of_failures_opens_a_busy_breaker_at_once() {
    let layer = CircuitBreakerLayer::per_node(BreakerConfig::default());
    let (mut svc, mut handle) = setup(&layer);
    // a busy, healthy history: the failure *rate* will stay low
    succeed(&mut svc, &mut handle, 1, 200).await;
    fail(&mut svc, &mut handle, 1, 4).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    // a success breaks the run
    succeed(&mut svc, &mut handle, 1, 1).await;
    fail(&mut svc, &mut handle, 1, 4).await;
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    fail(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(
        layer.state(&node(1)),
        BreakerState::Open,
        "5 failures in a row"
    );
    refused(&mut svc, &mut handle, 1, node(1)).await;
}

#[tokio::test(start_paused = true)]
async fn breakers_of_nodes_that_left_the_topology_are_dropped() {
    let topology = Topology::new();
    crate::test_support::install(&topology, &crate::test_support::view(1, &[(0, 16383, 1)]));
    let layer = CircuitBreakerLayer::per_node(small()).with_topology(topology.clone());
    let (mut svc, mut handle) = setup(&layer);
    succeed(&mut svc, &mut handle, 1, 1).await;
    assert_eq!(layer.states(), vec![(node(1), BreakerState::Closed)]);
    // The shard moved to node 2: the first call there drops node 1's breaker.
    crate::test_support::install(&topology, &crate::test_support::view(2, &[(0, 16383, 2)]));
    succeed(&mut svc, &mut handle, 2, 1).await;
    assert_eq!(layer.states(), vec![(node(2), BreakerState::Closed)]);
}

/// A request whose own deadline passed before the leaf sent anything
/// (`DeadlineExceeded`) is no evidence against the node: any number of them
/// leaves a healthy node's breaker closed.
#[tokio::test(start_paused = true)]
async fn spent_deadlines_never_open_a_breaker() {
    let layer = CircuitBreakerLayer::per_node(BreakerConfig::default());
    let (mut svc, mut handle) = setup(&layer);
    for _ in 0..50 {
        let err = round_trip(&mut svc, &mut handle, 1, Err(CacheError::DeadlineExceeded))
            .await
            .unwrap_err();
        assert!(matches!(
            as_cache_error(&err),
            Some(CacheError::DeadlineExceeded)
        ));
    }
    assert_eq!(layer.state(&node(1)), BreakerState::Closed);
    succeed(&mut svc, &mut handle, 1, 1).await;
}
