//! `SlotGuard::shutdown` is one cancel-and-await of the stack's
//! controller: after it no task of ours is alive (counted with the
//! runtime's metrics, on a runtime this test owns) and no node lists a
//! connection of ours — on a healthy cluster, right after a failover, and
//! during a live slot migration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use slotguard::SlotGuard;
use slotguard_store::SqliteStore;
use slotguard_testkit::{ClusterSpec, LocalCluster};

fn seeds(cluster: &LocalCluster) -> Vec<slotguard::NodeAddr> {
    cluster.seeds().iter().map(|s| s.parse().unwrap()).collect()
}

/// Poll `done` until it holds, or panic with `what` after `deadline`.
async fn eventually(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + deadline;
    while !done() {
        assert!(tokio::time::Instant::now() < end, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connect a handle (with a store, a near-cache and client-side caching,
/// so every kind of task runs), use it on every shard, run `fault` while
/// it is live, shut it down, and check that nothing of ours is left.
async fn connect_use_and_shut_down(
    cluster: &LocalCluster,
    store: &SqliteStore,
    fault: impl FnOnce(&LocalCluster),
) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let cache = SlotGuard::builder(seeds(cluster))
        .store(store.clone())
        .client_side_caching(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    for p in cluster.primaries().unwrap() {
        for key in cluster.key_for_slot_of(p, 5).unwrap() {
            cache.set(key.clone(), "v", None).await.unwrap();
            let _ = cache.get(key.clone()).await.unwrap();
            let _ = cache.delete(key).await.unwrap();
        }
    }
    assert!(metrics.num_alive_tasks() > before, "the stack runs tasks");
    fault(cluster);
    // Traffic while the fault is fresh: the stack reacts (refreshes,
    // replays, reconnects) when it is shut down.
    for key in cluster.key_for_slot_of(0, 5).unwrap_or_default() {
        let _ = cache.get(key).await;
    }
    cache.shutdown().await;
    assert_eq!(cache.controller().running_tasks(), 0);
    assert_eq!(cache.leaf().running_tasks(), 0);
    // A task whose future has ended leaves the runtime's count a moment
    // later.
    eventually("no task of ours alive", Duration::from_secs(5), || {
        metrics.num_alive_tasks() <= before
    })
    .await;
    // Nodes learn of closed connections a moment after our side.
    eventually(
        "no node lists a connection of ours",
        Duration::from_secs(5),
        || (0..cluster.len()).all(|i| cluster.client_connections(i).unwrap() == 0),
    )
    .await;
}

#[test]
fn after_shutdown_no_task_and_no_connection_of_ours_is_left() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("items.db")).unwrap();
    runtime.block_on(async {
        // Healthy.
        connect_use_and_shut_down(&cluster, &store, |_| {}).await;
        // Right after a failover: a replica of the first primary promoted.
        connect_use_and_shut_down(&cluster, &store, |c| {
            let primary = c.primary_of_slot(0).unwrap();
            let replica = c.replicas_of(primary).unwrap()[0];
            c.failover(replica).unwrap();
        })
        .await;
        // During a live migration: slot 0 half moved to another primary.
        connect_use_and_shut_down(&cluster, &store, |c| {
            let from = c.primary_of_slot(0).unwrap();
            let to = c
                .primaries()
                .unwrap()
                .into_iter()
                .find(|&p| p != from)
                .unwrap();
            c.begin_migration(0, from, to).unwrap();
        })
        .await;
    });
}
