//! The stack's observer on the topology: who listens to events that belong
//! to no one request (see [`observe`](crate::observe)).

use std::sync::Arc;

use super::{SlotMap, Topology};
use crate::observe::{Observation, Observer};

impl Topology {
    /// Register the listener of this stack's own events: breaker
    /// transitions, refresh rounds, write fences, promotions (see
    /// [`observe`](crate::observe)). One per topology; a later call
    /// replaces it.
    pub fn set_observer(&self, observer: Arc<dyn Observer>) {
        self.inner
            .observer
            .store(Some(Arc::new(Box::new(Forward(observer)))));
    }

    /// Whether an observer is registered.
    pub fn is_observed(&self) -> bool {
        self.inner.observer.load().is_some()
    }

    /// Report a stack event to the observer, if any; `make` runs only
    /// when one is registered.
    pub fn observe(&self, make: impl FnOnce() -> Observation) {
        if let Some(observer) = &*self.inner.observer.load() {
            observer.observe(&make());
        }
    }
}

/// Forwards to a shared observer (an `ArcSwapOption` holds sized values).
pub(super) struct Forward(Arc<dyn Observer>);

impl Observer for Forward {
    fn observe(&self, observation: &Observation) {
        self.0.observe(observation);
    }
}

impl Topology {
    /// A shard whose slots the old map gave to a primary, now served by
    /// what was that primary's replica: a promotion, seen.
    pub(super) fn report_promotions(&self, old: &SlotMap, new: &SlotMap) {
        for shard in &new.shards {
            let Some(&(lo, _)) = shard.slots.first() else {
                continue;
            };
            let Some(before) = old.shard_for_slot(lo) else {
                continue;
            };
            if before.primary.addr != shard.primary.addr
                && before.replicas.iter().any(|r| r.addr == shard.primary.addr)
            {
                self.observe(|| Observation::PrimaryChanged {
                    from: before.primary.addr.clone(),
                    to: shard.primary.addr.clone(),
                });
            }
        }
    }
}
