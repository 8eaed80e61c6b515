use std::time::Duration;

use slotguard_core::{
    classify, key_slot, BoxError, CacheRequest, CacheResponse, Failure, Path, Route, Topology,
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

/// The call's request is stamped for node 1, which answers: the call
/// succeeds.
async fn node_1_answers(
    handle: &mut mock::Handle<CacheRequest, CacheResponse>,
    call: tokio::task::JoinHandle<Result<CacheResponse, BoxError>>,
) {
    let (r, send) = handle.next_request().await.unwrap();
    assert!(matches!(&r.route, Route::Node { addr: a, .. } if a == &addr(1)));
    send.send_response(CacheResponse::from_node(None, addr(1), Path::Primary));
    call.await.unwrap().unwrap();
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
    node_1_answers(&mut handle, call).await;
}

#[tokio::test(start_paused = true)]
async fn first_request_waits_for_the_first_map() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::from_millis(300));
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config());
    layer.start();
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
        topology.report(slotguard_core::controller::StaleMap::Asked);
    }
    settle().await;
    // one round is in flight (fetches take 500 ms); more triggers meanwhile
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..1000 {
        topology.report(slotguard_core::controller::StaleMap::Asked);
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

/// A source whose `silent` nodes do not answer (a stalled or cut-off node).
#[derive(Clone)]
struct PartlySilent {
    inner: FakeSource,
    silent: std::sync::Arc<std::sync::Mutex<Vec<slotguard_core::NodeAddr>>>,
}

impl slotguard_core::TopologySource for PartlySilent {
    fn fetch_view(
        &self,
        node: &slotguard_core::NodeAddr,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<slotguard_core::ClusterView, slotguard_core::BoxError>,
    > {
        if self.silent.lock().unwrap().contains(node) {
            return Box::pin(async { Err("timed out".into()) });
        }
        self.inner.fetch_view(node)
    }

    fn seeds(&self) -> Vec<slotguard_core::NodeAddr> {
        self.inner.seeds()
    }
}

#[tokio::test(start_paused = true)]
async fn writes_to_a_fenced_primary_wait_for_its_own_answer_in_a_fresh_round() {
    let topology = Topology::new();
    let source = PartlySilent {
        inner: FakeSource::new(two_shards(), Duration::ZERO),
        silent: Default::default(),
    };
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    let (svc, mut handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = layer.layer(svc);
    let key = "bar"; // slot < 8192: node 1
    let health = topology.health(&addr(1));
    // Node 1 timed out (the leaf fences it) and stops answering.
    source.silent.lock().unwrap().push(addr(1));
    crate::test_support::unreachable(&topology, &addr(1));
    let before = topology.refresh_requests();
    let write = CacheRequest::set(key, "v", None);
    let err = svc.clone().oneshot(write.clone()).await.unwrap_err();
    assert_eq!(classify(&err), Failure::ShardUnavailable);
    assert!(topology.refresh_requests() > before, "asks for a view");
    // Reads are not held back (failover decides about them).
    let read = tokio::spawn(svc.clone().oneshot(CacheRequest::get(key)));
    node_1_answers(&mut handle, read).await;
    // The majority still has node 1 as primary, but node 1 did not answer:
    // that proves nothing about it.
    layer.refresh_now().await.unwrap();
    assert!(health.writes_fenced());
    let err = svc.clone().oneshot(write.clone()).await.unwrap_err();
    assert_eq!(classify(&err), Failure::ShardUnavailable);
    // Node 1 answers as primary of its slots, with the majority: writes go.
    source.silent.lock().unwrap().clear();
    layer.refresh_now().await.unwrap();
    assert!(!health.writes_fenced());
    let call = tokio::spawn(svc.clone().oneshot(write));
    node_1_answers(&mut handle, call).await;
}

#[tokio::test(start_paused = true)]
async fn a_fault_during_a_round_is_not_lifted_by_it() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::from_millis(200));
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    let health = topology.health(&addr(1));
    let round = {
        let layer = layer.clone();
        tokio::spawn(async move { layer.refresh_now().await })
    };
    settle().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The node answered (or will) but timed out after the round began.
    crate::test_support::unreachable(&topology, &addr(1));
    round.await.unwrap().unwrap();
    assert!(health.writes_fenced());
    layer.refresh_now().await.unwrap();
    assert!(!health.writes_fenced());
}

#[tokio::test(start_paused = true)]
async fn a_primary_outside_the_majority_gets_no_writes() {
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::ZERO);
    let layer = SlotRefreshLayer::with_config(topology.clone(), source.clone(), config())
        .load()
        .await
        .unwrap();
    let (svc, _handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = layer.layer(svc);
    crate::test_support::outvote(&topology, &addr(2));
    let key = "foo"; // slot 12182: node 2
    let err = svc.oneshot(CacheRequest::delete(key)).await.unwrap_err();
    assert_eq!(classify(&err), Failure::ShardUnavailable);
}
