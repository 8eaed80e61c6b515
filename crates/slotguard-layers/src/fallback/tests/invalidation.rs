use std::time::Duration;

use bytes::Bytes;
use slotguard_core::invalidation::{Invalidation, InvalidationBus};
use slotguard_core::{CacheRequest, Consistency, Path, Topology};
use tower::ServiceExt;

use super::*;
use crate::test_support::{addr, two_shards, view};

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

/// `k` read once (the next read admits it), then read again with the
/// cluster answering after `ms`, and invalidated 10 ms into that read: the
/// read, still running.
async fn invalidated_during_a_read<St>(
    layer: &FallbackLayer<St>,
    svc: &Svc,
    cluster: &FakeCluster,
    ms: u64,
) -> tokio::task::JoinHandle<Result<CacheResponse, BoxError>> {
    get(svc, "k").await.unwrap();
    *cluster.delay.lock().unwrap() = Duration::from_millis(ms);
    let slow = tokio::spawn({
        let svc = svc.clone();
        async move { get(&svc, "k").await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    layer.invalidate("k");
    slow
}

#[tokio::test(start_paused = true)]
async fn a_read_racing_a_delete_does_not_fill_the_near_cache() {
    let cluster = FakeCluster::new();
    cluster.put("k", "old");
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"new");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    let slow = invalidated_during_a_read(&layer, &svc, &cluster, 100).await;
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
    crate::test_support::install(&topology, &two_shards());
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
    crate::test_support::install(&topology, &view(1, &[(0, 8191, 101), (8192, 16383, 2)]));
    settle().await;
    assert!(!near().contains(low.as_bytes()));
    assert!(near().contains(high.as_bytes()));
}

/// A miss's write-back `SET` still in flight when the application deletes
/// the key: the `DEL` reaches the node after it, so the old value does not
/// outlive the delete in the cluster.
#[tokio::test(start_paused = true)]
async fn a_write_waits_for_the_write_back_in_flight() {
    let cluster = FakeCluster::new();
    *cluster.set_delay.lock().unwrap() = Duration::from_millis(100);
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"old");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    assert_eq!(get(&svc, "k").await.unwrap().served.path, Path::Secondary);
    // The write-back is on its way (100 ms); the application changes the
    // store and deletes.
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.put("k", b"new");
    svc.clone()
        .oneshot(CacheRequest::delete("k"))
        .await
        .unwrap();
    // (paused time: past the write-back's arrival)
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!cluster.data.lock().unwrap().contains_key(&b"k"[..]));
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
}

/// A read sent while a `Delete` is on its way may get the old value from
/// the primary (the `DEL` not applied yet): it must not clear the key's
/// mark for good, nor leave that value in the near-cache.
#[tokio::test(start_paused = true)]
async fn a_read_overlapping_a_delete_does_not_outlive_it() {
    let cluster = FakeCluster::new();
    cluster.put("k", "old");
    let store = FakeStore::new(Duration::from_millis(1));
    store.put("k", b"new");
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    get(&svc, "k").await.unwrap();
    get(&svc, "k").await.unwrap();
    *cluster.del_delay.lock().unwrap() = Duration::from_millis(100);
    let del = tokio::spawn(svc.clone().oneshot(CacheRequest::delete("k")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let overlapping = get(&svc, "k").await.unwrap();
    assert_eq!(overlapping.value.as_deref(), Some(&b"old"[..]));
    del.await.unwrap().unwrap();
    cluster.set_mode(Mode::Fail(timeout_err()));
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(
        resp.value.as_deref(),
        Some(&b"new"[..]),
        "{:?}",
        resp.served
    );
    assert_eq!(
        cluster.seen().last().unwrap().consistency,
        Consistency::Primary
    );
}

/// A read whose fill an invalidation refused must not count as keeping the
/// key: the next read, which started after the invalidation, keeps it at
/// once (a hot key written often was otherwise cached again only a refresh
/// interval later, and missed the near-cache in between).
#[tokio::test(start_paused = true)]
async fn a_refused_fill_does_not_hold_back_the_next_one() {
    let cluster = FakeCluster::new();
    cluster.put("k", "old");
    let store = FakeStore::new(Duration::from_millis(1));
    let layer = FallbackLayer::new(store.service());
    let svc = stack(&layer, &cluster);
    let slow = invalidated_during_a_read(&layer, &svc, &cluster, 20).await;
    // Admitted, but its fill refused: it began before the invalidation.
    slow.await.unwrap().unwrap();
    assert!(!layer.state.near.as_ref().unwrap().contains(b"k"));
    cluster.put("k", "new");
    // Well within the refresh interval of the refused admission.
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
    assert!(layer.state.near.as_ref().unwrap().contains(b"k"));
    cluster.set_mode(Mode::Fail(timeout_err()));
    let resp = get(&svc, "k").await.unwrap();
    assert_eq!(resp.served.path, Path::NearCache);
    assert_eq!(resp.value.as_deref(), Some(&b"new"[..]));
    assert_eq!(store.loads(), 0);
}
