//! [`InvalidationLogLayer`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use slotguard_core::{BoxError, CacheRequest, CacheResponse, Topology};
use tower::{Layer, Service};

use super::config::LogConfig;
use super::log::Log;
use super::replay;
use super::InvalidationLog;

/// Keeps recent deletes and replays them to a slot's new owner. See the
/// [module docs](super).
///
/// Every service this layer makes (and every clone of it) shares one log.
#[derive(Debug, Clone)]
pub struct InvalidationLogLayer {
    pub(crate) log: Arc<Log>,
    pub(crate) topology: Topology,
}

impl InvalidationLogLayer {
    /// A layer with the default [`LogConfig`], reading slot owners from
    /// `topology`.
    pub fn new(topology: Topology) -> Self {
        Self::with_config(topology, LogConfig::default())
    }

    /// A layer with `config`.
    pub fn with_config(topology: Topology, config: LogConfig) -> Self {
        Self {
            log: Arc::new(Log::new(config)),
            topology,
        }
    }

    /// Start the replayer on the topology's
    /// [`ClusterController`](slotguard_core::ClusterController), once: it
    /// sends logged deletes again to a slot's new owner, through the
    /// service this layer wraps (it waits for [`Layer::layer`] to give it
    /// one). Without it deletes are still logged and distrusted answers
    /// turned into misses; nothing starts from a request. Needs a tokio
    /// runtime.
    pub fn start(&self) {
        replay::start(&self.log, &self.topology);
    }

    /// The settings.
    pub fn config(&self) -> &LogConfig {
        &self.log.config
    }

    /// Keys in the log now.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes logged since creation.
    pub fn recorded_total(&self) -> u64 {
        self.log.counters.recorded.load(Ordering::Relaxed)
    }

    /// Deletes replayed to (and acknowledged by) a slot's new owner.
    pub fn replayed_total(&self) -> u64 {
        self.log.counters.replayed.load(Ordering::Relaxed)
    }

    /// Reads of a recently deleted key answered as a miss because the node
    /// that answered is not known to hold the delete.
    pub fn distrusted_total(&self) -> u64 {
        self.log.counters.distrusted.load(Ordering::Relaxed)
    }

    /// Deletes forgotten before their window ended, to stay within
    /// [`LogConfig::capacity`].
    pub fn evicted_total(&self) -> u64 {
        self.log.counters.evicted.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for InvalidationLogLayer
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Service = InvalidationLog<S>;

    fn layer(&self, inner: S) -> InvalidationLog<S> {
        // The replayer (started by `start`) sends through a clone of the
        // service below, taken before this one is used.
        replay::register(&self.log, inner.clone());
        InvalidationLog {
            inner,
            log: self.log.clone(),
        }
    }
}
