use std::time::Duration;

use slotguard_core::{
    classify, key_slot, BoxError, CacheError, CacheRequest, CacheResponse, Failure, Path, Role,
    Route, Topology,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::{RedirectLayer, RedirectPolicy};
use crate::test_support::{addr, two_shards, view};

type Handle = mock::Handle<CacheRequest, CacheResponse>;

fn setup(
    policy: RedirectPolicy,
) -> (
    Topology,
    super::Redirect<mock::Mock<CacheRequest, CacheResponse>>,
    Handle,
) {
    let topology = Topology::new();
    crate::test_support::install(&topology, &two_shards());
    let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = RedirectLayer::with_policy(topology.clone(), policy).layer(svc);
    (topology, svc, handle)
}

/// No request reaches the leaf within `d` (or the service is gone).
async fn no_request_within(handle: &mut Handle, d: Duration) -> bool {
    matches!(
        tokio::time::timeout(d, handle.next_request()).await,
        Err(_) | Ok(None)
    )
}

fn ok(port: u16) -> CacheResponse {
    CacheResponse::from_node(None, addr(port), Path::Primary)
}

/// A key whose slot is on port 1 (slots 0..=8191).
fn key_on_1() -> &'static str {
    let k = "bar";
    assert!(key_slot(k.as_bytes()) < 8192);
    k
}

fn req_to(port: u16) -> CacheRequest {
    CacheRequest::get(key_on_1()).to_node(addr(port), Role::Primary)
}

fn route_of(r: &CacheRequest) -> (u16, bool) {
    match &r.route {
        Route::Node { addr, asking, .. } => (addr.port(), *asking),
        Route::Slot => panic!("unrouted"),
    }
}

#[tokio::test(start_paused = true)]
async fn moved_patches_the_map_and_takes_one_hop() {
    let (topology, svc, mut handle) = setup(RedirectPolicy::default());
    let slot = key_slot(key_on_1().as_bytes());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (1, false));
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(2),
    });
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (2, false));
    assert_eq!(r.attempts.redirects, 1);
    send.send_response(ok(2));
    assert_eq!(call.await.unwrap().unwrap().served.node, Some(addr(2)));
    assert_eq!(
        topology.load().primary_for_slot(slot).unwrap().addr,
        addr(2)
    );
    assert_eq!(topology.refresh_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn too_many_redirects_after_max_hops() {
    let (_t, svc, mut handle) = setup(RedirectPolicy {
        max_hops: 3,
        ..RedirectPolicy::default()
    });
    let slot = key_slot(key_on_1().as_bytes());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let mut seen = 0;
    for i in 0..4 {
        let (_r, send) = handle.next_request().await.unwrap();
        seen += 1;
        let to = if i % 2 == 0 { 2 } else { 1 };
        send.send_error(CacheError::Moved {
            slot,
            addr: addr(to),
        });
    }
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(classify(&err), Failure::TooManyRedirects);
    assert_eq!(seen, 4, "first attempt + 3 hops");
    // and no fifth request was sent
    assert!(no_request_within(&mut handle, Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn ask_retries_once_with_asking_and_leaves_the_map() {
    let (topology, svc, mut handle) = setup(RedirectPolicy::default());
    let slot = key_slot(key_on_1().as_bytes());
    let generation = topology.load().generation();
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Ask {
        slot,
        addr: addr(2),
    });
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (2, true));
    send.send_response(ok(2));
    call.await.unwrap().unwrap();
    assert_eq!(topology.load().generation(), generation);
    assert_eq!(
        topology.load().primary_for_slot(slot).unwrap().addr,
        addr(1)
    );
    assert_eq!(topology.refresh_requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn unknown_moved_target_waits_for_a_confirming_refresh() {
    let (topology, svc, mut handle) = setup(RedirectPolicy::default());
    let slot = key_slot(key_on_1().as_bytes());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(9),
    });
    // nothing goes to the unknown node while no refresh confirmed it
    assert!(no_request_within(&mut handle, Duration::from_millis(500)).await);
    assert_eq!(topology.refresh_requests(), 1);
    // the refresh says port 9 now owns the slot
    crate::test_support::install(&topology, &view(2, &[(0, 8191, 9), (8192, 16383, 2)]));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (9, false));
    send.send_response(ok(9));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn unknown_moved_target_without_refresh_fails_with_the_redirect() {
    let (_t, svc, mut handle) = setup(RedirectPolicy::default());
    let slot = key_slot(key_on_1().as_bytes());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    let started = Instant::now();
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(9),
    });
    let err: BoxError = call.await.unwrap().unwrap_err();
    assert_eq!(classify(&err), Failure::Moved);
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "waited the confirm timeout"
    );
    assert!(no_request_within(&mut handle, Duration::from_secs(5)).await);
}

#[tokio::test(start_paused = true)]
async fn tryagain_backs_off_exponentially_on_the_same_node() {
    let (_t, svc, mut handle) = setup(RedirectPolicy::default());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    let t0 = Instant::now();
    send.send_error(CacheError::TryAgain);
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(10));
    assert_eq!(route_of(&r), (1, false));
    let t1 = Instant::now();
    send.send_error(CacheError::TryAgain);
    let (_r, send) = handle.next_request().await.unwrap();
    assert_eq!(t1.elapsed(), Duration::from_millis(20));
    send.send_response(ok(1));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn other_errors_pass_through_without_retry() {
    let (_t, svc, mut handle) = setup(RedirectPolicy::default());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Timeout { node: addr(1) });
    assert_eq!(
        classify(&call.await.unwrap().unwrap_err()),
        Failure::Timeout
    );
    assert!(no_request_within(&mut handle, Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_hops() {
    let budget = std::sync::Arc::new(super::RetryBudget::new(Duration::from_secs(1), 0, 0.0));
    let (_t, svc, mut handle) = setup(RedirectPolicy {
        budget,
        ..RedirectPolicy::default()
    });
    let slot = key_slot(key_on_1().as_bytes());
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(2),
    });
    assert_eq!(classify(&call.await.unwrap().unwrap_err()), Failure::Moved);
}

#[tokio::test(start_paused = true)]
async fn successes_fill_the_budget_and_failures_do_not() {
    let budget = std::sync::Arc::new(super::RetryBudget::new(Duration::from_secs(1), 0, 1.0));
    let (_t, svc, mut handle) = setup(RedirectPolicy {
        budget,
        ..RedirectPolicy::default()
    });
    let slot = key_slot(key_on_1().as_bytes());
    let moved = || CacheError::Moved {
        slot,
        addr: addr(2),
    };
    // a failed request earns nothing: the next MOVED is not followed
    let call = tokio::spawn(svc.clone().oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Timeout { node: addr(1) });
    assert!(call.await.unwrap().is_err());
    let call = tokio::spawn(svc.clone().oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(moved());
    assert_eq!(classify(&call.await.unwrap().unwrap_err()), Failure::Moved);
    // a success deposits one hop's worth
    let call = tokio::spawn(svc.clone().oneshot(req_to(2)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(ok(2));
    call.await.unwrap().unwrap();
    let call = tokio::spawn(svc.clone().oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(moved());
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (2, false));
    send.send_response(ok(2));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn towers_budget_still_fits() {
    let budget = std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(1),
        0,
        0.0,
    ));
    let (_t, svc, mut handle) = setup(RedirectPolicy {
        budget,
        ..RedirectPolicy::default()
    });
    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot: key_slot(key_on_1().as_bytes()),
        addr: addr(2),
    });
    assert_eq!(classify(&call.await.unwrap().unwrap_err()), Failure::Moved);
}

/// A write whose MOVED names a node with fenced writes (unreachable since
/// the last view that confirmed it, e.g. a replica that stalled earlier and
/// was just promoted) is not sent there: it waits for a refresh to confirm
/// the slot's primary and goes once one does.
#[tokio::test(start_paused = true)]
async fn a_write_moved_to_a_fenced_node_waits_for_the_refresh_that_confirms_it() {
    let (topology, svc, mut handle) = setup(RedirectPolicy::default());
    let slot = key_slot(key_on_1().as_bytes());
    crate::test_support::unreachable(&topology, &addr(2));
    let write = CacheRequest::set(key_on_1(), "v", None).to_node(addr(1), Role::Primary);
    let call = tokio::spawn(svc.oneshot(write));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(2),
    });
    // Not sent to the fenced node; a refresh is asked for.
    assert!(no_request_within(&mut handle, Duration::from_millis(50)).await);
    assert!(topology.refresh_requests() >= 1);
    // The refresh confirms node 2 as the slot's primary and lifts its fence.
    let round = Instant::now();
    crate::test_support::install(&topology, &view(2, &[(0, 8191, 2), (8192, 16383, 1)]));
    assert_eq!(
        topology.load().primary_for_slot(slot).unwrap().addr,
        addr(2)
    );
    crate::test_support::confirm(&topology, &addr(2), round);
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (2, false));
    send.send_response(ok(2));
    call.await.unwrap().unwrap();
}

/// With no refresh confirming the fenced node in time, the write is refused
/// with the typed write refusal, never sent there.
#[tokio::test(start_paused = true)]
async fn a_write_moved_to_a_fenced_node_is_refused_when_nothing_confirms_it() {
    let (topology, svc, mut handle) = setup(RedirectPolicy::default());
    let slot = key_slot(key_on_1().as_bytes());
    crate::test_support::unreachable(&topology, &addr(2));
    let write = CacheRequest::set(key_on_1(), "v", None).to_node(addr(1), Role::Primary);
    let call = tokio::spawn(svc.oneshot(write));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(2),
    });
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(classify(&err), Failure::ShardUnavailable);
    assert!(no_request_within(&mut handle, Duration::from_millis(10)).await);
    // A read is not held back by a write fence.
    let (topology2, svc2, mut handle2) = setup(RedirectPolicy::default());
    crate::test_support::unreachable(&topology2, &addr(2));
    let call = tokio::spawn(svc2.oneshot(req_to(1)));
    let (_, send) = handle2.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot,
        addr: addr(2),
    });
    let (r, send) = handle2.next_request().await.unwrap();
    assert_eq!(route_of(&r), (2, false));
    send.send_response(ok(2));
    call.await.unwrap().unwrap();
    drop(topology);
}

/// A write refused with CLUSTERDOWN (not applied) is retried on the same
/// node after a backoff, within its deadline; a read is not (replicas and
/// the fallback answer it).
#[tokio::test(start_paused = true)]
async fn a_write_refused_with_clusterdown_is_retried_a_read_is_not() {
    let (_topology, svc, mut handle) = setup(RedirectPolicy::default());
    let write = CacheRequest::set(key_on_1(), "v", None).to_node(addr(1), Role::Primary);
    let call = tokio::spawn(svc.clone().oneshot(write));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::ClusterDown);
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(route_of(&r), (1, false));
    send.send_response(ok(1));
    call.await.unwrap().unwrap();

    let call = tokio::spawn(svc.oneshot(req_to(1)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::ClusterDown);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(classify(&err), Failure::ClusterDown);
}

/// A write refused with CLUSTERDOWN again and again is retried only for
/// `cluster_down_write_wait` (150 ms) from its first refusal, then the
/// CLUSTERDOWN is its answer: not the ~310 ms of every hop's backoff, and
/// not `TooManyRedirects`.
#[tokio::test(start_paused = true)]
async fn a_write_rides_out_clusterdown_for_a_bounded_time_only() {
    let (_topology, svc, mut handle) = setup(RedirectPolicy::default());
    let write = CacheRequest::set(key_on_1(), "v", None).to_node(addr(1), Role::Primary);
    let call = tokio::spawn(async move {
        let started = Instant::now();
        let out = svc.oneshot(write).await;
        (out, started.elapsed())
    });
    // Refuse every attempt; the call gives up on its own.
    let mut attempts = 0;
    while let Ok(Some((r, send))) =
        tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await
    {
        assert_eq!(route_of(&r), (1, false), "retried in place");
        attempts += 1;
        send.send_error(CacheError::ClusterDown);
    }
    let (out, took) = call.await.unwrap();
    assert_eq!(classify(&out.unwrap_err()), Failure::ClusterDown);
    // The first try, then retries after 10, 20, 40 and 80 ms.
    assert_eq!(attempts, 5);
    assert_eq!(took, Duration::from_millis(150));
}
