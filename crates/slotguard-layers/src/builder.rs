//! `ServiceBuilder` methods for slotguard's layers.

use slotguard_core::Topology;
use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::redirect::RedirectLayer;
use crate::slot_refresh::SlotRefreshLayer;

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds one method per slotguard layer to [`ServiceBuilder`].
///
/// ```no_run
/// use slotguard_core::Topology;
/// use slotguard_fred::{FredConfig, FredService, FredTopologySource};
/// use slotguard_layers::{slot_refresh::SlotRefreshLayer, ServiceBuilderExt};
/// use tower::ServiceBuilder;
///
/// # async fn run() -> Result<(), slotguard_core::BoxError> {
/// let topology = Topology::new();
/// let leaf = FredService::new(FredConfig::default()).with_topology(topology.clone());
/// let source = FredTopologySource::new(&leaf, vec!["127.0.0.1:7000".parse()?]);
/// let svc = ServiceBuilder::new()
///     .slot_refresh(SlotRefreshLayer::new(topology.clone(), source).load().await?)
///     .redirect(topology)
///     .service(leaf);
/// # let _ = svc; Ok(()) }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Route by the slot map and keep it fresh: [`SlotRefreshLayer`].
    fn slot_refresh(self, layer: SlotRefreshLayer) -> ServiceBuilder<Stack<SlotRefreshLayer, L>>;

    /// Follow `MOVED`/`ASK`/`TRYAGAIN` with the default policy: [`RedirectLayer`].
    fn redirect(self, topology: Topology) -> ServiceBuilder<Stack<RedirectLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn slot_refresh(self, layer: SlotRefreshLayer) -> ServiceBuilder<Stack<SlotRefreshLayer, L>> {
        self.layer(layer)
    }

    fn redirect(self, topology: Topology) -> ServiceBuilder<Stack<RedirectLayer, L>> {
        self.layer(RedirectLayer::new(topology))
    }
}
