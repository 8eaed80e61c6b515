//! Hedged reads: tower-test mocks, paused time.

use std::time::Duration;

use slotguard_core::{
    CacheError, CacheRequest, CacheResponse, Consistency, Path, Role, Route, Topology,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::{FailoverPolicy, HedgePolicy, HedgeStats, ReplicaFailoverLayer};
use crate::test_support::{addr, one_shard};

type Handle = mock::Handle<CacheRequest, CacheResponse>;
type Svc = super::ReplicaFailover<mock::Mock<CacheRequest, CacheResponse>>;

/// One shard: primary 1, replicas 101 and 102.
fn setup(hedge: HedgePolicy) -> (Topology, ReplicaFailoverLayer, Svc, Handle) {
    let topology = Topology::new();
    crate::test_support::install(&topology, &one_shard(1, &[101, 102]));
    let policy = FailoverPolicy {
        hedge: Some(hedge),
        ..FailoverPolicy::default()
    };
    let layer = ReplicaFailoverLayer::with_policy(topology.clone(), policy);
    let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = layer.layer(svc);
    (topology, layer, svc, handle)
}

fn get() -> CacheRequest {
    CacheRequest::get("k")
        .to_node(addr(1), Role::Primary)
        .with_timeout(Duration::from_secs(1))
}

fn node_of(r: &CacheRequest) -> (u16, Role) {
    match &r.route {
        Route::Node { addr, role, .. } => (addr.port(), *role),
        Route::Slot => panic!("unrouted"),
    }
}

fn answer(port: u16, path: Path) -> CacheResponse {
    CacheResponse::from_node(Some("v".into()), addr(port), path)
}

async fn no_request_within(handle: &mut Handle, d: Duration) -> bool {
    matches!(
        tokio::time::timeout(d, handle.next_request()).await,
        Err(_) | Ok(None)
    )
}

fn stats(sent: u64, won: u64, refused: u64) -> HedgeStats {
    HedgeStats { sent, won, refused }
}

type Call = tokio::task::JoinHandle<Result<CacheResponse, slotguard_core::BoxError>>;
type Responder = mock::SendResponse<CacheResponse>;

/// A read to primary 1, which usually answers in 2 ms (so its hedge delay
/// is the floor) and now says nothing: the read, the stalled primary's
/// responder (kept, unanswered), and the hedge sent to a replica after
/// the delay.
async fn a_read_hedged_over_a_stalled_primary(
    topology: &Topology,
    svc: Svc,
    handle: &mut Handle,
) -> (Call, Responder, CacheRequest, Responder) {
    for _ in 0..50 {
        crate::test_support::probed(topology, &addr(1), Some(Duration::from_millis(2)));
    }
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(get()));
    let (r, stalled) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r), (1, Role::Primary));
    let (h, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&h).1, Role::Replica);
    assert_eq!(started.elapsed(), HedgePolicy::default().floor);
    (call, stalled, h, send)
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_over_a_stalled_primary() {
    let (topology, layer, svc, mut handle) = setup(HedgePolicy::default());
    let (call, _stalled, h, send) =
        a_read_hedged_over_a_stalled_primary(&topology, svc, &mut handle).await;
    assert_eq!(h.attempts.failovers, 1);
    send.send_response(answer(node_of(&h).0, Path::Replica));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.served.path, Path::Replica);
    assert_eq!(layer.hedge_stats(), stats(1, 1, 0));
    assert_eq!(
        topology.refresh_requests(),
        0,
        "slowness is not a fault: no refresh"
    );
}

#[tokio::test(start_paused = true)]
async fn a_primary_answering_first_wins_and_a_failed_hedge_is_no_answer() {
    let (_t, layer, svc, mut handle) = setup(HedgePolicy::default());
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, primary) = handle.next_request().await.unwrap();
    // no latency known yet: the hedge waits for the cap
    let (h, hedge) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&h).1, Role::Replica);
    hedge.send_error(CacheError::Timeout {
        node: addr(node_of(&h).0),
    });
    assert!(no_request_within(&mut handle, Duration::from_millis(50)).await);
    primary.send_response(answer(1, Path::Primary));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Primary);
    assert_eq!(layer.hedge_stats(), stats(1, 0, 0));
}

/// A hedge refused with CLUSTERDOWN (a full-coverage cluster while the
/// stalled primary's slots have no owner) ends the read at once, with that
/// error: waiting out the silent primary's attempt timeout would only delay
/// it, and a fallback layer above answers from the near-cache or the store.
#[tokio::test(start_paused = true)]
async fn a_hedge_refused_with_clusterdown_ends_the_read_at_once() {
    let (topology, layer, svc, mut handle) = setup(HedgePolicy::default());
    let (call, _stalled, _h, hedge) =
        a_read_hedged_over_a_stalled_primary(&topology, svc, &mut handle).await;
    let refused_at = Instant::now();
    hedge.send_error(CacheError::ClusterDown);
    // Bounded (paused time): without the rule, the read would wait on the
    // primary's attempt timeout and then fail over to the other replica.
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the read ended")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        slotguard_core::classify(&err),
        slotguard_core::Failure::ClusterDown
    );
    // Paused time: the clock did not move from the refusal on (the
    // primary's attempt timeout, 100 ms, was not waited out).
    assert_eq!(refused_at.elapsed(), Duration::ZERO);
    assert!(no_request_within(&mut handle, Duration::from_secs(1)).await);
    assert_eq!(layer.hedge_stats(), stats(1, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_leaves_the_answer_to_the_hedge() {
    let (_t, _layer, svc, mut handle) = setup(HedgePolicy::default());
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, primary) = handle.next_request().await.unwrap();
    let (h, hedge) = handle.next_request().await.unwrap();
    let hedged = node_of(&h).0;
    primary.send_error(CacheError::Timeout { node: addr(1) });
    // no failover to the replica already asked
    assert!(no_request_within(&mut handle, Duration::from_millis(10)).await);
    hedge.send_error(CacheError::Timeout { node: addr(hedged) });
    // both failed: one more replica attempt, the hedge counted as one (a
    // replica that failed the hedge may answer now, e.g. after a promotion)
    let (f, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&f).1, Role::Replica);
    assert_eq!(f.attempts.failovers, 2);
    send.send_response(answer(node_of(&f).0, Path::Replica));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Replica);
}

#[tokio::test(start_paused = true)]
async fn never_hedges_to_a_stale_replica() {
    let (topology, layer, svc, mut handle) = setup(HedgePolicy::default());
    for p in [101, 102] {
        // link down for a minute: too stale for ReplicaOk and a 5 s budget
        crate::test_support::link(&topology, &addr(p), false, Duration::from_secs(60));
    }
    for consistency in [
        Consistency::ReplicaOk,
        Consistency::StaleOk(Duration::from_secs(5)),
    ] {
        let call = tokio::spawn(svc.clone().oneshot(get().with_consistency(consistency)));
        let (_r, primary) = handle.next_request().await.unwrap();
        assert!(
            no_request_within(&mut handle, Duration::from_millis(500)).await,
            "{consistency:?} hedged to a stale replica"
        );
        primary.send_response(answer(1, Path::Primary));
        assert_eq!(call.await.unwrap().unwrap().served.path, Path::Primary);
    }
    // a replica within the read's staleness budget may answer
    crate::test_support::link(&topology, &addr(102), false, Duration::from_secs(2));
    let call = tokio::spawn(
        svc.clone()
            .oneshot(get().with_consistency(Consistency::StaleOk(Duration::from_secs(5)))),
    );
    let (_r, _primary) = handle.next_request().await.unwrap();
    let (h, send) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&h), (102, Role::Replica));
    send.send_response(answer(102, Path::Replica));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Replica);
    assert_eq!(layer.hedge_stats(), stats(1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn marked_and_primary_only_reads_never_hedge() {
    let (_t, layer, svc, mut handle) = setup(HedgePolicy::default());
    // The fallback layer sends reads of invalidated keys with
    // `Consistency::Primary`; so do callers that want the primary only.
    let call = tokio::spawn(
        svc.clone()
            .oneshot(get().with_consistency(Consistency::Primary)),
    );
    let (r, primary) = handle.next_request().await.unwrap();
    assert_eq!(node_of(&r), (1, Role::Primary));
    assert!(no_request_within(&mut handle, Duration::from_millis(500)).await);
    primary.send_response(answer(1, Path::Primary));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Primary);
    // nor do writes
    let call = tokio::spawn(
        svc.oneshot(CacheRequest::set("k", "v", None).to_node(addr(1), Role::Primary)),
    );
    let (_r, primary) = handle.next_request().await.unwrap();
    assert!(no_request_within(&mut handle, Duration::from_millis(500)).await);
    primary.send_response(answer(1, Path::Primary));
    call.await.unwrap().unwrap();
    assert_eq!(layer.hedge_stats(), stats(0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn hedges_cannot_exceed_their_budget() {
    // one hedge per two reads, no floor
    let policy = HedgePolicy::default().with_budget(0.5, 0, Duration::from_secs(10));
    let (_t, layer, svc, mut handle) = setup(policy);
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(svc.clone().oneshot(get())))
        .collect();
    let mut primaries = Vec::new();
    let mut hedges = Vec::new();
    while let Ok(Some((r, send))) =
        tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await
    {
        match node_of(&r).1 {
            Role::Primary => primaries.push(send),
            Role::Replica => hedges.push(send),
        }
    }
    assert_eq!(primaries.len(), 6);
    assert_eq!(hedges.len(), 3, "six reads pay for three hedges");
    assert_eq!(layer.hedge_stats(), stats(3, 0, 3));
    for send in primaries {
        send.send_response(answer(1, Path::Primary));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().served.path, Path::Primary);
    }
    drop(hedges);
}

#[tokio::test(start_paused = true)]
async fn hedging_off_waits_for_the_primary() {
    let (_t, svc, mut handle) = {
        let (t, _l, _s, _h) = setup(HedgePolicy::default());
        let layer = ReplicaFailoverLayer::with_policy(
            t.clone(),
            FailoverPolicy {
                hedge: None,
                ..FailoverPolicy::default()
            },
        );
        let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
        (t, layer.layer(svc), handle)
    };
    let call = tokio::spawn(svc.oneshot(get()));
    let (_r, primary) = handle.next_request().await.unwrap();
    assert!(no_request_within(&mut handle, Duration::from_millis(90)).await);
    primary.send_response(answer(1, Path::Primary));
    assert_eq!(call.await.unwrap().unwrap().served.path, Path::Primary);
}
