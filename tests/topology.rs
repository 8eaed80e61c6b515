//! Key slots and the topology source against a real cluster.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use proptest::prelude::*;
use slotguard_core::{as_cache_error, key_slot, CacheError, TopologySource, SLOT_COUNT};
use slotguard_testkit::{ClusterSpec, LocalCluster};
use slotguard_tests::{addr, Harness};

fn server_slot(cluster: &LocalCluster, key: &[u8]) -> u16 {
    let reply = cluster.command(0, &[b"CLUSTER", b"KEYSLOT", key]).unwrap();
    reply.as_int().unwrap() as u16
}

#[test]
fn key_slot_matches_cluster_keyslot() {
    let cluster = LocalCluster::start(ClusterSpec {
        primaries: 1,
        replicas_per_primary: 0,
        ..ClusterSpec::default()
    })
    .unwrap();
    for key in [
        &b""[..],
        b"{}",
        b"{a}b",
        b"a{}{b}",
        b"{}{b}",
        b"{{a}}",
        b"a{b",
        b"}a{b}",
        b"{\x00\xff}",
        b"\xff\xfe{}",
        b"user:{42}:name",
    ] {
        assert_eq!(key_slot(key), server_slot(&cluster, key), "key {key:?}");
    }
    let byte = prop_oneof![Just(b'{'), Just(b'}'), b'a'..=b'c', any::<u8>()];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
    runner
        .run(&proptest::collection::vec(byte, 0..16), |key| {
            prop_assert_eq!(key_slot(&key), server_slot(&cluster, &key));
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_lists_every_slot_with_primary_and_replica() {
    let h = Harness::start().await;
    let map = h.topology.load();
    assert_eq!(map.covered_slots(), SLOT_COUNT as usize);
    assert_eq!(map.shards().len(), 3);
    for shard in map.shards() {
        assert_eq!(shard.replicas.len(), 1, "{shard:?}");
        let p = h.cluster.index_of(&shard.primary.addr.to_string()).unwrap();
        let r = h
            .cluster
            .index_of(&shard.replicas[0].addr.to_string())
            .unwrap();
        assert_eq!(h.cluster.replicas_of(p).unwrap(), vec![r]);
        assert!(shard.primary.id.is_some());
    }
    let mut primaries = BTreeSet::new();
    for slot in 0..SLOT_COUNT {
        let p = map.primary_for_slot(slot).unwrap();
        primaries.insert(p.addr.clone());
        if slot % 97 == 0 {
            assert_eq!(
                Some(h.cluster.primary_of_slot(slot).unwrap()),
                h.cluster.index_of(&p.addr.to_string())
            );
        }
    }
    assert_eq!(primaries.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_seed_times_out_typed_and_the_next_seed_answers() {
    let h = Harness::start().await;
    h.cluster.pause(0).unwrap();
    let paused = addr(&h.cluster, 0);
    let err = tokio::time::timeout(Duration::from_secs(30), h.source.fetch_view(&paused))
        .await
        .expect("a fetch from a paused node ends at its deadline")
        .unwrap_err();
    // Either the fetch's deadline or the connection's stall timeout (twice
    // the command timeout, shorter than the admin deadline) ends it.
    match as_cache_error(&err) {
        Some(CacheError::Timeout { node }) => assert_eq!(node, &paused),
        Some(CacheError::Connection { node, detail }) if detail.contains("replaced") => {
            assert_eq!(node, &paused)
        }
        other => panic!("expected a typed timeout, got {other:?} ({err})"),
    }
    let view = tokio::time::timeout(
        Duration::from_secs(30),
        h.source
            .fetch_first(vec![paused.clone(), addr(&h.cluster, 1)]),
    )
    .await
    .unwrap()
    .expect("the second seed answers");
    assert_eq!(view.source, addr(&h.cluster, 1));
    assert_eq!(
        h.topology
            .report(slotguard_core::controller::ViewLoaded::new(&view))
            .covered_slots(),
        SLOT_COUNT as usize
    );
    h.cluster.resume(0).unwrap();
}
