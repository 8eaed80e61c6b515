use std::sync::atomic::Ordering;
use std::time::Duration;

use slotguard_core::invalidation::InvalidationBus;
use slotguard_core::{classify, CacheError, CacheRequest, Consistency, Failure, NodeAddr, Path};
use tower::ServiceExt;

use super::*;
use crate::circuit_breaker::BreakerState;
use crate::test_support::addr;

#[tokio::test(start_paused = true)]
async fn a_herd_of_misses_makes_one_store_load_and_one_write_back() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(100));
    store.put("k", b"v");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    let calls: Vec<_> = (0..1000).map(|_| get(&svc, "k")).collect();
    let outs = futures_util::future::join_all(calls).await;
    for out in outs {
        let resp = out.unwrap();
        assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(resp.served.path, Path::Secondary);
    }
    assert_eq!(store.loads(), 1);
    // The write-back runs on its own: poll until it reached the cluster.
    for _ in 0..100 {
        if cluster.data.lock().unwrap().contains_key(&b"k"[..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sets: Vec<_> = cluster
        .seen()
        .into_iter()
        .filter(|r| matches!(r.op, Op::Set { .. }))
        .collect();
    assert_eq!(sets.len(), 1);
    assert!(matches!(&sets[0].op, Op::Set { ttl: Some(t), .. } if *t == Duration::from_secs(300)));
    // Now a hit: no more loads.
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(resp.served.path, Path::Primary);
    assert_eq!(store.loads(), 1);
}

#[tokio::test(start_paused = true)]
async fn write_back_can_be_turned_off() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"v");
    let layer =
        FallbackLayer::new(store.service()).with_config(near_config().with_write_back(None));
    let svc = stack(&layer, &cluster);
    assert_eq!(get(&svc, "k").await.unwrap().served.path, Path::Secondary);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cluster.seen().iter().all(|r| r.op.is_read()));
}

#[tokio::test(start_paused = true)]
async fn cluster_failures_fall_back_and_caller_errors_do_not() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"v");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    for err in [
        timeout_err(),
        CacheError::ClusterDown,
        CacheError::ShardUnavailable { slot: 1 },
        CacheError::Overloaded { node: addr(1) },
        CacheError::CircuitOpen {
            scope: slotguard_core::BreakerScope::Global,
        },
    ] {
        cluster.set_mode(Mode::Fail(err.clone()));
        let resp = get(&svc, "k").await.unwrap();
        // The store's answer, or (once the key is hot) the near-cache's
        // copy of it.
        assert!(
            matches!(resp.served.path, Path::Secondary | Path::NearCache),
            "{err}: {:?}",
            resp.served
        );
        assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
    }
    let loads = store.loads();
    for err in [
        CacheError::InvalidInput("too long".into()),
        CacheError::Server("WRONGTYPE".into()),
    ] {
        cluster.set_mode(Mode::Fail(err.clone()));
        let e = get(&svc, "k").await.unwrap_err();
        assert_eq!(classify(&e), err.failure());
    }
    assert_eq!(store.loads(), loads);
    // Writes never fall back.
    cluster.set_mode(Mode::Fail(timeout_err()));
    let e = svc
        .clone()
        .oneshot(CacheRequest::set("k", "x", None))
        .await
        .unwrap_err();
    assert_eq!(classify(&e), Failure::Timeout);
    assert_eq!(store.loads(), loads);
}

#[tokio::test(start_paused = true)]
async fn hot_keys_answer_from_the_near_cache_within_max_stale_then_from_the_store() {
    let cluster = FakeCluster::new();
    cluster.put("hot", "v1");
    cluster.put("cold", "c1");
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("hot", b"s1");
    store.put("cold", b"s2");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    // Two reads admit "hot"; "cold" is read once.
    get(&svc, "hot").await.unwrap();
    get(&svc, "hot").await.unwrap();
    get(&svc, "cold").await.unwrap();
    cluster.set_mode(Mode::Fail(timeout_err()));
    tokio::time::advance(Duration::from_millis(500)).await;
    let resp = get(&svc, "hot").await.unwrap();
    assert_eq!(resp.served.path, Path::NearCache);
    assert_eq!(resp.value.as_deref(), Some(&b"v1"[..]));
    let age = resp.served.age.unwrap();
    assert!(
        age >= Duration::from_millis(499) && age <= Duration::from_secs(2),
        "{age:?}"
    );
    assert_eq!(
        get(&svc, "cold").await.unwrap().served.path,
        Path::Secondary
    );
    // Past max_stale (2 s): the store.
    tokio::time::advance(Duration::from_millis(1600)).await;
    let resp = get(&svc, "hot").await.unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    assert_eq!(resp.value.as_deref(), Some(&b"s1"[..]));
    // The store's answer is kept too (the store is authoritative): the
    // next reads within max_stale do not load again.
    let loads = store.loads();
    assert_eq!(get(&svc, "hot").await.unwrap().served.path, Path::NearCache);
    assert_eq!(store.loads(), loads);
    // A Primary read never takes the near-cache.
    let resp = svc
        .clone()
        .oneshot(CacheRequest::get("hot").with_consistency(Consistency::Primary))
        .await
        .unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
}

#[tokio::test(start_paused = true)]
async fn fresh_entries_answer_healthy_reads_only_when_configured() {
    let cluster = FakeCluster::new();
    cluster.put("hot", "v1");
    let store = FakeStore::new(Duration::from_millis(1));
    let near = NearCacheConfig::default().with_fresh_for(Duration::from_secs(1));
    let layer = FallbackLayer::new(store.service())
        .with_config(FallbackConfig::default().with_near_cache(Some(near)));
    let svc = stack(&layer, &cluster);
    get(&svc, "hot").await.unwrap();
    get(&svc, "hot").await.unwrap();
    let before = cluster.seen().len();
    let resp = get(&svc, "hot").await.unwrap();
    assert_eq!(resp.served.path, Path::NearCache);
    assert_eq!(cluster.seen().len(), before);
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert_eq!(get(&svc, "hot").await.unwrap().served.path, Path::Primary);
}

/// A read that began before a `Delete` and returns after it does not put
/// the old value in the near-cache.
#[tokio::test(start_paused = true)]
async fn store_failures_are_typed_never_cached_and_open_the_store_breaker() {
    let cluster = FakeCluster::new();
    cluster.set_mode(Mode::Fail(timeout_err()));
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"v");
    *store.fail.lock().unwrap() = true;
    let layer = FallbackLayer::new(store.service()).with_config(
        FallbackConfig::default()
            .with_store_breaker(StoreBreakerConfig::new(3, Duration::from_secs(1))),
    );
    let svc = stack(&layer, &cluster);
    for _ in 0..3 {
        let e = get(&svc, "k").await.unwrap_err();
        assert_eq!(classify(&e), Failure::Secondary);
    }
    assert_eq!(layer.store_breaker_state(), BreakerState::Open);
    let e = get(&svc, "k").await.unwrap_err();
    assert!(e.to_string().contains("store circuit open"), "{e}");
    assert_eq!(store.loads(), 3);
    // Recovers after the cool-down, on one probe.
    *store.fail.lock().unwrap() = false;
    tokio::time::advance(Duration::from_millis(1001)).await;
    assert_eq!(layer.store_breaker_state(), BreakerState::HalfOpen);
    assert_eq!(get(&svc, "k").await.unwrap().served.path, Path::Secondary);
    assert_eq!(layer.store_breaker_state(), BreakerState::Closed);
    assert!(!layer.state.near.as_ref().unwrap().contains(b"k") || store.loads() == 4);
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_is_a_timeout_and_an_oversize_value_an_error() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_secs(5));
    store.put("k", b"v");
    let layer = FallbackLayer::new(store.service())
        .with_config(FallbackConfig::default().with_store_timeout(Duration::from_millis(200)));
    let svc = stack(&layer, &cluster);
    let e = get(&svc, "k").await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(classify(&e), Failure::Secondary);

    let store = FakeStore::new(Duration::from_millis(1));
    store.put("big", &[7u8; 2048]);
    let layer = FallbackLayer::new(store.service())
        .with_config(FallbackConfig::default().with_max_value_bytes(1024));
    let svc = stack(&layer, &cluster);
    for _ in 0..3 {
        let e = get(&svc, "big").await.unwrap_err();
        assert!(e.to_string().contains("over the 1024 byte limit"), "{e}");
    }
    // Never cached nor written back: every read loads again.
    assert_eq!(store.loads(), 3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cluster.seen().iter().all(|r| r.op.is_read()));
}

#[tokio::test(start_paused = true)]
async fn the_store_sees_one_load_per_key_and_a_bounded_number_in_all() {
    let cluster = FakeCluster::new();
    cluster.set_mode(Mode::Fail(timeout_err()));
    let store = FakeStore::new(Duration::from_millis(50));
    for i in 0..20 {
        store.put(&format!("k{i}"), b"v");
    }
    let layer = FallbackLayer::new(store.service())
        .with_config(FallbackConfig::default().with_store_concurrency(4));
    let svc = stack(&layer, &cluster);
    let calls: Vec<_> = (0..400)
        .map(|i| {
            let svc = svc.clone();
            async move { get(&svc, &format!("k{}", i % 20)).await }
        })
        .collect();
    for out in futures_util::future::join_all(calls).await {
        assert_eq!(out.unwrap().served.path, Path::Secondary);
    }
    assert_eq!(store.loads(), 20);
    assert!(store.max_in_flight.load(Ordering::SeqCst) <= 4);
}

#[test]
fn the_layer_builds_outside_a_runtime_and_is_debug() {
    let store = FakeStore::new(Duration::ZERO);
    let bus = InvalidationBus::new(4);
    let layer = FallbackLayer::new(store.service()).with_invalidations(&bus);
    let cluster = FakeCluster::new();
    let svc = stack(&layer, &cluster);
    assert!(format!("{layer:?}").contains("FallbackLayer"));
    let _ = format!("{svc:?}");
    let _ = NodeAddr::new("127.0.0.1", 1);
}
