//! The controller carrying out its policy: the only code that writes the
//! slot map, node health, write fences, majority verdicts and the refresh
//! schedule. Each report asks [`policy`](super::policy) what to do, then
//! writes it on the topology's cells (lock-free atomics for node health).

use std::sync::Arc;

use super::policy::{self, CallVerdict};
use super::report::sealed::Apply;
use super::report::{
    BreakerChanged, CallEnded, LinkStatus, Probed, RoundApplied, RoundFetched, SlotMoved, StaleMap,
    ViewLoaded,
};
use crate::addr::NodeAddr;
use crate::observe::{self, Observation};
use crate::topology::{NodeHealth, PatchOutcome, SlotMap, Topology};

/// Schedule one refresh unless one is pending (the policy's collapse).
pub(super) fn want_refresh(topology: &Topology) {
    if policy::schedule_refresh(topology.mark_refresh_pending()) {
        topology.request_refresh();
    }
}

/// Fence `node`'s writes (observed when the fence is new).
fn fence(topology: &Topology, node: &NodeAddr, health: &NodeHealth) {
    if health.fence_writes() {
        topology.observe(|| Observation::FenceSet { node: node.clone() });
    }
}

impl Apply for CallEnded<'_> {
    type Reply = ();

    /// The healthy path: one registry load and the cell's atomics, as the
    /// leaf's own bookkeeping cost before.
    #[inline]
    fn apply(self, topology: &Topology) {
        let verdict = policy::call(self.outcome);
        if verdict == CallVerdict::Nothing {
            return;
        }
        topology.with_health(self.node, |health| match verdict {
            CallVerdict::Up => health.record_success(self.started.elapsed()),
            CallVerdict::Fault { failure, fence: f } => {
                health.record_failure();
                observe::record(Observation::NodeFault {
                    node: self.node.clone(),
                    failure,
                });
                if f {
                    // The node may be stalled or cut off past a promotion:
                    // no write goes to it until a fresh view confirms it.
                    fence(topology, self.node, health);
                    want_refresh(topology);
                }
            }
            CallVerdict::Nothing => {}
        });
    }
}

impl Apply for Probed<'_> {
    type Reply = ();

    fn apply(self, topology: &Topology) {
        topology.with_health(self.node, |health| {
            match self.latency.filter(|_| policy::probe_up(self.latency)) {
                Some(latency) => health.record_success(latency),
                None => health.record_failure(),
            }
        });
    }
}

impl Apply for LinkStatus<'_> {
    type Reply = ();

    fn apply(self, topology: &Topology) {
        topology.with_health(self.node, |health| {
            health.set_replication(self.up, self.last_io);
        });
    }
}

impl Apply for BreakerChanged<'_> {
    type Reply = ();

    /// Reported under the breaker's lock, so racing transitions reach the
    /// topology in the order they happened.
    fn apply(self, topology: &Topology) {
        let verdict = policy::breaker(self.phase, self.transition);
        topology.with_health(self.node, |health| {
            // Open: routing avoids the node until the cool-down ends, then
            // sends it the half-open probes.
            health.set_breaker_open_until(self.open_until);
            if verdict.fence {
                fence(topology, self.node, health);
            }
        });
        if verdict.observe {
            topology.observe(|| Observation::BreakerTransition {
                node: Some(self.node.clone()),
                to: self.phase,
            });
        }
        if verdict.refresh {
            want_refresh(topology);
        }
    }
}

impl Apply for SlotMoved<'_> {
    type Reply = PatchOutcome;

    fn apply(self, topology: &Topology) -> PatchOutcome {
        let patch = topology.patch_slot(self.slot, self.to);
        if policy::moved_refreshes(patch) {
            want_refresh(topology);
        }
        patch
    }
}

impl Apply for StaleMap {
    type Reply = ();

    fn apply(self, topology: &Topology) {
        if policy::stale_map_refreshes(self) {
            want_refresh(topology);
        }
    }
}

impl Apply for ViewLoaded<'_> {
    type Reply = Arc<SlotMap>;

    fn apply(self, topology: &Topology) -> Arc<SlotMap> {
        topology.install(self.view)
    }
}

impl Apply for RoundFetched<'_> {
    type Reply = Option<RoundApplied>;

    fn apply(self, topology: &Topology) -> Option<RoundApplied> {
        let plan = policy::round(self.views)?;
        let map = topology.install(plan.chosen);
        if plan.again {
            want_refresh(topology);
        }
        for node in map.nodes() {
            node.health.set_in_majority(plan.in_majority(&node.addr));
        }
        // Writes go again to a fenced primary once this round — requested
        // after its last fault — heard it answer as the primary of its
        // slots, agreeing with the majority, which also has it as primary.
        // Only faults before the round's request can be lifted
        // (`policy::lifts`, which the cell applies in one compare-and-clear
        // so that a fault racing the round keeps its fence).
        let mut lifted = Vec::new();
        for shard in map.shards() {
            let p = &shard.primary;
            if p.health.writes_fenced()
                && plan.confirms(&p.addr, !shard.slots.is_empty())
                && p.health.confirm_writes(self.requested)
            {
                topology.observe(|| Observation::FenceLifted {
                    node: p.addr.clone(),
                });
                lifted.push(p.addr.clone());
            }
        }
        Some(RoundApplied { map, lifted })
    }
}
