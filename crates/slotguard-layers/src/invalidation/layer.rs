//! [`InvalidationLogLayer`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use slotguard_core::Topology;
use tower::Layer;

use super::config::LogConfig;
use super::log::Log;
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

impl<S> Layer<S> for InvalidationLogLayer {
    type Service = InvalidationLog<S>;

    fn layer(&self, inner: S) -> InvalidationLog<S> {
        InvalidationLog {
            inner,
            log: self.log.clone(),
            topology: self.topology.clone(),
        }
    }
}
