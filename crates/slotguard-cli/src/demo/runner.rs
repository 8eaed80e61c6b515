//! The run shared by `demo` and `bench`: a local cluster, the stack, the
//! load, and fault phases one after another.
//!
//! Threads: the cluster is started, faulted and restarted from the thread
//! that calls [`Runner::start`] (the testkit ties its servers' lives to that
//! thread), which also sleeps through the phases; the load and the stack run
//! on a separate multi-threaded tokio runtime, so blocking fault steps (a
//! 500-slot migration, waiting for a promotion) never stall the load.
//!
//! Between phases nothing is forced: the runner waits for the cluster to be
//! healthy, then, with a deadline, for the stack to converge on the
//! cluster's layout by itself (its refresher, triggered by what the load
//! meets, or its periodic refresh), observed through the handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slotguard::NodeAddr;
use slotguard_testkit::{ClusterSpec, LocalCluster, ServerSetting, TestkitError, REDIS_SERVER_ENV};

use super::load::{Load, LoadConfig};
pub(crate) use super::phases::{
    ms, round3, FaultReport, FaultRun, Finished, Hedges, PhaseName, PhasePlan, PhaseRun,
};
use super::progress::{PhaseBar, Progress};
use crate::stack::{self, Handles};
use slotguard_store::SqliteStore;

/// How long the cluster may take to become healthy again between phases.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// How long the stack may take to converge by itself once the cluster is
/// healthy: more than its periodic refresh (15 s), so a stack that only
/// converges through that still makes it.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);
/// How long the load runs before the first window opens: the first second
/// after the keys are written (connections, near-cache, allocator) is not
/// the steady state the phases are compared with.
const WARM_UP: Duration = Duration::from_secs(2);
/// How long a phase keeps measuring after its fault sequence ended.
pub(super) const FAULT_TAIL: Duration = Duration::from_secs(1);

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
    pub(super) load: Load,
    pub(super) cluster: LocalCluster,
    pub(super) progress: Progress,
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

/// The cluster's nodes as seeds, and each node's number (its place in the
/// seed list) for the records.
fn seeds_and_numbers(
    cluster: &LocalCluster,
) -> Result<(Vec<NodeAddr>, HashMap<NodeAddr, u8>), StartError> {
    let mut seeds = Vec::new();
    let mut nodes = HashMap::new();
    for (i, s) in cluster.seeds().iter().enumerate() {
        let addr: NodeAddr = s
            .parse()
            .map_err(|e| StartError(format!("bad node address {s}: {e}")))?;
        nodes.insert(addr.clone(), u8::try_from(i).unwrap_or(u8::MAX - 1));
        seeds.push(addr);
    }
    Ok((seeds, nodes))
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
        // Redis's own defaults (full coverage, no reads while down, replica
        // validity factor 10), as most clusters run; the testkit states what
        // it changes (see `server_settings`).
        let cluster = LocalCluster::start(ClusterSpec::default()).map_err(cluster_start_error)?;
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
        let (seeds, nodes) = seeds_and_numbers(&cluster)?;
        progress.note(&format!(
            "cluster up ({} nodes); writing {} keys...",
            cluster.len(),
            config.keys
        ));
        let (mut stack, handles) = rt
            .block_on(stack::build(
                seeds.clone(),
                store,
                config.leaf,
                config.hedge,
            ))
            .map_err(|e| StartError(format!("could not build the slotguard stack: {e}")))?;
        if config.redis_rs {
            // The stack's handle still serves the slot map and the store.
            stack = rt
                .block_on(stack::redis_rs(&seeds))
                .map_err(|e| StartError(format!("could not connect redis-rs: {e}")))?;
        }
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
        progress.note("warming up...");
        std::thread::sleep(WARM_UP);
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

    /// Every server setting the cluster runs with that differs from Redis's
    /// defaults (phases may add their own, see [`PhaseName::settings`]).
    pub(crate) fn server_settings(&self) -> Vec<ServerSetting> {
        self.cluster.spec().non_default_settings()
    }

    /// `node N (addr)`.
    pub(super) fn node_name(&self, index: usize) -> String {
        format!("node {index} ({})", self.cluster.addr(index))
    }

    /// Run one phase as window `index`, then wait for the cluster to be
    /// healthy again and for the stack to converge on it, and sweep for
    /// lost writes.
    pub(crate) fn run_phase(&mut self, index: usize, plan: PhasePlan) -> PhaseRun {
        let bar = self.progress.phase(plan.name.as_str());
        let (restore, mut settings_error) = self.apply_settings(plan.name.settings());
        let hedges_before = self.handles.hedge_stats();
        let start = self.load.open_window(index).into_std();
        let ticking = Arc::new(AtomicBool::new(true));
        self.spawn_ticker(index, bar.clone(), ticking.clone());

        let fault_at = Duration::from_secs(1).min(plan.seconds / 2);
        sleep_until(start + fault_at);
        let fault = self.run_fault(plan.name, start, &bar);
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
        let hedges_after = self.handles.hedge_stats();
        ticking.store(false, Ordering::SeqCst);
        let hedges = Hedges {
            sent: hedges_after.sent.saturating_sub(hedges_before.sent),
            won: hedges_after.won.saturating_sub(hedges_before.won),
            refused: hedges_after.refused.saturating_sub(hedges_before.refused),
        };
        let (_, restore_error) = self.apply_settings_owned(&restore);
        settings_error = settings_error.or(restore_error);

        bar.status("waiting for the cluster to be healthy again");
        let settle_error = self
            .cluster
            .wait_until_ok(SETTLE_DEADLINE)
            .err()
            .map(|e| e.to_string());
        let converged = if settle_error.is_none() {
            bar.status("waiting for the stack to converge on the cluster by itself");
            self.wait_converged()
        } else {
            Err("the cluster itself did not become healthy".to_owned())
        };
        let sweep = if settle_error.is_none() {
            bar.status("checking every key on its primary for lost writes");
            self.rt.block_on(self.load.sweep(index))
        } else {
            (0, 0)
        };
        self.finish_bar(index, duration, &bar);
        PhaseRun {
            index,
            plan,
            duration,
            fault,
            sweep,
            settle_error,
            converged,
            settings_error,
            hedges,
        }
    }

    fn finish_bar(&self, index: usize, duration: Duration, bar: &PhaseBar) {
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
    }

    /// Poll the handle until the stack names the cluster's primaries and is
    /// settled; how long that took, or why it did not in time.
    fn wait_converged(&self) -> Result<Duration, String> {
        let began = Instant::now();
        let primaries: Vec<NodeAddr> = self
            .cluster
            .primaries()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|i| self.cluster.addr(i).parse().ok())
            .collect();
        loop {
            if self.handles.converged_on(&primaries) {
                return Ok(began.elapsed());
            }
            if began.elapsed() >= CONVERGE_DEADLINE {
                return Err(format!(
                    "the stack had not converged on the cluster's primaries {} s after the \
                     cluster was healthy",
                    CONVERGE_DEADLINE.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `CONFIG SET` each of `settings` on every running node; returns what
    /// to set to restore the previous values, and the first failure.
    fn apply_settings(&self, settings: &[(&str, &str)]) -> (Vec<(String, String)>, Option<String>) {
        let owned: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.apply_settings_owned(&owned)
    }

    fn apply_settings_owned(
        &self,
        settings: &[(String, String)],
    ) -> (Vec<(String, String)>, Option<String>) {
        let mut restore = Vec::new();
        let mut error = None;
        for (name, value) in settings {
            for i in 0..self.cluster.len() {
                let result = self.config_get(i, name).and_then(|old| {
                    self.cluster
                        .command_ok(i, &["CONFIG", "SET", name, value])
                        .map(|_| old)
                });
                match result {
                    Ok(old) => {
                        if !restore.iter().any(|(n, _)| n == name) {
                            restore.push((name.clone(), old));
                        }
                    }
                    Err(e) => {
                        error.get_or_insert_with(|| format!("CONFIG SET {name} {value}: {e}"));
                    }
                }
            }
        }
        (restore, error)
    }

    fn config_get(&self, index: usize, name: &str) -> Result<String, TestkitError> {
        let reply = self.cluster.command_ok(index, &["CONFIG", "GET", name])?;
        reply
            .as_array()
            .and_then(|items| items.get(1))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Protocol(format!("CONFIG GET {name}: {reply:?}")))
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
}

pub(super) fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
