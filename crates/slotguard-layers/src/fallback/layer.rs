use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use slotguard_core::invalidation::InvalidationBus;
use slotguard_core::{BoxError, SecondaryRequest};
use slotguard_core::{ClusterController, Topology};
use tower::{Layer, Service};

use super::config::FallbackConfig;
use super::state::State;
use super::store::{make_loader, MakeLoader, StoreGuard};
use super::{Core, Fallback};
use crate::circuit_breaker::BreakerState;

/// Applies [`Fallback`] to a service. See the [module docs](super).
///
/// Clones share one near-cache, one set of marks, one store breaker and one
/// load per key with each other and with every service they made.
pub struct FallbackLayer<St> {
    config: Arc<FallbackConfig>,
    bus: Option<InvalidationBus>,
    topology: Option<Topology>,
    pub(super) state: Arc<State>,
    store: Arc<StoreGuard>,
    make: MakeLoader,
    _store: PhantomData<fn() -> St>,
}

impl<St> Clone for FallbackLayer<St> {
    fn clone(&self) -> Self {
        FallbackLayer {
            config: self.config.clone(),
            bus: self.bus.clone(),
            topology: self.topology.clone(),
            state: self.state.clone(),
            store: self.store.clone(),
            make: self.make.clone(),
            _store: PhantomData,
        }
    }
}

impl<St> std::fmt::Debug for FallbackLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("config", &self.config)
            .field("invalidations", &self.bus.is_some())
            .field("topology", &self.topology.is_some())
            .field("store", &self.store)
            .finish()
    }
}

impl<St> FallbackLayer<St>
where
    St: Service<SecondaryRequest, Response = Option<Bytes>> + Clone + Send + 'static,
    St::Error: Into<BoxError>,
    St::Future: Send + 'static,
{
    /// Fall back to `store`, default settings, no invalidation bus, no
    /// slot-move flushes.
    pub fn new(store: St) -> Self {
        Self::build(make_loader(store), FallbackConfig::default(), None, None)
    }
}

impl<St> FallbackLayer<St> {
    fn build(
        make: MakeLoader,
        config: FallbackConfig,
        bus: Option<InvalidationBus>,
        topology: Option<Topology>,
    ) -> Self {
        // The topology's owner runs the layer's tasks; without a topology,
        // a controller of the layer's own.
        let controller = topology
            .as_ref()
            .map_or_else(ClusterController::new, Topology::controller);
        let state = State::new(
            &config,
            bus.as_ref().map(InvalidationBus::subscribe),
            topology.clone(),
            controller.clone(),
        );
        let store = Arc::new(StoreGuard::new(&make, &config, controller));
        FallbackLayer {
            config: Arc::new(config),
            bus,
            topology,
            state,
            store,
            make,
            _store: PhantomData,
        }
    }

    fn rebuild(self, config: FallbackConfig) -> Self {
        Self::build(self.make, config, self.bus, self.topology)
    }

    /// Use `config` (starts from a fresh near-cache: call before use).
    pub fn with_config(self, config: FallbackConfig) -> Self {
        self.rebuild(config)
    }

    /// Evict and mark keys the cluster says changed, flush what was read
    /// through a node whose tracking was reset, flush everything after lost
    /// events (starts from a fresh near-cache: call before use).
    pub fn with_invalidations(mut self, bus: &InvalidationBus) -> Self {
        self.bus = Some(bus.clone());
        let config = FallbackConfig::clone(&self.config);
        self.rebuild(config)
    }

    /// Flush a slot's entries when it changes owner in `topology`, and
    /// never serve an entry read from the slot's previous owner (starts
    /// from a fresh near-cache: call before use).
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        let config = FallbackConfig::clone(&self.config);
        self.rebuild(config)
    }

    /// Start the task that applies invalidations (from the
    /// [bus](Self::with_invalidations)) and slot moves (from the
    /// [topology](Self::with_topology)) to the near-cache, once, on the
    /// topology's [`ClusterController`] (the layer's own without a
    /// topology): call it after the `with_*` settings, inside a tokio
    /// runtime. Nothing starts from a request or from `layer()`; without a
    /// near-cache, or with neither a bus nor a topology, there is nothing
    /// to start.
    pub fn start(&self) {
        self.state.start_watch();
    }

    /// The controller that runs this layer's tasks (the watch, store loads,
    /// write-backs): the topology's, or the layer's own without one.
    pub fn controller(&self) -> &ClusterController {
        &self.state.controller
    }

    /// The settings.
    pub fn config(&self) -> &FallbackConfig {
        &self.config
    }

    /// The state of the store's breaker.
    pub fn store_breaker_state(&self) -> BreakerState {
        self.store.breaker_state()
    }

    /// The near-cache's entries and bytes (`(0, 0)` without one).
    pub fn near_cache_size(&self) -> (u64, u64) {
        self.state.near.as_ref().map_or((0, 0), |n| n.size())
    }

    /// Treat `key` as changed (as a `Delete` through the stack does):
    /// evicted from the near-cache, never served from it or a replica
    /// until an authoritative read.
    pub fn invalidate(&self, key: impl Into<Bytes>) {
        self.state.invalidate_key(&key.into());
    }

    /// Forget every near-cache entry.
    pub fn flush(&self) {
        self.state.flush_all();
    }
}

impl<S: Clone, St> Layer<S> for FallbackLayer<St> {
    type Service = Fallback<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            core: Arc::new(Core {
                state: self.state.clone(),
                store: self.store.clone(),
                config: self.config.clone(),
                spare: Mutex::new(inner.clone()),
            }),
            inner,
            _store: PhantomData,
        }
    }
}
