#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::invalidation::{Invalidation, InvalidationBus};
use slotguard_core::{
    classify, BoxError, CacheError, CacheRequest, CacheResponse, Consistency, Failure, NodeAddr,
    Op, Path, SecondaryRequest, Topology,
};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::circuit_breaker::BreakerState;
use crate::test_support::{addr, two_shards, view};

/// What the fake cluster does with the next requests.
#[derive(Clone, Debug)]
enum Mode {
    /// Answer from its own key → value map (primary).
    Serve,
    /// Fail every request with this error.
    Fail(CacheError),
}

#[derive(Clone)]
struct FakeCluster {
    mode: Arc<Mutex<Mode>>,
    data: Arc<Mutex<std::collections::HashMap<Bytes, Bytes>>>,
    seen: Arc<Mutex<Vec<CacheRequest>>>,
    delay: Arc<Mutex<Duration>>,
}

impl FakeCluster {
    fn new() -> Self {
        FakeCluster {
            mode: Arc::new(Mutex::new(Mode::Serve)),
            data: Arc::default(),
            seen: Arc::default(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn put(&self, k: &str, v: &str) {
        self.data.lock().unwrap().insert(
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        );
    }

    fn seen(&self) -> Vec<CacheRequest> {
        self.seen.lock().unwrap().clone()
    }

    fn service(&self) -> BoxCloneService<CacheRequest, CacheResponse, BoxError> {
        let me = self.clone();
        BoxCloneService::new(service_fn(move |req: CacheRequest| {
            let me = me.clone();
            async move {
                me.seen.lock().unwrap().push(req.clone());
                let delay = *me.delay.lock().unwrap();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mode = me.mode.lock().unwrap().clone();
                let node = addr(1);
                match mode {
                    Mode::Fail(e) => Err::<CacheResponse, BoxError>(e.into()),
                    Mode::Serve => {
                        let mut data = me.data.lock().unwrap();
                        let value = match &req.op {
                            Op::Get => data.get(req.key()).cloned(),
                            Op::Set { value, .. } => {
                                data.insert(req.key().clone(), value.clone());
                                None
                            }
                            _ => {
                                data.remove(req.key());
                                None
                            }
                        };
                        Ok(CacheResponse::from_node(value, node, Path::Primary))
                    }
                }
            }
        }))
    }
}

#[derive(Clone)]
struct FakeStore {
    data: Arc<Mutex<std::collections::HashMap<Bytes, Bytes>>>,
    loads: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    delay: Duration,
    fail: Arc<Mutex<bool>>,
}

impl FakeStore {
    fn new(delay: Duration) -> Self {
        FakeStore {
            data: Arc::default(),
            loads: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            delay,
            fail: Arc::new(Mutex::new(false)),
        }
    }

    fn put(&self, k: &str, v: &[u8]) {
        self.data.lock().unwrap().insert(
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v),
        );
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    fn service(&self) -> BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError> {
        let me = self.clone();
        BoxCloneService::new(service_fn(move |req: SecondaryRequest| {
            let me = me.clone();
            async move {
                me.loads.fetch_add(1, Ordering::SeqCst);
                let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_in_flight.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(me.delay).await;
                me.in_flight.fetch_sub(1, Ordering::SeqCst);
                if *me.fail.lock().unwrap() {
                    return Err::<Option<Bytes>, BoxError>("store exploded".into());
                }
                Ok(me.data.lock().unwrap().get(req.key()).cloned())
            }
        }))
    }
}

fn timeout_err() -> CacheError {
    CacheError::Timeout { node: addr(1) }
}

type Svc = Fallback<
    BoxCloneService<CacheRequest, CacheResponse, BoxError>,
    BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError>,
>;

fn stack(
    layer: &FallbackLayer<BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError>>,
    cluster: &FakeCluster,
) -> Svc {
    layer.layer(cluster.service())
}

fn get(
    svc: &Svc,
    key: &str,
) -> impl std::future::Future<Output = Result<CacheResponse, BoxError>> + Send + 'static {
    svc.clone().oneshot(CacheRequest::get(key.to_owned()))
}

fn near_config() -> FallbackConfig {
    FallbackConfig::default()
}

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

#[tokio::test(start_paused = true)]
async fn a_delete_is_never_followed_by_the_old_value_from_near_cache_or_replica() {
    let cluster = FakeCluster::new();
    cluster.put("k", "old");
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"new");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    get(&svc, "k").await.unwrap();
    get(&svc, "k").await.unwrap();
    // The application updated the store and deletes through the stack.
    svc.clone()
        .oneshot(CacheRequest::delete("k"))
        .await
        .unwrap();
    cluster.set_mode(Mode::Fail(timeout_err()));
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
    assert_eq!(resp.served.path, Path::Secondary);
    // The read went to the cluster as primary-only (no replica).
    let last = cluster.seen().last().cloned().unwrap();
    assert_eq!(last.consistency, Consistency::Primary);
    // A store answer does not clear the mark: still primary-only.
    get(&svc, "k").await.unwrap();
    assert_eq!(
        cluster.seen().last().unwrap().consistency,
        Consistency::Primary
    );
    // The primary answers: the mark is gone.
    cluster.set_mode(Mode::Serve);
    cluster.put("k", "new");
    assert_eq!(get(&svc, "k").await.unwrap().served.path, Path::Primary);
    get(&svc, "k").await.unwrap();
    assert_eq!(
        cluster.seen().last().unwrap().consistency,
        Consistency::ReplicaOk
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_leaves_the_key_invalidated() {
    let cluster = FakeCluster::new();
    cluster.put("k", "old");
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"new");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    get(&svc, "k").await.unwrap();
    get(&svc, "k").await.unwrap();
    cluster.set_mode(Mode::Fail(timeout_err()));
    for req in [CacheRequest::delete("k"), CacheRequest::set("k", "x", None)] {
        assert!(svc.clone().oneshot(req).await.is_err());
        let resp = get(&svc, "k").await.unwrap();
        assert_eq!(resp.served.path, Path::Secondary);
        assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
    }
}

/// A read that began before a `Delete` and returns after it does not put
/// the old value in the near-cache.
#[tokio::test(start_paused = true)]
async fn a_read_racing_a_delete_does_not_fill_the_near_cache() {
    let cluster = FakeCluster::new();
    cluster.put("k", "old");
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"new");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    get(&svc, "k").await.unwrap(); // one read: the next one admits
    *cluster.delay.lock().unwrap() = Duration::from_millis(100);
    let slow = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, "k").await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    layer.invalidate("k");
    assert_eq!(
        slow.await.unwrap().unwrap().value.as_deref(),
        Some(&b"old"[..])
    );
    *cluster.delay.lock().unwrap() = Duration::ZERO;
    cluster.set_mode(Mode::Fail(timeout_err()));
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    assert!(!layer.state.near.as_ref().unwrap().contains(b"k"));
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_detaches_the_load_in_flight() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(100));
    store.put("k", b"v1");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, "k").await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.put("k", b"v2");
    layer.invalidate("k");
    let second = get(&svc, "k").await.unwrap();
    assert_eq!(second.value.as_deref(), Some(&b"v2"[..]));
    first.await.unwrap().unwrap();
    assert_eq!(store.loads(), 2);
}

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

#[tokio::test(start_paused = true)]
async fn a_caller_never_waits_past_its_deadline_for_a_shared_load() {
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(500));
    store.put("k", b"v");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    let long = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, "k").await }
    });
    let start = tokio::time::Instant::now();
    let short = svc
        .clone()
        .oneshot(CacheRequest::get("k").with_timeout(Duration::from_millis(100)))
        .await;
    assert!(short.is_err());
    assert!(start.elapsed() <= Duration::from_millis(101));
    assert_eq!(
        long.await.unwrap().unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(store.loads(), 1);
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn bus_invalidations_evict_mark_and_flush_and_the_task_ends_with_the_layer() {
    let bus = InvalidationBus::new(16);
    let cluster = FakeCluster::new();
    for k in ["a", "b", "c"] {
        cluster.put(k, "v");
    }
    let store = FakeStore::new(Duration::from_millis(1));
    let layer = FallbackLayer::new(store.service()).with_invalidations(&bus);
    let svc = stack(&layer, &cluster);
    let near = || layer.state.near.as_ref().unwrap();
    for k in ["a", "b", "c", "a", "b", "c"] {
        get(&svc, k).await.unwrap();
    }
    assert!(near().contains(b"a") && near().contains(b"b"));
    bus.publish(Invalidation::Keys {
        node: addr(1),
        keys: vec![Bytes::from_static(b"a")],
    });
    settle().await;
    assert!(!near().contains(b"a"));
    assert!(layer.state.marks.get(b"a").is_some());
    bus.publish(Invalidation::Node { node: addr(9) });
    settle().await;
    assert!(near().contains(b"b"), "another node's flush keeps b");
    bus.publish(Invalidation::Node { node: addr(1) });
    settle().await;
    assert!(!near().contains(b"b"));
    // Lost events flush everything.
    get(&svc, "c").await.unwrap();
    assert!(near().contains(b"c"));
    for _ in 0..40 {
        bus.publish(Invalidation::Node { node: addr(9) });
    }
    settle().await;
    cluster.set_mode(Mode::Fail(timeout_err()));
    assert_eq!(get(&svc, "c").await.unwrap().served.path, Path::Secondary);
    assert_eq!(bus.subscribers(), 1);
    drop(svc);
    drop(layer);
    settle().await;
    assert_eq!(bus.subscribers(), 0, "the watch task ended");
}

#[tokio::test(start_paused = true)]
async fn a_slot_that_changes_owner_is_flushed() {
    let topology = Topology::new();
    topology.install(&two_shards());
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(1));
    let layer = FallbackLayer::new(store.service()).with_topology(topology.clone());
    let svc = stack(&layer, &cluster);
    // Keys on both shards.
    let (mut low, mut high) = (None, None);
    for i in 0..100 {
        let k = format!("key{i}");
        let slot = slotguard_core::key_slot(k.as_bytes());
        if slot < 8192 && low.is_none() {
            low = Some(k);
        } else if slot >= 8192 && high.is_none() {
            high = Some(k);
        }
    }
    let (low, high) = (low.unwrap(), high.unwrap());
    for k in [&low, &high, &low, &high] {
        cluster.put(k, "v");
        get(&svc, k).await.unwrap();
    }
    let near = || layer.state.near.as_ref().unwrap();
    assert!(near().contains(low.as_bytes()) && near().contains(high.as_bytes()));
    // Shard 1's replica (port 101) is promoted.
    topology.install(&view(1, &[(0, 8191, 101), (8192, 16383, 2)]));
    settle().await;
    assert!(!near().contains(low.as_bytes()));
    assert!(near().contains(high.as_bytes()));
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
