//! The default leaf (`NodeService`) against a real cluster: round trips, raw redirects,
//! replica reads, per-node isolation, input limits.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{
    key_slot, BoxError, CacheError, CacheRequest, CacheResponse, Path, Role, Route,
};
use slotguard_node::NodeConfig;
use slotguard_testkit::ClusterSpec;
use slotguard_tests::{addr, cache_err, eventually, Harness};
use tower::ServiceExt;

async fn call(h: &Harness, req: CacheRequest) -> Result<CacheResponse, BoxError> {
    h.leaf.clone().oneshot(req).await
}

/// `cmdstat_<cmd>` calls on one node.
/// `CLIENT KILL` every client connection on node `index` but the
/// testkit's own; at least one (ours) must go.
fn kill_our_connections(h: &Harness, index: usize) {
    let killed = h
        .cluster
        .command(
            index,
            &[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"],
        )
        .unwrap();
    assert!(
        killed.as_int().unwrap_or(0) >= 1,
        "killed our connection: {killed:?}"
    );
}

fn calls(h: &Harness, index: usize, cmd: &str) -> u64 {
    let stats = h.cluster.info(index, "commandstats").unwrap();
    stats
        .get(&format!("cmdstat_{cmd}"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_set_delete_round_trip_on_the_slot_primary() {
    let h = Harness::start().await;
    let binary: Bytes = (0..=255u8).collect::<Vec<_>>().into();
    let big: Bytes = vec![0xA5u8; 1024 * 1024].into();
    let cases: Vec<(&[u8], Bytes)> = vec![
        (b"plain", Bytes::from_static(b"hello")),
        (b"bin\x00\xff\r\nkey", binary.clone()),
        (b"empty", Bytes::new()),
        (b"{tag}big", big.clone()),
    ];
    for (key, value) in cases {
        let key = Bytes::copy_from_slice(key);
        let owner = h.cluster.primary_of_slot(key_slot(&key)).unwrap();

        let set = h.to_primary(CacheRequest::set(
            key.clone(),
            value.clone(),
            Some(Duration::from_secs(60)),
        ));
        let resp = call(&h, set).await.unwrap();
        assert_eq!(resp.served.path, Path::Primary);
        assert_eq!(resp.served.node, Some(addr(&h.cluster, owner)));
        // the value is on the owner, byte for byte
        let stored = h.cluster.command(owner, &[b"GET", &key]).unwrap();
        assert_eq!(stored.as_bytes(), Some(&value[..]));

        let got = call(&h, h.to_primary(CacheRequest::get(key.clone())))
            .await
            .unwrap();
        assert_eq!(got.value.as_deref(), Some(&value[..]));

        let del = call(&h, h.to_primary(CacheRequest::delete(key.clone())))
            .await
            .unwrap();
        assert!(del.deleted());
        let got = call(&h, h.to_primary(CacheRequest::get(key.clone())))
            .await
            .unwrap();
        assert_eq!(got.value, None);
        let del = call(&h, h.to_primary(CacheRequest::delete(key.clone())))
            .await
            .unwrap();
        assert!(!del.deleted());
    }
    // a TTL is applied
    let req = h.to_primary(CacheRequest::set(
        "ttl-key",
        "v",
        Some(Duration::from_secs(100)),
    ));
    call(&h, req).await.unwrap();
    let owner = h.cluster.primary_of_slot(key_slot(b"ttl-key")).unwrap();
    let pttl = h
        .cluster
        .command(owner, &[b"PTTL", b"ttl-key"])
        .unwrap()
        .as_int()
        .unwrap();
    assert!(pttl > 0 && pttl <= 100_000, "pttl {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_node_gives_moved_and_migration_gives_ask() {
    let h = Harness::start().await;
    let key = Bytes::from_static(b"redirect-me");
    let slot = key_slot(&key);
    let owner = h.cluster.primary_of_slot(slot).unwrap();
    let primaries = h.cluster.primaries().unwrap();
    let other = *primaries.iter().find(|&&p| p != owner).unwrap();

    let req = CacheRequest::get(key.clone()).to_node(addr(&h.cluster, other), Role::Primary);
    let err = call(&h, req).await.unwrap_err();
    match cache_err(&err) {
        CacheError::Moved { slot: s, addr: a } => {
            assert_eq!(s, slot);
            assert_eq!(a, addr(&h.cluster, owner));
        }
        e => panic!("expected MOVED, got {e:?}"),
    }

    // Half-done migration: the key already moved to the target.
    call(&h, h.to_primary(CacheRequest::set(key.clone(), "v1", None)))
        .await
        .unwrap();
    h.cluster.begin_migration(slot, owner, other).unwrap();
    assert_eq!(h.cluster.migrate_keys(slot, owner, other).unwrap(), 1);
    let err = call(&h, h.to_primary(CacheRequest::get(key.clone())))
        .await
        .unwrap_err();
    let target = match cache_err(&err) {
        CacheError::Ask { slot: s, addr: a } => {
            assert_eq!(s, slot);
            assert_eq!(a, addr(&h.cluster, other));
            a
        }
        e => panic!("expected ASK, got {e:?}"),
    };
    // Without ASKING the target refuses (MOVED back to the source) ...
    let plain = CacheRequest::get(key.clone()).to_node(target.clone(), Role::Primary);
    assert!(matches!(
        cache_err(&call(&h, plain).await.unwrap_err()),
        CacheError::Moved { .. }
    ));
    // ... with ASKING it answers.
    let asking = CacheRequest::get(key.clone()).with_route(Route::Node {
        addr: target,
        role: Role::Primary,
        asking: true,
    });
    let resp = call(&h, asking).await.unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"v1"[..]));
    h.cluster.finish_migration(slot, other).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_are_served_by_the_replica_also_after_reconnect() {
    let h = Harness::start().await;
    let key = Bytes::from_static(b"replica-read");
    let slot = key_slot(&key);
    let owner = h.cluster.primary_of_slot(slot).unwrap();
    let replica = h.cluster.replicas_of(owner).unwrap()[0];
    call(
        &h,
        h.to_primary(CacheRequest::set(key.clone(), "from-primary", None)),
    )
    .await
    .unwrap();
    // replication is asynchronous: wait for the replica to have it
    eventually("replication", Duration::from_secs(10), || async {
        let resp = call(&h, h.to_replica(CacheRequest::get(key.clone())))
            .await
            .ok()?;
        resp.value.is_some().then_some(())
    })
    .await;

    let before = calls(&h, replica, "get");
    let req = h.to_replica(CacheRequest::get(key.clone()));
    assert_eq!(req.node(), Some(&addr(&h.cluster, replica)));
    let resp = call(&h, req.clone()).await.unwrap();
    assert_eq!(resp.served.path, Path::Replica);
    assert_eq!(resp.value.as_deref(), Some(&b"from-primary"[..]));
    assert_eq!(
        calls(&h, replica, "get"),
        before + 1,
        "the replica served the GET"
    );

    // Kill our connection on the replica; the client reconnects, and the
    // replica still answers (READONLY is re-sent) instead of MOVED.
    kill_our_connections(&h, replica);
    let resp = eventually(
        "replica read after reconnect",
        Duration::from_secs(10),
        || {
            let req = req.clone();
            let h = &h;
            async move { call(h, req).await.ok() }
        },
    )
    .await;
    assert_eq!(resp.served.path, Path::Replica);
    assert_eq!(resp.value.as_deref(), Some(&b"from-primary"[..]));
    assert!(calls(&h, replica, "get") >= before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_does_not_delay_other_shards() {
    let config = NodeConfig::default().with_command_timeout(Duration::from_secs(3));
    let h = Harness::start_with(ClusterSpec::default(), config).await;
    let primaries = h.cluster.primaries().unwrap();
    let paused = primaries[0];
    let paused_addr = addr(&h.cluster, paused);
    // keys on every shard
    let keys: Vec<Bytes> = (0..300).map(|i| Bytes::from(format!("iso-{i}"))).collect();
    for k in &keys {
        call(&h, h.to_primary(CacheRequest::set(k.clone(), "v", None)))
            .await
            .unwrap();
    }
    let (on_paused, elsewhere): (Vec<_>, Vec<_>) = keys
        .iter()
        .cloned()
        .partition(|k| h.to_primary(CacheRequest::get(k.clone())).node() == Some(&paused_addr));
    assert!(!on_paused.is_empty() && !elsewhere.is_empty());

    h.cluster.pause(paused).unwrap();
    let stalled = tokio::spawn({
        let leaf = h.leaf.clone();
        let req = h.to_primary(CacheRequest::get(on_paused[0].clone()));
        async move {
            let started = tokio::time::Instant::now();
            (leaf.oneshot(req).await, started.elapsed())
        }
    });
    // Every request to the other shards completes while the one to the
    // paused node is still waiting: none of them queued behind it.
    for k in &elsewhere {
        let resp = call(&h, h.to_primary(CacheRequest::get(k.clone())))
            .await
            .unwrap();
        assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
    }
    assert!(
        !stalled.is_finished(),
        "other shards finished before the paused node's deadline"
    );

    let (result, _elapsed) = tokio::time::timeout(Duration::from_secs(30), stalled)
        .await
        .expect("the paused call ends at its deadline, it never hangs")
        .unwrap();
    match cache_err(&result.unwrap_err()) {
        CacheError::Timeout { node } => assert_eq!(node, paused_addr),
        e => panic!("expected a typed timeout, got {e:?}"),
    }
    // a request deadline sooner than the leaf's cap is honoured too
    let req = h
        .to_primary(CacheRequest::get(on_paused[0].clone()))
        .with_timeout(Duration::from_millis(50));
    let err = tokio::time::timeout(Duration::from_secs(30), call(&h, req))
        .await
        .expect("never hangs")
        .unwrap_err();
    assert!(matches!(cache_err(&err), CacheError::Timeout { .. }));
    h.cluster.resume(paused).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_input_is_rejected_without_network() {
    let config = NodeConfig::default()
        .with_max_key_len(8)
        .with_max_value_len(16);
    let h = Harness::start_with(ClusterSpec::default(), config).await;
    let nodes_before = h.leaf.connected_nodes().len();
    // a node address nobody listens on: touching the network would fail differently
    let nowhere: slotguard_core::NodeAddr = "127.0.0.1:1".parse().unwrap();
    for req in [
        CacheRequest::get("a-key-over-8-bytes"),
        CacheRequest::set("k", vec![0u8; 17], None),
        CacheRequest::set("k", "v", Some(Duration::ZERO)),
    ] {
        let err = call(&h, req.to_node(nowhere.clone(), Role::Primary))
            .await
            .unwrap_err();
        assert!(
            matches!(cache_err(&err), CacheError::InvalidInput(_)),
            "{err}"
        );
    }
    // an unrouted request is a typed error too
    let err = call(&h, CacheRequest::get("k")).await.unwrap_err();
    assert!(matches!(cache_err(&err), CacheError::InvalidInput(_)));
    assert_eq!(
        h.leaf.connected_nodes().len(),
        nodes_before,
        "no client was created"
    );
    // at the limit is fine
    let ok = h.to_primary(CacheRequest::set("k2345678", vec![1u8; 16], None));
    call(&h, ok).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_at_first_use_is_reached_once_it_is_back() {
    let mut h = Harness::start().await;
    let primary = h.cluster.primaries().unwrap()[0];
    let replica = h.cluster.replicas_of(primary).unwrap()[0];
    let node = addr(&h.cluster, replica);
    let key = h.cluster.key_for_slot_of(primary, 1).unwrap().remove(0);
    h.cluster.kill(replica).unwrap();
    // a fresh leaf: no client for the node exists yet
    let leaf = slotguard_node::NodeService::new(NodeConfig::default());
    let req = CacheRequest::get(key).to_node(node.clone(), Role::Replica);
    let err = tokio::time::timeout(Duration::from_secs(10), leaf.clone().oneshot(req.clone()))
        .await
        .expect("never hangs")
        .unwrap_err();
    assert!(
        matches!(
            cache_err(&err),
            CacheError::Connection { .. } | CacheError::Timeout { .. }
        ),
        "{err}"
    );
    h.cluster.restart(replica).unwrap();
    eventually(
        "the restarted node answers",
        Duration::from_secs(20),
        || {
            let (leaf, req) = (leaf.clone(), req.clone());
            async move { leaf.oneshot(req).await.ok() }
        },
    )
    .await;
}

/// A node that closes an idle connection (its `timeout` setting, `CLIENT
/// KILL`, a restart) costs the next caller nothing: the connection is
/// dialled again and the call waits for it instead of failing fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_closed_by_the_node_is_redialled_transparently() {
    let h = Harness::start().await;
    let owner = h.cluster.primaries().unwrap()[0];
    let node = addr(&h.cluster, owner);
    let key = h.cluster.key_for_slot_of(owner, 1).unwrap().remove(0);
    let req = CacheRequest::get(key).to_node(node.clone(), Role::Primary);
    call(&h, req.clone()).await.unwrap();
    assert!(h.leaf.is_connected(&node));
    kill_our_connections(&h, owner);
    eventually(
        "the leaf saw the close",
        Duration::from_secs(10),
        || async { (!h.leaf.is_connected(&node)).then_some(()) },
    )
    .await;
    // The first call after the close succeeds.
    call(&h, req).await.unwrap();
    assert!(h.leaf.is_connected(&node));
}
