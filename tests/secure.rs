//! Secured clusters: ACL users and passwords on every connection.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use slotguard_core::{as_cache_error, CacheError, CacheRequest, Consistency};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_node::{Credentials, HealthProber, NodeConfig, TlsConfig};
use slotguard_testkit::{ClusterSpec, LocalCluster};
use slotguard_tests::{
    addr, eventually, no_replica_reported_loading, write_each, write_then_read, Harness,
};
use tower::ServiceExt;

const PASSWORD: &str = "pw-Zq81-never-printed";

/// A started cluster with the limited user `cache` on every node
/// (`ClusterSpec::acl_users`; the testkit's own admin client stays on the
/// open `default` user).
fn cluster_with_cache_user() -> LocalCluster {
    let user = format!(
        "cache >{PASSWORD} {}",
        slotguard_testkit::CACHE_USER_RULES.join(" ")
    );
    LocalCluster::start(ClusterSpec {
        acl_users: vec![user],
        ..ClusterSpec::default()
    })
    .expect("cluster starts")
}

fn stat(cluster: &LocalCluster, index: usize, name: &str) -> u64 {
    cluster
        .info(index, "stats")
        .unwrap()
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_acl_user_works_through_the_full_stack() {
    let cluster = cluster_with_cache_user();
    let config = NodeConfig::default().with_credentials(Credentials::user("cache", PASSWORD));
    let h = Harness::on(cluster, config).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    for i in 0..50u32 {
        let key = format!("acl:{i}");
        let got = write_then_read(&stack, key.clone(), "v").await;
        assert_eq!(got.value.as_deref(), Some(&b"v"[..]));
        let del = stack
            .clone()
            .oneshot(CacheRequest::delete(key))
            .await
            .unwrap();
        assert_eq!(del.deleted, 1);
    }
    // Replica reads (READONLY) and the health probe (INFO) as that user.
    let read = h.to_replica(CacheRequest::get("acl:replica"));
    h.leaf.clone().oneshot(read).await.unwrap();
    let prober = slotguard_node::HealthProber::new(&h.leaf, h.topology.clone());
    prober.probe_once().await;
    let map = h.topology.load();
    let replica = map
        .nodes()
        .find(|n| n.role == slotguard_core::Role::Replica)
        .unwrap();
    assert_eq!(h.topology.health(&replica.addr).consecutive_failures(), 0);

    // Nothing we built prints the password.
    let everything = format!(
        "{:?} {:?} {:?} {:?} {:?}",
        h.leaf,
        h.leaf.config(),
        h.source,
        stack,
        prober
    );
    assert!(!everything.contains(PASSWORD), "{everything}");
    assert!(everything.contains("Secret(***)"), "{everything}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_typed_auth_error_on_the_first_call_without_hammering() {
    let cluster = cluster_with_cache_user();
    // The first call waits for the handshake; this test is about the error,
    // not speed.
    let leaf = slotguard_node::NodeService::new(
        NodeConfig::default()
            .with_credentials(Credentials::user("cache", "wrong-password-xyz"))
            .with_command_timeout(Duration::from_secs(2)),
    );
    let node = addr(&cluster, 0);
    let dials_before = stat(&cluster, 0, "total_connections_received");
    let started = std::time::Instant::now();
    let req = || CacheRequest::get("k").to_node(node.clone(), slotguard_core::Role::Primary);
    let err = leaf.clone().oneshot(req()).await.unwrap_err();
    match as_cache_error(&err) {
        Some(CacheError::Auth { node: n, detail }) => {
            assert_eq!(n, &node);
            assert!(detail.starts_with("WRONGPASS"), "{detail}");
        }
        other => panic!("expected an auth error, got {other:?} ({err})"),
    }
    assert!(err.to_string().contains(&node.to_string()), "{err}");
    assert!(!err.to_string().contains("wrong-password-xyz"), "{err}");
    // Callers in a loop get the same typed error, without a dial each.
    for _ in 0..200 {
        let err = leaf.clone().oneshot(req()).await.unwrap_err();
        assert!(
            matches!(as_cache_error(&err), Some(CacheError::Auth { .. })),
            "{err}"
        );
    }
    let elapsed = started.elapsed();
    let dials = stat(&cluster, 0, "total_connections_received") - dials_before;
    // One dial, then at most one per second of the loop.
    let allowed = 1 + elapsed.as_secs() + 1;
    assert!(
        dials >= 1 && dials <= allowed,
        "{dials} dials in {elapsed:?}"
    );
    // The topology fetch says the same.
    let source = slotguard_node::NodeTopologySource::new(&leaf, vec![node.clone()]);
    let err = slotguard_core::TopologySource::fetch_view(&source, &node)
        .await
        .unwrap_err();
    assert!(
        matches!(as_cache_error(&err), Some(CacheError::Auth { .. })),
        "{err}"
    );
}

// ----- TLS ---------------------------------------------------------------

fn tls_cluster() -> LocalCluster {
    tls_cluster_with(ClusterSpec::default())
}

fn tls_cluster_with(spec: ClusterSpec) -> LocalCluster {
    LocalCluster::start(ClusterSpec { tls: true, ..spec }).expect("tls cluster starts")
}

fn tls_config(cluster: &LocalCluster) -> TlsConfig {
    TlsConfig::with_ca_pem(cluster.tls().unwrap().ca_pem.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_stack_works_over_tls_and_reads_survive_a_stopped_primary() {
    // Replica reads over TLS are what this test checks: with Redis's default
    // `cluster-require-full-coverage yes` every shard answers CLUSTERDOWN
    // between the stopped primary being marked failed and the promotion,
    // and this stack has no secondary path to answer then.
    let cluster =
        tls_cluster_with(ClusterSpec::default().with_config("cluster-require-full-coverage", "no"));
    let config = NodeConfig::default().with_tls(tls_config(&cluster));
    let h = Harness::on(cluster, config).await;
    // The map names the TLS ports (what the cluster announces to TLS clients).
    let map = h.topology.load();
    for node in map.nodes() {
        let i = h.cluster.index_of(&node.addr.to_string()).unwrap();
        assert_eq!(node.addr.port(), h.cluster.nodes()[i].client_port);
        assert_ne!(node.addr.port(), h.cluster.nodes()[i].port);
    }
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let victim = h.cluster.primary_of_slot(0).unwrap();
    let keys = h.cluster.key_for_slot_of(victim, 20).unwrap();
    write_each(&stack, &keys).await;
    // Replicas have the keys before the primary stops.
    let replica = h.cluster.replicas_of(victim).unwrap()[0];
    eventually("replica has the keys", Duration::from_secs(10), || async {
        h.cluster.command_str(replica, &["READONLY"]).ok()?;
        let r = h
            .cluster
            .command(replica, &[b"EXISTS", keys.last().unwrap().as_bytes()])
            .ok()?;
        (r.as_int() == Some(1)).then_some(())
    })
    .await;

    // Redis 7.0's CLUSTER SHARDS calls a replica `loading` until its peers
    // have heard a non-zero replication offset from it (a fresh cluster),
    // and the map treats that as not online: wait for one write per shard
    // to reach every view, as an aged cluster would be.
    for p in h.cluster.primaries().unwrap() {
        let k = h.cluster.key_for_slot_of(p, 1).unwrap().remove(0);
        h.cluster.command_str(p, &["SET", &k, &k]).unwrap();
    }
    no_replica_reported_loading(&h.cluster).await;
    h.reload().await;

    h.cluster.pause(victim).unwrap();
    let stopped = std::time::Instant::now();
    let mut reads = 0;
    let mut by_replica = 0u32;
    let mut failed = Vec::new();
    // Every read of the stopped shard is answered (by its replica, over
    // TLS) for 3 s, until promotion or not.
    while stopped.elapsed() < Duration::from_secs(3) {
        for k in &keys {
            let req = CacheRequest::get(k.clone()).with_timeout(Duration::from_millis(500));
            match stack.clone().oneshot(req).await {
                Ok(resp) => {
                    assert_eq!(resp.value.as_deref(), Some(k.as_bytes()));
                    by_replica += u32::from(resp.served.path == slotguard_core::Path::Replica);
                }
                Err(e) => failed.push(format!("{:?} after the stop: {e}", stopped.elapsed())),
            }
            reads += 1;
        }
    }
    h.cluster.resume(victim).unwrap();
    let (vp, rp) = (addr(&h.cluster, victim), addr(&h.cluster, replica));
    assert!(
        failed.is_empty(),
        "{} of {reads} reads failed (primary {vp}, replica {rp}): {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(by_replica > 0, "the replica answered during the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_a_wrong_name_or_a_plaintext_port_is_a_typed_tls_error() {
    let cluster = tls_cluster();
    let files = cluster.tls().unwrap().clone();
    let node = addr(&cluster, 0);
    let get = |leaf: &slotguard_node::NodeService, node: &slotguard_core::NodeAddr| {
        leaf.clone()
            .oneshot(CacheRequest::get("k").to_node(node.clone(), slotguard_core::Role::Primary))
    };
    // The first call waits for the handshake: on a loaded machine give it
    // the whole connect timeout (this test is about the error, not speed).
    let slow_ok = |tls| {
        NodeConfig::default()
            .with_tls(tls)
            .with_command_timeout(Duration::from_secs(2))
    };
    let tls_err = |err: slotguard_core::BoxError| match as_cache_error(&err) {
        Some(CacheError::Tls { node, detail }) => (node.clone(), detail.clone()),
        other => panic!("expected a tls error, got {other:?} ({err})"),
    };

    let wrong_ca = TlsConfig::with_ca_pem(files.unrelated_ca_pem.as_bytes()).unwrap();
    let leaf = slotguard_node::NodeService::new(slow_ok(wrong_ca));
    let (n, detail) = tls_err(get(&leaf, &node).await.unwrap_err());
    assert_eq!(n, node);
    assert!(detail.contains("UnknownIssuer"), "{detail}");

    let wrong_name = tls_config(&cluster).server_name("other.slotguard.test");
    let leaf = slotguard_node::NodeService::new(slow_ok(wrong_name));
    let (_, detail) = tls_err(get(&leaf, &node).await.unwrap_err());
    assert!(detail.contains("not valid for name"), "{detail}");

    // The node's plaintext port does not speak TLS: Redis reads the
    // ClientHello as an unfinished inline command and waits, so the call
    // ends at its deadline (or with a TLS error if the node closes first).
    let leaf =
        slotguard_node::NodeService::new(NodeConfig::default().with_tls(tls_config(&cluster)));
    let plain = slotguard_core::NodeAddr::new("127.0.0.1", cluster.nodes()[0].port);
    let err = get(&leaf, &plain).await.unwrap_err();
    assert!(
        matches!(
            as_cache_error(&err),
            Some(CacheError::Timeout { .. } | CacheError::Tls { .. })
        ),
        "{err}"
    );

    // The right CA with a fixed name on the certificate, and mTLS.
    let fixed = tls_config(&cluster)
        .server_name(slotguard_testkit::TlsFiles::SERVER_NAME)
        .client_cert_pem(
            files.client_cert_pem.as_bytes(),
            files.client_key_pem.as_bytes(),
        )
        .unwrap();
    assert!(!format!("{fixed:?}").contains("PRIVATE"));
    let leaf = slotguard_node::NodeService::new(slow_ok(fixed));
    let owner = cluster
        .primary_of_slot(slotguard_core::key_slot(b"k"))
        .unwrap();
    get(&leaf, &addr(&cluster, owner)).await.unwrap();
}

// ----- address remapping -------------------------------------------------

/// A cluster whose nodes announce addresses this client cannot use: every
/// node announces its client proxy (`cluster-announce-port`), and each
/// proxy black-holes connections from 127.0.0.1, where this test's client
/// lives. Replication and the nodes' own traffic (from 127.0.0.x) still go
/// through. (Announcing ports where nothing listens at all would cut the
/// replicas off too: they replicate from the announced address.)
fn unreachable_announcements() -> (LocalCluster, slotguard_node::AddressRemap) {
    let cluster = LocalCluster::start(ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    })
    .expect("proxied cluster starts");
    let me = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut table = Vec::new();
    for n in cluster.nodes() {
        cluster.proxy(n.index).unwrap().cut_peer(me, true);
        assert_ne!(n.client_port, n.port);
        table.push((
            slotguard_core::NodeAddr::new("127.0.0.1", n.client_port),
            slotguard_core::NodeAddr::new("127.0.0.1", n.port),
        ));
    }
    (cluster, slotguard_node::AddressRemap::table(table))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remap_makes_a_cluster_with_unreachable_announcements_usable_through_migration_and_failover(
) {
    let (cluster, remap) = unreachable_announcements();
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port).collect();
    let real = |i: usize| slotguard_core::NodeAddr::new("127.0.0.1", ports[i]);
    let seeds: Vec<_> = (0..cluster.len()).map(real).collect();
    let h = Harness::with_seeds(
        cluster,
        NodeConfig::default().with_remap(remap),
        seeds.clone(),
    )
    .await;
    // The map names every node by its dialable address.
    let map = h.topology.load();
    let mut named: Vec<_> = map.nodes().map(|n| n.addr.clone()).collect();
    named.sort_by_key(|a| a.port());
    let mut want = seeds.clone();
    want.sort_by_key(|a| a.port());
    assert_eq!(named, want);

    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let call = |req: CacheRequest| {
        stack
            .clone()
            .oneshot(req.with_timeout(Duration::from_secs(2)))
    };
    for i in 0..30 {
        let k = format!("remap:{i}");
        call(CacheRequest::set(k.clone(), k.clone(), None))
            .await
            .unwrap();
        let got = call(CacheRequest::get(k.clone())).await.unwrap();
        assert_eq!(got.value.as_deref(), Some(k.as_bytes()));
    }

    // A live migration: ASK during it, MOVED after, both remapped.
    let from = h.cluster.primary_of_slot(0).unwrap();
    let to = h
        .cluster
        .primaries()
        .unwrap()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("{{m}}:{i}")).collect();
    let slot = slotguard_core::key_slot(keys[0].as_bytes());
    let owner = h.cluster.primary_of_slot(slot).unwrap();
    let target = if owner == to { from } else { to };
    for k in &keys {
        call(CacheRequest::set(k.clone(), k.clone(), None))
            .await
            .unwrap();
    }
    h.cluster.begin_migration(slot, owner, target).unwrap();
    // Keys the source no longer (or never) has get ASK to the target.
    let fresh: Vec<String> = (0..50).map(|i| format!("{{m}}:new:{i}")).collect();
    for k in &fresh {
        call(CacheRequest::set(k.clone(), k.clone(), None))
            .await
            .unwrap();
    }
    for k in keys.iter().chain(&fresh) {
        let got = call(CacheRequest::get(k.clone())).await.unwrap();
        assert_eq!(
            got.value.as_deref(),
            Some(k.as_bytes()),
            "{k} mid-migration"
        );
    }
    let on_target = h
        .cluster
        .command_str(target, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .unwrap();
    assert_eq!(
        on_target.as_int(),
        Some(fresh.len() as i64),
        "the new keys went to the target (ASK)"
    );
    h.cluster.migrate_keys(slot, owner, target).unwrap();
    h.cluster.finish_migration(slot, target).unwrap();
    for k in keys.iter().chain(&fresh) {
        // Primary-only: what is checked is that the read reaches the new
        // owner's real address. A default (`ReplicaOk`) read may be
        // hedged to the owner's replica when the owner is slower than its
        // latency bound, as on a loaded CI machine (seen once).
        let get = CacheRequest::get(k.clone()).with_consistency(Consistency::Primary);
        let got = call(get).await.unwrap();
        assert_eq!(
            got.value.as_deref(),
            Some(k.as_bytes()),
            "{k} after the move"
        );
        assert_eq!(got.served.node.as_ref(), Some(&real(target)));
    }

    // A failover: the old primary answers MOVED with the new one's
    // announced address.
    let primary = h.cluster.primary_of_slot(slot).unwrap();
    let replica = h.cluster.replicas_of(primary).unwrap()[0];
    h.cluster.failover(replica).unwrap();
    // Writes may be refused (typed) while the promotion spreads; then every
    // key is written and read back in one pass.
    let typed = std::sync::Mutex::new(Vec::new());
    eventually(
        "a full pass after the failover",
        Duration::from_secs(20),
        || async {
            for k in &keys {
                let w = call(CacheRequest::set(k.clone(), k.clone(), None)).await;
                let r = match w {
                    Ok(_) => {
                        let strict = CacheRequest::get(k.clone())
                            .with_consistency(slotguard_core::Consistency::Primary);
                        call(strict).await
                    }
                    Err(e) => Err(e),
                };
                match r {
                    Ok(got) => assert_eq!(got.value.as_deref(), Some(k.as_bytes())),
                    Err(e) => {
                        typed.lock().unwrap().push(slotguard_core::classify(&e));
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await;
    // Only typed, transient refusals on the way.
    let typed = typed.into_inner().unwrap();
    assert!(
        typed.iter().all(|f| matches!(
            f,
            slotguard_core::Failure::ShardUnavailable
                | slotguard_core::Failure::CircuitOpen
                | slotguard_core::Failure::Timeout
                | slotguard_core::Failure::Connection
        )),
        "{typed:?}"
    );
    let owner_now = h
        .topology
        .load()
        .primary_for_slot(slot)
        .unwrap()
        .addr
        .clone();
    assert_eq!(owner_now, real(replica));
    // No connection ever went to an announced address.
    for n in h.cluster.nodes() {
        assert!(!h
            .leaf
            .connected_nodes()
            .iter()
            .any(|a| a.port() == n.client_port));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_requires_client_certificates_takes_ours_and_refuses_none() {
    let cluster = LocalCluster::start(ClusterSpec {
        tls: true,
        // Later lines override the testkit's `optional`.
        extra_config: vec![("tls-auth-clients".into(), "yes".into())],
        ..ClusterSpec::default()
    })
    .expect("mTLS cluster starts");
    let files = cluster.tls().unwrap().clone();
    let owner = cluster
        .primary_of_slot(slotguard_core::key_slot(b"k"))
        .unwrap();
    let node = addr(&cluster, owner);
    let get = |leaf: slotguard_node::NodeService| {
        leaf.oneshot(CacheRequest::get("k").to_node(node.clone(), slotguard_core::Role::Primary))
    };
    let patient = |tls| {
        NodeConfig::default()
            .with_tls(tls)
            .with_command_timeout(Duration::from_secs(2))
    };
    // Without a client certificate the node refuses the handshake.
    let leaf = slotguard_node::NodeService::new(patient(tls_config(&cluster)));
    let err = get(leaf).await.unwrap_err();
    assert!(
        matches!(as_cache_error(&err), Some(CacheError::Tls { .. })),
        "{err}"
    );
    // With ours, it answers.
    let mtls = tls_config(&cluster)
        .client_cert_pem(
            files.client_cert_pem.as_bytes(),
            files.client_key_pem.as_bytes(),
        )
        .unwrap();
    let leaf = slotguard_node::NodeService::new(patient(mtls));
    get(leaf).await.unwrap();
}
