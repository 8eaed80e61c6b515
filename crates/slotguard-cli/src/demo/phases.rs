//! What a demo run is made of: the phases, their plans, and what each fault
//! and phase did (times since the phase started).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Serialize;

use super::load::{Record, Tally};

/// The phases, in their canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum PhaseName {
    /// No fault: the baseline.
    Healthy,
    /// A primary frozen (SIGSTOP) until its replica is promoted, then
    /// resumed, with `cluster-require-full-coverage no` for the phase: the
    /// other shards keep answering, the frozen shard's reads go to its replica.
    PrimarySigstop,
    /// The same fault on Redis's default `cluster-require-full-coverage
    /// yes`: every shard answers CLUSTERDOWN around the promotion, and only
    /// the near-cache and the store can answer then.
    FullCoverageSigstop,
    /// A primary killed, its replica promoted, the old one restarted as a replica.
    PrimarySigkill,
    /// 520 slots moved between primaries under load.
    LiveMigration,
    /// `CLUSTER FAILOVER` on a replica.
    ManualFailover,
    /// Every node frozen (SIGSTOP) for a few seconds, then resumed: the
    /// cluster answers nothing, the near-cache and the store answer reads.
    ClusterOutage,
    /// Redis's default 15 s node timeout for the phase, and a primary
    /// frozen for 20 s (`--quick` skips it).
    DefaultNodeTimeout,
}

impl PhaseName {
    /// Every phase, in order.
    pub(crate) const ALL: [PhaseName; 8] = [
        PhaseName::Healthy,
        PhaseName::PrimarySigstop,
        PhaseName::FullCoverageSigstop,
        PhaseName::PrimarySigkill,
        PhaseName::LiveMigration,
        PhaseName::ManualFailover,
        PhaseName::ClusterOutage,
        PhaseName::DefaultNodeTimeout,
    ];

    /// The name on the command line, in tables and in JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PhaseName::Healthy => "healthy",
            PhaseName::PrimarySigstop => "primary-sigstop",
            PhaseName::FullCoverageSigstop => "full-coverage-sigstop",
            PhaseName::PrimarySigkill => "primary-sigkill",
            PhaseName::LiveMigration => "live-migration",
            PhaseName::ManualFailover => "manual-failover",
            PhaseName::ClusterOutage => "cluster-outage",
            PhaseName::DefaultNodeTimeout => "default-node-timeout",
        }
    }

    /// A primary stalled or killed until a replica takes over.
    pub(crate) fn is_primary_fault(self) -> bool {
        matches!(
            self,
            PhaseName::PrimarySigstop
                | PhaseName::FullCoverageSigstop
                | PhaseName::PrimarySigkill
                | PhaseName::DefaultNodeTimeout
        )
    }

    /// Server settings this phase runs with on top of the cluster's
    /// (`CONFIG SET` on every node for the phase, restored afterwards).
    pub(crate) fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            PhaseName::PrimarySigstop => &[("cluster-require-full-coverage", "no")],
            PhaseName::DefaultNodeTimeout => &[("cluster-node-timeout", "15000")],
            _ => &[],
        }
    }
}

/// One phase to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhasePlan {
    pub(crate) name: PhaseName,
    /// Load time (the phase lasts at least until its fault sequence ends).
    pub(crate) seconds: Duration,
    /// Run for the baseline only; not reported.
    pub(crate) hidden: bool,
}

/// What a fault did and when (times since the phase started).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct FaultReport {
    /// What was done, e.g. `SIGSTOP node 0 (127.0.0.1:40001)`.
    pub(crate) action: String,
    /// When the fault started, seconds into the phase.
    pub(crate) at_s: f64,
    /// The node that took over the shard, if any.
    pub(crate) promoted: Option<String>,
    /// From the fault to the testkit seeing the replica promoted.
    pub(crate) promoted_after_ms: Option<f64>,
    /// From the fault to the first read of the shard answered by a replica.
    pub(crate) first_replica_read_after_ms: Option<f64>,
    /// From the promotion (as the testkit saw it) to the first successful
    /// write on the shard by another node than the old primary; negative when
    /// the stack found the new primary before the testkit's poll did.
    pub(crate) first_write_after_promotion_ms: Option<f64>,
    /// From the fault to the end of its sequence (resume, restart, ...).
    pub(crate) done_after_ms: f64,
    /// The fault sequence itself failed (the phase is then a miss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// A fault as it ran.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultRun {
    pub(crate) report: FaultReport,
    /// The slots of the faulted shard (or the migrated slots).
    pub(crate) affected: Vec<RangeInclusive<u16>>,
    /// The node that stopped serving them (old primary, or migration source).
    pub(crate) victim: Option<usize>,
    pub(crate) t_fault: Duration,
    pub(crate) t_promoted: Option<Duration>,
    /// When the faulted node was back (resumed, restarted).
    pub(crate) t_back: Option<Duration>,
}

impl FaultRun {
    /// Whether `slot` belongs to the faulted shard.
    pub(crate) fn affects(&self, slot: u16) -> bool {
        self.affected.iter().any(|r| r.contains(&slot))
    }
}

/// One phase as it ran.
#[derive(Debug, Clone)]
pub(crate) struct PhaseRun {
    pub(crate) index: usize,
    pub(crate) plan: PhasePlan,
    pub(crate) duration: Duration,
    pub(crate) fault: Option<FaultRun>,
    /// Lost writes found by the sweep after the phase, and keys it could not read.
    pub(crate) sweep: (u64, u64),
    /// The cluster did not become healthy after the phase.
    pub(crate) settle_error: Option<String>,
    /// After the phase: how long the stack took to converge on the
    /// cluster's layout by itself (from the cluster being healthy), or why
    /// it did not within the deadline.
    pub(crate) converged: Result<Duration, String>,
    /// Setting the phase's server settings failed.
    pub(crate) settings_error: Option<String>,
    /// Hedged replica reads during the window.
    pub(crate) hedges: Hedges,
}

/// Hedged replica reads during one window (see
/// `slotguard::layers::replica_failover::HedgeStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Hedges {
    pub(crate) sent: u64,
    pub(crate) won: u64,
    pub(crate) refused: u64,
}

/// What a finished run measured.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Every operation that completed inside a window.
    pub(crate) records: Vec<Record>,
    /// Each window's stale reads and lost writes.
    pub(crate) tallies: Vec<Tally>,
    /// The hash slot of each key.
    pub(crate) slots: Vec<u16>,
}

impl Finished {
    /// The records of window `phase`.
    pub(crate) fn records_of(&self, phase: usize) -> Vec<Record> {
        self.records
            .iter()
            .filter(|r| usize::from(r.phase) == phase)
            .copied()
            .collect()
    }

    /// The hash slot of key `key`.
    pub(crate) fn slot_of(&self, key: u32) -> u16 {
        self.slots.get(key as usize).copied().unwrap_or(0)
    }
}

/// Milliseconds as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `x` rounded to 3 decimals (for JSON that people read).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
