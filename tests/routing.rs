//! The routing layers (slot_refresh → redirect → leaf) against a real
//! cluster: live resharding, ASK, refresh storms, stale maps, minorities.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{key_slot, CacheRequest, Path, TopologySource};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_testkit::key_in_slot;
use slotguard_tests::{addr, command_calls, eventually, write_then_read, Harness};
use tower::ServiceExt;

/// Keys spread over `slots`, several per slot (hash tags).
fn keys_in(slots: impl Iterator<Item = u16>, per_slot: usize, prefix: &str) -> Vec<Bytes> {
    slots
        .flat_map(|s| {
            let tag = key_in_slot(s);
            (0..per_slot).map(move |i| Bytes::from(format!("{tag}:{prefix}:{i}")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_resharding_under_load_has_zero_errors_and_no_stale_reads() {
    let h = Arc::new(Harness::start().await);
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.routing_stack(&refresh);
    let from = h.cluster.primary_of_slot(0).unwrap();
    let to = *h
        .cluster
        .primaries()
        .unwrap()
        .iter()
        .find(|&&p| p != from)
        .unwrap();
    const MOVED_SLOTS: u16 = 520;

    let done = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..8u16 {
        // Each worker owns its keys, so "the last value written" is its own.
        // Half are in the slots being moved, half elsewhere.
        let mut keys = keys_in(
            (0..MOVED_SLOTS).filter(|s| s % 8 == w).step_by(4),
            2,
            &format!("w{w}"),
        );
        keys.extend(keys_in(
            (6000..16000).step_by(97 + w as usize),
            1,
            &format!("w{w}"),
        ));
        let stack = stack.clone();
        let done = done.clone();
        let ops = ops.clone();
        workers.push(tokio::spawn(async move {
            let mut last: HashMap<Bytes, Bytes> = HashMap::new();
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) || n < 2_600 {
                let key = keys[(n as usize * 7) % keys.len()].clone();
                if n.is_multiple_of(3) || !last.contains_key(&key) {
                    let value = Bytes::from(format!("{key:?}={n}"));
                    stack
                        .clone()
                        .oneshot(CacheRequest::set(key.clone(), value.clone(), None))
                        .await
                        .unwrap_or_else(|e| panic!("SET {key:?} failed during resharding: {e}"));
                    last.insert(key, value);
                } else {
                    let resp = stack
                        .clone()
                        .oneshot(CacheRequest::get(key.clone()))
                        .await
                        .unwrap_or_else(|e| panic!("GET {key:?} failed during resharding: {e}"));
                    assert_eq!(resp.value.as_ref(), last.get(&key), "stale read of {key:?}");
                }
                n += 1;
                ops.fetch_add(1, Ordering::Relaxed);
            }
            n
        }));
    }
    // Let the load run on the old layout, then move the slots under it.
    while ops.load(Ordering::Relaxed) < 2_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cluster = h.clone();
    tokio::task::spawn_blocking(move || cluster.cluster.move_slots(0..=MOVED_SLOTS - 1, from, to))
        .await
        .unwrap()
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total >= 20_000, "ran {total} operations");
    // the map followed the migration
    let map = h.topology.load();
    for slot in [0, MOVED_SLOTS / 2, MOVED_SLOTS - 1] {
        assert_eq!(
            map.primary_for_slot(slot).unwrap().addr,
            addr(&h.cluster, to)
        );
    }
    println!("{total} operations, 0 errors, {MOVED_SLOTS} slots moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_during_half_migration_succeeds_and_leaves_the_map() {
    let h = Harness::start().await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.routing_stack(&refresh);
    let key = Bytes::from_static(b"half-migrated");
    let slot = key_slot(&key);
    let owner = h.cluster.primary_of_slot(slot).unwrap();
    let target = *h
        .cluster
        .primaries()
        .unwrap()
        .iter()
        .find(|&&p| p != owner)
        .unwrap();
    stack
        .clone()
        .oneshot(CacheRequest::set(key.clone(), "v", None))
        .await
        .unwrap();

    h.cluster.begin_migration(slot, owner, target).unwrap();
    assert_eq!(h.cluster.migrate_keys(slot, owner, target).unwrap(), 1);
    let before = h.topology.load();
    let asking_before = command_calls(&h.cluster, target, "asking");
    let resp = stack
        .clone()
        .oneshot(CacheRequest::get(key.clone()))
        .await
        .unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
    assert_eq!(resp.served.node, Some(addr(&h.cluster, target)));
    assert_eq!(
        command_calls(&h.cluster, target, "asking"),
        asking_before + 1
    );
    // no map change for ASK
    let after = h.topology.load();
    assert_eq!(after.generation(), before.generation());
    assert_eq!(
        after.primary_for_slot(slot).unwrap().addr,
        addr(&h.cluster, owner)
    );
    h.cluster.finish_migration(slot, target).unwrap();
}

fn shards_calls(h: &Harness) -> u64 {
    (0..h.cluster.len())
        .map(|i| command_calls(&h.cluster, i, "cluster|shards"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_storm_costs_a_handful_of_topology_fetches() {
    let h = Harness::start().await;
    let config = RefreshConfig::default();
    let views = config.views as u64;
    let refresh = h.refresh_layer(config);
    let stack = h.routing_stack(&refresh);
    // A stale map: the first two shards' slots swapped, so 1,000 requests
    // for distinct slots of those shards all hit MOVED.
    let mut view = h.source.fetch_first(h.source.seeds()).await.unwrap();
    let (a, b) = (view.shards[0].slots.clone(), view.shards[1].slots.clone());
    view.shards[0].slots = b;
    view.shards[1].slots = a;
    h.topology
        .report(slotguard_core::controller::ViewLoaded::new(&view));
    let stale_slots: Vec<u16> = view.shards[..2]
        .iter()
        .flat_map(|s| s.slots.iter().flat_map(|&(lo, hi)| lo..=hi))
        .step_by(7)
        .take(1_000)
        .collect();
    assert_eq!(stale_slots.len(), 1_000);

    let fetches_before = shards_calls(&h);
    let stats = refresh.stats();
    let calls = stale_slots.iter().map(|&s| {
        let stack = stack.clone();
        async move { stack.oneshot(CacheRequest::get(key_in_slot(s))).await }
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "every request of the storm succeeded"
    );
    // let the refresher finish whatever the storm triggered
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rounds = stats.refreshes();
    let fetches = shards_calls(&h) - fetches_before;
    // Bound: the triggers collapse into the round in flight plus one more,
    // and a straggler stamped before the new map may cause one further
    // round: at most 3 rounds of `views` fetches each.
    assert!(rounds <= 3, "{rounds} refresh rounds for 1,000 MOVED");
    assert!(
        fetches <= 3 * views,
        "{fetches} CLUSTER SHARDS calls for 1,000 MOVED"
    );
    assert!(rounds >= 1, "MOVED triggered a refresh");
    println!("1,000 MOVED → {rounds} refresh rounds, {fetches} CLUSTER SHARDS calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_from_before_a_failover_is_corrected_by_the_first_moved() {
    let h = Harness::start().await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.routing_stack(&refresh);
    let old_primary = h.cluster.primary_of_slot(0).unwrap();
    let replica = h.cluster.replicas_of(old_primary).unwrap()[0];
    let generation = h.topology.load().generation();
    // the map was loaded before this failover
    h.cluster.failover(replica).unwrap();
    h.cluster.wait_until_ok(Duration::from_secs(20)).unwrap();
    assert_eq!(
        h.topology.load().generation(),
        generation,
        "map still stale"
    );

    for (i, key) in keys_in(0..50, 2, "stale").into_iter().enumerate() {
        let value = Bytes::from(format!("v{i}"));
        let resp = write_then_read(&stack, key.clone(), value.clone()).await;
        assert_eq!(resp.value, Some(value));
        assert_eq!(resp.served.node, Some(addr(&h.cluster, replica)));
        assert_eq!(resp.served.path, Path::Primary);
    }
    assert_eq!(
        h.topology.load().primary_for_slot(0).unwrap().addr,
        addr(&h.cluster, replica)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_replaced_primary_is_left_out_of_the_chosen_view() {
    let h = Harness::start().await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.routing_stack(&refresh);
    let paused = h.cluster.primary_of_slot(0).unwrap();
    let paused_addr = addr(&h.cluster, paused);
    h.cluster.pause(paused).unwrap();
    let promoted = h
        .cluster
        .wait_for_failover(paused, Duration::from_secs(30))
        .unwrap();

    // Gossip may still be spreading the promotion to some nodes: refresh
    // until the chosen view has it (each round ends at its fetch deadline
    // even with the paused node).
    let promoted_addr = addr(&h.cluster, promoted);
    eventually(
        "the promotion in the chosen view",
        Duration::from_secs(30),
        || async {
            tokio::time::timeout(Duration::from_secs(30), refresh.refresh_now())
                .await
                .expect("a refresh with a paused node ends at its fetch deadline")
                .unwrap();
            let map = h.topology.load();
            (map.primary_for_slot(0).unwrap().addr == promoted_addr).then_some(())
        },
    )
    .await;
    let map = h.topology.load();
    let shard = map.shard_for_slot(0).unwrap();
    assert_eq!(shard.primary.addr, addr(&h.cluster, promoted));
    assert!(map.shards().iter().all(|s| s.primary.addr != paused_addr));
    if let Some((_, node)) = map.node(&paused_addr) {
        assert!(
            !node.health.in_majority(),
            "the paused node is marked outside the majority"
        );
    }
    // requests for its slots go to the promoted node
    let key = key_in_slot(0);
    stack
        .clone()
        .oneshot(CacheRequest::set(key.clone(), "x", None))
        .await
        .unwrap();
    let resp = stack.clone().oneshot(CacheRequest::get(key)).await.unwrap();
    assert_eq!(resp.served.node, Some(addr(&h.cluster, promoted)));
    h.cluster.resume(paused).unwrap();
}
