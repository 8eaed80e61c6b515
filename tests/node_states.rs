//! Nodes that answer but cannot serve: `BUSY` (an endless Lua script),
//! `CLIENT PAUSE WRITE` (real redis-server), `LOADING` (the scripted node);
//! and redirects that must not be followed blindly (scripted nodes): a
//! `MOVED` to an address outside the topology, a circular `MOVED`.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{
    classify, key_slot, BoxError, CacheRequest, CacheResponse, ClusterView, Failure, NodeAddr,
    NodeView, Path, Role, ShardView, Topology,
};
use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard_layers::redirect::RedirectLayer;
use slotguard_layers::replica_failover::ReplicaFailoverLayer;
use slotguard_layers::slot_refresh::{RefreshConfig, SlotRefreshLayer};
use slotguard_node::{HealthProber, NodeConfig, NodeService, NodeTopologySource};
use slotguard_testkit::{Action, ClusterSpec, LocalCluster, ScriptedNode};
use slotguard_tests::{eventually, no_replica_reported_loading, FullStack, Harness};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

const WAIT: Duration = Duration::from_secs(20);
const DEADLINE: Duration = Duration::from_millis(400);
/// Scheduling slack over a request's own deadline on a shared machine.
const SLACK: Duration = Duration::from_millis(500);

/// Calls `stack` and checks the call ended within its deadline.
async fn bounded<S>(stack: &S, req: CacheRequest) -> Result<CacheResponse, BoxError>
where
    S: Service<CacheRequest, Response = CacheResponse, Error = BoxError> + Clone,
{
    let sent = Instant::now();
    let out = stack
        .clone()
        .oneshot(req.with_deadline(sent + DEADLINE))
        .await;
    assert!(
        sent.elapsed() <= DEADLINE + SLACK,
        "a call took {:?} with a {DEADLINE:?} deadline",
        sent.elapsed()
    );
    out
}

/// Waits until a write of `key` (itself as its value) succeeds again.
async fn writes_again(stack: &FullStack, key: &Bytes, what: &str) {
    eventually(what, WAIT, || async {
        bounded(stack, CacheRequest::set(key.clone(), key.clone(), None))
            .await
            .ok()
    })
    .await;
}

/// Seeded keys of `primary`, replicated to its replica.
async fn keys_on(h: &Harness, stack: &FullStack, primary: usize, n: usize) -> Vec<Bytes> {
    let keys = h.write_keys_of(stack, primary, n).await;
    h.cluster
        .command_ok(primary, &["WAIT", "1", "2000"])
        .unwrap();
    keys
}

/// Reads of `keys` are answered by a replica; writes end within their deadline.
async fn reads_elsewhere_writes_bounded(
    h: &Harness,
    stack: &FullStack,
    keys: &[Bytes],
    on_replica: bool,
) {
    for k in keys {
        let resp = bounded(stack, CacheRequest::get(k.clone()))
            .await
            .unwrap_or_else(|e| {
                let map = h.topology.load();
                let shard = map.shard_for_slot(key_slot(k)).unwrap();
                let replicas: Vec<String> = shard
                    .replicas
                    .iter()
                    .map(|r| {
                        let hl = &r.health;
                        format!(
                            "{} majority {} breaker {} link {} io {:?} fails {}",
                            r.addr,
                            hl.in_majority(),
                            hl.breaker_open(),
                            hl.link_up(),
                            hl.last_io(),
                            hl.consecutive_failures()
                        )
                    })
                    .collect();
                panic!("read of {k:?}: {e}; replicas {replicas:?}")
            });
        assert_eq!(resp.value.as_ref(), Some(k));
        if on_replica {
            assert_eq!(resp.served.path, Path::Replica, "read went elsewhere");
        }
    }
    for k in keys.iter().take(5) {
        if let Err(e) = bounded(stack, CacheRequest::set(k.clone(), k.clone(), None)).await {
            assert!(
                matches!(
                    classify(&e),
                    Failure::Busy
                        | Failure::Indeterminate
                        | Failure::ShardUnavailable
                        | Failure::CircuitOpen
                ),
                "write failed with {e}"
            );
        }
    }
}

/// Kills the script on drop, so a failing test leaves no node busy.
struct ScriptKill<'a>(&'a LocalCluster, usize);

impl Drop for ScriptKill<'_> {
    fn drop(&mut self) {
        let _ = self.0.command_str(self.1, &["SCRIPT", "KILL"]);
    }
}

/// Unpauses on drop.
struct Unpause<'a>(&'a LocalCluster, usize);

impl Drop for Unpause<'_> {
    fn drop(&mut self) {
        let _ = self.0.command_str(self.1, &["CLIENT", "UNPAUSE"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_client_pause_write_send_reads_elsewhere_and_bound_writes() {
    // A long node timeout: a node running a script does not serve its
    // cluster bus, and this test is not about failover.
    let spec = ClusterSpec {
        node_timeout_ms: 5000,
        extra_config: vec![("lua-time-limit".into(), "100".into())],
        ..ClusterSpec::default()
    };
    let h = Harness::start_with(spec, NodeConfig::default()).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let busy = h.cluster.primary_of_slot(0).unwrap();
    let keys = keys_on(&h, &stack, busy, 10).await;
    let other = h.cluster.primary_of_slot(16383).unwrap();
    let other_keys = keys_on(&h, &stack, other, 10).await;
    no_replica_reported_loading(&h.cluster).await;

    // BUSY: an endless read-only script, killable with SCRIPT KILL.
    let port = h.cluster.nodes()[busy].port;
    let mut script = TcpStream::connect(("127.0.0.1", port)).unwrap();
    script
        .write_all(b"*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n")
        .unwrap();
    let guard = ScriptKill(&h.cluster, busy);
    eventually("the node to answer BUSY", WAIT, || async {
        let r = h.cluster.command_str(busy, &["PING"]).ok()?;
        r.error_message()
            .is_some_and(|m| m.starts_with("BUSY"))
            .then_some(())
    })
    .await;
    reads_elsewhere_writes_bounded(&h, &stack, &keys, true).await;
    drop(guard);
    drop(script);
    writes_again(&stack, &keys[0], "the node to serve again").await;

    // CLIENT PAUSE WRITE: reads go on, writes wait at most their deadline.
    let (paused, keys) = (other, other_keys);
    h.cluster
        .command_ok(paused, &["CLIENT", "PAUSE", "3000", "WRITE"])
        .unwrap();
    let guard = Unpause(&h.cluster, paused);
    reads_elsewhere_writes_bounded(&h, &stack, &keys, false).await;
    let err = bounded(&stack, CacheRequest::set(keys[0].clone(), "x", None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            classify(&err),
            Failure::Indeterminate | Failure::ShardUnavailable | Failure::CircuitOpen
        ),
        "{err}"
    );
    drop(guard);
    writes_again(&stack, &keys[0], "writes again after the pause").await;
}

fn node_addr(node: &ScriptedNode) -> NodeAddr {
    node.addr().to_string().parse().unwrap()
}

fn nv(node: &ScriptedNode) -> NodeView {
    NodeView {
        addr: node_addr(node),
        id: None,
        online: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_sends_reads_to_the_replica_and_fails_writes_typed() {
    let (primary, replica) = (
        ScriptedNode::start().unwrap(),
        ScriptedNode::start().unwrap(),
    );
    let topology = Topology::new();
    topology.report(slotguard_core::controller::ViewLoaded::new(&ClusterView {
        source: node_addr(&primary),
        shards: vec![ShardView {
            slots: vec![(0, 16383)],
            primary: nv(&primary),
            replicas: vec![nv(&replica)],
        }],
        current_epoch: Some(1),
        state_ok: Some(true),
    }));
    primary.script(
        "k",
        Action::error("LOADING Redis is loading the dataset in memory"),
    );
    replica.set("k", "v");
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let stack = ServiceBuilder::new()
        .layer(ReplicaFailoverLayer::new(topology.clone()))
        .layer(CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology))
        .service(leaf);
    let to_primary = |req: CacheRequest| req.to_node(node_addr(&primary), Role::Primary);
    for _ in 0..5 {
        let resp = bounded(&stack, to_primary(CacheRequest::get("k")))
            .await
            .unwrap();
        assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
        assert_eq!(resp.served.path, Path::Replica);
        let err = bounded(&stack, to_primary(CacheRequest::set("k", "w", None)))
            .await
            .unwrap_err();
        assert!(
            matches!(classify(&err), Failure::Loading | Failure::CircuitOpen),
            "{err}"
        );
    }
    assert_eq!(
        replica.command_count("SET"),
        0,
        "writes never go to a replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_outside_the_topology_is_never_dialled_and_circular_moved_ends() {
    // A MOVED to a node no view lists: not dialled; the refreshed map (the
    // node's own view, unchanged) keeps the request where it was.
    let (a, stranger) = (
        ScriptedNode::start().unwrap(),
        ScriptedNode::start().unwrap(),
    );
    let slot = key_slot(b"k");
    a.script(
        "k",
        Action::error(&format!("MOVED {slot} {}", stranger.addr())),
    );
    let topology = Topology::new();
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let source = NodeTopologySource::new(&leaf, vec![node_addr(&a)]);
    let refresh = SlotRefreshLayer::with_config(topology.clone(), source, RefreshConfig::default())
        .load()
        .await
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(refresh)
        .layer(RedirectLayer::new(topology.clone()))
        .service(leaf);
    let sent = Instant::now();
    let err = stack
        .clone()
        .oneshot(CacheRequest::get("k").with_timeout(Duration::from_secs(5)))
        .await
        .unwrap_err();
    println!("MOVED to a stranger: {err} after {:?}", sent.elapsed());
    assert!(
        matches!(
            classify(&err),
            Failure::TooManyRedirects | Failure::Moved | Failure::Timeout
        ),
        "{err}"
    );
    assert_eq!(
        stranger.connections_accepted(),
        0,
        "an address outside the topology was dialled"
    );

    // Circular MOVED between two known primaries ends within the hop limit.
    let (x, y) = (
        ScriptedNode::start().unwrap(),
        ScriptedNode::start().unwrap(),
    );
    let topology = Topology::new();
    topology.report(slotguard_core::controller::ViewLoaded::new(&ClusterView {
        source: node_addr(&x),
        shards: vec![
            ShardView {
                slots: vec![(0, 8191)],
                primary: nv(&x),
                replicas: vec![],
            },
            ShardView {
                slots: vec![(8192, 16383)],
                primary: nv(&y),
                replicas: vec![],
            },
        ],
        current_epoch: Some(1),
        state_ok: Some(true),
    }));
    let key = "k"; // slot 7629: x
    assert!(slot <= 8191);
    x.script(key, Action::error(&format!("MOVED {slot} {}", y.addr())));
    y.script(key, Action::error(&format!("MOVED {slot} {}", x.addr())));
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let stack = ServiceBuilder::new()
        .layer(RedirectLayer::new(topology.clone()))
        .service(leaf);
    let req = CacheRequest::get(key)
        .to_node(node_addr(&x), Role::Primary)
        .with_timeout(Duration::from_secs(5));
    let err = stack.oneshot(req).await.unwrap_err();
    assert_eq!(classify(&err), Failure::TooManyRedirects, "{err}");
    let gets = x.command_count("GET") + y.command_count("GET");
    assert!(gets <= 6, "{gets} GETs: more than the first try and 5 hops");
}
