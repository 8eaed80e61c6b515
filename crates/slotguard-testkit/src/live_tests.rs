//! Tests against real redis-server clusters.
//!
//! Few and coarse on purpose: each one starts a 6-node cluster (~1-2 s), and
//! they only assert on outcomes reached through poll-with-deadline helpers,
//! never on timings.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{key_in_slot, ClusterSpec, LocalCluster, NodeState, Reply, TestkitError};

const DEADLINE: Duration = Duration::from_secs(30);

fn start() -> LocalCluster {
    let t = Instant::now();
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    eprintln!("cluster started in {:?}", t.elapsed());
    cluster
}

fn ping(cluster: &LocalCluster, index: usize) -> Result<Reply, TestkitError> {
    cluster.command(index, &[b"PING"])
}

#[test]
fn cluster_can_be_shared_with_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LocalCluster>();
    assert_send_sync::<TestkitError>();
}

#[test]
fn start_pause_resume_and_drop_reaps() {
    let cluster = start();
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6);
    assert_eq!(cluster.seeds().len(), 6);
    for n in &nodes {
        assert_eq!(n.state, NodeState::Running);
        assert!(n.pid.is_some());
        assert_ne!(n.port, n.bus_port);
        assert_eq!(cluster.index_of(&n.addr), Some(n.index));
        let id = cluster.node_id(n.index).unwrap();
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    assert!(cluster
        .dir()
        .unwrap()
        .to_string_lossy()
        .contains("slotguard-testkit"));
    assert_eq!(cluster.primaries().unwrap(), vec![0, 1, 2]);
    assert_eq!(cluster.replicas_of(0).unwrap(), vec![3]);
    assert_eq!(cluster.replicas_of(2).unwrap(), vec![5]);
    assert_eq!(cluster.primary_of_slot(0).unwrap(), 0);
    assert_eq!(cluster.primary_of_slot(16383).unwrap(), 2);
    assert_eq!(cluster.cluster_info(1).unwrap()["cluster_state"], "ok");

    let key = cluster.key_for_slot_of(1, 1).unwrap().remove(0);
    assert!(cluster.command_str(1, &["SET", &key, "v"]).unwrap().is_ok());
    let moved = cluster.command_str(0, &["GET", &key]).unwrap();
    assert!(
        moved.error_message().unwrap().starts_with("MOVED"),
        "{moved:?}"
    );

    // A paused node answers nothing: the command must fail, not hang.
    cluster.pause(4).unwrap();
    assert_eq!(cluster.node_state(4).unwrap(), NodeState::Paused);
    assert!(ping(&cluster, 4).is_err());
    // The rest of the cluster is still healthy, and helpers skip the paused node.
    cluster.wait_until_ok(DEADLINE).unwrap();
    cluster.resume(4).unwrap();
    assert_eq!(ping(&cluster, 4).unwrap(), Reply::Simple("PONG".into()));
    cluster.wait_until_ok(DEADLINE).unwrap();

    // Drop must reap everything, including a stopped process.
    cluster.pause(5).unwrap();
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid).collect();
    let dir = cluster.dir().unwrap().to_path_buf();
    assert_eq!(pids.len(), 6);
    drop(cluster);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} survived drop"
        );
    }
    assert!(!dir.exists(), "temp dir {} survived drop", dir.display());
}

#[test]
fn kill_restart_and_failover() {
    let mut cluster = start();

    let t = Instant::now();
    cluster.kill(0).unwrap();
    assert_eq!(cluster.node_state(0).unwrap(), NodeState::Killed);
    assert_eq!(cluster.nodes()[0].pid, None);
    assert!(ping(&cluster, 0).is_err());
    let promoted = cluster.wait_for_failover(0, DEADLINE).unwrap();
    eprintln!("automatic failover after SIGKILL took {:?}", t.elapsed());
    assert_eq!(promoted, 3);
    cluster.wait_until_ok(DEADLINE).unwrap();
    assert_eq!(cluster.primary_of_slot(0).unwrap(), 3);

    let t = Instant::now();
    cluster.restart(0).unwrap();
    cluster.wait_until_ok(DEADLINE).unwrap();
    eprintln!("restart + rejoin took {:?}", t.elapsed());
    assert_eq!(cluster.role(0).unwrap(), "slave");
    assert_eq!(cluster.replicas_of(3).unwrap(), vec![0]);

    let t = Instant::now();
    cluster.failover(0).unwrap();
    eprintln!("manual failover took {:?}", t.elapsed());
    assert_eq!(cluster.role(0).unwrap(), "master");
    cluster.wait_until_ok(DEADLINE).unwrap();
    assert_eq!(cluster.primary_of_slot(0).unwrap(), 0);
    assert_eq!(cluster.replicas_of(0).unwrap(), vec![3]);
}

#[test]
fn slot_migration_and_latency_faults() {
    let cluster = start();
    // Slots 0..=5 start on node 0; put two keys in each.
    let mut keys = Vec::new();
    for slot in 0..=5u16 {
        let tag = key_in_slot(slot);
        for suffix in ["a", "b"] {
            let key = format!("{tag}{suffix}");
            assert!(cluster
                .command_str(0, &["SET", &key, suffix])
                .unwrap()
                .is_ok());
            keys.push((key, suffix));
        }
    }

    // Step by step for one slot, so the intermediate state is observable.
    cluster.begin_migration(5, 0, 1).unwrap();
    assert_eq!(cluster.migrate_keys(5, 0, 1).unwrap(), 2);
    let ask = cluster.command_str(0, &["GET", &keys[10].0]).unwrap();
    assert!(ask.error_message().unwrap().starts_with("ASK"), "{ask:?}");
    cluster.finish_migration(5, 1).unwrap();

    cluster.move_slots(0..=4, 0, 1).unwrap();
    cluster.wait_until_ok(DEADLINE).unwrap();
    for slot in 0..=5u16 {
        assert_eq!(cluster.primary_of_slot(slot).unwrap(), 1);
    }
    assert_eq!(cluster.primary_of_slot(6).unwrap(), 0);
    for (key, value) in &keys {
        let got = cluster.command_str(1, &["GET", key]).unwrap();
        assert_eq!(got.as_str(), Some(*value), "{key}");
    }

    // Latency faults return at once and the node recovers on its own.
    cluster.debug_sleep(2, 0.3).unwrap();
    cluster.client_pause(1, 100).unwrap();
    cluster.wait_until_ok(DEADLINE).unwrap();
    assert_eq!(ping(&cluster, 2).unwrap(), Reply::Simple("PONG".into()));
}

#[test]
fn server_dying_at_startup_is_reported() {
    let spec = ClusterSpec {
        primaries: 1,
        replicas_per_primary: 0,
        extra_config: vec![("no-such-directive".into(), "1".into())],
        ..ClusterSpec::default()
    };
    match LocalCluster::start(spec) {
        Err(TestkitError::NodeExited { index: 0, .. }) => {}
        other => panic!("expected NodeExited, got {other:?}"),
    }
    let bad = ClusterSpec {
        primaries: 0,
        ..ClusterSpec::default()
    };
    assert!(matches!(
        LocalCluster::start(bad),
        Err(TestkitError::InvalidSpec(_))
    ));
}
