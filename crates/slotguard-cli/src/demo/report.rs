//! From records to per-phase results: the JSON shape of one phase and the
//! figures its targets are judged on ([`super::targets`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::load::{Record, Tally, ERROR_KINDS, NO_NODE, PATHS, PATH_REPLICA};
use super::phases::{ms, round3, FaultReport, FaultRun, PhaseRun};
use super::stats::{
    mean_rate, pct, per_second_counts, per_second_p99_ms, percentile_ms, worst_second_pct,
};
pub(crate) use super::table::{format_pct, print_json};

/// Successful reads by the path that answered them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct ServedBy {
    pub(crate) primary: u64,
    pub(crate) replica: u64,
    pub(crate) near_cache: u64,
    pub(crate) secondary: u64,
    /// Healthy reads answered by client-side caching.
    pub(crate) client_cache: u64,
}

impl ServedBy {
    /// Every answered read.
    pub(crate) fn total(&self) -> u64 {
        self.primary + self.replica + self.near_cache + self.secondary + self.client_cache
    }
}

/// A server setting a phase ran with that differs from Redis's default.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Setting {
    pub(crate) name: String,
    pub(crate) value: String,
    /// Redis's default, when known.
    pub(crate) redis_default: Option<&'static str>,
}

/// One phase's results (one element of `"phases"` in `--json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) name: &'static str,
    /// How long the load was measured (at least `--seconds`).
    pub(crate) duration_s: f64,
    pub(crate) ops: u64,
    pub(crate) ops_per_sec: f64,
    pub(crate) errors: u64,
    pub(crate) reads: u64,
    pub(crate) reads_answered_pct: f64,
    pub(crate) read_errors: u64,
    pub(crate) writes: u64,
    pub(crate) write_errors: u64,
    /// Reads that returned a value older than the last acknowledged write
    /// while the primary had it (includes `stale_unverified`).
    pub(crate) stale_reads: u64,
    /// Old values the primary could not be asked about, counted as stale.
    pub(crate) stale_unverified: u64,
    /// Acknowledged writes the (new) primary no longer had.
    pub(crate) lost_writes: u64,
    /// Of those, found by the sweep of every key after the phase.
    pub(crate) lost_writes_found_by_sweep: u64,
    /// Of those, sent before the fault began (asynchronous replication may
    /// lose a write the old primary took just before it) ...
    pub(crate) lost_writes_before_fault: u64,
    /// ... and sent after it began (none may be lost).
    pub(crate) lost_writes_after_fault: u64,
    /// Latency of every operation (reads and writes, answered or failed).
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// The slowest read (answered or not).
    pub(crate) read_max_ms: f64,
    /// The lowest per-second count of successful operations (whole seconds
    /// only), as % of the healthy phase's mean per-second rate.
    pub(crate) worst_second_pct: Option<f64>,
    /// The same for the faulted shard's keys only, against their healthy rate.
    pub(crate) faulted_shard_worst_second_pct: Option<f64>,
    /// Read p99 of the shards the fault did not touch, and in the healthy phase.
    pub(crate) other_shards_read_p99_ms: Option<f64>,
    pub(crate) other_shards_baseline_read_p99_ms: Option<f64>,
    /// The slowest failed write to the faulted shard (how long a caller
    /// waited for its error).
    pub(crate) faulted_shard_write_error_max_ms: Option<f64>,
    /// Successful operations in each whole second.
    pub(crate) per_second: Vec<u64>,
    /// Failed operations in each whole second.
    pub(crate) per_second_errors: Vec<u64>,
    /// p99 latency of each whole second's operations.
    pub(crate) per_second_p99_ms: Vec<f64>,
    pub(crate) served: ServedBy,
    pub(crate) errors_by_kind: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<FaultReport>,
    /// From the cluster being healthy after the phase to the stack having
    /// converged on it by itself (no forced refresh).
    pub(crate) converged_after_ms: Option<f64>,
    /// Server settings of the phase that differ from Redis's defaults.
    pub(crate) settings: Vec<Setting>,
    /// The DESIGN.md §9 targets this phase missed, by name (empty: all met).
    pub(crate) targets_missed: Vec<&'static str>,
    /// What each missed target measured (empty: all met).
    pub(crate) misses: Vec<String>,
    /// `ok`, or `MISS: ...`.
    pub(crate) verdict: String,
}

/// The healthy phase, which other phases are compared with.
#[derive(Debug, Clone, Default)]
pub(crate) struct Baseline {
    /// Its records.
    pub(crate) records: Vec<Record>,
    /// How long it was measured.
    pub(crate) duration: Duration,
}

impl Baseline {
    /// Mean per-second rate of successful operations on keys that `keep`.
    fn rate(&self, keep: impl Fn(&Record) -> bool) -> f64 {
        let whole = self.duration.as_secs() as usize;
        mean_rate(&per_second_counts(
            self.records
                .iter()
                .filter(|r| r.ok && keep(r))
                .map(|r| r.t_us),
            whole,
        ))
    }
}

/// The healthy phase's mean per-second rate of successful operations.
pub(crate) fn baseline_rate(records: &[Record], duration: Duration) -> f64 {
    Baseline {
        records: records.to_vec(),
        duration,
    }
    .rate(|_| true)
}

/// Fill in the fault timings that need the records: first replica answer
/// on the faulted shard, first write there after the promotion.
pub(crate) fn fault_timings(
    fault: &FaultRun,
    records: &[Record],
    slot_of: &dyn Fn(u32) -> u16,
) -> FaultReport {
    let mut report = fault.report.clone();
    let t_fault = u128::from(u64::try_from(fault.t_fault.as_micros()).unwrap_or(u64::MAX));
    let after_fault = |r: &&Record| u128::from(r.t_us) >= t_fault && fault.affects(slot_of(r.key));
    report.first_replica_read_after_ms = records
        .iter()
        .filter(after_fault)
        .filter(|r| r.ok && !r.write && r.code == PATH_REPLICA)
        .map(|r| r.t_us)
        .min()
        .map(|t| round3((f64::from(t) - t_fault as f64) / 1000.0));
    if let Some(promoted) = fault.t_promoted {
        let victim = fault.victim.and_then(|v| u8::try_from(v).ok());
        report.first_write_after_promotion_ms = records
            .iter()
            .filter(after_fault)
            .filter(|r| r.ok && r.write && (r.node == NO_NODE || Some(r.node) != victim))
            .map(|r| r.t_us)
            .min()
            .map(|t| round3(f64::from(t) / 1000.0 - ms(promoted)));
    }
    report
}

/// Reads and writes, answered or not, and answers by path.
#[derive(Debug, Default)]
struct Counts {
    reads: u64,
    reads_ok: u64,
    writes: u64,
    writes_ok: u64,
    served: ServedBy,
    errors_by_kind: BTreeMap<&'static str, u64>,
}

fn count(records: &[Record]) -> Counts {
    let mut c = Counts::default();
    for r in records {
        match (r.write, r.ok) {
            (false, true) => {
                c.reads += 1;
                c.reads_ok += 1;
                match PATHS.get(usize::from(r.code)).copied() {
                    Some("primary") => c.served.primary += 1,
                    Some("replica") => c.served.replica += 1,
                    Some("near_cache") => c.served.near_cache += 1,
                    Some("secondary") => c.served.secondary += 1,
                    Some("client_cache") => c.served.client_cache += 1,
                    _ => {}
                }
            }
            (false, false) => c.reads += 1,
            (true, ok) => {
                c.writes += 1;
                c.writes_ok += u64::from(ok);
            }
        }
        if !r.ok {
            let kind = ERROR_KINDS
                .get(usize::from(r.code))
                .copied()
                .unwrap_or("other");
            *c.errors_by_kind.entry(kind).or_insert(0u64) += 1;
        }
    }
    c
}

fn p99_of<'a>(records: impl Iterator<Item = &'a Record>) -> Option<f64> {
    let mut lat: Vec<u32> = records.map(|r| r.lat_us).collect();
    lat.sort_unstable();
    (!lat.is_empty()).then(|| round3(percentile_ms(&lat, 0.99)))
}

/// Summarise one phase from its records (only this phase's) and counters;
/// `settings` are the server settings it ran with. Targets are judged by
/// [`super::targets::judge`] afterwards.
pub(crate) fn summarize(
    run: &PhaseRun,
    records: &[Record],
    tally: &Tally,
    baseline: &Baseline,
    slot_of: &dyn Fn(u32) -> u16,
    settings: Vec<Setting>,
) -> PhaseReport {
    let mut lat: Vec<u32> = records.iter().map(|r| r.lat_us).collect();
    lat.sort_unstable();
    let c = count(records);
    let ops = c.reads + c.writes;
    let secs = run.duration.as_secs_f64().max(1e-9);
    let whole = run.duration.as_secs() as usize;
    let per_second = per_second_counts(records.iter().filter(|r| r.ok).map(|r| r.t_us), whole);
    let per_second_errors =
        per_second_counts(records.iter().filter(|r| !r.ok).map(|r| r.t_us), whole);
    let per_second_p99 = per_second_p99_ms(records.iter().map(|r| (r.t_us, r.lat_us)), whole);
    let fault = run.fault.as_ref();
    let affected = |r: &Record| fault.is_some_and(|f| f.affects(slot_of(r.key)));
    let shard_worst = fault.and_then(|_| {
        let counts = per_second_counts(
            records
                .iter()
                .filter(|r| r.ok && affected(r))
                .map(|r| r.t_us),
            whole,
        );
        worst_second_pct(&counts, baseline.rate(affected))
    });
    let other = |r: &&Record| !r.write && !affected(r);
    let read_max = records
        .iter()
        .filter(|r| !r.write)
        .map(|r| r.lat_us)
        .max()
        .unwrap_or(0);
    let write_error_max = records
        .iter()
        .filter(|r| r.write && !r.ok && affected(r))
        .map(|r| r.lat_us)
        .max();
    PhaseReport {
        name: run.plan.name.as_str(),
        duration_s: round3(secs),
        ops,
        ops_per_sec: round3(ops as f64 / secs),
        errors: (c.reads - c.reads_ok) + (c.writes - c.writes_ok),
        reads: c.reads,
        reads_answered_pct: round3(pct(c.reads_ok, c.reads)),
        read_errors: c.reads - c.reads_ok,
        writes: c.writes,
        write_errors: c.writes - c.writes_ok,
        stale_reads: tally.stale_reads,
        stale_unverified: tally.stale_unverified,
        lost_writes: tally.lost_writes,
        lost_writes_found_by_sweep: tally.lost_found_by_sweep,
        lost_writes_before_fault: tally.lost_before_fault,
        lost_writes_after_fault: tally.lost_after_fault,
        p50_ms: round3(percentile_ms(&lat, 0.50)),
        p99_ms: round3(percentile_ms(&lat, 0.99)),
        max_ms: round3(percentile_ms(&lat, 1.0)),
        read_max_ms: round3(f64::from(read_max) / 1000.0),
        worst_second_pct: worst_second_pct(&per_second, baseline.rate(|_| true)).map(round3),
        faulted_shard_worst_second_pct: shard_worst.map(round3),
        other_shards_read_p99_ms: fault.and_then(|_| p99_of(records.iter().filter(other))),
        other_shards_baseline_read_p99_ms: fault
            .and_then(|_| p99_of(baseline.records.iter().filter(other))),
        faulted_shard_write_error_max_ms: write_error_max.map(|us| round3(f64::from(us) / 1000.0)),
        per_second,
        per_second_errors,
        per_second_p99_ms: per_second_p99,
        served: c.served,
        errors_by_kind: c.errors_by_kind,
        fault: fault.map(|f| fault_timings(f, records, slot_of)),
        converged_after_ms: run.converged.as_ref().ok().map(|d| round3(ms(*d))),
        settings,
        targets_missed: Vec::new(),
        misses: Vec::new(),
        verdict: String::new(),
    }
}

#[cfg(test)]
mod tests;
