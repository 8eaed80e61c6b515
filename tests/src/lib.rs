//! Shared set-up for slotguard's scenario tests: a real [`LocalCluster`],
//! the default leaf (`slotguard-node`), and the topology read from the cluster itself.
//!
//! This crate only runs tests: a panic here is how a scenario reports failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use slotguard_core::{CacheRequest, NodeAddr, Role, SlotMap, Topology, TopologySource};
use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use slotguard_layers::redirect::{Redirect, RedirectLayer};
use slotguard_layers::replica_failover::{ReplicaFailover, ReplicaFailoverLayer};
use slotguard_layers::slot_refresh::{RefreshConfig, SlotRefresh, SlotRefreshLayer};
use slotguard_node::{NodeConfig, NodeService, NodeTopologySource};
pub use slotguard_testkit::{ClusterSpec, LocalCluster};

pub mod leaves;
pub mod scripted;
pub mod writes;

/// A started cluster plus a leaf and a loaded topology.
#[derive(Debug)]
pub struct Harness {
    /// The real cluster (dropped last: kills its processes).
    pub cluster: LocalCluster,
    /// The leaf under test.
    pub leaf: NodeService,
    /// Reads views through the leaf's clients.
    pub source: NodeTopologySource,
    /// The map loaded from the cluster.
    pub topology: Topology,
}

/// Every node of `cluster` as a [`NodeAddr`].
pub fn seeds(cluster: &LocalCluster) -> Vec<NodeAddr> {
    cluster.seeds().iter().map(|s| s.parse().unwrap()).collect()
}

/// `cluster`'s node `index` as a [`NodeAddr`].
pub fn addr(cluster: &LocalCluster, index: usize) -> NodeAddr {
    cluster.addr(index).parse().unwrap()
}

impl Harness {
    /// Start a default cluster (3 primaries, 1 replica each) and load its map.
    pub async fn start() -> Harness {
        Self::start_with(ClusterSpec::default(), NodeConfig::default()).await
    }

    /// Start a cluster from `spec` with a leaf configured by `config`.
    pub async fn start_with(spec: ClusterSpec, config: NodeConfig) -> Harness {
        let cluster = LocalCluster::start(spec).expect("cluster starts");
        Self::on(cluster, config).await
    }

    /// A leaf configured by `config` on an already started `cluster`.
    pub async fn on(cluster: LocalCluster, config: NodeConfig) -> Harness {
        let seeds = seeds(&cluster);
        Self::with_seeds(cluster, config, seeds).await
    }

    /// Like [`on`](Self::on), the map read from `seeds` only (not
    /// necessarily every node, nor the addresses the cluster announces).
    pub async fn with_seeds(
        cluster: LocalCluster,
        config: NodeConfig,
        seeds: Vec<NodeAddr>,
    ) -> Harness {
        let topology = Topology::new();
        let leaf = NodeService::new(config).with_topology(topology.clone());
        let source = NodeTopologySource::new(&leaf, seeds);
        let h = Harness {
            cluster,
            leaf,
            source,
            topology,
        };
        h.reload().await;
        h
    }

    /// Fetch a fresh view and install it.
    pub async fn reload(&self) -> std::sync::Arc<SlotMap> {
        reload(&self.source, &self.topology).await
    }

    /// Stamp `req` for the primary that owns its slot in the loaded map.
    pub fn to_primary(&self, req: CacheRequest) -> CacheRequest {
        to_primary(&self.topology, req)
    }

    /// Stamp `req` for the first replica of its slot's shard.
    pub fn to_replica(&self, req: CacheRequest) -> CacheRequest {
        to_replica(&self.topology, req)
    }
}

/// Fetch a fresh view through `source` and install it in `topology`.
pub async fn reload<S: TopologySource>(source: &S, topology: &Topology) -> std::sync::Arc<SlotMap> {
    let view = source
        .fetch_first(source.seeds())
        .await
        .expect("topology fetch");
    topology.report(slotguard_core::controller::ViewLoaded::new(&view))
}

/// Stamp `req` for the primary that owns its slot in `topology`'s map.
pub fn to_primary(topology: &Topology, req: CacheRequest) -> CacheRequest {
    let map = topology.load();
    let primary = map
        .primary_for_slot(req.slot())
        .expect("slot covered")
        .addr
        .clone();
    req.to_node(primary, Role::Primary)
}

/// Stamp `req` for the first replica of its slot's shard in `topology`'s map.
pub fn to_replica(topology: &Topology, req: CacheRequest) -> CacheRequest {
    let map = topology.load();
    let shard = map.shard_for_slot(req.slot()).expect("slot covered");
    let replica = shard.replicas.first().expect("a replica").addr.clone();
    req.to_node(replica, Role::Replica)
}

/// Write `value` under `key` through `stack`, then read `key` back
/// through it: the read's response.
pub async fn write_then_read<S, K>(
    stack: &S,
    key: K,
    value: impl Into<bytes::Bytes>,
) -> slotguard_core::CacheResponse
where
    S: tower::Service<CacheRequest, Response = slotguard_core::CacheResponse> + Clone,
    S::Error: std::fmt::Debug,
    K: Clone + Into<bytes::Bytes>,
{
    use tower::ServiceExt;
    stack
        .clone()
        .oneshot(CacheRequest::set(key.clone(), value, None))
        .await
        .unwrap();
    stack.clone().oneshot(CacheRequest::get(key)).await.unwrap()
}

/// Write each of `keys` through `stack`, with itself as its value.
pub async fn write_each<S, K>(stack: &S, keys: &[K])
where
    S: tower::Service<CacheRequest, Response = slotguard_core::CacheResponse> + Clone,
    S::Error: std::fmt::Debug,
    K: Clone + Into<bytes::Bytes>,
{
    use tower::ServiceExt;
    for k in keys {
        stack
            .clone()
            .oneshot(CacheRequest::set(k.clone(), k.clone(), None))
            .await
            .unwrap();
    }
}

/// Poll `f` until it returns `Some`, or panic after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// slot_refresh → redirect → leaf.
pub type Routing<L> = SlotRefresh<Redirect<L>>;
/// slot_refresh → redirect → replica_failover → circuit_breaker → leaf.
pub type Full<L> = SlotRefresh<Redirect<ReplicaFailover<CircuitBreaker<L>>>>;

/// The routing stack: slot_refresh → redirect → leaf.
pub type RoutingStack = Routing<NodeService>;

impl Harness {
    /// A refresh layer over this harness's topology and source, its
    /// refresher started on the topology's controller; the map is already
    /// loaded by [`Harness::start`].
    pub fn refresh_layer(&self, config: RefreshConfig) -> SlotRefreshLayer {
        let layer =
            SlotRefreshLayer::with_config(self.topology.clone(), self.source.clone(), config);
        layer.start();
        layer
    }

    /// slot_refresh → redirect → leaf, sharing this harness's topology.
    pub fn routing_stack(&self, refresh: &SlotRefreshLayer) -> RoutingStack {
        routing_stack(refresh, &self.topology, self.leaf.clone())
    }
}

/// slot_refresh → redirect → `leaf`, the layers sharing `topology`.
pub fn routing_stack<L: Clone>(
    refresh: &SlotRefreshLayer,
    topology: &Topology,
    leaf: L,
) -> Routing<L> {
    tower::ServiceBuilder::new()
        .layer(refresh.clone())
        .layer(RedirectLayer::new(topology.clone()))
        .service(leaf)
}

/// slot_refresh → redirect → replica_failover → circuit_breaker (per
/// node, publishing to `topology`) → `leaf`.
pub fn full_stack<L: Clone>(refresh: &SlotRefreshLayer, topology: &Topology, leaf: L) -> Full<L> {
    tower::ServiceBuilder::new()
        .layer(refresh.clone())
        .layer(RedirectLayer::new(topology.clone()))
        .layer(ReplicaFailoverLayer::new(topology.clone()))
        .layer(
            CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone()),
        )
        .service(leaf)
}

/// `cmdstat_<name>` calls on one node (0 when never called).
pub fn command_calls(cluster: &LocalCluster, index: usize, name: &str) -> u64 {
    let Ok(stats) = cluster.info(index, "commandstats") else {
        return 0;
    };
    stats
        .get(&format!("cmdstat_{name}"))
        .and_then(|v| v.split(',').find_map(|kv| kv.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The full degradation stack:
/// slot_refresh → redirect → replica_failover → circuit_breaker → leaf.
pub type FullStack = Full<NodeService>;

impl Harness {
    /// `n` keys that hash to slots of `primary`.
    pub fn keys_of(&self, primary: usize, n: usize) -> Vec<bytes::Bytes> {
        self.cluster
            .key_for_slot_of(primary, n)
            .unwrap()
            .into_iter()
            .map(bytes::Bytes::from)
            .collect()
    }

    /// `n` keys of `primary`, each written through `stack` with itself as
    /// its value.
    pub async fn write_keys_of(
        &self,
        stack: &FullStack,
        primary: usize,
        n: usize,
    ) -> Vec<bytes::Bytes> {
        let keys = self.keys_of(primary, n);
        write_each(stack, &keys).await;
        keys
    }

    /// slot_refresh → redirect → replica_failover → circuit_breaker (per
    /// node, publishing to the topology) → leaf.
    pub fn full_stack(&self, refresh: &SlotRefreshLayer) -> FullStack {
        full_stack(refresh, &self.topology, self.leaf.clone())
    }
}

/// Whether any string in `reply` is `word`.
pub fn mentions(reply: &slotguard_testkit::Reply, word: &[u8]) -> bool {
    use slotguard_testkit::Reply;
    match reply {
        Reply::Bulk(Some(b)) => b == word,
        Reply::Simple(s) => s.as_bytes() == word,
        Reply::Array(Some(items)) => items.iter().any(|r| mentions(r, word)),
        _ => false,
    }
}

/// Redis 7.0's CLUSTER SHARDS calls a replica `loading` until its peers
/// heard a non-zero replication offset from it (a young cluster, slowly
/// with a long node timeout), and the map takes that as not online, which
/// leaves failover no replica: wait for every view to age past that.
pub async fn no_replica_reported_loading(cluster: &LocalCluster) {
    eventually(
        "no replica reported loading",
        Duration::from_secs(30),
        || async {
            let loading = (0..cluster.len()).any(|i| {
                cluster
                    .command_str(i, &["CLUSTER", "SHARDS"])
                    .map_or(true, |r| mentions(&r, b"loading"))
            });
            (!loading).then_some(())
        },
    )
    .await;
}

/// A flood of reads at `slow` (one per `slow_keys`, all at once) while
/// each of `other_keys` is read from `other`, which must answer every one
/// within a second. The most commands seen in flight to `slow` meanwhile,
/// and the flood's outcomes.
pub async fn flood_while_reading_another<L: slotguard_core::Leaf>(
    leaf: &L,
    (slow, slow_keys): (&NodeAddr, &[String]),
    (other, other_keys): (&NodeAddr, &[String]),
) -> (
    usize,
    Vec<Result<slotguard_core::CacheResponse, slotguard_core::BoxError>>,
) {
    use tower::ServiceExt;
    let to =
        |a: &NodeAddr, k: &String| CacheRequest::get(k.clone()).to_node(a.clone(), Role::Primary);
    let flood: Vec<_> = slow_keys
        .iter()
        .map(|k| {
            let (leaf, req) = (leaf.clone(), to(slow, k));
            tokio::spawn(async move { leaf.oneshot(req).await })
        })
        .collect();
    let mut peak = 0;
    for key in other_keys {
        peak = peak.max(leaf.in_flight(slow));
        leaf.clone()
            .oneshot(to(other, key).with_timeout(Duration::from_secs(1)))
            .await
            .expect("the other node answers while one is saturated");
    }
    let mut outcomes = Vec::with_capacity(flood.len());
    for f in flood {
        outcomes.push(f.await.unwrap());
    }
    (peak, outcomes)
}

/// The [`CacheError`](slotguard_core::CacheError) inside `e`; panics when
/// `e` is some other error.
pub fn cache_err(e: &slotguard_core::BoxError) -> slotguard_core::CacheError {
    slotguard_core::as_cache_error(e)
        .cloned()
        .unwrap_or_else(|| panic!("not a CacheError: {e}"))
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Waits until `leaf` has a connection to every node of `topology`'s map.
pub async fn every_node_connected<L: slotguard_core::Leaf>(
    what: &str,
    topology: &Topology,
    leaf: &L,
) {
    eventually(what, Duration::from_secs(5), || async {
        let map = topology.load();
        let all = map.nodes().all(|n| leaf.is_connected(&n.addr));
        all.then_some(())
    })
    .await;
}

/// After `leaf`'s shutdown nothing is dialled again: a call fails fast
/// with a connection error, and every node of `cluster` sees our
/// connections closed (a moment after our side).
pub async fn stays_shut_down<L: slotguard_core::Leaf>(leaf: &L, cluster: &LocalCluster) {
    use tower::ServiceExt;
    let err = leaf
        .clone()
        .oneshot(CacheRequest::get("k").to_node(addr(cluster, 0), Role::Primary))
        .await
        .unwrap_err();
    assert!(
        matches!(
            cache_err(&err),
            slotguard_core::CacheError::Connection { .. }
        ),
        "{err}"
    );
    eventually(
        "every node sees our connections closed",
        Duration::from_secs(5),
        || async {
            (0..cluster.len())
                .all(|i| cluster.client_connections(i).unwrap() == 0)
                .then_some(())
        },
    )
    .await;
}

/// Puts node `index` to sleep (`DEBUG SLEEP` for 2 s) and waits until
/// `probe`, a read stamped for it, stops being answered through `leaf`:
/// the number of probes sent.
pub async fn put_to_sleep<L: slotguard_core::Leaf>(
    leaf: &L,
    cluster: &LocalCluster,
    index: usize,
    probe: &CacheRequest,
) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tower::ServiceExt;
    cluster.debug_sleep(index, 2.0).unwrap();
    let probes = AtomicU64::new(0);
    eventually("the node is asleep", Duration::from_secs(5), || async {
        probes.fetch_add(1, Ordering::Relaxed);
        let probe = probe.clone().with_timeout(Duration::from_millis(50));
        leaf.clone().oneshot(probe).await.is_err().then_some(())
    })
    .await;
    probes.into_inner()
}
