//! The controller's policy: what each report decides, as plain code.
//!
//! Typed reports in, decisions out. No I/O and no clock: every time a
//! decision depends on is an argument, so each rule is unit-tested on its
//! own (`policy/tests.rs`). The controller (`apply.rs`) carries the
//! decisions out on the topology's cells.
//!
//! | report | decision |
//! |---|---|
//! | call succeeded, or a reply that is no fault (`MOVED`, `WRONGTYPE`) | node up: latency fed, failures reset |
//! | call failed with a node fault | failure counted, `NodeFault` observed |
//! | … of class connection, indeterminate, protocol, cluster-down | also: writes fenced, one refresh |
//! | call failed cluster-wide, or on credentials/TLS | nothing |
//! | probe answered / failed | node up with its latency / failure counted |
//! | replication link probed | link status recorded |
//! | breaker state published | breaker open-until recorded |
//! | breaker transition to open | also: writes fenced, one refresh |
//! | `MOVED` | slot patched; a refresh unless the map already said so |
//! | stale-map symptom (uncovered slot, fenced write, failover, unconfirmed owner, asked) | one refresh |
//! | request failed with connection / cluster-down (routing layer) | one refresh |
//! | a view loaded outside a round | installed |
//! | a refresh round's views | majority view installed; in-majority verdicts; fences lifted; another round when a view is ahead |
//!
//! "One refresh" means: scheduled unless one is already pending (asked for
//! and not yet taken by the refresher), so a storm of reports before the
//! refresher runs collapses into one round.

use std::collections::HashMap;
use std::time::Duration;

use crate::addr::NodeAddr;
use crate::error::{CacheError, Failure};
use crate::observe::BreakerPhase;
use crate::response::CacheResponse;
use crate::topology::{ClusterView, PatchOutcome};

use super::report::StaleMap;

#[cfg(test)]
mod tests;

/// What one call's outcome says about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallVerdict {
    /// The node answered: feed its latency, reset its failures.
    Up,
    /// A node fault: count it and observe it; with `fence`, also fence the
    /// node's writes and schedule a refresh.
    Fault {
        /// The failure's class.
        failure: Failure,
        /// Whether we lost touch with the node.
        fence: bool,
    },
    /// Nothing about the node (the cluster's state, or our credentials).
    Nothing,
}

/// What the outcome of a call says about the node that served it.
///
/// A success, or a server reply that is not a fault (`MOVED`, `WRONGTYPE`,
/// ...), proves the node is up. A node fault counts as a failure; one that
/// means we lost touch with the node also fences its writes
/// ([`fences_writes`]). Other cluster-wide failures are the cluster's
/// state, not the node's; refused credentials or TLS say nothing about its
/// health.
#[inline]
pub(crate) fn call(outcome: &Result<CacheResponse, CacheError>) -> CallVerdict {
    match outcome {
        Ok(_) => CallVerdict::Up,
        Err(e) if e.failure().is_node_fault() => CallVerdict::Fault {
            failure: e.failure(),
            fence: fences_writes(e.failure()),
        },
        Err(e) if e.failure().is_cluster_wide() => CallVerdict::Nothing,
        Err(CacheError::Auth { .. } | CacheError::Tls { .. }) => CallVerdict::Nothing,
        Err(_) => CallVerdict::Up,
    }
}

/// Failures that mean we lost touch with the node (or it says it lost
/// touch with its cluster), as opposed to a node that answered busy. A
/// read's timeout is not among them: failover gives a primary's read a
/// short deadline of its own, and a slow primary is not a lost one (its
/// breaker, opened by such timeouts, fences it if they go on); a write's
/// timeout is `Indeterminate`.
pub(crate) fn fences_writes(failure: Failure) -> bool {
    matches!(
        failure,
        Failure::Connection | Failure::Indeterminate | Failure::Protocol | Failure::ClusterDown
    )
}

/// Whether a report that wants a refresh schedules one: only when none is
/// pending (asked for, not yet taken by the refresher), which covers it.
pub(crate) fn schedule_refresh(pending: bool) -> bool {
    !pending
}

/// Whether a stale-map symptom wants a refresh.
pub(crate) fn stale_map_refreshes(symptom: StaleMap) -> bool {
    match symptom {
        // The map may be wrong when a node is unreachable or says the
        // cluster is down; other failures are not the map's.
        StaleMap::RequestFailed { failure } => {
            matches!(failure, Failure::Connection | Failure::ClusterDown)
        }
        StaleMap::UncoveredSlot { .. }
        | StaleMap::FencedWrite { .. }
        | StaleMap::FailedOver { .. }
        | StaleMap::UnconfirmedOwner { .. }
        | StaleMap::Asked => true,
    }
}

/// Whether a `MOVED`, once patched into the map, wants a refresh: a map
/// that was wrong about this slot may be wrong about others, and a target
/// the map does not know is not trusted until a refresh confirms it. An
/// earlier patch or refresh that already knew asks for nothing.
pub(crate) fn moved_refreshes(patch: PatchOutcome) -> bool {
    patch != PatchOutcome::Unchanged
}

/// What a breaker's published state decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerVerdict {
    /// Fence the node's writes: a node failing this much may be stalled
    /// past a promotion.
    pub(crate) fence: bool,
    /// Schedule a refresh.
    pub(crate) refresh: bool,
    /// Observe the transition.
    pub(crate) observe: bool,
}

/// A breaker's state `phase`, published on a `transition` or re-published
/// (its open-until is recorded either way).
pub(crate) fn breaker(phase: BreakerPhase, transition: bool) -> BreakerVerdict {
    let opened = transition && phase == BreakerPhase::Open;
    BreakerVerdict {
        fence: opened,
        refresh: opened,
        observe: transition,
    }
}

/// What a health probe's answer says about its node: `Some(latency)` it is
/// up, `None` one more failure. A failed probe fences nothing: the prober
/// asks replicas, which take no writes.
pub(crate) fn probe_up(latency: Option<Duration>) -> bool {
    latency.is_some()
}

/// Whether a fence set at `fence_set_at` is lifted by a round requested at
/// `requested` that confirmed the node: only faults before the round's
/// request can be lifted by it (a fault during the round may postdate the
/// answer that confirmed the node).
/// Generic over the clock: the node's cell applies it to its own ticks.
pub(crate) fn lifts<T: Ord>(fence_set_at: Option<T>, requested: T) -> bool {
    fence_set_at.is_some_and(|at| at <= requested)
}

/// What a refresh round's views decide.
#[derive(Debug)]
pub(crate) struct RoundPlan<'v> {
    /// The view to install.
    pub(crate) chosen: &'v ClusterView,
    /// A view differs from the chosen one without being older: ask for
    /// another round to converge.
    pub(crate) again: bool,
    // Per node that answered: whether its own view is not stale and its
    // cluster state not failed.
    agree: HashMap<&'v NodeAddr, bool>,
    // Per node of the chosen view: whether the majority has it online.
    online: HashMap<&'v NodeAddr, bool>,
    // Nodes whose own answer makes them a primary with slots.
    self_primary: Vec<&'v NodeAddr>,
}

impl RoundPlan<'_> {
    /// Whether `node` is in the majority: its own view (if it answered)
    /// agrees, and the majority does not report it failed (a paused,
    /// replaced primary shows up as failed there).
    pub(crate) fn in_majority(&self, node: &NodeAddr) -> bool {
        self.agree.get(node).copied().unwrap_or(true)
            && self.online.get(node).copied().unwrap_or(true)
    }

    /// Whether this round confirms `primary` (of a shard with `has_slots`)
    /// as its slots' primary: it answered as their primary, agreeing with
    /// the majority, which also has it as primary.
    pub(crate) fn confirms(&self, primary: &NodeAddr, has_slots: bool) -> bool {
        self.in_majority(primary)
            && self.agree.get(primary).copied().unwrap_or(false)
            && self.self_primary.contains(&primary)
            && has_slots
    }

    /// Whether the fence of `primary`, set at `fence_set_at`, is lifted by
    /// this round, requested at `requested`.
    #[cfg(test)]
    pub(crate) fn lifts(
        &self,
        primary: &NodeAddr,
        has_slots: bool,
        fence_set_at: Option<tokio::time::Instant>,
        requested: tokio::time::Instant,
    ) -> bool {
        lifts(fence_set_at, requested) && self.confirms(primary, has_slots)
    }
}

/// Decide a refresh round from the views it fetched; `None` when no view is
/// usable.
///
/// A node is stale (partitioned, or a resumed primary that was replaced)
/// when its own view makes it a primary, the majority's does not, and its
/// epoch is older. Disagreeing about single slots is normal while a
/// migration or a promotion spreads by gossip: such nodes stay routable,
/// and a view that differs without being older asks for another round.
pub(crate) fn round(views: &[ClusterView]) -> Option<RoundPlan<'_>> {
    let chosen = choose_view(views)?;
    let fingerprint_of_chosen = fingerprint(chosen);
    let chosen_epoch = chosen.current_epoch.unwrap_or(0);
    let mut again = false;
    let self_primary = views
        .iter()
        .filter(|v| is_primary_in(v, &v.source))
        .map(|v| &v.source)
        .collect();
    let agree = views
        .iter()
        .map(|v| {
            let epoch = v.current_epoch.unwrap_or(0);
            let differs = fingerprint(v) != fingerprint_of_chosen;
            // Equal epochs are ambiguous: at a promotion the voters share
            // the new epoch before the new owner's config reaches them.
            // Only a strictly older epoch proves the node is behind.
            again |= differs && epoch >= chosen_epoch;
            let stale = epoch < chosen_epoch && claims_more(v, chosen, &v.source);
            (&v.source, !stale && v.state_ok != Some(false))
        })
        .collect();
    let online = chosen
        .shards
        .iter()
        .flat_map(|s| std::iter::once(&s.primary).chain(s.replicas.iter()))
        .map(|n| (&n.addr, n.online))
        .collect();
    Some(RoundPlan {
        chosen,
        again,
        agree,
        online,
        self_primary,
    })
}

/// Slot ranges with their primary, sorted: equal fingerprints, equal routing.
type Fingerprint<'a> = Vec<(u16, u16, &'a NodeAddr)>;

/// What makes two views agree: the same primary for every slot range.
fn fingerprint(view: &ClusterView) -> Fingerprint<'_> {
    let mut out: Vec<(u16, u16, &NodeAddr)> = view
        .shards
        .iter()
        .flat_map(|s| {
            s.slots
                .iter()
                .map(move |&(lo, hi)| (lo, hi, &s.primary.addr))
        })
        .collect();
    out.sort();
    out
}

/// Whether `view` makes `node` a primary with slots while `chosen` (the
/// majority) does not have it as a primary at all: a replaced or
/// partitioned primary that still thinks it owns its slots. A node that the
/// majority also has as a primary but that disagrees about single slots is
/// a migration in flight (the importing node learns first), not stale.
pub(crate) fn claims_more(view: &ClusterView, chosen: &ClusterView, node: &NodeAddr) -> bool {
    is_primary_in(view, node) && !is_primary_in(chosen, node)
}

/// Whether `view` has `node` as the primary of some slots.
fn is_primary_in(view: &ClusterView, node: &NodeAddr) -> bool {
    view.shards
        .iter()
        .any(|s| &s.primary.addr == node && !s.slots.is_empty())
}

/// Size of the largest group of healthy views that agree (for a fetcher
/// deciding it heard enough: see [`largest_agreement`](super::largest_agreement)).
pub(crate) fn largest_agreement(views: &[ClusterView]) -> usize {
    let fps: Vec<_> = views
        .iter()
        .filter(|v| v.state_ok != Some(false))
        .map(fingerprint)
        .collect();
    fps.iter()
        .map(|fp| fps.iter().filter(|other| *other == fp).count())
        .max()
        .unwrap_or(0)
}

/// The view to install: among the groups of agreeing views, the one covering
/// the most slots (a node caught mid-promotion may list a shard without its
/// slots, and an uncovered slot fails every request for it), then the one
/// holding the highest `cluster_current_epoch` (Redis resolves ownership
/// conflicts by epoch, and a minority partition cannot raise it: only a
/// majority elects), then the largest (a migration in flight: same epochs,
/// different views). Views from nodes that report `cluster_state:fail` only
/// count when no other node answered.
pub(crate) fn choose_view(views: &[ClusterView]) -> Option<&ClusterView> {
    let healthy: Vec<&ClusterView> = views.iter().filter(|v| v.state_ok != Some(false)).collect();
    let pool: Vec<&ClusterView> = if healthy.is_empty() {
        views.iter().collect()
    } else {
        healthy
    };
    let mut groups: Vec<(Fingerprint<'_>, Vec<&ClusterView>)> = Vec::new();
    for v in pool {
        let fp = fingerprint(v);
        match groups.iter_mut().find(|(g, _)| *g == fp) {
            Some((_, members)) => members.push(v),
            None => groups.push((fp, vec![v])),
        }
    }
    groups
        .into_iter()
        .max_by_key(|(_, members)| {
            let epoch = members
                .iter()
                .filter_map(|v| v.current_epoch)
                .max()
                .unwrap_or(0);
            (members[0].covered_slots(), epoch, members.len())
        })
        .and_then(|(_, members)| {
            members
                .into_iter()
                .max_by_key(|v| v.current_epoch.unwrap_or(0))
        })
}
