//! A marked read hedged to the store: the store answers a stalled
//! primary's marked read after the hedge delay, never an unmarked one, and
//! a primary that answers first wins (and clears the mark).

use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{CacheRequest, Consistency, Path};
use tokio::time::Instant;
use tower::ServiceExt;

use super::*;

type Layer = FallbackLayer<BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError>>;

fn setup(hedge: Option<MarkedHedge>) -> (FakeCluster, FakeStore, Layer, Svc) {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(1));
    let layer = FallbackLayer::new(store.service())
        .with_config(FallbackConfig::default().with_marked_hedge(hedge));
    let svc = stack(&layer, &cluster);
    (cluster, store, layer, svc)
}

fn req(key: &str) -> CacheRequest {
    CacheRequest::get(key.to_owned()).with_timeout(Duration::from_secs(1))
}

#[tokio::test(start_paused = true)]
async fn a_marked_read_of_a_stalled_primary_is_answered_by_the_store_after_the_hedge_delay() {
    let (cluster, store, layer, svc) = setup(Some(MarkedHedge::default()));
    cluster.put("a", "old");
    store.put("a", b"new");
    layer.invalidate("a");
    // the primary stalls past the cluster read timeout
    *cluster.delay.lock().unwrap() = Duration::from_secs(10);
    let start = Instant::now();
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
    // no latency known yet: the cap (25 ms), then the store's 1 ms
    assert_eq!(start.elapsed(), Duration::from_millis(26));
    assert_eq!(store.loads(), 1);
    // the cluster was asked for the primary only
    assert_eq!(cluster.seen()[0].consistency, Consistency::Primary);
}

#[tokio::test(start_paused = true)]
async fn without_the_hedge_a_marked_read_waits_for_its_primary_to_time_out() {
    for (hedge, waited) in [(None, 251), (Some(MarkedHedge::default()), 26)] {
        let (cluster, store, layer, svc) = setup(hedge);
        store.put("a", b"new");
        layer.invalidate("a");
        // a stalled primary: the leaf's command timeout (250 ms) ends the call
        *cluster.delay.lock().unwrap() = Duration::from_millis(250);
        cluster.set_mode(Mode::Fail(timeout_err()));
        let start = Instant::now();
        let resp = svc.clone().oneshot(req("a")).await.unwrap();
        assert_eq!(resp.served.path, Path::Secondary, "{hedge:?}");
        assert_eq!(start.elapsed(), Duration::from_millis(waited), "{hedge:?}");
        // one load either way: the timed-out call's fallback shares the
        // hedge's load when there was one
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(store.loads(), 1, "{hedge:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_unmarked_read_never_hedges_to_the_store() {
    let (cluster, store, _layer, svc) = setup(Some(MarkedHedge::default()));
    cluster.put("a", "v");
    store.put("a", b"store");
    *cluster.delay.lock().unwrap() = Duration::from_millis(100);
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Primary);
    assert_eq!(store.loads(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_primary_that_answers_first_wins_and_clears_the_mark() {
    let (cluster, store, layer, svc) = setup(Some(MarkedHedge::default()));
    cluster.put("a", "primary");
    store.put("a", b"store");
    layer.invalidate("a");
    // slower than the hedge delay, faster than the store (which takes 1 ms
    // after the hedge at 25 ms)
    *cluster.delay.lock().unwrap() = Duration::from_micros(25_500);
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Primary);
    assert_eq!(resp.value.as_deref(), Some(&b"primary"[..]));
    // the hedge was sent...
    assert_eq!(store.loads(), 1);
    // ...and the primary's answer cleared the mark: the next read may use
    // any path again
    *cluster.delay.lock().unwrap() = Duration::ZERO;
    svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(
        cluster.seen().last().unwrap().consistency,
        Consistency::default()
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_leaves_the_read_to_the_primary() {
    let (cluster, store, layer, svc) = setup(Some(MarkedHedge::default()));
    cluster.put("a", "primary");
    *store.fail.lock().unwrap() = true;
    layer.invalidate("a");
    *cluster.delay.lock().unwrap() = Duration::from_millis(100);
    let start = Instant::now();
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Primary);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // the hedge was sent, and failed
    assert_eq!(store.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_and_a_failing_primary_load_once() {
    let (cluster, store, layer, svc) = setup(Some(MarkedHedge::default()));
    *store.fail.lock().unwrap() = true;
    layer.invalidate("a");
    *cluster.delay.lock().unwrap() = Duration::from_millis(100);
    cluster.set_mode(Mode::Fail(timeout_err()));
    let err = svc.clone().oneshot(req("a")).await.unwrap_err();
    assert!(err.to_string().contains("store"), "{err}");
    // the store's error answers: no second load after the cluster failed
    assert_eq!(store.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cluster_failure_during_the_hedge_awaits_the_hedges_load() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(200));
    let layer = FallbackLayer::new(store.service()).with_config(FallbackConfig::default());
    let svc = stack(&layer, &cluster);
    store.put("a", b"new");
    layer.invalidate("a");
    // the primary fails at 100 ms, while the hedge's load (from 25 ms,
    // 200 ms long) is in flight
    *cluster.delay.lock().unwrap() = Duration::from_millis(100);
    cluster.set_mode(Mode::Fail(timeout_err()));
    let start = Instant::now();
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
    assert_eq!(start.elapsed(), Duration::from_millis(225));
    assert_eq!(store.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_store_answer_keeps_the_mark() {
    let (cluster, store, layer, svc) = setup(Some(MarkedHedge::default()));
    cluster.put("a", "old");
    store.put("a", b"new");
    layer.invalidate("a");
    *cluster.delay.lock().unwrap() = Duration::from_secs(10);
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    // still marked: the next read goes to the primary only
    *cluster.delay.lock().unwrap() = Duration::ZERO;
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Primary);
    let seen = cluster.seen();
    assert_eq!(seen.last().unwrap().consistency, Consistency::Primary);
}

#[tokio::test(start_paused = true)]
async fn the_delay_is_the_primarys_latency_bound() {
    use slotguard_core::Topology;
    let topology = Topology::new();
    crate::test_support::install(&topology, &crate::test_support::view(1, &[(0, 16383, 1)]));
    // a primary that answers in 12 ms, steadily
    for _ in 0..64 {
        crate::test_support::probed(
            &topology,
            &crate::test_support::addr(1),
            Some(Duration::from_millis(12)),
        );
    }
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(1));
    let layer = FallbackLayer::new(store.service())
        .with_config(FallbackConfig::default())
        .with_topology(topology.clone());
    let svc = stack(&layer, &cluster);
    store.put("a", b"new");
    layer.invalidate("a");
    *cluster.delay.lock().unwrap() = Duration::from_secs(10);
    let bound = topology
        .health(&crate::test_support::addr(1))
        .latency_bound();
    assert!(bound > Duration::from_millis(5) && bound < Duration::from_millis(25));
    let start = Instant::now();
    let resp = svc.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    // tokio's timers round up to the millisecond; then the store's 1 ms
    let hedged_at = Duration::from_millis(bound.as_micros().div_ceil(1000) as u64);
    assert_eq!(start.elapsed(), hedged_at + Duration::from_millis(1));
}

#[test]
fn the_delay_follows_the_primary_within_floor_and_cap() {
    let h = MarkedHedge::default();
    assert_eq!(h.delay(Duration::ZERO), Duration::from_millis(25));
    assert_eq!(
        h.delay(Duration::from_micros(300)),
        Duration::from_millis(5)
    );
    assert_eq!(
        h.delay(Duration::from_millis(12)),
        Duration::from_millis(12)
    );
    assert_eq!(h.delay(Duration::from_secs(1)), Duration::from_millis(25));
    let inverted = MarkedHedge::new(Duration::from_millis(10), Duration::from_millis(2));
    assert_eq!(inverted.delay(Duration::ZERO), Duration::from_millis(10));
}
