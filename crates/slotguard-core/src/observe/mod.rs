//! Observations: what the stack saw and did, as typed values.
//!
//! Layers and the leaf never count or log for telemetry themselves: they
//! *report* what they observed, and whoever listens decides what to make of
//! it (the telemetry layer turns it into span events and metrics; a cluster
//! controller can turn it into health verdicts and refreshes). Two ways in:
//!
//! - **Per request**, [`record`]: an observation about the request being
//!   served (it was redirected, failed over, answered from the near-cache…)
//!   goes into a small [`Record`] that the outermost listener (the
//!   telemetry layer) installs around each poll of the inner future with
//!   a [`Scope`] (or [`Scoped`]). **Report from a future's `poll`, not
//!   from `call`**: a layer that decides in `call` (a breaker's refusal, a
//!   write fence, a coalesced follower) keeps the observation in the
//!   future it returns and records it when that future is polled. The
//!   telemetry layer does not scope the inner `call`: leaving a scope
//!   between the inner call and building its own future would make the
//!   compiler copy the whole stack's future on every request (~130
//!   instructions over the bench's full stack). It
//!   comes back to that listener whether the request ends in a response or
//!   in an error, of any error type, so no response or error type changes
//!   for it. With no listener, [`record`] is one thread-local read and
//!   nothing else. An empty record is one null pointer: the healthy path
//!   allocates nothing; the first observation of a request allocates its
//!   fixed-capacity list (one allocation per degraded request).
//! - **Per stack**, [`Topology::observe`](crate::Topology::observe):
//!   events that belong to no one request (a breaker transition, a refresh
//!   round, a write fence set or lifted, a promotion seen) go to the
//!   [`Observer`] registered once on the stack's topology; a no-op (one
//!   atomic load) when none is.
//!
//! Why a scope (entered on the thread around each poll of the listener's
//! future) rather than a field on the response and a wrapper
//! on the error: every layer that retries (redirect, failover, fallback)
//! would have to merge the records of its attempts by hand, and every error
//! check would have to see through the wrapper. The scope needs neither.
//! Its limit: an observation made in another task (a `tower::buffer::Buffer`
//! worker between the listener and the layer, a spawned store load) is not
//! seen by the request; layers report such events per stack instead.
//!
//! ```
//! use slotguard_core::observe::{self, Observation, Record};
//! use slotguard_core::{Failure, NodeAddr};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let node: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//! // Nobody listens: a no-op.
//! observe::record(Observation::Coalesced);
//! let inner = async move {
//!     observe::record(Observation::NodeFault { node, failure: Failure::Timeout });
//!     "answer"
//! };
//! let (out, rec) = observe::scoped(inner).await;
//! assert_eq!(out, "answer");
//! assert_eq!(rec.len(), 1);
//! assert!(rec.iter().any(|o| matches!(o, Observation::NodeFault { .. })));
//! # }
//! ```

use crate::addr::NodeAddr;
use crate::error::Failure;
use crate::response::Path;
use crate::secondary::LoadCause;

/// One thing the stack saw or did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observation {
    /// A node answered `MOVED`: the slot belongs to `to` now.
    Moved {
        /// The hash slot.
        slot: u16,
        /// Its new owner.
        to: NodeAddr,
    },
    /// A node answered `ASK`: the key is on the migration target `to`.
    Ask {
        /// The hash slot.
        slot: u16,
        /// The migration target.
        to: NodeAddr,
    },
    /// A node answered `TRYAGAIN` (keys of the slot in mid-migration).
    TryAgain {
        /// The hash slot.
        slot: u16,
    },
    /// A read went to another node of its shard after a fault.
    ReplicaFailover {
        /// The node that failed, when the request had one.
        from: Option<NodeAddr>,
        /// The node tried next.
        to: NodeAddr,
    },
    /// An open breaker refused a call (nothing was sent).
    BreakerOpen {
        /// The node whose breaker is open; `None` for a global breaker.
        node: Option<NodeAddr>,
    },
    /// A read the cluster could not answer (or did not hold) went to the
    /// secondary path.
    SecondaryFallback {
        /// Why: a miss, or a cluster failure.
        cause: LoadCause,
        /// The cluster failure's class, for [`LoadCause::ClusterFailure`].
        failure: Option<Failure>,
    },
    /// The near-cache answered.
    NearCacheHit,
    /// The read shared another caller's in-flight call (a follower).
    Coalesced,
    /// Deletes logged for this request's slot were replayed to its owner.
    InvalidationReplayed {
        /// The hash slot.
        slot: u16,
    },
    /// A write was refused because its primary's writes are fenced (it may
    /// have been replaced while unreachable) or it is outside the majority.
    WriteFenced {
        /// The hash slot.
        slot: u16,
    },
    /// A node failed a call, with the failure's class.
    NodeFault {
        /// The node.
        node: NodeAddr,
        /// The class of the failure.
        failure: Failure,
    },
    /// The request was answered, by `path` (and `node` for cluster answers).
    Answered {
        /// The source.
        path: Path,
        /// The node, for cluster answers.
        node: Option<NodeAddr>,
    },
    /// The secondary store was asked for a key.
    StoreLoad {
        /// How it went.
        outcome: StoreOutcome,
    },
    /// A breaker changed state (per stack).
    BreakerTransition {
        /// The node; `None` for a global breaker.
        node: Option<NodeAddr>,
        /// The new state.
        to: BreakerPhase,
    },
    /// The store's own breaker opened or closed (per stack).
    StoreBreaker {
        /// Whether it is open now.
        open: bool,
    },
    /// A round of slot map refresh ended (per stack).
    TopologyRefresh {
        /// What started it.
        trigger: RefreshTrigger,
        /// How it ended.
        outcome: RefreshOutcome,
    },
    /// A refresh found a new primary for a shard (per stack).
    PrimaryChanged {
        /// The old primary.
        from: NodeAddr,
        /// The new one.
        to: NodeAddr,
    },
    /// Writes to a node now wait for a fresh view (per stack).
    FenceSet {
        /// The node.
        node: NodeAddr,
    },
    /// A fresh view confirmed the node: writes go to it again (per stack).
    FenceLifted {
        /// The node.
        node: NodeAddr,
    },
    /// The delete log replayed deletes in the background (per stack).
    InvalidationsReplayed {
        /// How many keys.
        count: u64,
    },
}

/// A breaker's state, as observations report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerPhase {
    /// Admitting calls.
    Closed,
    /// Admitting a few probes.
    HalfOpen,
    /// Refusing calls.
    Open,
}

impl BreakerPhase {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> u8 {
        match self {
            BreakerPhase::Closed => 0,
            BreakerPhase::HalfOpen => 1,
            BreakerPhase::Open => 2,
        }
    }

    /// A short lowercase name for spans and metrics.
    pub fn name(self) -> &'static str {
        match self {
            BreakerPhase::Closed => "closed",
            BreakerPhase::HalfOpen => "half_open",
            BreakerPhase::Open => "open",
        }
    }
}

/// What started a slot map refresh round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshTrigger {
    /// The first load.
    Initial,
    /// The periodic timer.
    Periodic,
    /// A layer or the leaf asked (`MOVED`, a connection fault, an uncovered
    /// slot, an open breaker).
    Requested,
    /// The application asked and waited.
    Manual,
}

impl RefreshTrigger {
    /// A short lowercase name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            RefreshTrigger::Initial => "initial",
            RefreshTrigger::Periodic => "periodic",
            RefreshTrigger::Requested => "requested",
            RefreshTrigger::Manual => "manual",
        }
    }
}

/// How a refresh round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// A new map was installed.
    Changed,
    /// The views agreed with the current map.
    Unchanged,
    /// No usable view.
    Failed,
}

impl RefreshOutcome {
    /// A short lowercase name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            RefreshOutcome::Changed => "changed",
            RefreshOutcome::Unchanged => "unchanged",
            RefreshOutcome::Failed => "failed",
        }
    }
}

/// How a secondary store load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreOutcome {
    /// The store had the key.
    Hit,
    /// The store does not hold the key.
    Miss,
    /// The store failed, timed out or was refused by its guard.
    Error,
}

impl StoreOutcome {
    /// A short lowercase name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            StoreOutcome::Hit => "hit",
            StoreOutcome::Miss => "miss",
            StoreOutcome::Error => "error",
        }
    }
}

/// Whoever listens to a stack's own events (see
/// [`Topology::set_observer`](crate::Topology::set_observer)).
///
/// Called on the thread that made the observation, sometimes under a lock
/// of the reporting component: keep it short and never call back into the
/// stack.
pub trait Observer: Send + Sync + 'static {
    /// One observation.
    fn observe(&self, observation: &Observation);
}

mod scope;

pub use self::scope::{listening, record, scope, scoped, Record, Scope, Scoped, RECORD_CAPACITY};
