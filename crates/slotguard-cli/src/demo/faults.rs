//! The fault sequences of the phases, run from the runner's thread while
//! the load runs on its runtime.

use std::time::{Duration, Instant};

use slotguard_testkit::{NodeState, TestkitError};

use super::phases::{ms, round3, FaultRun, PhaseName};
use super::progress::PhaseBar;
use super::runner::{sleep_until, Runner};

/// Slots moved by the live-migration phase.
const MIGRATION_SLOTS: u16 = 520;
/// How long the cluster-outage phase keeps every node frozen.
const OUTAGE: Duration = Duration::from_secs(3);
/// How long the default-node-timeout phase keeps its primary frozen.
const LONG_STALL: Duration = Duration::from_secs(20);

/// The primary faults of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrimaryFault {
    /// SIGSTOP until a replica takes over, then SIGCONT.
    StopUntilPromoted,
    /// SIGSTOP for a fixed time, promotion or not, then SIGCONT.
    StopFor(Duration),
    /// SIGKILL, then a restart once a replica took over.
    Kill,
}

impl Runner {
    /// The fault of phase `name`, started now (`start`: when its window opened).
    pub(super) fn run_fault(
        &mut self,
        name: PhaseName,
        start: Instant,
        bar: &PhaseBar,
    ) -> Option<FaultRun> {
        // Different shards for the primary faults, so one does not hit the
        // node the one before just demoted.
        let fault = match name {
            PhaseName::Healthy => return None,
            PhaseName::PrimarySigstop => {
                self.primary_fault(PrimaryFault::StopUntilPromoted, 0, start, bar)
            }
            PhaseName::FullCoverageSigstop => {
                self.primary_fault(PrimaryFault::StopUntilPromoted, 8192, start, bar)
            }
            PhaseName::PrimarySigkill => self.primary_fault(PrimaryFault::Kill, 16383, start, bar),
            PhaseName::DefaultNodeTimeout => {
                self.primary_fault(PrimaryFault::StopFor(LONG_STALL), 0, start, bar)
            }
            PhaseName::LiveMigration => self.migrate(start, bar),
            PhaseName::ManualFailover => self.manual_failover(start, bar),
            PhaseName::ClusterOutage => self.outage(start, bar),
        };
        Some(fault)
    }

    /// The fault begins now.
    fn begin(&self, f: &mut FaultRun, start: Instant) {
        self.load.mark_fault();
        f.t_fault = start.elapsed();
    }

    /// Stop or kill the primary of `slot`, wait for its replica to take
    /// over, then bring the old primary back (resume, or restart and wait
    /// for it to rejoin).
    fn primary_fault(
        &mut self,
        fault: PrimaryFault,
        slot: u16,
        start: Instant,
        bar: &PhaseBar,
    ) -> FaultRun {
        let mut f = FaultRun::default();
        let result = (|| -> Result<(), TestkitError> {
            let victim = self.cluster.primary_of_slot(slot)?;
            f.victim = Some(victim);
            f.affected = self.cluster.slots_of(victim)?;
            f.report.action = match fault {
                PrimaryFault::StopUntilPromoted => format!("SIGSTOP {}", self.node_name(victim)),
                PrimaryFault::StopFor(d) => {
                    format!("SIGSTOP {} for {} s", self.node_name(victim), d.as_secs())
                }
                PrimaryFault::Kill => format!("SIGKILL {}", self.node_name(victim)),
            };
            self.begin(&mut f, start);
            match fault {
                PrimaryFault::Kill => self.cluster.kill(victim)?,
                _ => self.cluster.pause(victim)?,
            }
            bar.status(format!(
                "{}; waiting for a replica to take over",
                f.report.action
            ));
            let wait = match fault {
                PrimaryFault::StopFor(d) => d,
                _ => self.failover_deadline,
            };
            let promoted = self.cluster.wait_for_failover(victim, wait);
            let at = start.elapsed();
            if let PrimaryFault::StopFor(d) = fault {
                sleep_until(start + f.t_fault + d);
            }
            // Bring the victim back even when no promotion came in time.
            let back = match fault {
                PrimaryFault::Kill => self.cluster.restart(victim),
                _ => self.cluster.resume(victim),
            };
            if fault != PrimaryFault::Kill {
                f.t_back = Some(start.elapsed());
            }
            let promoted = match (fault, promoted) {
                // A fixed stall is the fault; a promotion inside it is
                // what Redis did, not a condition of the sequence.
                (PrimaryFault::StopFor(_), Err(_)) => None,
                (_, p) => Some(p?),
            };
            back?;
            if let Some(promoted) = promoted {
                f.t_promoted = Some(at);
                f.report.promoted = Some(self.node_name(promoted));
                bar.status(format!(
                    "{} promoted after {:.1} s; {} back",
                    self.node_name(promoted),
                    (at - f.t_fault).as_secs_f64(),
                    self.node_name(victim)
                ));
            }
            if fault == PrimaryFault::Kill {
                self.cluster.wait_until_ok(Duration::from_secs(60))?;
                f.t_back = Some(start.elapsed());
            }
            Ok(())
        })();
        self.close_fault(f, start, result)
    }

    /// 520 slots (and their keys) moved from one primary to another, slot by
    /// slot, while the load runs.
    fn migrate(&mut self, start: Instant, bar: &PhaseBar) -> FaultRun {
        let mut f = FaultRun::default();
        let result = (|| -> Result<(), TestkitError> {
            let from = self.cluster.primary_of_slot(8192)?;
            let mut to = self.cluster.primary_of_slot(0)?;
            if to == from {
                to = self
                    .cluster
                    .primaries()?
                    .into_iter()
                    .find(|&p| p != from)
                    .ok_or_else(|| TestkitError::Unexpected("only one primary".into()))?;
            }
            let ranges = self.cluster.slots_of(from)?;
            let range = ranges
                .iter()
                .find(|r| r.contains(&8192))
                .or_else(|| ranges.iter().max_by_key(|r| r.end() - r.start()))
                .ok_or_else(|| TestkitError::Unexpected(format!("node {from} has no slots")))?;
            let last = (*range.end()).min(range.start().saturating_add(MIGRATION_SLOTS - 1));
            let slots = *range.start()..=last;
            f.victim = Some(from);
            f.affected = vec![slots.clone()];
            f.report.action = format!(
                "move slots {}-{} ({} slots) from {} to {}",
                slots.start(),
                slots.end(),
                slots.end() - slots.start() + 1,
                self.node_name(from),
                self.node_name(to)
            );
            bar.status(f.report.action.clone());
            self.begin(&mut f, start);
            self.cluster.move_slots(slots, from, to)?;
            f.t_back = Some(start.elapsed());
            Ok(())
        })();
        self.close_fault(f, start, result)
    }

    /// `CLUSTER FAILOVER` on a replica of some shard (coordinated: no write
    /// may be lost).
    fn manual_failover(&mut self, start: Instant, bar: &PhaseBar) -> FaultRun {
        let mut f = FaultRun::default();
        let result = (|| -> Result<(), TestkitError> {
            let primary = self.cluster.primary_of_slot(8192)?;
            let replica = self
                .cluster
                .replicas_of(primary)?
                .into_iter()
                .find(|&r| self.cluster.node_state(r).ok() == Some(NodeState::Running))
                .ok_or_else(|| {
                    TestkitError::Unexpected(format!("node {primary} has no running replica"))
                })?;
            f.victim = Some(primary);
            f.affected = self.cluster.slots_of(primary)?;
            f.report.action = format!(
                "CLUSTER FAILOVER on {} (replica of {})",
                self.node_name(replica),
                self.node_name(primary)
            );
            bar.status(f.report.action.clone());
            self.begin(&mut f, start);
            self.cluster.failover(replica)?;
            let at = start.elapsed();
            f.t_promoted = Some(at);
            f.t_back = Some(at);
            f.report.promoted = Some(self.node_name(replica));
            Ok(())
        })();
        self.close_fault(f, start, result)
    }

    /// Every node frozen for [`OUTAGE`], then resumed (also when freezing
    /// one failed, so no node stays stopped).
    fn outage(&mut self, start: Instant, bar: &PhaseBar) -> FaultRun {
        let mut f = FaultRun {
            affected: vec![0..=slotguard::core::SLOT_COUNT - 1],
            ..FaultRun::default()
        };
        f.report.action = format!(
            "SIGSTOP every node ({}) for {} s",
            self.cluster.len(),
            OUTAGE.as_secs()
        );
        bar.status(f.report.action.clone());
        self.begin(&mut f, start);
        let mut result = Ok(());
        for i in 0..self.cluster.len() {
            if let Err(e) = self.cluster.pause(i) {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            std::thread::sleep(OUTAGE);
        }
        for i in 0..self.cluster.len() {
            if self.cluster.node_state(i).ok() == Some(NodeState::Paused) {
                if let Err(e) = self.cluster.resume(i) {
                    result = result.and(Err(e));
                }
            }
        }
        f.t_back = Some(start.elapsed());
        self.close_fault(f, start, result)
    }

    fn close_fault(
        &self,
        mut f: FaultRun,
        start: Instant,
        result: Result<(), TestkitError>,
    ) -> FaultRun {
        f.report.at_s = round3(f.t_fault.as_secs_f64());
        f.report.promoted_after_ms = f
            .t_promoted
            .map(|t| round3(ms(t.saturating_sub(f.t_fault))));
        f.report.done_after_ms = round3(ms(start.elapsed().saturating_sub(f.t_fault)));
        if let Err(e) = result {
            f.report.error = Some(e.to_string());
            self.progress
                .note(&format!("fault failed: {} — {e}", f.report.action));
        }
        f
    }
}
