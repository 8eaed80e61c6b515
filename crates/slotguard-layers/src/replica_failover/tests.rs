use std::time::Duration;

use slotguard_core::{
    classify, key_slot, BoxError, CacheError, CacheRequest, CacheResponse, Consistency, Failure,
    Path, Role, Route, Topology,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::{FailoverPolicy, ReadFrom, ReplicaFailoverLayer};
use crate::test_support::{addr, one_shard};

type Handle = mock::Handle<CacheRequest, CacheResponse>;
type Svc = super::ReplicaFailover<mock::Mock<CacheRequest, CacheResponse>>;

/// One shard: primary 1, replicas 101 and 102.
fn setup(policy: FailoverPolicy) -> (Topology, Svc, Handle) {
    let topology = Topology::new();
    crate::test_support::install(&topology, &one_shard(1, &[101, 102]));
    let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = ReplicaFailoverLayer::with_policy(topology.clone(), policy).layer(svc);
    (topology, svc, handle)
}

fn get() -> CacheRequest {
    CacheRequest::get("k").to_node(addr(1), Role::Primary)
}

fn node_of(r: &CacheRequest) -> (u16, Role) {
    match &r.route {
        Route::Node { addr, role, .. } => (addr.port(), *role),
        Route::Slot => panic!("unrouted"),
    }
}

fn timeout(port: u16) -> CacheError {
    CacheError::Timeout { node: addr(port) }
}

/// The call's next attempt goes to a replica, which answers: the call
/// succeeds.
async fn a_replica_answers(
    handle: &mut Handle,
    call: tokio::task::JoinHandle<Result<CacheResponse, BoxError>>,
) {
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r).1, Role::Replica);
    send.send_response(CacheResponse::from_node(None, addr(101), Path::Replica));
    call.await.unwrap().unwrap();
}

async fn no_request_within(handle: &mut Handle, d: Duration) -> bool {
    matches!(
        tokio::time::timeout(d, handle.next_request()).await,
        Err(_) | Ok(None)
    )
}

#[tokio::test(start_paused = true)]
async fn a_read_failing_on_the_primary_is_answered_by_a_replica() {
    let (topology, svc, mut handle) = setup(FailoverPolicy::default());
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(get().with_timeout(Duration::from_secs(1))));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r), (1, Role::Primary));
    // the primary attempt has its own short deadline
    assert_eq!(r.deadline, Some(started + Duration::from_millis(100)));
    send.send_error(timeout(1));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r).1, Role::Replica);
    assert_eq!(r.attempts.failovers, 1);
    assert_eq!(
        r.deadline,
        Some(started + Duration::from_secs(1)),
        "the replica gets the rest"
    );
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the first failover goes at once"
    );
    send.send_response(CacheResponse::from_node(None, addr(101), Path::Replica));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Replica);
    assert_eq!(topology.refresh_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn writes_never_go_to_replicas() {
    let (topology, svc, mut handle) = setup(FailoverPolicy::default());
    let req = CacheRequest::set("k", "v", None).to_node(addr(1), Role::Primary);
    let call = tokio::spawn(svc.oneshot(req));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(r.deadline, None, "writes keep their own deadline");
    send.send_error(CacheError::CircuitOpen {
        scope: slotguard_core::BreakerScope::Node(addr(1)),
    });
    assert_eq!(
        classify(&call.await.unwrap().unwrap_err()),
        Failure::CircuitOpen
    );
    assert!(no_request_within(&mut handle, Duration::from_secs(1)).await);
    assert_eq!(
        topology.refresh_requests(),
        1,
        "a failing write asks for a refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn primary_consistency_does_not_fail_over() {
    let (_t, svc, mut handle) = setup(FailoverPolicy::default());
    let call = tokio::spawn(svc.oneshot(get().with_consistency(Consistency::Primary)));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(timeout(1));
    assert_eq!(
        classify(&call.await.unwrap().unwrap_err()),
        Failure::Timeout
    );
    assert!(no_request_within(&mut handle, Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn redirects_and_server_errors_pass_through() {
    let (_t, svc, mut handle) = setup(FailoverPolicy::default());
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Moved {
        slot: key_slot(b"k"),
        addr: addr(2),
    });
    assert_eq!(classify(&call.await.unwrap().unwrap_err()), Failure::Moved);
    assert!(no_request_within(&mut handle, Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn bounded_attempts_with_jittered_backoff() {
    let (_t, svc, mut handle) = setup(FailoverPolicy::default());
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(timeout(1));
    let (r1, send) = handle.next_request().await.unwrap();
    let t1 = Instant::now();
    send.send_error(timeout(node_of(&r1).0));
    let (r2, send) = handle.next_request().await.unwrap();
    assert!(
        t1.elapsed() <= Duration::from_millis(50),
        "backoff within base × 2⁰"
    );
    assert_ne!(node_of(&r1).0, node_of(&r2).0, "another replica");
    send.send_error(timeout(node_of(&r2).0));
    assert_eq!(
        classify(&call.await.unwrap().unwrap_err()),
        Failure::Timeout
    );
    assert!(
        no_request_within(&mut handle, Duration::from_secs(1)).await,
        "2 failovers at most"
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_primary_breaker_sends_reads_straight_to_a_replica() {
    let (topology, svc, mut handle) = setup(FailoverPolicy::default());
    crate::test_support::breaker_open(&topology, &addr(1), true);
    let call = tokio::spawn(svc.oneshot(get()));
    a_replica_answers(&mut handle, call).await;
}

#[tokio::test(start_paused = true)]
async fn unlinked_replicas_are_the_last_resort_for_replica_ok() {
    let (topology, svc, mut handle) = setup(FailoverPolicy::default());
    crate::test_support::link(&topology, &addr(101), false, Duration::from_secs(1));
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(timeout(1));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(
        node_of(&r),
        (102, Role::Replica),
        "the linked replica first"
    );
    send.send_error(timeout(102));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r), (101, Role::Replica));
    send.send_response(CacheResponse::from_node(None, addr(101), Path::Replica));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn no_eligible_replica_returns_the_primary_error() {
    let (topology, svc, mut handle) = setup(FailoverPolicy::default());
    for p in [101, 102] {
        crate::test_support::link(&topology, &addr(p), false, Duration::from_secs(60));
    }
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(timeout(1));
    assert_eq!(
        classify(&call.await.unwrap().unwrap_err()),
        Failure::Timeout
    );
    // a read that accepts that staleness is answered
    let (topology2, svc2, mut handle2) = setup(FailoverPolicy::default());
    for p in [101, 102] {
        crate::test_support::link(&topology2, &addr(p), false, Duration::from_secs(60));
    }
    drop(topology);
    let req = get().with_consistency(Consistency::StaleOk(Duration::from_secs(120)));
    let call = tokio::spawn(svc2.oneshot(req));
    let (_r, send) = handle2.next_request().await.unwrap();
    send.send_error(timeout(1));
    a_replica_answers(&mut handle2, call).await;
}

#[tokio::test(start_paused = true)]
async fn replica_preferred_reads_start_on_a_replica() {
    let (_t, svc, mut handle) = setup(FailoverPolicy {
        read_from: ReadFrom::ReplicaPreferred,
        ..FailoverPolicy::default()
    });
    let call = tokio::spawn(svc.oneshot(get()));
    a_replica_answers(&mut handle, call).await;
}

#[tokio::test(start_paused = true)]
async fn a_clusterdown_read_tries_a_replica_and_stays_typed() {
    let (_topology, svc, mut handle) = setup(FailoverPolicy::default());
    let call = tokio::spawn(svc.oneshot(get().with_timeout(Duration::from_secs(2))));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r), (1, Role::Primary));
    send.send_error(CacheError::ClusterDown);
    // a replica may still answer (`cluster-allow-reads-when-down`)
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r).1, Role::Replica);
    send.send_error(CacheError::ClusterDown);
    // the other replica refuses for a reason that follows from it
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r).1, Role::Replica);
    send.send_error(CacheError::CircuitOpen {
        scope: slotguard_core::BreakerScope::Node(addr(node_of(&r).0)),
    });
    // the caller hears the cluster-wide state, for Fallback to answer
    assert_eq!(
        classify(&call.await.unwrap().unwrap_err()),
        Failure::ClusterDown
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_answers_a_clusterdown_read() {
    let (_topology, svc, mut handle) = setup(FailoverPolicy::default());
    let call = tokio::spawn(svc.oneshot(get().with_timeout(Duration::from_secs(2))));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::ClusterDown);
    let (r, send) = handle.next_request().await.unwrap();
    let (port, role) = node_of(&r);
    assert_eq!(role, Role::Replica);
    send.send_response(CacheResponse::from_node(
        Some("v".into()),
        addr(port),
        Path::Replica,
    ));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Replica);
}
