//! Secured clusters: ACL users and passwords on every connection.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use slotguard_core::{as_cache_error, CacheError, CacheRequest};
use slotguard_fred::{Credentials, FredConfig};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_testkit::{ClusterSpec, LocalCluster};
use slotguard_tests::{addr, Harness};
use tower::ServiceExt;

const PASSWORD: &str = "pw-Zq81-never-printed";

/// What a cache client needs and nothing else: data commands, connection
/// commands (HELLO, READONLY, ASKING, PING, CLIENT TRACKING), and the
/// topology and health reads. No `@admin`, no `@dangerous`.
const CACHE_USER_RULES: &[&str] = &[
    "on",
    "resetkeys",
    "~*",
    "resetchannels",
    "-@all",
    "+@read",
    "+@write",
    "+@connection",
    "-@admin",
    "-@dangerous",
    "+info",
    "+role",
    "+cluster|shards",
    "+cluster|slots",
    "+cluster|info",
    "+cluster|nodes",
];

/// A started cluster with the limited user `cache` on every node (the
/// testkit's own admin client stays on the open `default` user).
fn cluster_with_cache_user() -> LocalCluster {
    let cluster = LocalCluster::start(ClusterSpec::default()).expect("cluster starts");
    let pass = format!(">{PASSWORD}");
    for i in 0..cluster.len() {
        let mut args = vec!["ACL", "SETUSER", "cache"];
        args.extend_from_slice(CACHE_USER_RULES);
        args.push(&pass);
        cluster.command_ok(i, &args).unwrap();
    }
    cluster
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
    let config = FredConfig {
        credentials: Some(Credentials::user("cache", PASSWORD)),
        ..FredConfig::default()
    };
    let h = Harness::on(cluster, config).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    for i in 0..50u32 {
        let key = format!("acl:{i}");
        stack
            .clone()
            .oneshot(CacheRequest::set(key.clone(), "v", None))
            .await
            .unwrap();
        let got = stack
            .clone()
            .oneshot(CacheRequest::get(key.clone()))
            .await
            .unwrap();
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
    let prober = slotguard_fred::HealthProber::new(&h.leaf, h.topology.clone());
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
    let leaf = slotguard_fred::FredService::new(FredConfig {
        credentials: Some(Credentials::user("cache", "wrong-password-xyz")),
        ..FredConfig::default()
    });
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
    let source = slotguard_fred::FredTopologySource::new(&leaf, vec![node.clone()]);
    let err = slotguard_core::TopologySource::fetch_view(&source, &node)
        .await
        .unwrap_err();
    assert!(
        matches!(as_cache_error(&err), Some(CacheError::Auth { .. })),
        "{err}"
    );
}
