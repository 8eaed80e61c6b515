use std::fmt;
use std::sync::Arc;

use slotguard_core::observe::{Observation, RefreshOutcome, RefreshTrigger};
use slotguard_core::{BoxError, Topology, TopologySource};
use tower::Layer;

use super::config::RefreshConfig;
use super::refresher::{RefreshStats, Refresher};
use super::SlotRefresh;

/// Applies [`SlotRefresh`] to a service. See the [module docs](super).
#[derive(Clone)]
pub struct SlotRefreshLayer {
    refresher: Arc<Refresher>,
}

impl fmt::Debug for SlotRefreshLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotRefreshLayer")
            .field("refresher", &self.refresher)
            .finish()
    }
}

impl SlotRefreshLayer {
    /// A layer keeping `topology` fresh from `source`, with default settings.
    ///
    /// No map is loaded and nothing runs yet: [`start`](Self::start) the
    /// refresher (requests made before the first map wait for it, up to
    /// [`RefreshConfig::initial_wait`]), or use [`SlotRefreshLayer::load`]
    /// to load it before serving.
    pub fn new(topology: Topology, source: impl TopologySource) -> Self {
        Self::with_config(topology, source, RefreshConfig::default())
    }

    /// Like [`new`](Self::new), with explicit settings.
    pub fn with_config(
        topology: Topology,
        source: impl TopologySource,
        config: RefreshConfig,
    ) -> Self {
        Self {
            refresher: Arc::new(Refresher::new(topology, Arc::new(source), config)),
        }
    }

    /// Load the first map now (from the source's seeds) and
    /// [`start`](Self::start) the background refresher. Fails when no seed
    /// answers.
    pub async fn load(self) -> Result<Self, BoxError> {
        let view = self
            .refresher
            .source
            .fetch_first(self.refresher.source.seeds())
            .await?;
        self.refresher
            .topology
            .report(slotguard_core::controller::ViewLoaded::new(&view));
        self.refresher
            .topology
            .observe(|| Observation::TopologyRefresh {
                trigger: RefreshTrigger::Initial,
                outcome: RefreshOutcome::Changed,
            });
        self.refresher.start();
        Ok(self)
    }

    /// Start the background refresher (periodic and requested rounds; the
    /// first map when none is loaded) on the topology's
    /// [`ClusterController`](slotguard_core::ClusterController), once: the
    /// controller owns it, and its shutdown stops it. Needs a tokio runtime;
    /// nothing starts from a request.
    pub fn start(&self) {
        self.refresher.start();
    }

    /// Refresh now (one round: several views, majority wins) and wait for it.
    pub async fn refresh_now(&self) -> Result<(), BoxError> {
        self.refresher
            .round(slotguard_core::observe::RefreshTrigger::Manual)
            .await
    }

    /// Stop the background refresher and wait until its task has ended
    /// (a round in progress is abandoned); it is not started again. The
    /// topology's `ClusterController::shutdown` stops it too, with every
    /// other task of the stack.
    pub async fn shutdown(&self) {
        self.refresher.shutdown().await;
    }

    /// The topology this layer keeps fresh.
    pub fn topology(&self) -> &Topology {
        &self.refresher.topology
    }

    /// Refresh counters.
    pub fn stats(&self) -> Arc<RefreshStats> {
        self.refresher.stats.clone()
    }
}

impl<S> Layer<S> for SlotRefreshLayer {
    type Service = SlotRefresh<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SlotRefresh {
            inner,
            refresher: self.refresher.clone(),
        }
    }
}
