//! Both leaves behind one interface, for the conformance suite: each case
//! is written once, generic over [`Flavor`], and run for each leaf.

use std::time::Duration;

use slotguard_core::{CacheRequest, Leaf, SlotMap, Topology};
use slotguard_fred::{FredLeaf, FredLeafConfig};
use slotguard_layers::slot_refresh::{RefreshConfig, SlotRefreshLayer};
use slotguard_node::{Credentials, NodeConfig, NodeService};
use slotguard_testkit::LocalCluster;

use crate::seeds;
pub use crate::{Full, Routing};

/// Settings both leaves take.
#[derive(Debug, Clone, Default)]
pub struct Common {
    /// ACL user or password.
    pub credentials: Option<Credentials>,
    /// Per-command deadline (the leaf's default when `None`).
    pub command_timeout: Option<Duration>,
    /// Stall timeout (fred: also its unresponsive check).
    pub stall_timeout: Option<Duration>,
    /// Commands outstanding per node connection or client.
    pub max_in_flight: Option<usize>,
    /// Client tracking, publishing here.
    pub invalidations: Option<slotguard_core::invalidation::InvalidationBus>,
    /// TLS on every connection.
    pub tls: Option<slotguard_node::TlsConfig>,
}

/// A leaf under test.
pub trait Flavor: 'static {
    /// The leaf.
    type L: Leaf;
    /// Its name in messages.
    const NAME: &'static str;
    /// A leaf with `common` settings.
    fn leaf(common: &Common) -> Self::L;
}

/// The default leaf, `slotguard-node`.
#[derive(Debug)]
pub struct Node;

impl Flavor for Node {
    type L = NodeService;
    const NAME: &'static str = "node";
    fn leaf(common: &Common) -> NodeService {
        let mut c = NodeConfig::default();
        if let Some(t) = common.command_timeout {
            c = c.with_command_timeout(t);
        }
        if let Some(cred) = &common.credentials {
            c = c.with_credentials(cred.clone());
        }
        if let Some(t) = common.stall_timeout {
            c = c.with_stall_timeout(t);
        }
        if let Some(n) = common.max_in_flight {
            c = c.with_max_in_flight(n);
        }
        if let Some(bus) = &common.invalidations {
            c = c.with_invalidations(bus.clone());
        }
        if let Some(tls) = &common.tls {
            c = c.with_tls(tls.clone());
        }
        NodeService::new(c)
    }
}

/// The fred-backed leaf, `slotguard-fred`.
#[derive(Debug)]
pub struct Fred;

impl Flavor for Fred {
    type L = FredLeaf;
    const NAME: &'static str = "fred";
    fn leaf(common: &Common) -> FredLeaf {
        let mut c = FredLeafConfig::default();
        if let Some(t) = common.command_timeout {
            c = c.with_command_timeout(t);
        }
        if let Some(cred) = &common.credentials {
            c = c.with_credentials(cred.clone());
        }
        if let Some(t) = common.stall_timeout {
            c = c.with_stall_timeout(t).with_unresponsive_timeout(Some(t));
        }
        if let Some(n) = common.max_in_flight {
            c = c.with_max_in_flight(n);
        }
        if let Some(bus) = &common.invalidations {
            c = c.with_invalidations(bus.clone());
        }
        if let Some(tls) = &common.tls {
            c = c.with_tls(tls.clone());
        }
        FredLeaf::new(c)
    }
}

/// A started cluster, a leaf of flavor `F`, and the loaded map.
#[derive(Debug)]
pub struct LeafHarness<L: Leaf> {
    /// The leaf under test.
    pub leaf: L,
    /// Reads views through the leaf's clients.
    pub source: L::Source,
    /// The map loaded from the cluster.
    pub topology: Topology,
    /// The real cluster (dropped last: kills its processes).
    pub cluster: LocalCluster,
}

impl<L: Leaf> LeafHarness<L> {
    /// A leaf on `cluster`, its map loaded.
    pub async fn on(cluster: LocalCluster, leaf: L) -> Self {
        let topology = Topology::new();
        let leaf = leaf.with_topology(topology.clone());
        let source = leaf.topology_source(seeds(&cluster));
        let h = Self {
            leaf,
            source,
            topology,
            cluster,
        };
        h.reload().await;
        h
    }

    /// Fetch a fresh view and install it.
    pub async fn reload(&self) -> std::sync::Arc<SlotMap> {
        crate::reload(&self.source, &self.topology).await
    }

    /// Stamp `req` for its slot's primary.
    pub fn to_primary(&self, req: CacheRequest) -> CacheRequest {
        crate::to_primary(&self.topology, req)
    }

    /// Stamp `req` for its slot's first replica.
    pub fn to_replica(&self, req: CacheRequest) -> CacheRequest {
        crate::to_replica(&self.topology, req)
    }

    /// A refresh layer over this topology and source, its refresher
    /// started on the topology's controller.
    pub fn refresh_layer(&self) -> SlotRefreshLayer {
        let layer = SlotRefreshLayer::with_config(
            self.topology.clone(),
            self.source.clone(),
            RefreshConfig::default(),
        );
        layer.start();
        layer
    }

    /// slot_refresh → redirect → leaf.
    pub fn routing_stack(&self, refresh: &SlotRefreshLayer) -> Routing<L> {
        crate::routing_stack(refresh, &self.topology, self.leaf.clone())
    }

    /// The full degradation stack.
    pub fn full_stack(&self, refresh: &SlotRefreshLayer) -> Full<L> {
        crate::full_stack(refresh, &self.topology, self.leaf.clone())
    }
}
