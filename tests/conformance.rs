//! One conformance suite over both leaves: each case is written once,
//! generic over the leaf ([`Flavor`]), and run for the default leaf
//! (`<case>::node`) and the fred-backed leaf (`<case>::fred`). Where the
//! fred leaf differs, the case asserts what it actually does (see
//! `docs/leaf-connections.md`, the table "guarantee × leaf").
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use slotguard_core::invalidation::{Invalidation, InvalidationBus, InvalidationReceiver, Received};
use slotguard_core::{
    key_slot, BoxError, CacheError, CacheRequest, Failure, Leaf, LeafControl, NodeAddr, Path, Role,
    SecondaryRequest,
};
use slotguard_layers::fallback::FallbackLayer;
use slotguard_node::{Credentials, HealthProber, TlsConfig};
use slotguard_store::SqliteStore;
use slotguard_testkit::{Action, ClusterSpec, LocalCluster, ScriptedNode};
use slotguard_tests::leaves::{Common, Flavor, LeafHarness};
use slotguard_tests::scripted::{get, node_with_keys, recovers, value_of};
use slotguard_tests::{
    addr, cache_err, command_calls, eventually, every_node_connected, flood_while_reading_another,
    put_to_sleep, rss, stays_shut_down, write_each, write_then_read,
};
use tower::{Layer, ServiceExt};

/// Runs `case` once per leaf: `case::node` and `case::fred`.
macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn node() {
                super::$case::<slotguard_tests::leaves::Node>().await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fred() {
                super::$case::<slotguard_tests::leaves::Fred>().await
            }
        }
    };
}

async fn harness<F: Flavor>(common: Common) -> LeafHarness<F::L> {
    harness_on::<F>(LocalCluster::start(ClusterSpec::default()).unwrap(), common).await
}

async fn harness_on<F: Flavor>(cluster: LocalCluster, common: Common) -> LeafHarness<F::L> {
    LeafHarness::on(cluster, F::leaf(&common)).await
}

// ---------------------------------------------------------------- routing

/// Reads, writes and deletes through slot_refresh → redirect, each served
/// by the key's primary; a replica read is served by the replica in
/// `READONLY` mode (else it would answer `MOVED`).
async fn routing<F: Flavor>() {
    let h = harness::<F>(Common::default()).await;
    let stack = h.routing_stack(&h.refresh_layer());
    for i in 0..100u32 {
        let key = format!("{}:route:{i}", F::NAME);
        let got = write_then_read(&stack, key.clone(), key.clone()).await;
        assert_eq!(got.value.as_deref(), Some(key.as_bytes()));
        assert_eq!(got.served.path, Path::Primary);
        let owner = h.cluster.primary_of_slot(key_slot(key.as_bytes())).unwrap();
        assert_eq!(got.served.node, Some(addr(&h.cluster, owner)));
    }
    let key = format!("{}:route:7", F::NAME);
    let got = eventually("a replica serves the key", Duration::from_secs(5), || {
        let req = h.to_replica(CacheRequest::get(key.clone()));
        let leaf = h.leaf.clone();
        async move { leaf.oneshot(req).await.ok().filter(|r| r.value.is_some()) }
    })
    .await;
    assert_eq!(got.served.path, Path::Replica);
    assert_eq!(got.value.as_deref(), Some(key.as_bytes()));
    let del = stack
        .clone()
        .oneshot(CacheRequest::delete(key.clone()))
        .await
        .unwrap();
    assert_eq!(del.deleted, 1);
    // A request the leaf cannot place is refused, never guessed.
    let err = h
        .leaf
        .clone()
        .oneshot(CacheRequest::get("unrouted"))
        .await
        .unwrap_err();
    assert!(matches!(cache_err(&err), CacheError::InvalidInput(_)));
}
both!(routing);

// -------------------------------------------------------------- redirects

/// A request stamped for the wrong primary comes back as `MOVED` naming the
/// owner (raw: the leaf does not follow it); during a half-done migration
/// the stack follows `ASK` with `ASKING` on the target and leaves the map.
async fn redirects<F: Flavor>() {
    let h = harness::<F>(Common::default()).await;
    let key = Bytes::from(format!("{}:half-migrated", F::NAME));
    let slot = key_slot(&key);
    let owner = h.cluster.primary_of_slot(slot).unwrap();
    let primaries = h.cluster.primaries().unwrap();
    let target = *primaries.iter().find(|&&p| p != owner).unwrap();
    let wrong = CacheRequest::get(key.clone()).to_node(addr(&h.cluster, target), Role::Primary);
    let err = h.leaf.clone().oneshot(wrong).await.unwrap_err();
    match cache_err(&err) {
        CacheError::Moved { slot: s, addr: a } => {
            assert_eq!(s, slot);
            assert_eq!(a, addr(&h.cluster, owner));
        }
        other => panic!("{}: expected MOVED, got {other:?}", F::NAME),
    }

    let stack = h.routing_stack(&h.refresh_layer());
    stack
        .clone()
        .oneshot(CacheRequest::set(key.clone(), "v", None))
        .await
        .unwrap();
    h.cluster.begin_migration(slot, owner, target).unwrap();
    assert_eq!(h.cluster.migrate_keys(slot, owner, target).unwrap(), 1);
    let generation = h.topology.load().generation();
    let asking = command_calls(&h.cluster, target, "asking");
    let resp = stack
        .clone()
        .oneshot(CacheRequest::get(key.clone()))
        .await
        .unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
    assert_eq!(resp.served.node, Some(addr(&h.cluster, target)));
    assert_eq!(command_calls(&h.cluster, target, "asking"), asking + 1);
    assert_eq!(
        h.topology.load().generation(),
        generation,
        "ASK leaves the map"
    );
    h.cluster.finish_migration(slot, target).unwrap();
}
both!(redirects);

// --------------------------------------------------------------- failover

/// With a primary paused (SIGSTOP), every read of its keys is still
/// answered with its own value, from a replica or the promoted one.
async fn failover<F: Flavor>() {
    // Replica failover is what this case checks: with Redis's default
    // `cluster-require-full-coverage yes` every shard answers CLUSTERDOWN
    // from the moment the primary is marked failed until the promotion, and
    // only a secondary path (the `fallback` case) can answer then; this
    // stack has none.
    let spec = ClusterSpec::default().with_config("cluster-require-full-coverage", "no");
    let h = harness_on::<F>(LocalCluster::start(spec).unwrap(), Common::default()).await;
    let stack = h.full_stack(&h.refresh_layer());
    let keys: Vec<Bytes> = h
        .cluster
        .key_for_slot_of(0, 20)
        .unwrap()
        .into_iter()
        .map(Bytes::from)
        .collect();
    write_each(&stack, &keys).await;
    // Replicated before the fault: the replica has every key.
    for k in &keys {
        eventually("replicated", Duration::from_secs(5), || {
            let req = h.to_replica(CacheRequest::get(k.clone()));
            let leaf = h.leaf.clone();
            async move { leaf.oneshot(req).await.ok().filter(|r| r.value.is_some()) }
        })
        .await;
    }
    let primary = h.cluster.primaries().unwrap()[0];
    h.cluster.pause(primary).unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    while tokio::time::Instant::now() < end {
        let batch = keys.iter().map(|k| {
            let s = stack.clone();
            let req = CacheRequest::get(k.clone()).with_timeout(Duration::from_secs(1));
            async move { (k.clone(), s.oneshot(req).await) }
        });
        for (k, r) in join_all(batch).await {
            let r = r.unwrap_or_else(|e| panic!("{}: a read failed: {e}", F::NAME));
            assert_eq!(r.value.as_ref(), Some(&k));
            reads += 1;
        }
    }
    h.cluster.resume(primary).unwrap();
    assert!(reads >= keys.len());
}
both!(failover);

// --------------------------------------------------------------- fallback

/// With a whole shard paused, reads are answered by the secondary store;
/// a miss is loaded from the store and written back.
async fn fallback<F: Flavor>() {
    let h = harness::<F>(Common::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("items.db")).unwrap();
    let svc = {
        let store = store.clone();
        tower::service_fn(move |req: SecondaryRequest| {
            let store = store.clone();
            async move { store.get(req.key().clone()).await.map_err(BoxError::from) }
        })
    };
    let fallback = FallbackLayer::new(svc).with_topology(h.topology.clone());
    let stack = fallback.layer(h.full_stack(&h.refresh_layer()));
    fallback.start();
    let keys: Vec<Bytes> = h
        .cluster
        .key_for_slot_of(0, 10)
        .unwrap()
        .into_iter()
        .map(Bytes::from)
        .collect();
    for k in &keys {
        store.put(k.clone(), k.clone()).await.unwrap();
    }
    // A miss: loaded from the store, written back to the cluster.
    let r = stack
        .clone()
        .oneshot(CacheRequest::get(keys[0].clone()))
        .await
        .unwrap();
    assert_eq!(r.value.as_ref(), Some(&keys[0]));
    assert_eq!(r.served.path, Path::Secondary);
    eventually("written back", Duration::from_secs(5), || {
        let req = h.to_primary(CacheRequest::get(keys[0].clone()));
        let leaf = h.leaf.clone();
        async move { leaf.oneshot(req).await.ok().filter(|r| r.value.is_some()) }
    })
    .await;
    // The whole shard paused: the store answers.
    let primary = h.cluster.primaries().unwrap()[0];
    let shard: Vec<usize> = std::iter::once(primary)
        .chain(h.cluster.replicas_of(primary).unwrap())
        .collect();
    for &i in &shard {
        h.cluster.pause(i).unwrap();
    }
    for k in &keys {
        let req = CacheRequest::get(k.clone()).with_timeout(Duration::from_secs(2));
        let r = stack.clone().oneshot(req).await;
        let r = r.unwrap_or_else(|e| panic!("{}: a read failed: {e}", F::NAME));
        assert_eq!(r.value.as_ref(), Some(k));
        assert!(matches!(r.served.path, Path::Secondary | Path::NearCache));
    }
    for &i in &shard {
        h.cluster.resume(i).unwrap();
    }
}
both!(fallback);

// ----------------------------------------------------------- write safety

/// A write to a paused primary is never reported as done: it fails typed
/// (indeterminate, fenced or unavailable), and so do the writes after it
/// until the shard is confirmed again.
async fn write_safety<F: Flavor>() {
    let h = harness::<F>(Common::default()).await;
    let stack = h.full_stack(&h.refresh_layer());
    let keys: Vec<Bytes> = h
        .cluster
        .key_for_slot_of(0, 5)
        .unwrap()
        .into_iter()
        .map(Bytes::from)
        .collect();
    let primary = h.cluster.primaries().unwrap()[0];
    h.cluster.pause(primary).unwrap();
    for k in &keys {
        let req = CacheRequest::set(k.clone(), "v", None).with_timeout(Duration::from_millis(500));
        let err = stack.clone().oneshot(req).await.unwrap_err();
        let e = cache_err(&err);
        assert!(
            matches!(
                e.failure(),
                Failure::Indeterminate
                    | Failure::ShardUnavailable
                    | Failure::CircuitOpen
                    | Failure::Timeout
                    | Failure::Connection
            ),
            "{}: unexpected {e:?}",
            F::NAME
        );
    }
    h.cluster.resume(primary).unwrap();
    // The shard takes writes again once confirmed.
    eventually("writes recover", Duration::from_secs(20), || {
        let s = stack.clone();
        let k = keys[0].clone();
        async move { s.oneshot(CacheRequest::set(k, "after", None)).await.ok() }
    })
    .await;
}
both!(write_safety);

// ----------------------------------------------------------------- secure

const PASSWORD: &str = "conformance-secret";

/// A limited ACL user: reads, writes, deletes, replica reads and the health
/// probe work; a wrong password is a typed `Auth` error; nothing prints the
/// password.
async fn secure<F: Flavor>() {
    let user = format!(
        "cache >{PASSWORD} {}",
        slotguard_testkit::CACHE_USER_RULES.join(" ")
    );
    let cluster = LocalCluster::start(ClusterSpec {
        acl_users: vec![user],
        ..ClusterSpec::default()
    })
    .unwrap();
    let common = Common {
        credentials: Some(Credentials::user("cache", PASSWORD)),
        ..Common::default()
    };
    let h = harness_on::<F>(cluster, common).await;
    let stack = h.full_stack(&h.refresh_layer());
    for i in 0..20u32 {
        let key = format!("acl:{i}");
        let got = write_then_read(&stack, key.clone(), "v").await;
        assert_eq!(got.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            stack
                .clone()
                .oneshot(CacheRequest::delete(key))
                .await
                .unwrap()
                .deleted,
            1
        );
    }
    let read = h.to_replica(CacheRequest::get("acl:replica"));
    h.leaf.clone().oneshot(read).await.unwrap();
    let prober = HealthProber::new(&h.leaf, h.topology.clone());
    prober.probe_once().await;
    let map = h.topology.load();
    let replica = map.nodes().find(|n| n.role == Role::Replica).unwrap();
    assert_eq!(h.topology.health(&replica.addr).consecutive_failures(), 0);
    let everything = format!("{:?} {:?} {:?}", h.leaf, h.source, stack);
    assert!(!everything.contains(PASSWORD), "{everything}");

    let wrong = F::leaf(&Common {
        credentials: Some(Credentials::user("cache", "not-the-password")),
        ..Common::default()
    });
    let req = h.to_primary(CacheRequest::get("acl:1"));
    let err = wrong.oneshot(req).await.unwrap_err();
    assert!(
        matches!(cache_err(&err), CacheError::Auth { .. }),
        "{}: {err:?}",
        F::NAME
    );
}
both!(secure);

/// A TLS cluster (rustls, ring): the map names the TLS ports, reads,
/// writes, replica reads and the health probe all go over TLS.
async fn tls<F: Flavor>() {
    let cluster = LocalCluster::start(ClusterSpec {
        tls: true,
        ..ClusterSpec::default()
    })
    .unwrap();
    let tls = TlsConfig::with_ca_pem(cluster.tls().unwrap().ca_pem.as_bytes()).unwrap();
    let h = harness_on::<F>(
        cluster,
        Common {
            tls: Some(tls),
            ..Common::default()
        },
    )
    .await;
    let map = h.topology.load();
    for node in map.nodes() {
        let i = h.cluster.index_of(&node.addr.to_string()).unwrap();
        assert_eq!(node.addr.port(), h.cluster.nodes()[i].client_port);
    }
    let stack = h.full_stack(&h.refresh_layer());
    for i in 0..20u32 {
        let key = format!("tls:{i}");
        let got = write_then_read(&stack, key.clone(), key.clone()).await;
        assert_eq!(got.value.as_deref(), Some(key.as_bytes()));
    }
    let key = "tls:3".to_owned();
    let got = eventually(
        "a replica serves the key over TLS",
        Duration::from_secs(5),
        || {
            let req = h.to_replica(CacheRequest::get(key.clone()));
            let leaf = h.leaf.clone();
            async move { leaf.oneshot(req).await.ok().filter(|r| r.value.is_some()) }
        },
    )
    .await;
    assert_eq!(got.served.path, Path::Replica);
    HealthProber::new(&h.leaf, h.topology.clone())
        .probe_once()
        .await;
    let replica = map.nodes().find(|n| n.role == Role::Replica).unwrap();
    assert_eq!(h.topology.health(&replica.addr).consecutive_failures(), 0);
}
both!(tls);

// -------------------------------------------------------------- lifecycle

/// `shutdown` returns once every task of the leaf has ended (the prober's
/// too); later calls fail fast, typed; every node sees our connections
/// closed.
async fn lifecycle<F: Flavor>() {
    let h = harness::<F>(Common::default()).await;
    let stack = h.full_stack(&h.refresh_layer());
    let _prober = HealthProber::new(&h.leaf, h.topology.clone())
        .interval(Duration::from_millis(50))
        .spawn();
    for i in 0..50u32 {
        let k = format!("sd:{i}");
        stack
            .clone()
            .oneshot(CacheRequest::set(k.clone(), "v", None))
            .await
            .unwrap();
    }
    every_node_connected("every node connected", &h.topology, &h.leaf).await;
    assert!(h.leaf.running_tasks() > 0);
    LeafControl::shutdown(&h.leaf).await;
    assert_eq!(h.leaf.running_tasks(), 0, "{}: every task ended", F::NAME);
    stays_shut_down(&h.leaf, &h.cluster).await;
}
both!(lifecycle);

// -------------------------------------------------------------- reconnect

/// `CLIENT KILL` every connection of ours on node `index`.
fn kill_our_connections(cluster: &LocalCluster, index: usize) {
    let killed = cluster
        .command(
            index,
            &[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"],
        )
        .unwrap();
    assert!(killed.as_int().unwrap_or(0) >= 1, "{killed:?}");
}

/// Whether `rx` delivers an invalidation of `key` within a few seconds.
async fn invalidated(rx: &mut InvalidationReceiver, key: &[u8]) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(Received::Event(Invalidation::Keys { keys, .. })))
                if keys.iter().any(|k| k == key) =>
            {
                return true
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

/// After its connections are killed, a node is read again in replica mode
/// (`READONLY` re-sent: a replica read is served by the replica, not
/// answered `MOVED`) and client tracking is on again (another client's
/// write reaches the bus).
async fn reconnect<F: Flavor>() {
    let bus = InvalidationBus::new(1024);
    let mut rx = bus.subscribe();
    let h = harness::<F>(Common {
        invalidations: Some(bus.clone()),
        ..Common::default()
    })
    .await;
    let key = Bytes::from(format!("{}:reconnect", F::NAME));
    let owner = h.cluster.primary_of_slot(key_slot(&key)).unwrap();
    let replica = h.cluster.replicas_of(owner).unwrap()[0];
    let set = |v: &str| {
        h.cluster
            .command_str(owner, &["SET", std::str::from_utf8(&key).unwrap(), v])
            .unwrap();
    };
    let read = |role: Role, want: &'static str| {
        let req = match role {
            Role::Primary => h.to_primary(CacheRequest::get(key.clone())),
            _ => h.to_replica(CacheRequest::get(key.clone())),
        };
        let leaf = h.leaf.clone();
        async move {
            let r = leaf.oneshot(req).await.ok()?;
            (r.value.as_deref() == Some(want.as_bytes())).then_some(r)
        }
    };
    set("v1");
    let r = eventually("replica read", Duration::from_secs(5), || {
        read(Role::Replica, "v1")
    })
    .await;
    assert_eq!(r.served.path, Path::Replica);
    eventually("primary read", Duration::from_secs(5), || {
        read(Role::Primary, "v1")
    })
    .await;
    set("v2");
    assert!(
        invalidated(&mut rx, &key).await,
        "{}: no invalidation",
        F::NAME
    );

    kill_our_connections(&h.cluster, owner);
    kill_our_connections(&h.cluster, replica);
    let r = eventually(
        "replica read after reconnect",
        Duration::from_secs(10),
        || read(Role::Replica, "v2"),
    )
    .await;
    assert_eq!(r.served.path, Path::Replica);
    eventually(
        "primary read after reconnect",
        Duration::from_secs(10),
        || read(Role::Primary, "v2"),
    )
    .await;
    set("v3");
    assert!(
        invalidated(&mut rx, &key).await,
        "{}: no invalidation after reconnect",
        F::NAME
    );
}
both!(reconnect);

// ---------------------------------------------------------- back-pressure

/// A node asleep (`DEBUG SLEEP`) under a flood of 500 reads, bound 64: at
/// most the bound is sent, the rest fail at once with `Overloaded`, and
/// another node answers throughout.
async fn back_pressure<F: Flavor>() {
    const BOUND: usize = 64;
    let h = harness::<F>(Common {
        max_in_flight: Some(BOUND),
        command_timeout: Some(Duration::from_secs(5)),
        stall_timeout: Some(Duration::from_secs(10)),
        ..Common::default()
    })
    .await;
    let primaries = h.cluster.primaries().unwrap();
    let (slow, other) = (primaries[0], primaries[1]);
    let (slow_addr, other_addr) = (addr(&h.cluster, slow), addr(&h.cluster, other));
    let to = |a: &NodeAddr, k: String| CacheRequest::get(k).to_node(a.clone(), Role::Primary);
    let slow_keys = h.cluster.key_for_slot_of(slow, 501).unwrap();
    let other_keys = h.cluster.key_for_slot_of(other, 50).unwrap();
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
    put_to_sleep(
        &h.leaf,
        &h.cluster,
        slow,
        &to(&slow_addr, slow_keys[500].clone()),
    )
    .await;
    let (peak, flood) = flood_while_reading_another(
        &h.leaf,
        (&slow_addr, &slow_keys[..500]),
        (&other_addr, &other_keys),
    )
    .await;
    let (mut sent, mut overloaded) = (0usize, 0usize);
    for outcome in flood {
        match outcome {
            Err(e) if matches!(cache_err(&e), CacheError::Overloaded { .. }) => overloaded += 1,
            _ => sent += 1,
        }
    }
    assert!(peak <= BOUND, "{}: in flight peaked at {peak}", F::NAME);
    assert!(sent <= BOUND, "{}: {sent} flood reads were sent", F::NAME);
    assert!(
        overloaded >= 500 - BOUND,
        "{}: {overloaded} overloaded",
        F::NAME
    );
}
both!(back_pressure);

// -------------------------------------------------------- hostile replies

const KEYS: usize = 32;

fn scripted() -> (ScriptedNode, NodeAddr) {
    let (node, addr) = node_with_keys(KEYS);
    // RESP3, as a Redis 7 node: fred's client speaks it.
    node.speak_resp3(true);
    (node, addr)
}

/// Every key answered with its own value, or a typed error.
async fn traffic<L: Leaf>(leaf: &L, addr: &NodeAddr) -> Result<Option<Bytes>, BoxError> {
    let normal = (0..KEYS).map(|i| async move {
        if let Ok(v) = get(leaf, addr, &format!("key-{i}")).await {
            assert_eq!(
                v.as_deref(),
                Some(&value_of(i)[..]),
                "key-{i}: not its own value"
            );
        }
    });
    let (bad, _) = tokio::join!(get(leaf, addr, "bad"), join_all(normal));
    bad
}

/// A reply of the wrong type is a typed protocol error for its own request
/// only; a skipped reply never hands a value to another request; a silent
/// connection (a black hole) is replaced and the node used again.
async fn hostile<F: Flavor>() {
    let (node, addr) = scripted();
    let leaf = F::leaf(&Common::default());
    recovers(&leaf, &addr).await;

    node.script("bad", Action::Reply(b":1\r\n".to_vec()));
    let bad = traffic(&leaf, &addr).await.unwrap_err();
    assert!(
        matches!(cache_err(&bad), CacheError::Protocol(_)),
        "{bad:?}"
    );
    node.clear("bad");
    recovers(&leaf, &addr).await;

    node.script("bad", Action::Skip);
    let bad = traffic(&leaf, &addr).await;
    assert!(
        bad.is_err(),
        "{}: a skipped reply was answered: {bad:?}",
        F::NAME
    );
    // And after it, while later replies on that connection are shifted.
    for _ in 0..3 {
        let _ = traffic(&leaf, &addr).await;
    }
    node.clear("bad");
    recovers(&leaf, &addr).await;

    let before = node.connections_accepted();
    node.script("bad", Action::Silence);
    let _ = traffic(&leaf, &addr).await;
    node.clear("bad");
    recovers(&leaf, &addr).await;
    assert!(
        node.connections_accepted() > before,
        "a new connection was made"
    );
}
both!(hostile);

/// A reply shaped like a pub/sub message (`["message", channel, payload]`),
/// a 2 GiB bulk header and a billion-element array header, each followed
/// by silence: the request gets a typed error, no other request gets a
/// value not its own, memory stays bounded, and the node is used again on
/// a new connection.
async fn hostile_shapes<F: Flavor>() {
    let (node, addr) = scripted();
    let leaf = F::leaf(&Common::default());
    recovers(&leaf, &addr).await;
    let mem = rss();
    let shapes = [
        Action::Reply(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec()),
        Action::huge_bulk_header(),
        Action::huge_array(1_000_000_000),
    ];
    for action in shapes {
        let before = node.connections_accepted();
        node.script("bad", action.clone());
        let bad = traffic(&leaf, &addr).await;
        assert!(
            bad.is_err(),
            "{}: {action:?} was answered: {bad:?}",
            F::NAME
        );
        let e = cache_err(&bad.unwrap_err());
        println!("{}: {action:?}: {e:?}", F::NAME);
        node.clear("bad");
        recovers(&leaf, &addr).await;
        if !matches!(action, Action::Reply(_)) {
            assert!(
                node.connections_accepted() > before,
                "{action:?}: not replaced"
            );
        }
        assert!(
            rss() < mem + 256 * 1024 * 1024,
            "{}: {action:?}: memory grew by {} bytes",
            F::NAME,
            rss().saturating_sub(mem)
        );
    }
}
both!(hostile_shapes);

/// A reply nested 100,000 arrays deep: the default leaf refuses it with a
/// typed error past its depth cap; under the fred leaf, redis-protocol's
/// recursive decoder overflows the stack and the process aborts — shown in
/// a child process (this test binary re-run on this case alone).
async fn deep_nesting<F: Flavor>() {
    const CHILD: &str = "SLOTGUARD_CONFORMANCE_CHILD";
    let in_child = std::env::var(CHILD).is_ok();
    if F::NAME == "fred" && !in_child {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "deep_nesting::fred",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the child survived: {stderr}");
        assert!(
            stderr.contains("overflow"),
            "the child died of something else: {:?} {stderr}",
            out.status
        );
        return;
    }
    let (node, addr) = scripted();
    let leaf = F::leaf(&Common::default());
    recovers(&leaf, &addr).await;
    node.script("bad", Action::nested(100_000));
    let bad = get(&leaf, &addr, "bad").await;
    // Only the default leaf gets here (or the fred child, if it survived:
    // the parent then fails).
    let err = bad.unwrap_err();
    assert!(
        matches!(cache_err(&err), CacheError::Protocol(_)),
        "{err:?}"
    );
    node.clear("bad");
    recovers(&leaf, &addr).await;
}
both!(deep_nesting);
