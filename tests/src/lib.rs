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
        let topology = Topology::new();
        let leaf = NodeService::new(config).with_topology(topology.clone());
        let source = NodeTopologySource::new(&leaf, seeds(&cluster));
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
        let view = self
            .source
            .fetch_first(self.source.seeds())
            .await
            .expect("topology fetch");
        self.topology
            .report(slotguard_core::controller::ViewLoaded { view: &view })
    }

    /// Stamp `req` for the primary that owns its slot in the loaded map.
    pub fn to_primary(&self, req: CacheRequest) -> CacheRequest {
        let map = self.topology.load();
        let primary = map
            .primary_for_slot(req.slot())
            .expect("slot covered")
            .addr
            .clone();
        req.to_node(primary, Role::Primary)
    }

    /// Stamp `req` for the first replica of its slot's shard.
    pub fn to_replica(&self, req: CacheRequest) -> CacheRequest {
        let map = self.topology.load();
        let shard = map.shard_for_slot(req.slot()).expect("slot covered");
        let replica = shard.replicas.first().expect("a replica").addr.clone();
        req.to_node(replica, Role::Replica)
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

/// The routing stack: slot_refresh → redirect → leaf.
pub type RoutingStack = SlotRefresh<Redirect<NodeService>>;

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
        tower::ServiceBuilder::new()
            .layer(refresh.clone())
            .layer(RedirectLayer::new(self.topology.clone()))
            .service(self.leaf.clone())
    }
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
pub type FullStack = SlotRefresh<Redirect<ReplicaFailover<CircuitBreaker<NodeService>>>>;

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
        use tower::ServiceExt;
        let keys = self.keys_of(primary, n);
        for k in &keys {
            stack
                .clone()
                .oneshot(CacheRequest::set(k.clone(), k.clone(), None))
                .await
                .unwrap();
        }
        keys
    }

    /// slot_refresh → redirect → replica_failover → circuit_breaker (per
    /// node, publishing to the topology) → leaf.
    pub fn full_stack(&self, refresh: &SlotRefreshLayer) -> FullStack {
        tower::ServiceBuilder::new()
            .layer(refresh.clone())
            .layer(RedirectLayer::new(self.topology.clone()))
            .layer(ReplicaFailoverLayer::new(self.topology.clone()))
            .layer(
                CircuitBreakerLayer::per_node(BreakerConfig::default())
                    .with_topology(self.topology.clone()),
            )
            .service(self.leaf.clone())
    }
}

/// Whether any string in `reply` is `word`.
fn mentions(reply: &slotguard_testkit::Reply, word: &[u8]) -> bool {
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
