use std::time::Duration;

use slotguard_core::{
    classify, key_slot, CacheRequest, CacheResponse, Failure, Path, Route, Topology,
};
use tower::{Layer, ServiceExt};
use tower_test::mock;

use super::{RefreshConfig, SlotRefreshLayer};
use crate::test_support::{addr, two_shards, view, FakeSource};

fn config() -> RefreshConfig {
    RefreshConfig {
        period: Duration::from_secs(15),
        min_gap: Duration::from_millis(100),
        views: 3,
        straggler_grace: Duration::from_millis(50),
        initial_wait: Duration::from_secs(5),
    }
}

async fn settle() {
    // let spawned tasks run without moving the paused clock
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn load_then_stamp_from_the_map() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::ZERO);
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    assert_eq!(source.fetches(), 1);
    let (svc, mut handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = layer.layer(svc);
    let key = "bar";
    assert!(key_slot(key.as_bytes()) < 8192);
    let call = tokio::spawn(svc.oneshot(CacheRequest::get(key)));
    let (r, send) = handle.next_request().await.unwrap();
    assert!(matches!(&r.route, Route::Node { addr: a, .. } if a == &addr(1)));
    send.send_response(CacheResponse::from_node(None, addr(1), Path::Primary));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn first_request_waits_for_the_first_map() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::from_millis(300));
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config());
    let (svc, mut handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = layer.layer(svc);
    let call = tokio::spawn(svc.oneshot(CacheRequest::get("bar")));
    let (r, send) = handle.next_request().await.unwrap();
    assert!(topology.is_loaded());
    assert!(matches!(r.route, Route::Node { .. }));
    send.send_response(CacheResponse::from_node(None, addr(1), Path::Primary));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn uncovered_slot_fails_fast_and_triggers_a_refresh() {
    let topology = Topology::new();
    let source = FakeSource::new(view(1, &[(0, 100, 1)]), Duration::ZERO);
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    let (svc, _handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = layer.layer(svc);
    let key = "foo"; // slot 12182
    let err = svc.oneshot(CacheRequest::get(key)).await.unwrap_err();
    assert_eq!(classify(&err), Failure::ShardUnavailable);
    assert_eq!(topology.refresh_requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn periodic_refresh_fires_on_schedule() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::ZERO);
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    let stats = layer.stats();
    settle().await;
    assert_eq!(stats.refreshes(), 0);
    tokio::time::sleep(Duration::from_millis(14_900)).await;
    settle().await;
    assert_eq!(stats.refreshes(), 0, "not before the period");
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(stats.refreshes(), 1, "at the period");
    tokio::time::sleep(Duration::from_secs(15)).await;
    settle().await;
    assert_eq!(stats.refreshes(), 2);
    drop(layer);
}

#[tokio::test(start_paused = true)]
async fn refresh_is_single_flight_and_triggers_collapse() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::from_millis(500));
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    let stats = layer.stats();
    for _ in 0..1000 {
        topology.request_refresh();
    }
    settle().await;
    // one round is in flight (fetches take 500 ms); more triggers meanwhile
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..1000 {
        topology.request_refresh();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // 2,000 triggers: the round in flight plus one for the triggers that
    // arrived during it
    assert_eq!(stats.refreshes(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        stats.refreshes(),
        2,
        "no refresh without a trigger before the period"
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_follows_the_majority_and_marks_the_minority() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::ZERO);
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    // a new owner for the first half (failover to port 101)
    source.set(view(1, &[(0, 8191, 101), (8192, 16383, 2)]));
    layer.refresh_now().await.unwrap();
    assert_eq!(topology.load().primary_for_slot(0).unwrap().addr, addr(101));
}
