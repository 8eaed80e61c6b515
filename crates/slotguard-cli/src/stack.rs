//! The slotguard stack the demo and the benchmarks drive.
//!
//! One function builds it, so the layers under test are chosen in one place:
//! `slot_refresh → redirect → replica_failover → circuit_breaker → leaf`
//! (DESIGN.md §3), plus the replication health prober.

use std::sync::Arc;

use slotguard::fred::{HealthProber, ProberHandle};
use slotguard::layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard::layers::redirect::RedirectLayer;
use slotguard::layers::replica_failover::ReplicaFailoverLayer;
use slotguard::layers::slot_refresh::SlotRefreshLayer;
use slotguard::tower::util::BoxCloneService;
use slotguard::tower::ServiceBuilder;
use slotguard::{
    BoxError, CacheRequest, CacheResponse, FredConfig, FredService, FredTopologySource, NodeAddr,
    Topology,
};

/// The stack as one cloneable service (the boxing costs nothing measurable
/// next to a network round trip).
pub(crate) type Stack = BoxCloneService<CacheRequest, CacheResponse, BoxError>;

/// The layers [`build`] stacks, outermost first (printed with the results).
pub(crate) const DESCRIPTION: &str =
    "slot_refresh → redirect → replica_failover → circuit_breaker → fred leaf";

/// What the demo needs besides the service itself.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    /// The slot map the stack routes by.
    pub(crate) topology: Topology,
    /// The refresher of that map.
    pub(crate) refresh: SlotRefreshLayer,
    /// Keeps the replication health prober running while the stack lives.
    _prober: Arc<ProberHandle>,
}

impl Handles {
    /// Refresh the slot map now (after a fault, so the next phase starts
    /// from the cluster's real layout).
    pub(crate) async fn refresh_now(&self) -> Result<(), BoxError> {
        self.refresh.refresh_now().await
    }
}

/// Build the stack over the cluster reachable through `seeds`, with the
/// slot map loaded.
pub(crate) async fn build(seeds: Vec<NodeAddr>) -> Result<(Stack, Handles), BoxError> {
    let topology = Topology::new();
    // The defaults, as a user gets them: the demo shows the product, not a
    // tuning of it.
    let leaf = FredService::new(FredConfig::default()).with_topology(topology.clone());
    let source = FredTopologySource::new(&leaf, seeds);
    let refresh = SlotRefreshLayer::new(topology.clone(), source)
        .load()
        .await?;
    let breakers =
        CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone());
    let prober = HealthProber::new(&leaf, topology.clone()).spawn();
    let service = ServiceBuilder::new()
        .layer(refresh.clone())
        .layer(RedirectLayer::new(topology.clone()))
        .layer(ReplicaFailoverLayer::new(topology.clone()))
        .layer(breakers)
        .service(leaf);
    let handles = Handles {
        topology,
        refresh,
        _prober: Arc::new(prober),
    };
    Ok((BoxCloneService::new(service), handles))
}
