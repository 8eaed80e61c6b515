//! Client-side caching: tracked entries answer healthy reads, exactly until
//! an invalidation arrives or their tracking connection ends.

use std::time::Duration;

use bytes::Bytes;
use slotguard_core::invalidation::{Invalidation, InvalidationBus};
use slotguard_core::{CacheRequest, Consistency, Path, Topology};
use tower::ServiceExt;

use super::*;
use crate::test_support::{addr, view};

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

type Layer = FallbackLayer<tower::util::BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError>>;

/// Node 1 owns every slot; client-side caching on (`tracked_for`).
fn setup(tracked_for: Duration) -> (InvalidationBus, FakeCluster, Layer, Svc) {
    let bus = InvalidationBus::new(64);
    let topology = Topology::new();
    crate::test_support::install(&topology, &view(1, &[(0, 16383, 1)]));
    let cluster = FakeCluster::new();
    let store = FakeStore::new(Duration::from_millis(1));
    let config = FallbackConfig::default().with_near_cache(Some(
        NearCacheConfig::default().with_tracked_for(tracked_for),
    ));
    let layer = FallbackLayer::new(store.service())
        .with_config(config)
        .with_invalidations(&bus)
        .with_topology(topology);
    let svc = stack(&layer, &cluster);
    (bus, cluster, layer, svc)
}

async fn read(svc: &Svc, key: &str) -> (Path, Option<Bytes>) {
    let resp = get(svc, key).await.unwrap();
    (resp.served.path, resp.value)
}

fn v(s: &'static str) -> Option<Bytes> {
    Some(Bytes::from_static(s.as_bytes()))
}

/// `a` = `v1` on node 1, whose connection tracks from now on (the first
/// read starts the watch task, which then sees the `Tracking` event).
async fn tracking_on_a(bus: &InvalidationBus, cluster: &FakeCluster, svc: &Svc) {
    cluster.put("a", "v1");
    read(svc, "a").await;
    bus.publish(Invalidation::Tracking { node: addr(1) });
    settle().await;
}

/// `a` = `v1`, read over a tracking connection and kept: the next read is
/// a near-cache hit.
async fn tracked_a(bus: &InvalidationBus, cluster: &FakeCluster, svc: &Svc) {
    tracking_on_a(bus, cluster, svc).await;
    read(svc, "a").await;
    assert_eq!(read(svc, "a").await, (Path::ClientCache, v("v1")));
}

fn reads_seen(cluster: &FakeCluster) -> usize {
    cluster.seen().iter().filter(|r| r.op.is_read()).count()
}

#[tokio::test(start_paused = true)]
async fn tracked_entries_answer_until_an_invalidation_arrives() {
    let (bus, cluster, _layer, svc) = setup(Duration::from_secs(60));
    tracking_on_a(&bus, &cluster, &svc).await;
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v1")), "admitted");
    assert_eq!(read(&svc, "a").await, (Path::ClientCache, v("v1")));
    assert_eq!(read(&svc, "a").await, (Path::ClientCache, v("v1")));
    assert_eq!(reads_seen(&cluster), 2, "hits never reach the cluster");

    // another client writes; once its invalidation arrived, never stale
    cluster.put("a", "v2");
    bus.publish(Invalidation::Keys {
        node: addr(1),
        keys: vec![Bytes::from_static(b"a")],
    });
    settle().await;
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v2")));
    assert_eq!(read(&svc, "a").await, (Path::ClientCache, v("v2")));

    // our own write: never served the old value
    svc.clone()
        .oneshot(CacheRequest::set("a", "v3", None))
        .await
        .unwrap();
    let seen = reads_seen(&cluster);
    assert_eq!(
        read(&svc, "a").await,
        (Path::ClientCache, v("v3")),
        "read back"
    );
    assert_eq!(reads_seen(&cluster), seen);
    assert!(cluster.seen().last().unwrap().read_back);

    // a primary-only read never takes the near-cache
    let resp = svc
        .clone()
        .oneshot(CacheRequest::get("a").with_consistency(Consistency::Primary))
        .await
        .unwrap();
    assert_eq!(resp.served.path, Path::Primary);
}

#[tokio::test(start_paused = true)]
async fn nothing_read_over_a_lost_tracking_connection_answers_until_reread() {
    let (bus, cluster, _layer, svc) = setup(Duration::from_secs(60));
    tracked_a(&bus, &cluster, &svc).await;

    // the tracking connection is lost (and a new one is not tracking yet)
    bus.publish(Invalidation::Node { node: addr(1) });
    settle().await;
    assert_eq!(read(&svc, "a").await.0, Path::Primary);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(read(&svc, "a").await.0, Path::Primary, "re-read untracked");
    assert_eq!(read(&svc, "a").await.0, Path::Primary);

    // the new connection tracks: once re-read through it, cached again
    bus.publish(Invalidation::Tracking { node: addr(1) });
    settle().await;
    assert_eq!(read(&svc, "a").await.0, Path::Primary, "filled before");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(read(&svc, "a").await.0, Path::Primary, "re-read tracked");
    assert_eq!(read(&svc, "a").await.0, Path::ClientCache);

    // lost events: nothing answers until re-read
    for _ in 0..80 {
        bus.publish(Invalidation::Keys {
            node: addr(1),
            keys: vec![Bytes::from_static(b"zzz")],
        });
    }
    settle().await;
    assert_eq!(read(&svc, "a").await.0, Path::Primary);
}

#[tokio::test(start_paused = true)]
async fn tracked_entries_age_out_and_it_is_off_by_default() {
    let (bus, cluster, _layer, svc) = setup(Duration::from_secs(2));
    tracked_a(&bus, &cluster, &svc).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(
        read(&svc, "a").await.0,
        Path::Primary,
        "older than tracked_for"
    );

    let (bus, cluster, _layer, svc) = setup(Duration::ZERO);
    tracking_on_a(&bus, &cluster, &svc).await;
    for _ in 0..5 {
        assert_eq!(read(&svc, "a").await.0, Path::Primary);
    }
}

#[tokio::test(start_paused = true)]
async fn a_marked_read_gives_its_primary_a_short_deadline() {
    let (_bus, cluster, _, _) = setup(Duration::ZERO);
    let layer = FallbackLayer::new(FakeStore::new(Duration::from_millis(1)).service()).with_config(
        FallbackConfig::default().with_marked_read_timeout(Some(Duration::from_millis(25))),
    );
    let svc = stack(&layer, &cluster);
    cluster.put("a", "v1");
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(1);
    let req = |k: &str| CacheRequest::get(k.to_owned()).with_timeout(Duration::from_secs(1));
    svc.clone().oneshot(req("a")).await.unwrap();
    // unmarked: the cluster read timeout (300 ms)
    assert_eq!(
        cluster.seen()[0].deadline,
        Some(start + Duration::from_millis(300))
    );
    layer.invalidate("a");
    svc.clone().oneshot(req("a")).await.unwrap();
    let seen = cluster.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.consistency, Consistency::Primary);
    // marked: only the primary may answer, so the store answers after 25 ms
    assert_eq!(last.deadline, Some(start + Duration::from_millis(25)));
    assert!(last.deadline < Some(deadline));
}

/// A write reads its key back (client-side caching on): the value read
/// back answers the next reads, tracked like any read's; without a
/// read-back, or when the key was invalidated while the write was on its
/// way, the next read goes to the primary.
#[tokio::test(start_paused = true)]
async fn a_write_keeps_what_it_read_back_unless_invalidated_meanwhile() {
    let (bus, cluster, layer, svc) = setup(Duration::from_secs(60));
    tracked_a(&bus, &cluster, &svc).await;
    let write = |value: &'static str| svc.clone().oneshot(CacheRequest::set("a", value, None));

    let resp = write("v2").await.unwrap();
    assert_eq!(resp.value, None, "a write answers no value");
    let seen = reads_seen(&cluster);
    assert_eq!(read(&svc, "a").await, (Path::ClientCache, v("v2")));
    assert_eq!(reads_seen(&cluster), seen, "no read after the write");
    assert_eq!(layer.state.marks.get(b"a"), None, "the mark is cleared");

    // Another client's write, invalidated while ours is on its way: what
    // ours read back may be older than that write; not kept.
    *cluster.set_delay.lock().unwrap() = Duration::from_millis(10);
    let slow = tokio::spawn(write("v3"));
    tokio::time::sleep(Duration::from_millis(5)).await;
    bus.publish(Invalidation::Keys {
        node: addr(1),
        keys: vec![Bytes::from_static(b"a")],
    });
    settle().await;
    slow.await.unwrap().unwrap();
    *cluster.set_delay.lock().unwrap() = Duration::ZERO;
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v3")));
    assert_eq!(read(&svc, "a").await, (Path::ClientCache, v("v3")));

    // A leaf that cannot read back: the next read goes to the primary.
    cluster
        .no_read_back
        .store(true, std::sync::atomic::Ordering::SeqCst);
    write("v4").await.unwrap();
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v4")));

    // The connection the value was read over is lost: not served.
    cluster
        .no_read_back
        .store(false, std::sync::atomic::Ordering::SeqCst);
    write("v5").await.unwrap();
    bus.publish(Invalidation::Node { node: addr(1) });
    settle().await;
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v5")));
}

/// Without client-side caching, a write never asks for a read-back.
#[tokio::test(start_paused = true)]
async fn writes_read_back_only_under_client_side_caching() {
    let (_bus, cluster, _layer, svc) = setup(Duration::ZERO);
    svc.clone()
        .oneshot(CacheRequest::set("a", "v1", None))
        .await
        .unwrap();
    assert!(!cluster.seen().last().unwrap().read_back);
}

/// While a write of ours is on its way, the tracked entry from before it
/// answers reads (they overlap the write: either value is right); once it
/// is done, never again. A write dropped before its answer may still
/// apply: the entry stops answering at once.
#[tokio::test(start_paused = true)]
async fn a_read_overlapping_our_write_may_take_the_value_before_it_and_none_after() {
    let (bus, cluster, _layer, svc) = setup(Duration::from_secs(60));
    tracked_a(&bus, &cluster, &svc).await;

    *cluster.set_delay.lock().unwrap() = Duration::from_millis(10);
    let write = tokio::spawn(svc.clone().oneshot(CacheRequest::set("a", "v2", None)));
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        read(&svc, "a").await,
        (Path::ClientCache, v("v1")),
        "overlaps"
    );
    write.await.unwrap().unwrap();
    assert_eq!(
        read(&svc, "a").await,
        (Path::ClientCache, v("v2")),
        "read back"
    );

    // Dropped on the way: not the value before it, not from the near-cache.
    let dropped = tokio::time::timeout(
        Duration::from_millis(5),
        svc.clone().oneshot(CacheRequest::set("a", "v3", None)),
    )
    .await;
    assert!(dropped.is_err(), "the write was still on its way");
    tokio::time::sleep(Duration::from_millis(10)).await;
    // (This fake cluster drops the write with its future; a node may not.)
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v2")));
}

/// Under client-side caching, a write reads back only a key whose entry
/// answered a read since it was kept: a load of writes pays no extra read.
#[tokio::test(start_paused = true)]
async fn only_a_write_of_a_key_read_from_the_near_cache_reads_back() {
    let (bus, cluster, _layer, svc) = setup(Duration::from_secs(60));
    tracking_on_a(&bus, &cluster, &svc).await;
    let write = |value: &'static str| {
        let svc = svc.clone();
        async move {
            svc.oneshot(CacheRequest::set("a", value, None))
                .await
                .unwrap();
        }
    };
    let last_read_back = || cluster.seen().last().unwrap().read_back;
    write("v2").await;
    assert!(!last_read_back(), "never kept");
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v2")), "kept");
    write("v3").await;
    assert!(!last_read_back(), "kept, never answered a read");
    assert_eq!(read(&svc, "a").await, (Path::Primary, v("v3")));
    assert_eq!(read(&svc, "a").await, (Path::ClientCache, v("v3")));
    write("v4").await;
    assert!(last_read_back(), "answered a read");
    // The value read back is kept anew: one more write without a read
    // between does not read back.
    write("v5").await;
    assert!(!last_read_back());
}
