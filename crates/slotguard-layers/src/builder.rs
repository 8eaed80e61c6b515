//! `ServiceBuilder` methods for slotguard's layers.

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::circuit_breaker::CircuitBreakerLayer;
use crate::coalesce::CoalesceLayer;
use crate::fallback::FallbackLayer;
use crate::invalidation::InvalidationLogLayer;
use crate::redirect::RedirectLayer;
use crate::replica_failover::ReplicaFailoverLayer;
use crate::slot_refresh::SlotRefreshLayer;
use crate::telemetry::TelemetryLayer;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds one method per slotguard layer to [`ServiceBuilder`]. Every method
/// takes its layer, configured (`Layer::new(..)` for the defaults); list
/// them in [`RECOMMENDED_ORDER`](crate::RECOMMENDED_ORDER), or let
/// [`RecommendedStack`](crate::RecommendedStack) do it.
///
/// ```no_run
/// use slotguard_core::Topology;
/// use slotguard_node::{NodeConfig, NodeService, NodeTopologySource};
/// use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
/// use slotguard_layers::redirect::RedirectLayer;
/// use slotguard_layers::replica_failover::ReplicaFailoverLayer;
/// use slotguard_layers::{slot_refresh::SlotRefreshLayer, ServiceBuilderExt};
/// use tower::ServiceBuilder;
///
/// # async fn run() -> Result<(), slotguard_core::BoxError> {
/// let topology = Topology::new();
/// let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
/// let source = NodeTopologySource::new(&leaf, vec!["127.0.0.1:7000".parse()?]);
/// let svc = ServiceBuilder::new()
///     .slot_refresh(SlotRefreshLayer::new(topology.clone(), source).load().await?)
///     .redirect(RedirectLayer::new(topology.clone()))
///     .replica_failover(ReplicaFailoverLayer::new(topology.clone()))
///     .circuit_breaker(CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology))
///     .service(leaf);
/// # let _ = svc; Ok(()) }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Route by the slot map and keep it fresh: [`SlotRefreshLayer`].
    fn slot_refresh(self, layer: SlotRefreshLayer) -> ServiceBuilder<Stack<SlotRefreshLayer, L>>;

    /// Follow `MOVED`/`ASK`/`TRYAGAIN`: [`RedirectLayer`]
    /// (`RedirectLayer::new(topology)` for the default policy).
    fn redirect(self, layer: RedirectLayer) -> ServiceBuilder<Stack<RedirectLayer, L>>;

    /// Fail reads over to replicas: [`ReplicaFailoverLayer`]
    /// (`ReplicaFailoverLayer::new(topology)` for the default policy).
    fn replica_failover(
        self,
        layer: ReplicaFailoverLayer,
    ) -> ServiceBuilder<Stack<ReplicaFailoverLayer, L>>;

    /// Fail fast on sick nodes (or globally): [`CircuitBreakerLayer`].
    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;

    /// Answer misses and cluster failures from a near-cache and the
    /// authoritative store: [`FallbackLayer`].
    fn fallback<St>(self, layer: FallbackLayer<St>) -> ServiceBuilder<Stack<FallbackLayer<St>, L>>;

    /// Share one call among identical in-flight reads: [`CoalesceLayer`]
    /// (pass a clone of the layer to read its counters).
    fn coalesce(self, layer: CoalesceLayer) -> ServiceBuilder<Stack<CoalesceLayer, L>>;

    /// Replay recent deletes to a slot's new owner after a failover:
    /// [`InvalidationLogLayer`].
    fn invalidation_log(
        self,
        layer: InvalidationLogLayer,
    ) -> ServiceBuilder<Stack<InvalidationLogLayer, L>>;

    /// One span and the metrics per request, outermost: [`TelemetryLayer`]
    /// (pass a clone of the layer to read its [stats](TelemetryLayer::stats)).
    fn telemetry(self, layer: TelemetryLayer) -> ServiceBuilder<Stack<TelemetryLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn slot_refresh(self, layer: SlotRefreshLayer) -> ServiceBuilder<Stack<SlotRefreshLayer, L>> {
        self.layer(layer)
    }

    fn redirect(self, layer: RedirectLayer) -> ServiceBuilder<Stack<RedirectLayer, L>> {
        self.layer(layer)
    }

    fn replica_failover(
        self,
        layer: ReplicaFailoverLayer,
    ) -> ServiceBuilder<Stack<ReplicaFailoverLayer, L>> {
        self.layer(layer)
    }

    fn circuit_breaker(
        self,
        layer: CircuitBreakerLayer,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(layer)
    }

    fn fallback<St>(self, layer: FallbackLayer<St>) -> ServiceBuilder<Stack<FallbackLayer<St>, L>> {
        self.layer(layer)
    }

    fn coalesce(self, layer: CoalesceLayer) -> ServiceBuilder<Stack<CoalesceLayer, L>> {
        self.layer(layer)
    }

    fn invalidation_log(
        self,
        layer: InvalidationLogLayer,
    ) -> ServiceBuilder<Stack<InvalidationLogLayer, L>> {
        self.layer(layer)
    }

    fn telemetry(self, layer: TelemetryLayer) -> ServiceBuilder<Stack<TelemetryLayer, L>> {
        self.layer(layer)
    }
}

#[cfg(test)]
mod tests {
    use slotguard_core::{BoxError, CacheRequest, CacheResponse, Path, Topology};
    use tower::util::BoxCloneService;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    use super::ServiceBuilderExt;
    use crate::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};

    fn assert_send<T: Send>(_: &T) {}

    /// A leaf that is `Send` but not `Sync` (as `BoxCloneService` is) fits
    /// under every layer, and the stack's response future is `Send`.
    #[test]
    fn a_send_only_leaf_fits_the_stack() {
        let leaf: BoxCloneService<CacheRequest, CacheResponse, BoxError> =
            BoxCloneService::new(service_fn(|req: CacheRequest| async move {
                let node = req.node().cloned().ok_or("unrouted")?;
                Ok::<_, BoxError>(CacheResponse::from_node(None, node, Path::Primary))
            }));
        let topology = Topology::new();
        let svc = ServiceBuilder::new()
            .coalesce(crate::coalesce::CoalesceLayer::new())
            .invalidation_log(crate::invalidation::InvalidationLogLayer::new(
                topology.clone(),
            ))
            .redirect(crate::redirect::RedirectLayer::new(topology.clone()))
            .replica_failover(crate::replica_failover::ReplicaFailoverLayer::new(
                topology.clone(),
            ))
            .circuit_breaker(CircuitBreakerLayer::per_node(BreakerConfig::default()))
            .service(leaf);
        let fut = svc.oneshot(CacheRequest::get("k"));
        assert_send(&fut);
    }
}
