use std::time::Duration;

use slotguard_core::{CacheError, CacheRequest, CacheResponse, Path, Route, Topology};
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::{InvalidationLog, InvalidationLogLayer, LogConfig};
use crate::test_support::{addr, one_shard};

type Handle = mock::Handle<CacheRequest, CacheResponse>;
type Svc = InvalidationLog<mock::Mock<CacheRequest, CacheResponse>>;

fn setup(config: LogConfig) -> (Topology, InvalidationLogLayer, Svc, Handle) {
    let topology = Topology::new();
    crate::test_support::install(&topology, &one_shard(1, &[101]));
    let (svc, handle) = mock::pair::<CacheRequest, CacheResponse>();
    let layer = InvalidationLogLayer::with_config(topology.clone(), config);
    let svc = layer.layer(svc);
    layer.start();
    (topology, layer, svc, handle)
}

fn from(port: u16, path: Path, value: Option<&'static str>) -> CacheResponse {
    CacheResponse::from_node(value.map(Into::into), addr(port), path)
}

type Call = tokio::task::JoinHandle<Result<CacheResponse, slotguard_core::BoxError>>;

fn spawn(svc: &Svc, req: CacheRequest) -> Call {
    tokio::spawn(svc.clone().oneshot(req))
}

/// One call answered by `resp`.
async fn answered(
    svc: &Svc,
    handle: &mut Handle,
    req: CacheRequest,
    resp: CacheResponse,
) -> CacheResponse {
    let call = spawn(svc, req);
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(resp);
    call.await.unwrap().unwrap()
}

fn target(r: &CacheRequest) -> u16 {
    match &r.route {
        Route::Node { addr, .. } => addr.port(),
        Route::Slot => panic!("unrouted replay"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_replica_answer_for_a_just_deleted_key_is_a_miss() {
    let (_t, layer, svc, mut handle) = setup(LogConfig::default());
    // nothing logged: answers pass untouched
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("k"),
        from(101, Path::Replica, Some("v")),
    )
    .await;
    assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
    answered(
        &svc,
        &mut handle,
        CacheRequest::delete("k"),
        from(1, Path::Primary, None),
    )
    .await;
    assert_eq!(layer.len(), 1);
    // the replica may not have the delete
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("k"),
        from(101, Path::Replica, Some("old")),
    )
    .await;
    assert_eq!(r.value, None);
    assert_eq!(layer.distrusted_total(), 1);
    // the primary that acknowledged it is trusted
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("k"),
        from(1, Path::Primary, Some("new")),
    )
    .await;
    assert_eq!(r.value.as_deref(), Some(&b"new"[..]));
    // other keys are untouched
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("other"),
        from(101, Path::Replica, Some("v")),
    )
    .await;
    assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
    // near-cache and store answers are Fallback's to judge
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("k"),
        CacheResponse {
            value: Some("db".into()),
            deleted: 0,
            served: slotguard_core::Served {
                path: Path::Secondary,
                node: None,
                age: None,
            },
        },
    )
    .await;
    assert_eq!(r.value.as_deref(), Some(&b"db"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_delete_is_replayed_to_the_slots_new_owner() {
    let (topology, layer, svc, mut handle) = setup(LogConfig::default());
    answered(
        &svc,
        &mut handle,
        CacheRequest::delete("k"),
        from(1, Path::Primary, None),
    )
    .await;
    // no replay while the owner is the one that acknowledged it
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(600), handle.next_request())
            .await
            .is_err()
    );
    // the replica is promoted
    crate::test_support::install(&topology, &one_shard(101, &[1]));
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(r.op, slotguard_core::Op::Delete);
    assert_eq!(r.key().as_ref(), b"k");
    assert_eq!(target(&r), 101);
    assert!(r.deadline.is_some(), "a replay has a deadline");
    // until the new owner acknowledged it, its answers are not trusted
    let read = spawn(&svc, CacheRequest::get("k"));
    let (_g, gsend) = handle.next_request().await.unwrap();
    gsend.send_response(from(101, Path::Primary, Some("old")));
    assert_eq!(read.await.unwrap().unwrap().value, None);
    send.send_response(from(101, Path::Primary, None));
    tokio::task::yield_now().await;
    for _ in 0..100 {
        if layer.replayed_total() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(layer.replayed_total(), 1);
    // now it is
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("k"),
        from(101, Path::Primary, Some("new")),
    )
    .await;
    assert_eq!(r.value.as_deref(), Some(&b"new"[..]));
    // and nothing more is replayed
    assert!(
        tokio::time::timeout(Duration::from_secs(2), handle.next_request())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_delete_is_retried_on_the_owner_until_acknowledged() {
    let (_t, layer, svc, mut handle) = setup(LogConfig::default());
    let call = spawn(&svc, CacheRequest::delete("k"));
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_error(CacheError::Timeout { node: addr(1) });
    call.await.unwrap().unwrap_err();
    // replayed to the current owner; a failed replay is retried
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(target(&r), 1);
    send.send_error(CacheError::Timeout { node: addr(1) });
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(target(&r), 1);
    send.send_response(from(1, Path::Primary, None));
    for _ in 0..100 {
        if layer.replayed_total() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(layer.replayed_total(), 1);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), handle.next_request())
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn deletes_are_forgotten_after_the_window_and_beyond_capacity() {
    let config = LogConfig::default()
        .with_window(Duration::from_secs(5))
        .with_capacity(32);
    let (topology, layer, svc, mut handle) = setup(config);
    answered(
        &svc,
        &mut handle,
        CacheRequest::delete("k"),
        from(1, Path::Primary, None),
    )
    .await;
    tokio::time::advance(Duration::from_secs(6)).await;
    // past the window: trusted again, and not replayed on a promotion
    let r = answered(
        &svc,
        &mut handle,
        CacheRequest::get("k"),
        from(101, Path::Replica, Some("v")),
    )
    .await;
    assert_eq!(r.value.as_deref(), Some(&b"v"[..]));
    crate::test_support::install(&topology, &one_shard(101, &[1]));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), handle.next_request())
            .await
            .is_err()
    );
    assert_eq!(layer.len(), 0);
    // capacity: 32 keys in 32 shards, one per shard; many keys of one
    // slot evict each other
    for i in 0..10 {
        let key = format!("{{tag}}{i}");
        answered(
            &svc,
            &mut handle,
            CacheRequest::delete(key),
            from(101, Path::Primary, None),
        )
        .await;
    }
    assert_eq!(layer.len(), 1);
    assert_eq!(layer.evicted_total(), 9);
}
