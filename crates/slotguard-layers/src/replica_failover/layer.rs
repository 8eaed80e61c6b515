use std::sync::Arc;

use slotguard_core::Topology;
use tower::Layer;

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
        Self {
            shared: Arc::new(Shared { topology, policy }),
        }
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
