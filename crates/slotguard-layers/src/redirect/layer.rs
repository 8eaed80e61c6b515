use std::sync::Arc;

use slotguard_core::Topology;
use tower::Layer;

use super::policy::RedirectPolicy;
use super::{Redirect, Shared};
use crate::attempt::Proto;

/// Applies [`Redirect`] to a service. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct RedirectLayer {
    shared: Arc<Shared>,
}

impl RedirectLayer {
    /// Follow redirects with the default policy, patching `topology`.
    pub fn new(topology: Topology) -> Self {
        Self::with_policy(topology, RedirectPolicy::default())
    }

    /// Follow redirects with `policy`.
    pub fn with_policy(topology: Topology, policy: RedirectPolicy) -> Self {
        Self {
            shared: Arc::new(Shared { topology, policy }),
        }
    }
}

impl<S: Clone> Layer<S> for RedirectLayer {
    type Service = Redirect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Redirect {
            proto: Arc::new(Proto::new(inner.clone(), self.shared.clone())),
            inner,
        }
    }
}
