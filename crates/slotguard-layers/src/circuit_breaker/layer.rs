use std::sync::atomic::Ordering;
use std::sync::Arc;

use slotguard_core::{BreakerScope, Topology};
use tower::Layer;

use super::breaker::BreakerState;
use super::config::BreakerConfig;
use super::registry::Shared;
use super::CircuitBreaker;

/// Applies [`CircuitBreaker`] to a service. See the [module docs](super).
///
/// Clones share their breakers with each other and with every service they
/// made, so a clone kept aside reads the live state for telemetry.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// One breaker per node, keyed by the node each request is stamped for.
    /// Requests without a node pass unguarded.
    pub fn per_node(config: BreakerConfig) -> Self {
        Self {
            shared: Arc::new(Shared::per_node(config)),
        }
    }

    /// One breaker for every call.
    pub fn global(config: BreakerConfig) -> Self {
        Self {
            shared: Arc::new(Shared::global(config)),
        }
    }

    /// Publish each node's breaker state to `topology`
    /// ([`NodeHealth::breaker_open`](slotguard_core::NodeHealth::breaker_open):
    /// open or half-open), so an outer failover layer can skip those nodes.
    /// Has no effect on a global breaker.
    pub fn with_topology(self, topology: Topology) -> Self {
        self.shared.set_topology(topology);
        self
    }

    /// The settings.
    pub fn config(&self) -> &BreakerConfig {
        self.shared.config()
    }

    /// The state of the breaker for `scope`; `Closed` when this layer has
    /// no breaker for it (a node not called yet, or a scope of the other
    /// kind). An open breaker whose cool-down is over reports `HalfOpen`
    /// (the next call makes the transition: reading never changes state).
    pub fn state(&self, scope: &BreakerScope) -> BreakerState {
        self.shared.state(scope)
    }

    /// The state of every breaker (nodes sorted by address).
    pub fn states(&self) -> Vec<(BreakerScope, BreakerState)> {
        self.shared.states()
    }

    /// Transitions to `Open` so far, over all breakers.
    pub fn opened_total(&self) -> u64 {
        self.shared.counters().opened.load(Ordering::Relaxed)
    }

    /// Transitions to `HalfOpen` so far, over all breakers.
    pub fn half_opened_total(&self) -> u64 {
        self.shared.counters().half_opened.load(Ordering::Relaxed)
    }

    /// Transitions to `Closed` (recoveries) so far, over all breakers.
    pub fn closed_total(&self) -> u64 {
        self.shared.counters().closed.load(Ordering::Relaxed)
    }

    /// Calls refused with `CircuitOpen` so far, over all breakers.
    pub fn rejected_total(&self) -> u64 {
        self.shared.counters().rejected.load(Ordering::Relaxed)
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: self.shared.clone(),
        }
    }
}
