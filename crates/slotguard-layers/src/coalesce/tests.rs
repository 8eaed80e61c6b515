use std::time::Duration;

use futures_util::FutureExt;
use slotguard_core::{
    as_cache_error, classify, BoxError, CacheError, CacheRequest, CacheResponse, Consistency,
    Failure, Path,
};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

use super::{Coalesce, CoalesceLayer};
use crate::test_support::addr;

type Handle = mock::Handle<CacheRequest, CacheResponse>;
type Svc = Coalesce<mock::Mock<CacheRequest, CacheResponse>>;

fn setup() -> (CoalesceLayer, Svc, Handle) {
    let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
    let layer = CoalesceLayer::new();
    let svc = layer.layer(svc);
    (layer, svc, handle)
}

fn value(v: &'static str) -> CacheResponse {
    CacheResponse::from_node(Some(v.into()), addr(1), Path::Primary)
}

type Call = tokio::task::JoinHandle<Result<CacheResponse, BoxError>>;

fn spawn_get(svc: &Svc, req: CacheRequest) -> Call {
    tokio::spawn(svc.clone().oneshot(req))
}

/// Let spawned tasks run until `done` holds (bounded: a test never spins).
async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("did not settle");
}

fn no_more_requests(handle: &mut Handle) -> bool {
    tokio::task::unconstrained(handle.next_request())
        .now_or_never()
        .is_none()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_identical_gets_make_one_inner_call() {
    let (layer, svc, mut handle) = setup();
    let calls: Vec<Call> = (0..1000)
        .map(|_| spawn_get(&svc, CacheRequest::get("hot")))
        .collect();
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.key().as_ref(), b"hot");
    settle(|| layer.joined_total() == 999).await;
    assert_eq!(layer.led_total(), 1);
    send.send_response(value("v"));
    for call in calls {
        let resp = call.await.unwrap().unwrap();
        assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
    }
    assert!(no_more_requests(&mut handle), "exactly one inner call");
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_leader_does_not_fail_its_followers() {
    let (layer, svc, mut handle) = setup();
    let leader = spawn_get(&svc, CacheRequest::get("k"));
    let (_req, send) = handle.next_request().await.unwrap();
    let followers: Vec<Call> = (0..10)
        .map(|_| spawn_get(&svc, CacheRequest::get("k")))
        .collect();
    settle(|| layer.joined_total() == 10).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    send.send_response(value("v"));
    for f in followers {
        assert_eq!(f.await.unwrap().unwrap().value.as_deref(), Some(&b"v"[..]));
    }
    assert!(no_more_requests(&mut handle));
}

#[tokio::test(start_paused = true)]
async fn a_leader_dropped_before_its_call_started_leaves_it_to_a_follower() {
    let (layer, mut svc, mut handle) = setup();
    // Created, never polled: the inner call has not been made yet.
    let leader = svc.ready().await.unwrap().call(CacheRequest::get("k"));
    let follower = spawn_get(&svc, CacheRequest::get("k"));
    settle(|| layer.joined_total() == 1).await;
    drop(leader);
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(value("v"));
    assert_eq!(
        follower.await.unwrap().unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    assert!(no_more_requests(&mut handle));
}

#[tokio::test(start_paused = true)]
async fn when_every_caller_leaves_the_call_is_dropped() {
    let (layer, svc, mut handle) = setup();
    let calls: Vec<Call> = (0..3)
        .map(|_| spawn_get(&svc, CacheRequest::get("k")))
        .collect();
    let (_req, _send) = handle.next_request().await.unwrap();
    settle(|| layer.joined_total() == 2).await;
    for c in calls {
        c.abort();
        let _ = c.await;
    }
    assert_eq!(layer.in_flight(), 0);
    // and the next read is a new flight
    let next = spawn_get(&svc, CacheRequest::get("k"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(value("new"));
    assert_eq!(
        next.await.unwrap().unwrap().value.as_deref(),
        Some(&b"new"[..])
    );
}

#[tokio::test(start_paused = true)]
async fn errors_are_shared_and_typed() {
    let (layer, svc, mut handle) = setup();
    let calls: Vec<Call> = (0..5)
        .map(|_| spawn_get(&svc, CacheRequest::get("k")))
        .collect();
    let (_req, send) = handle.next_request().await.unwrap();
    settle(|| layer.joined_total() == 4).await;
    send.send_error(CacheError::ClusterDown);
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        assert_eq!(classify(&err), Failure::ClusterDown);
        assert!(matches!(
            as_cache_error(&err),
            Some(CacheError::ClusterDown)
        ));
        assert_eq!(err.to_string(), "cluster is down");
    }
}

#[tokio::test(start_paused = true)]
async fn foreign_errors_keep_their_class() {
    let (layer, svc, mut handle) = setup();
    let calls: Vec<Call> = (0..3)
        .map(|_| spawn_get(&svc, CacheRequest::get("k")))
        .collect();
    let (_req, send) = handle.next_request().await.unwrap();
    settle(|| layer.joined_total() == 2).await;
    send.send_error(tower::timeout::error::Elapsed::new());
    for c in calls {
        let err = c.await.unwrap().unwrap_err();
        assert_eq!(classify(&err), Failure::Timeout);
        assert!(err.to_string().contains("request timed out"), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_never_waits_past_its_own_deadline() {
    let (layer, svc, mut handle) = setup();
    let leader = spawn_get(&svc, CacheRequest::get("k"));
    let (_req, send) = handle.next_request().await.unwrap();
    let started = tokio::time::Instant::now();
    let follower = spawn_get(
        &svc,
        CacheRequest::get("k").with_timeout(Duration::from_millis(100)),
    );
    let err = follower.await.unwrap().unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(classify(&err), Failure::Timeout);
    assert!(matches!(
        as_cache_error(&err),
        Some(CacheError::DeadlineExceeded)
    ));
    assert_eq!(layer.joined_total(), 1);
    // the leader is still waiting, and gets its answer
    assert!(!leader.is_finished());
    send.send_response(value("v"));
    assert_eq!(
        leader.await.unwrap().unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_follower_whose_deadline_passed_fails_at_once() {
    let (_layer, svc, mut handle) = setup();
    let _leader = spawn_get(&svc, CacheRequest::get("k"));
    let (_req, _send) = handle.next_request().await.unwrap();
    let past = tokio::time::Instant::now();
    tokio::time::advance(Duration::from_millis(1)).await;
    let err = svc
        .clone()
        .oneshot(CacheRequest::get("k").with_deadline(past))
        .now_or_never()
        .expect("ready at once")
        .unwrap_err();
    assert_eq!(classify(&err), Failure::Timeout);
}

#[tokio::test(start_paused = true)]
async fn writes_pass_through_and_close_the_flight_to_newcomers() {
    let (layer, svc, mut handle) = setup();
    let old_read = spawn_get(&svc, CacheRequest::get("k"));
    let (_r, old_send) = handle.next_request().await.unwrap();
    // a follower from before the write, whose leader then goes: the closed
    // flight is still handed over
    let old_follower = spawn_get(&svc, CacheRequest::get("k"));
    settle(|| layer.joined_total() == 1).await;
    // two identical writes: two inner calls
    let w1 = spawn_get(&svc, CacheRequest::set("k", "v2", None));
    let w2 = spawn_get(&svc, CacheRequest::set("k", "v2", None));
    for _ in 0..2 {
        let (r, send) = handle.next_request().await.unwrap();
        assert!(!r.op.is_read());
        send.send_response(CacheResponse::from_node(None, addr(1), Path::Primary));
    }
    w1.await.unwrap().unwrap();
    w2.await.unwrap().unwrap();
    // a read after the write does not share the read from before it, but
    // reads after the write share theirs
    let new_read = spawn_get(&svc, CacheRequest::get("k"));
    let (_r, new_send) = handle.next_request().await.unwrap();
    assert_eq!(layer.joined_total(), 1, "only the follower from before");
    let new_follower = spawn_get(&svc, CacheRequest::get("k"));
    settle(|| layer.joined_total() == 2).await;
    assert_eq!(
        layer.in_flight(),
        2,
        "the closed flight runs on beside the new one"
    );
    old_read.abort();
    let _ = old_read.await;
    old_send.send_response(value("v1"));
    new_send.send_response(value("v2"));
    assert_eq!(
        old_follower.await.unwrap().unwrap().value.as_deref(),
        Some(&b"v1"[..])
    );
    for c in [new_read, new_follower] {
        assert_eq!(c.await.unwrap().unwrap().value.as_deref(), Some(&b"v2"[..]));
    }
    assert!(no_more_requests(&mut handle));
    let del = spawn_get(&svc, CacheRequest::delete("k"));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(r.op, slotguard_core::Op::Delete);
    send.send_response(CacheResponse::from_node(None, addr(1), Path::Primary));
    del.await.unwrap().unwrap();
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn different_keys_or_consistency_are_different_flights() {
    let (layer, svc, mut handle) = setup();
    let a = spawn_get(&svc, CacheRequest::get("a"));
    let b = spawn_get(&svc, CacheRequest::get("b"));
    let p = spawn_get(
        &svc,
        CacheRequest::get("a").with_consistency(Consistency::Primary),
    );
    for _ in 0..3 {
        let (r, send) = handle.next_request().await.unwrap();
        let v = if r.consistency == Consistency::Primary {
            "ap"
        } else if r.key().as_ref() == b"a" {
            "a"
        } else {
            "b"
        };
        send.send_response(value(v));
    }
    let get = |c: Call| async move { c.await.unwrap().unwrap().value.unwrap() };
    assert_eq!(get(a).await.as_ref(), b"a");
    assert_eq!(get(b).await.as_ref(), b"b");
    assert_eq!(get(p).await.as_ref(), b"ap");
    assert_eq!(layer.joined_total(), 0);
    assert_eq!(layer.led_total(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_call_passes_from_hand_to_hand_until_someone_stays() {
    let (layer, svc, mut handle) = setup();
    let leader = spawn_get(&svc, CacheRequest::get("k"));
    let (_req, send) = handle.next_request().await.unwrap();
    // a follower that gives up after 50 ms, and one that stays
    let short = spawn_get(
        &svc,
        CacheRequest::get("k").with_timeout(Duration::from_millis(50)),
    );
    let stays = spawn_get(&svc, CacheRequest::get("k"));
    settle(|| layer.joined_total() == 2).await;
    // the leader goes: a follower takes the call over
    leader.abort();
    let _ = leader.await;
    tokio::time::advance(Duration::from_millis(10)).await;
    // whoever drives it now, the short one goes at 50 ms
    let err = short.await.unwrap().unwrap_err();
    assert!(matches!(
        as_cache_error(&err),
        Some(CacheError::DeadlineExceeded)
    ));
    assert_eq!(layer.in_flight(), 1, "the flight lives on");
    // a newcomer still joins the same call
    let late = spawn_get(&svc, CacheRequest::get("k"));
    settle(|| layer.joined_total() == 3).await;
    send.send_response(value("v"));
    for c in [stays, late] {
        assert_eq!(c.await.unwrap().unwrap().value.as_deref(), Some(&b"v"[..]));
    }
    assert!(no_more_requests(&mut handle), "one inner call in all");
    assert_eq!(layer.led_total(), 1);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_leader_alone_gets_its_own_error_untouched() {
    let (_layer, svc, mut handle) = setup();
    let call = spawn_get(&svc, CacheRequest::get("k"));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(tower::timeout::error::Elapsed::new());
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
}

/// A read that starts while a write is on its way may answer the value from
/// before it (a replica's, or the fallback's entry answering reads that
/// overlap the write); a read that starts once the write is acknowledged
/// must not share it. Found by `slotguard demo --keys 300`: under
/// client-side caching, such reads returned values older than writes
/// acknowledged before they began.
#[tokio::test(start_paused = true)]
async fn a_read_after_a_write_is_done_never_shares_one_begun_while_it_was_on_its_way() {
    let (layer, svc, mut handle) = setup();
    let write = spawn_get(&svc, CacheRequest::set("k", "v2", None));
    let (w, write_send) = handle.next_request().await.unwrap();
    assert!(!w.op.is_read());
    // begun while the write is on its way
    let overlapping = spawn_get(&svc, CacheRequest::get("k"));
    let (_r, old_send) = handle.next_request().await.unwrap();
    // an identical read, still during the write, may share it
    let also_overlapping = spawn_get(&svc, CacheRequest::get("k"));
    settle(|| layer.joined_total() == 1).await;
    write_send.send_response(CacheResponse::from_node(None, addr(1), Path::Primary));
    write.await.unwrap().unwrap();
    // begun after the write was acknowledged: its own call
    let after = spawn_get(&svc, CacheRequest::get("k"));
    let (_r, new_send) = tokio::time::timeout(Duration::from_secs(1), handle.next_request())
        .await
        .expect("the read after the write makes its own call")
        .unwrap();
    assert_eq!(layer.joined_total(), 1, "only the read during the write");
    old_send.send_response(value("v1"));
    new_send.send_response(value("v2"));
    for c in [overlapping, also_overlapping] {
        assert_eq!(c.await.unwrap().unwrap().value.as_deref(), Some(&b"v1"[..]));
    }
    assert_eq!(
        after.await.unwrap().unwrap().value.as_deref(),
        Some(&b"v2"[..])
    );
    assert!(no_more_requests(&mut handle));
}
