//! The `SlotGuard` handle against a real local cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use slotguard::{CacheError, CacheRequest, Path, SlotGuard};
use slotguard_testkit::{ClusterSpec, LocalCluster};
use tower::ServiceExt;

fn seeds(cluster: &LocalCluster) -> Vec<slotguard::NodeAddr> {
    cluster.seeds().iter().map(|s| s.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_sets_gets_and_deletes_on_every_shard() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let cache = SlotGuard::builder(seeds(&cluster)).connect().await.unwrap();
    assert_eq!(cache.topology().map().covered_slots(), 16384);

    // One key per primary, so every shard is used.
    for p in cluster.primaries().unwrap() {
        let key = cluster.key_for_slot_of(p, 1).unwrap().remove(0);
        assert_eq!(cache.get(key.clone()).await.unwrap(), None);
        cache
            .set(key.clone(), "v1", Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(
            cache.get(key.clone()).await.unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert!(cache.delete(key.clone()).await.unwrap());
        assert!(!cache.delete(key.clone()).await.unwrap());
        assert_eq!(cache.get(key).await.unwrap(), None);
    }

    // The same stack as a tower service; its answers say who served them.
    let resp = cache
        .service()
        .oneshot(CacheRequest::get("absent"))
        .await
        .unwrap();
    assert_eq!(resp.served.path, Path::Primary);

    // Bad input is a typed error, nothing sent.
    let huge = vec![b'k'; 1 << 20];
    assert!(matches!(
        cache.get(huge).await,
        Err(CacheError::InvalidInput(_))
    ));

    // Shutdown ends every task the stack runs; later calls fail fast, typed.
    cache.shutdown().await;
    assert_eq!(cache.leaf().running_tasks(), 0);
    let after = tokio::time::timeout(Duration::from_secs(5), cache.get("k")).await;
    assert!(
        matches!(after, Ok(Err(_))),
        "a call after shutdown fails at once: {after:?}"
    );
}

#[tokio::test]
async fn no_seed_or_no_answer_is_a_typed_error() {
    assert!(matches!(
        SlotGuard::builder([]).connect().await,
        Err(CacheError::InvalidInput(_))
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = SlotGuard::builder([format!("127.0.0.1:{port}").parse().unwrap()])
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::Connection { .. } | CacheError::Timeout { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_misses_are_loaded_and_outages_answered() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = slotguard_store::SqliteStore::open(dir.path().join("items.db")).unwrap();
    let cache = SlotGuard::builder(seeds(&cluster))
        .store(store.clone())
        .connect()
        .await
        .unwrap();

    store.put("item:1", "from the store").await.unwrap();
    let resp = cache.call(CacheRequest::get("item:1")).await.unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"from the store"[..]));
    assert_eq!(resp.served.path, Path::Secondary);
    // Written back to the cluster: a later read is a cluster hit (poll: the
    // write-back is fire-and-forget).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let resp = cache.call(CacheRequest::get("item:1")).await.unwrap();
        if resp.served.path == Path::Primary {
            assert_eq!(resp.value.as_deref(), Some(&b"from the store"[..]));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never written back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every node stopped: the store answers.
    store.put("item:2", "only in the store").await.unwrap();
    for i in 0..cluster.len() {
        cluster.pause(i).unwrap();
    }
    let got = cache.get("item:2").await;
    for i in 0..cluster.len() {
        cluster.resume(i).unwrap();
    }
    assert_eq!(got.unwrap().as_deref(), Some(&b"only in the store"[..]));
}

/// The same handle over the fred-backed leaf (`LeafKind::Fred`): the same
/// calls, answers and shutdown.
#[cfg(feature = "fred")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_works_over_the_fred_leaf() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let cache = SlotGuard::builder(seeds(&cluster))
        .leaf_kind(slotguard::LeafKind::Fred)
        .connect()
        .await
        .unwrap();
    assert!(format!("{cache:?}").contains("FredLeaf"));
    for p in cluster.primaries().unwrap() {
        let key = cluster.key_for_slot_of(p, 1).unwrap().remove(0);
        cache.set(key.clone(), "v1", None).await.unwrap();
        assert_eq!(
            cache.get(key.clone()).await.unwrap().as_deref(),
            Some(&b"v1"[..])
        );
        assert!(cache.delete(key.clone()).await.unwrap());
        assert_eq!(cache.get(key).await.unwrap(), None);
    }
    assert_eq!(
        slotguard::LeafKind::parse("fred").unwrap(),
        slotguard::LeafKind::Fred
    );
    assert!(slotguard::LeafKind::parse("redis-rs").is_err());
    cache.shutdown().await;
    assert_eq!(cache.leaf().running_tasks(), 0);
    let after = tokio::time::timeout(Duration::from_secs(5), cache.get("k")).await;
    assert!(matches!(after, Ok(Err(_))), "{after:?}");
}

/// `SlotGuard::stats` counts every read under the path that answered it
/// (or as an error), and reading it changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_every_read_by_its_path() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let cache = SlotGuard::builder(seeds(&cluster)).connect().await.unwrap();
    let primaries = cluster.primaries().unwrap();
    for &p in &primaries {
        let key = cluster.key_for_slot_of(p, 1).unwrap().remove(0);
        assert_eq!(cache.get(key.clone()).await.unwrap(), None);
        cache.set(key.clone(), "v", None).await.unwrap();
        assert!(cache.get(key).await.unwrap().is_some());
    }
    assert!(cache.get(vec![b'k'; 1 << 20]).await.is_err());

    let stats = cache.stats();
    let reads = stats.telemetry.reads;
    assert_eq!(reads.primary_hit, 2 * primaries.len() as u64);
    assert_eq!(reads.error, 1);
    assert_eq!(reads.total(), reads.primary_hit + reads.error);
    assert_eq!(stats.telemetry.writes, primaries.len() as u64);
    assert_eq!(stats.slots_assigned, 16384);
    assert_eq!(stats.slots_ok, 16384);
    assert!(stats
        .breakers
        .iter()
        .all(|(_, s)| *s == slotguard::layers::circuit_breaker::BreakerState::Closed));
    assert_eq!(stats.store_breaker, None);
    assert_eq!(cache.stats(), stats, "reading the stats changes nothing");
    cache.shutdown().await;
}
