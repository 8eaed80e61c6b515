//! What components report to the controller: one type per kind of report,
//! each with the reply its reporter needs.
//!
//! These are not [`Observation`](crate::Observation)s: an observation
//! says what happened for whoever listens (telemetry), and needs no reply;
//! a report asks the owner of the cluster state to decide, and some
//! reporters need its answer (redirect needs the patched slot's outcome,
//! the refresher the installed map). The controller turns reports into
//! observations where telemetry wants them (a fence set or lifted, a
//! node's fault, a breaker transition).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::addr::NodeAddr;
use crate::error::{CacheError, Failure};
use crate::observe::BreakerPhase;
use crate::response::CacheResponse;
use crate::topology::{ClusterView, SlotMap, Topology};

/// A report to the cluster controller
/// ([`Topology::report`](crate::Topology::report)). Implemented by the
/// report types of [`controller`](super) only.
pub trait Report: sealed::Apply {}

pub(crate) mod sealed {
    use crate::topology::Topology;

    /// How the controller carries out a report (its decision and writes).
    /// Public in a private module: nameable only inside this crate.
    pub trait Apply {
        /// What the controller answers.
        type Reply;

        /// Decide and write.
        fn apply(self, topology: &Topology) -> Self::Reply;
    }
}

impl<R: sealed::Apply> Report for R {}

impl Topology {
    /// Report to the controller that owns this topology: it decides what
    /// the report does to the cluster state (the slot map, node health,
    /// write fences, majority verdicts, refreshes) and writes it. The one
    /// way in for everything but the controller itself.
    ///
    /// Lock-free and allocation-free for a call's outcome
    /// ([`CallEnded`]): this is inlined into the leaf's completion.
    #[inline]
    pub fn report<R: Report>(&self, report: R) -> R::Reply {
        report.apply(self)
    }
}

/// One call to `node`, begun at `started`, ended with `outcome`. A leaf
/// reports every call it made.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CallEnded<'a> {
    /// The node that served it.
    pub node: &'a NodeAddr,
    /// When the call began (its latency is measured from here).
    pub started: Instant,
    /// How it ended.
    pub outcome: &'a Result<CacheResponse, CacheError>,
}

impl<'a> CallEnded<'a> {
    /// The report, field by field.
    pub fn new(
        node: &'a NodeAddr,
        started: Instant,
        outcome: &'a Result<CacheResponse, CacheError>,
    ) -> Self {
        Self {
            node,
            started,
            outcome,
        }
    }
}

/// A health probe of `node`: answered after `latency`, or failed (`None`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Probed<'a> {
    /// The node probed.
    pub node: &'a NodeAddr,
    /// How long it took to answer; `None` when it did not.
    pub latency: Option<Duration>,
}

impl<'a> Probed<'a> {
    /// The report, field by field.
    pub fn new(node: &'a NodeAddr, latency: Option<Duration>) -> Self {
        Self { node, latency }
    }
}

/// A replica's replication link, as a probe read it
/// (`master_link_status`, `master_last_io_seconds_ago`).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct LinkStatus<'a> {
    /// The replica.
    pub node: &'a NodeAddr,
    /// Whether the link to its primary is up.
    pub up: bool,
    /// Since the last I/O on the link.
    pub last_io: Duration,
}

impl<'a> LinkStatus<'a> {
    /// The report, field by field.
    pub fn new(node: &'a NodeAddr, up: bool, last_io: Duration) -> Self {
        Self { node, up, last_io }
    }
}

/// The state of `node`'s breaker: `phase`, failing calls fast until
/// `open_until` (`None`: it admits calls). `transition` says the breaker
/// just changed to `phase` (false: the state is only re-published).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BreakerChanged<'a> {
    /// The node the breaker guards.
    pub node: &'a NodeAddr,
    /// Its state.
    pub phase: BreakerPhase,
    /// Until when it fails calls fast.
    pub open_until: Option<Instant>,
    /// Whether it just changed to `phase`.
    pub transition: bool,
}

impl<'a> BreakerChanged<'a> {
    /// The report, field by field.
    pub fn new(
        node: &'a NodeAddr,
        phase: BreakerPhase,
        open_until: Option<Instant>,
        transition: bool,
    ) -> Self {
        Self {
            node,
            phase,
            open_until,
            transition,
        }
    }
}

/// A node answered `MOVED`: `slot` belongs to `to`. Replies how the map
/// took it ([`PatchOutcome`](crate::PatchOutcome)).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SlotMoved<'a> {
    /// The hash slot.
    pub slot: u16,
    /// Its owner, says the node.
    pub to: &'a NodeAddr,
}

impl<'a> SlotMoved<'a> {
    /// The report, field by field.
    pub fn new(slot: u16, to: &'a NodeAddr) -> Self {
        Self { slot, to }
    }
}

/// Something suggesting the slot map is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleMap {
    /// No node of the map serves `slot`.
    UncoveredSlot {
        /// The hash slot.
        slot: u16,
    },
    /// A write to `slot` was refused: its primary is fenced or outside the
    /// majority.
    FencedWrite {
        /// The hash slot.
        slot: u16,
    },
    /// A routed request failed (only a connection or cluster-down failure
    /// says the map may be wrong).
    RequestFailed {
        /// The failure's class.
        failure: Failure,
    },
    /// A read failed over after `failure`: the map may be behind a
    /// promotion.
    FailedOver {
        /// The failure's class.
        failure: Failure,
    },
    /// The owner of `slot` is not confirmed for writes yet, and a write
    /// waits for a refresh to confirm it.
    UnconfirmedOwner {
        /// The hash slot.
        slot: u16,
    },
    /// The application (or a test) asked for a refresh.
    Asked,
}

/// A view fetched outside a refresh round (the first load, a fixture): the
/// controller installs it as it is. Replies the installed map.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ViewLoaded<'a> {
    /// The view.
    pub view: &'a ClusterView,
}

impl<'a> ViewLoaded<'a> {
    /// The report, field by field.
    pub fn new(view: &'a ClusterView) -> Self {
        Self { view }
    }
}

/// The views one refresh round fetched. Replies what the controller made
/// of them; `None` when no view was usable.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct RoundFetched<'a> {
    /// When the round began asking: only faults before it can be lifted by
    /// its views.
    pub requested: Instant,
    /// The views the nodes answered.
    pub views: &'a [ClusterView],
}

impl<'a> RoundFetched<'a> {
    /// The report, field by field.
    pub fn new(requested: Instant, views: &'a [ClusterView]) -> Self {
        Self { requested, views }
    }
}

/// What the controller made of a refresh round.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoundApplied {
    /// The map installed.
    pub map: Arc<SlotMap>,
    /// Primaries whose write fence the round lifted.
    pub lifted: Vec<NodeAddr>,
}
