//! The run shared by `demo` and `bench`: a local cluster, the stack, the
//! load, and fault phases one after another.
//!
//! Threads: the cluster is started, faulted and restarted from the thread
//! that calls [`Runner::start`] (the testkit ties its servers' lives to that
//! thread), which also sleeps through the phases; the load and the stack run
//! on a separate multi-threaded tokio runtime, so blocking fault steps (a
//! 500-slot migration, waiting for a promotion) never stall the load.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use slotguard::NodeAddr;
use slotguard_testkit::{ClusterSpec, LocalCluster, NodeState, TestkitError, REDIS_SERVER_ENV};

use crate::load::{Load, LoadConfig, Record, Tally};
use crate::progress::{PhaseBar, Progress};
use crate::stack::{self, Handles};
use slotguard_store::SqliteStore;

/// How long the cluster may take to become healthy again between phases.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a phase keeps measuring after its fault sequence ended.
const FAULT_TAIL: Duration = Duration::from_secs(1);
/// Slots moved by the live-migration phase.
const MIGRATION_SLOTS: u16 = 520;
/// How long the cluster-outage phase keeps every node frozen.
const OUTAGE: Duration = Duration::from_secs(3);

/// The phases, in their canonical order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum PhaseName {
    /// No fault: the baseline.
    Healthy,
    /// A primary frozen (SIGSTOP) until its replica is promoted, then resumed.
    PrimarySigstop,
    /// A primary killed, its replica promoted, the old one restarted as a replica.
    PrimarySigkill,
    /// 520 slots moved between primaries under load.
    LiveMigration,
    /// `CLUSTER FAILOVER` on a replica.
    ManualFailover,
    /// Every node frozen (SIGSTOP) for a few seconds, then resumed: the
    /// cluster answers nothing, the near-cache and the store answer reads.
    ClusterOutage,
}

impl PhaseName {
    /// Every phase, in order.
    pub(crate) const ALL: [PhaseName; 6] = [
        PhaseName::Healthy,
        PhaseName::PrimarySigstop,
        PhaseName::PrimarySigkill,
        PhaseName::LiveMigration,
        PhaseName::ManualFailover,
        PhaseName::ClusterOutage,
    ];

    /// The name on the command line, in tables and in JSON.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PhaseName::Healthy => "healthy",
            PhaseName::PrimarySigstop => "primary-sigstop",
            PhaseName::PrimarySigkill => "primary-sigkill",
            PhaseName::LiveMigration => "live-migration",
            PhaseName::ManualFailover => "manual-failover",
            PhaseName::ClusterOutage => "cluster-outage",
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

/// Why a run could not start.
#[derive(Debug)]
pub(crate) struct StartError(pub(crate) String);

/// A cluster, a stack and a load, ready to run phases.
#[derive(Debug)]
pub(crate) struct Runner {
    // Field order is drop order: the runtime (and the load's clients) go
    // before the cluster's processes are killed.
    rt: tokio::runtime::Runtime,
    handles: Handles,
    /// Where the store's SQLite file lives (removed after the runtime).
    _store_dir: tempfile::TempDir,
    load: Load,
    cluster: LocalCluster,
    progress: Progress,
    /// How long to wait for a replica to be promoted (and, for SIGSTOP, the
    /// longest a primary stays frozen).
    pub(crate) failover_deadline: Duration,
}

pub(crate) fn not_installed(program: &str) -> StartError {
    StartError(format!(
        "{program} not found: slotguard runs a local Redis Cluster of real redis-server \
         processes; install it with `apt-get install redis-server` (or run `make demo`, \
         which does)"
    ))
}

/// The redis-server the testkit will run, when it cannot be found.
pub(crate) fn missing_redis_server() -> Option<String> {
    let program = std::env::var(REDIS_SERVER_ENV).unwrap_or_else(|_| "redis-server".to_owned());
    let found = if program.contains('/') {
        std::path::Path::new(&program).is_file()
    } else {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(&program).is_file())
        })
    };
    (!found).then_some(program)
}

pub(crate) fn cluster_start_error(e: TestkitError) -> StartError {
    match &e {
        TestkitError::Spawn { program, source }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            not_installed(program)
        }
        _ => StartError(format!("could not start a local Redis Cluster: {e}")),
    }
}

impl Runner {
    /// Start the cluster (on this thread), build the stack, write every key
    /// once and start the load, with room for `phases` windows.
    pub(crate) fn start(
        config: LoadConfig,
        phases: usize,
        progress: Progress,
    ) -> Result<Runner, StartError> {
        if let Some(program) = missing_redis_server() {
            return Err(not_installed(&program));
        }
        progress.note("starting a local Redis Cluster (3 primaries, 1 replica each)...");
        // Redis's own default, as most clusters run: a shard without a
        // primary makes every node refuse with CLUSTERDOWN until a promotion.
        let spec = ClusterSpec {
            extra_config: vec![("cluster-require-full-coverage".into(), "yes".into())],
            ..ClusterSpec::default()
        };
        let cluster = LocalCluster::start(spec).map_err(cluster_start_error)?;
        let store_dir = tempfile::Builder::new()
            .prefix("slotguard-demo-store")
            .tempdir()
            .map_err(|e| StartError(format!("could not create the store's directory: {e}")))?;
        let store = SqliteStore::open(store_dir.path().join("store.db"))
            .map_err(|e| StartError(format!("could not open the SQLite store: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| StartError(format!("could not start the async runtime: {e}")))?;
        let mut seeds = Vec::new();
        let mut nodes = HashMap::new();
        for (i, s) in cluster.seeds().iter().enumerate() {
            let addr: NodeAddr = s
                .parse()
                .map_err(|e| StartError(format!("bad node address {s}: {e}")))?;
            nodes.insert(addr.clone(), u8::try_from(i).unwrap_or(u8::MAX - 1));
            seeds.push(addr);
        }
        progress.note(&format!(
            "cluster up ({} nodes); writing {} keys...",
            cluster.len(),
            config.keys
        ));
        let (stack, handles) = rt
            .block_on(stack::build(seeds, store, config.leaf))
            .map_err(|e| StartError(format!("could not build the slotguard stack: {e}")))?;
        let map = handles.topology().load();
        progress.note(&format!(
            "slot map loaded: {} shards, {} slots covered",
            map.shards().len(),
            map.covered_slots()
        ));
        let mut load = rt
            .block_on(Load::prepare(
                stack,
                handles.store.clone(),
                config,
                nodes,
                phases,
            ))
            .map_err(|e| StartError(format!("could not write the initial keys: {e}")))?;
        {
            let _guard = rt.enter();
            load.start();
        }
        Ok(Runner {
            rt,
            handles,
            _store_dir: store_dir,
            load,
            cluster,
            progress,
            failover_deadline: Duration::from_secs(30),
        })
    }

    /// `node N (addr)`.
    fn node_name(&self, index: usize) -> String {
        format!("node {index} ({})", self.cluster.addr(index))
    }

    /// Run one phase as window `index`, then wait for the cluster to be
    /// healthy again and sweep for lost writes.
    pub(crate) fn run_phase(&mut self, index: usize, plan: PhasePlan) -> PhaseRun {
        let bar = self.progress.phase(plan.name.as_str());
        let start = self.load.open_window(index).into_std();
        let ticking = Arc::new(AtomicBool::new(true));
        self.spawn_ticker(index, bar.clone(), ticking.clone());

        let fault_at = Duration::from_secs(1).min(plan.seconds / 2);
        sleep_until(start + fault_at);
        let fault = match plan.name {
            PhaseName::Healthy => None,
            PhaseName::PrimarySigstop => Some(self.sigstop(start, &bar)),
            PhaseName::PrimarySigkill => Some(self.sigkill(start, &bar)),
            PhaseName::LiveMigration => Some(self.migrate(start, &bar)),
            PhaseName::ManualFailover => Some(self.manual_failover(start, &bar)),
            PhaseName::ClusterOutage => Some(self.outage(start, &bar)),
        };
        if let Some(f) = &fault {
            bar.status(match &f.report.error {
                Some(e) => format!("fault failed: {e}"),
                None => format!(
                    "{} done after {:.1} s",
                    f.report.action,
                    f.report.done_after_ms / 1000.0
                ),
            });
        }
        // Keep measuring a moment after the fault sequence, so the window
        // shows the recovery too (first write on the new primary, ...).
        let fault_done = fault
            .as_ref()
            .map_or(start, |_| Instant::now() + FAULT_TAIL);
        sleep_until((start + plan.seconds).max(fault_done));
        let duration = self.load.close_window();
        ticking.store(false, Ordering::SeqCst);

        bar.status("waiting for the cluster to be healthy again");
        let settle_error = self
            .cluster
            .wait_until_ok(SETTLE_DEADLINE)
            .err()
            .map(|e| e.to_string());
        let refresh = self.handles.clone();
        let _ = self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(10), refresh.refresh_now()).await
        });
        let sweep = if settle_error.is_none() {
            bar.status("checking every key on its primary for lost writes");
            self.rt.block_on(self.load.sweep(index))
        } else {
            (0, 0)
        };

        let c = self.load.counters(index);
        let (ops, errors) = (
            c.ops.load(Ordering::Relaxed),
            c.errors.load(Ordering::Relaxed),
        );
        let secs = duration.as_secs_f64().max(1e-9);
        bar.finish(&format!(
            "{ops} ops {secs:.1}s {:.0}/s, {errors} err, {} stale, {} lost",
            ops as f64 / secs,
            c.stale_reads.load(Ordering::Relaxed),
            c.lost_writes.load(Ordering::Relaxed),
        ));
        PhaseRun {
            index,
            plan,
            duration,
            fault,
            sweep,
            settle_error,
        }
    }

    fn spawn_ticker(&self, index: usize, bar: PhaseBar, ticking: Arc<AtomicBool>) {
        let counters = self.load.counters_handle();
        self.rt.spawn(async move {
            let mut last = (Instant::now(), 0u64);
            while ticking.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let c = counters.get(index);
                let ops = c.ops.load(Ordering::Relaxed);
                let errors = c.errors.load(Ordering::Relaxed);
                let now = Instant::now();
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                bar.update(ops, errors, ops.saturating_sub(last.1) as f64 / dt);
                last = (now, ops);
            }
        });
    }

    /// Stop the load and the cluster; what was measured.
    pub(crate) fn finish(self) -> Finished {
        let Runner { rt, load, .. } = self;
        let tallies = load.tallies();
        let slots = load.key_slots();
        let records = rt.block_on(load.stop());
        Finished {
            records,
            tallies,
            slots,
        }
    }

    // ----- faults ----------------------------------------------------------

    /// A primary frozen until a replica takes over (at most
    /// `failover_deadline`), then resumed: it rejoins as a replica.
    fn sigstop(&mut self, start: Instant, bar: &PhaseBar) -> FaultRun {
        self.primary_fault(PrimaryFault::Stop, start, bar)
    }

    /// A primary killed; once its replica is promoted it is restarted and
    /// rejoins as a replica.
    fn sigkill(&mut self, start: Instant, bar: &PhaseBar) -> FaultRun {
        self.primary_fault(PrimaryFault::Kill, start, bar)
    }

    /// Stop or kill a primary, wait for its replica to take over, then bring
    /// the old primary back (resume, or restart and wait for it to rejoin).
    fn primary_fault(&mut self, fault: PrimaryFault, start: Instant, bar: &PhaseBar) -> FaultRun {
        let mut f = FaultRun::default();
        let result = (|| -> Result<(), TestkitError> {
            // different shards for the two faults, so the second does not hit
            // the node the first one just demoted
            let slot = match fault {
                PrimaryFault::Stop => 0,
                PrimaryFault::Kill => 16383,
            };
            let victim = self.cluster.primary_of_slot(slot)?;
            f.victim = Some(victim);
            f.affected = self.cluster.slots_of(victim)?;
            let signal = match fault {
                PrimaryFault::Stop => "SIGSTOP",
                PrimaryFault::Kill => "SIGKILL",
            };
            f.report.action = format!("{signal} {}", self.node_name(victim));
            f.t_fault = start.elapsed();
            match fault {
                PrimaryFault::Stop => self.cluster.pause(victim)?,
                PrimaryFault::Kill => self.cluster.kill(victim)?,
            }
            bar.status(format!(
                "{}; waiting for a replica to take over",
                f.report.action
            ));
            let promoted = self
                .cluster
                .wait_for_failover(victim, self.failover_deadline);
            let at = start.elapsed();
            // Bring the victim back even when no promotion came in time.
            let back = match fault {
                PrimaryFault::Stop => self.cluster.resume(victim),
                PrimaryFault::Kill => self.cluster.restart(victim),
            };
            if fault == PrimaryFault::Stop {
                f.t_back = Some(start.elapsed());
            }
            let promoted = promoted?;
            back?;
            f.t_promoted = Some(at);
            f.report.promoted = Some(self.node_name(promoted));
            let how = match fault {
                PrimaryFault::Stop => "resumed",
                PrimaryFault::Kill => "restarted",
            };
            bar.status(format!(
                "{} promoted after {:.1} s; {how} {}",
                self.node_name(promoted),
                (at - f.t_fault).as_secs_f64(),
                self.node_name(victim)
            ));
            if fault == PrimaryFault::Kill {
                self.cluster.wait_until_ok(SETTLE_DEADLINE)?;
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
            f.t_fault = start.elapsed();
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
            f.t_fault = start.elapsed();
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
        f.t_fault = start.elapsed();
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

/// Milliseconds as a float.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `x` rounded to 3 decimals (for JSON that people read).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// The two primary faults of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrimaryFault {
    /// SIGSTOP until a replica takes over, then SIGCONT.
    Stop,
    /// SIGKILL, then a restart once a replica took over.
    Kill,
}
