use std::sync::Arc;

use slotguard_core::Topology;
use tower::Layer;

use super::hedge::{HedgeStats, Hedger};
use super::policy::FailoverPolicy;
use super::{ReplicaFailover, Shared};
use crate::attempt::Proto;

/// Applies [`ReplicaFailover`] to a service. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct ReplicaFailoverLayer {
    shared: Arc<Shared>,
}

impl ReplicaFailoverLayer {
    /// Fail reads over to replicas of `topology`'s shards, default policy.
    pub fn new(topology: Topology) -> Self {
        Self::with_policy(topology, FailoverPolicy::default())
    }

    /// Fail over with `policy`.
    pub fn with_policy(topology: Topology, policy: FailoverPolicy) -> Self {
        let hedger = policy.hedge.clone().map(Hedger::new);
        Self {
            shared: Arc::new(Shared {
                topology,
                policy,
                hedger,
            }),
        }
    }

    /// What hedged reads did so far, over every service this layer made
    /// (they share one hedge budget). All zero when hedging is off.
    pub fn hedge_stats(&self) -> HedgeStats {
        self.shared
            .hedger
            .as_ref()
            .map_or_else(HedgeStats::default, Hedger::stats)
    }
}

impl<S: Clone> Layer<S> for ReplicaFailoverLayer {
    type Service = ReplicaFailover<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReplicaFailover {
            proto: Arc::new(Proto::new(inner.clone(), self.shared.clone())),
            inner,
        }
    }
}
