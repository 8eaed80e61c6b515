//! Node lifecycle and shutdown against a real cluster: a node removed from
//! the cluster loses its connection after the grace period and is never
//! dialled again; `shutdown` (the refresher's, then the leaf's) returns
//! once every task and connection has ended; a saturated node answers
//! `Overloaded` past its bound.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use slotguard_core::{as_cache_error, CacheError, CacheRequest};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_node::{HealthProber, NodeConfig};
use slotguard_testkit::{ClusterSpec, LocalCluster};
use slotguard_tests::{
    addr, eventually, every_node_connected, flood_while_reading_another, put_to_sleep,
    stays_shut_down, write_each, Harness,
};
use tower::ServiceExt;

fn stat(cluster: &LocalCluster, index: usize, name: &str) -> u64 {
    cluster.info(index, "stats").unwrap()[name].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_closed_after_the_grace_period_and_never_redialled() {
    let cluster = LocalCluster::start(ClusterSpec {
        primaries: 3,
        replicas_per_primary: 0,
        // Else Redis 7 turns a primary that lost its last slot into a
        // replica of the node that took it (mid-move, racing the testkit's
        // last SETSLOT): it is to leave, not to stay as a replica.
        extra_config: vec![("cluster-allow-replica-migration".into(), "no".into())],
        ..ClusterSpec::default()
    })
    .unwrap();
    let config = NodeConfig::default().with_node_grace(Duration::from_millis(300));
    // The node to remove is no seed: the refresher asks seeds as well as
    // the map's nodes (a seed is configuration, e.g. a DNS name that never
    // shows up in the map), so a removed seed would be asked again.
    let gone = 2;
    let seeds = (0..cluster.len())
        .filter(|&i| i != gone)
        .map(|i| addr(&cluster, i))
        .collect();
    let h = Harness::with_seeds(cluster, config, seeds).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.routing_stack(&refresh);
    let gone_addr = addr(&h.cluster, gone);
    let keys: Vec<String> = h.cluster.key_for_slot_of(gone, 20).unwrap();
    write_each(&stack, &keys).await;
    assert!(h.leaf.is_connected(&gone_addr));
    assert!(h.cluster.client_connections(gone).unwrap() >= 1);

    // Move its slots away, then forget it everywhere.
    for range in h.cluster.slots_of(gone).unwrap() {
        h.cluster.move_slots(range, gone, 0).unwrap();
    }
    let id = h.cluster.node_id(gone).unwrap();
    for i in 0..h.cluster.len() {
        if i != gone {
            h.cluster
                .command_ok(i, &["CLUSTER", "FORGET", &id])
                .unwrap();
        }
    }
    // Traffic goes on (the moved keys answer from their new owner) and the
    // refresher installs a map without the node.
    eventually(
        "a map without the removed node",
        Duration::from_secs(10),
        || async {
            for k in &keys {
                let got = stack
                    .clone()
                    .oneshot(CacheRequest::get(k.clone()))
                    .await
                    .ok()?;
                assert_eq!(got.value.as_deref(), Some(k.as_bytes()));
            }
            (!h.topology.load().contains(&gone_addr)).then_some(())
        },
    )
    .await;
    // Within the grace period (plus a lifecycle tick) its client is closed,
    // on our side and on the node's.
    eventually(
        "the client of the removed node closed",
        Duration::from_secs(10),
        || async {
            let closed = !h.leaf.connected_nodes().contains(&gone_addr)
                && h.cluster.client_connections(gone).unwrap() == 0;
            closed.then_some(())
        },
    )
    .await;
    // Nothing dials it again: not the requests, not the refresher, not a
    // probe.
    let dials = stat(&h.cluster, gone, "total_connections_received");
    let prober = HealthProber::new(&h.leaf, h.topology.clone());
    for _ in 0..5 {
        prober.probe_once().await;
        for k in &keys {
            stack
                .clone()
                .oneshot(CacheRequest::get(k.clone()))
                .await
                .unwrap();
        }
        h.topology
            .report(slotguard_core::controller::StaleMap::Asked);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clients = || {
        h.cluster
            .command_str(gone, &["CLIENT", "LIST"])
            .ok()
            .and_then(|r| r.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    assert_eq!(
        stat(&h.cluster, gone, "total_connections_received"),
        dials,
        "dialled again; clients now: {}; pool: {:?}",
        clients(),
        h.leaf.connected_nodes()
    );
    assert_eq!(
        h.cluster.client_connections(gone).unwrap(),
        0,
        "{}",
        clients()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_once_every_task_and_connection_has_ended() {
    let h = Harness::start().await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let _prober = HealthProber::new(&h.leaf, h.topology.clone())
        .interval(Duration::from_millis(50))
        .spawn();
    // Connections to every node in both modes, and calls in flight.
    for i in 0..100u32 {
        let k = format!("sd:{i}");
        stack
            .clone()
            .oneshot(CacheRequest::set(k.clone(), "v", None))
            .await
            .unwrap();
    }
    let readers: Vec<_> = (0..64u32)
        .map(|i| {
            let s = stack.clone();
            tokio::spawn(async move { s.oneshot(CacheRequest::get(format!("sd:{i}"))).await })
        })
        .collect();
    every_node_connected("probes connected to the replicas", &h.topology, &h.leaf).await;
    assert!(h.leaf.running_tasks() > 0);

    // The refresher first (it would dial for its views), then the leaf.
    refresh.shutdown().await;
    h.leaf.shutdown().await;
    assert_eq!(h.leaf.running_tasks(), 0, "every task ended");
    let refreshes = refresh.stats().refreshes();
    h.topology
        .report(slotguard_core::controller::StaleMap::Asked);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        refresh.stats().refreshes(),
        refreshes,
        "the refresher stopped"
    );
    for r in readers {
        // Each finished, one way or another, and none hangs.
        let _ = r.await.unwrap();
    }
    // Nothing is dialled again: calls fail fast, typed, and the nodes see
    // every connection closed.
    stays_shut_down(&h.leaf, &h.cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_node_answers_overloaded_and_leaves_the_others_alone() {
    const BOUND: usize = 64;
    // Long enough that the sleeping node's commands wait rather than time
    // out: this test is about the bound, not about deadlines.
    let config = NodeConfig::default()
        .with_max_in_flight(BOUND)
        .with_command_timeout(Duration::from_secs(5))
        .with_stall_timeout(Duration::from_secs(10));
    let h = Harness::start_with(ClusterSpec::default(), config).await;
    let primaries = h.cluster.primaries().unwrap();
    let (slow, other) = (primaries[0], primaries[1]);
    let (slow_addr, other_addr) = (addr(&h.cluster, slow), addr(&h.cluster, other));
    let to = |a: &slotguard_core::NodeAddr, k: String| {
        CacheRequest::get(k).to_node(a.clone(), slotguard_core::Role::Primary)
    };
    let slow_keys = h.cluster.key_for_slot_of(slow, 501).unwrap();
    let other_keys = h.cluster.key_for_slot_of(other, 100).unwrap();
    // Both connections up.
    h.leaf
        .clone()
        .oneshot(to(&slow_addr, slow_keys[500].clone()))
        .await
        .unwrap();
    h.leaf
        .clone()
        .oneshot(to(&other_addr, other_keys[0].clone()))
        .await
        .unwrap();
    let gets_before = slotguard_tests::command_calls(&h.cluster, slow, "get");

    // Asleep once a probe read stops being answered.
    let probes = put_to_sleep(
        &h.leaf,
        &h.cluster,
        slow,
        &to(&slow_addr, slow_keys[500].clone()),
    )
    .await;

    // A flood of 500 reads at the sleeping node, and reads of another node
    // at the same time.
    let (peak, flood) = flood_while_reading_another(
        &h.leaf,
        (&slow_addr, &slow_keys[..500]),
        (&other_addr, &other_keys),
    )
    .await;
    let (mut ok, mut overloaded) = (0usize, 0usize);
    for outcome in flood {
        match outcome {
            Ok(_) => ok += 1,
            Err(e) => match as_cache_error(&e) {
                Some(CacheError::Overloaded { node }) => {
                    assert_eq!(node, &slow_addr);
                    overloaded += 1;
                }
                _ => panic!("unexpected error: {e}"),
            },
        }
    }
    assert!(peak <= BOUND, "in flight peaked at {peak}");
    assert!(ok <= BOUND, "{ok} flood reads were sent");
    assert!(overloaded >= 500 - BOUND, "{overloaded} overloaded");
    // The node itself saw the probes and at most the bound of the flood:
    // nothing queued past it. (Read once it is awake again.)
    let gets = slotguard_tests::command_calls(&h.cluster, slow, "get") - gets_before;
    assert!(
        gets <= probes + BOUND as u64,
        "{gets} GETs reached the node"
    );
}
