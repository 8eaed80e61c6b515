//! From records to per-phase results: the JSON shape, the targets each phase
//! is held to, and the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::{Record, Tally, ERROR_KINDS, NO_NODE, PATHS, PATH_REPLICA};
use crate::runner::{ms, round3, FaultReport, FaultRun, PhaseName, PhaseRun};
use crate::stats::{mean_rate, pct, per_second_counts, percentile_ms, worst_second_pct};

/// Successful reads by the path that answered them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct ServedBy {
    pub(crate) primary: u64,
    pub(crate) replica: u64,
    pub(crate) near_cache: u64,
    pub(crate) secondary: u64,
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
    /// Latency of every operation (reads and writes, answered or failed).
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// The lowest per-second count of successful operations (whole seconds
    /// only), as % of the healthy phase's mean per-second rate.
    pub(crate) worst_second_pct: Option<f64>,
    /// Successful operations in each whole second.
    pub(crate) per_second: Vec<u64>,
    pub(crate) served: ServedBy,
    pub(crate) errors_by_kind: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fault: Option<FaultReport>,
    /// The targets this phase missed (empty: all met).
    pub(crate) misses: Vec<String>,
    /// `ok`, or `MISS: ...`.
    pub(crate) verdict: String,
}

/// The healthy phase's mean per-second rate of successful operations.
pub(crate) fn baseline_rate(records: &[Record], duration: Duration) -> f64 {
    let whole = duration.as_secs() as usize;
    mean_rate(&per_second_counts(
        records.iter().filter(|r| r.ok).map(|r| r.t_us),
        whole,
    ))
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

/// Summarise one phase from its records (only this phase's) and counters.
pub(crate) fn summarize(
    run: &PhaseRun,
    records: &[Record],
    tally: &Tally,
    baseline_per_sec: f64,
    slot_of: &dyn Fn(u32) -> u16,
) -> PhaseReport {
    let mut lat: Vec<u32> = records.iter().map(|r| r.lat_us).collect();
    lat.sort_unstable();
    let (mut reads, mut reads_ok, mut writes, mut writes_ok) = (0u64, 0u64, 0u64, 0u64);
    let mut served = ServedBy::default();
    let mut errors_by_kind = BTreeMap::new();
    for r in records {
        match (r.write, r.ok) {
            (false, true) => {
                reads += 1;
                reads_ok += 1;
                match PATHS.get(usize::from(r.code)).copied() {
                    Some("primary") => served.primary += 1,
                    Some("replica") => served.replica += 1,
                    Some("near_cache") => served.near_cache += 1,
                    Some("secondary") => served.secondary += 1,
                    _ => {}
                }
            }
            (false, false) => reads += 1,
            (true, ok) => {
                writes += 1;
                writes_ok += u64::from(ok);
            }
        }
        if !r.ok {
            let kind = ERROR_KINDS
                .get(usize::from(r.code))
                .copied()
                .unwrap_or("other");
            *errors_by_kind.entry(kind).or_insert(0u64) += 1;
        }
    }
    let ops = reads + writes;
    let secs = run.duration.as_secs_f64().max(1e-9);
    let per_second = per_second_counts(
        records.iter().filter(|r| r.ok).map(|r| r.t_us),
        run.duration.as_secs() as usize,
    );
    let fault = run
        .fault
        .as_ref()
        .map(|f| fault_timings(f, records, slot_of));
    let mut report = PhaseReport {
        name: run.plan.name.as_str(),
        duration_s: round3(secs),
        ops,
        ops_per_sec: round3(ops as f64 / secs),
        errors: (reads - reads_ok) + (writes - writes_ok),
        reads,
        reads_answered_pct: round3(pct(reads_ok, reads)),
        read_errors: reads - reads_ok,
        writes,
        write_errors: writes - writes_ok,
        stale_reads: tally.stale_reads,
        stale_unverified: tally.stale_unverified,
        lost_writes: tally.lost_writes,
        lost_writes_found_by_sweep: tally.lost_found_by_sweep,
        p50_ms: round3(percentile_ms(&lat, 0.50)),
        p99_ms: round3(percentile_ms(&lat, 0.99)),
        max_ms: round3(percentile_ms(&lat, 1.0)),
        worst_second_pct: worst_second_pct(&per_second, baseline_per_sec).map(round3),
        per_second,
        served,
        errors_by_kind,
        fault,
        misses: Vec::new(),
        verdict: String::new(),
    };
    report.misses = misses(run, &report);
    report.verdict = if report.misses.is_empty() {
        "ok".to_owned()
    } else {
        format!("MISS: {}", report.misses.join("; "))
    };
    report
}

/// The targets of each phase (DESIGN.md §9) that `r` missed.
///
/// - every phase: no stale read; the fault sequence ran; the cluster was
///   healthy again afterwards;
/// - healthy, live-migration, manual-failover: no error, no lost write;
/// - primary-sigstop, primary-sigkill: every read answered, and the worst
///   second kept at least 50 % of the healthy rate (lost writes are
///   reported: asynchronous replication loses them by design);
/// - cluster-outage: every read answered (by the near-cache or the store);
///   writes fail, typed, while nothing can take them.
pub(crate) fn misses(run: &PhaseRun, r: &PhaseReport) -> Vec<String> {
    let mut out = Vec::new();
    match run.plan.name {
        PhaseName::Healthy | PhaseName::LiveMigration | PhaseName::ManualFailover => {
            if r.errors > 0 {
                out.push(format!("{} errors (target 0)", r.errors));
            }
            if r.lost_writes > 0 {
                out.push(format!("{} lost writes (target 0)", r.lost_writes));
            }
        }
        PhaseName::PrimarySigstop | PhaseName::PrimarySigkill => {
            if r.read_errors > 0 {
                out.push(format!(
                    "reads answered {:.2}% ({} failed; target 100%)",
                    r.reads_answered_pct, r.read_errors
                ));
            }
            match r.worst_second_pct {
                Some(w) if w < 50.0 => {
                    out.push(format!("worst second {w:.1}% of healthy (target ≥ 50%)"))
                }
                None => out.push("worst second not measured".to_owned()),
                Some(_) => {}
            }
        }
        PhaseName::ClusterOutage => {
            if r.read_errors > 0 {
                out.push(format!(
                    "reads answered {:.2}% ({} failed; target 100%)",
                    r.reads_answered_pct, r.read_errors
                ));
            }
        }
    }
    if r.stale_reads > 0 {
        out.push(format!("{} stale reads (target 0)", r.stale_reads));
    }
    if let Some(e) = run.fault.as_ref().and_then(|f| f.report.error.as_ref()) {
        out.push(format!("fault sequence failed: {e}"));
    }
    if let Some(e) = &run.settle_error {
        out.push(format!("cluster not healthy afterwards: {e}"));
    }
    if run.sweep.1 > 0 {
        out.push(format!(
            "{} keys could not be checked for lost writes",
            run.sweep.1
        ));
    }
    out
}

/// The table printed at the end of `slotguard demo`.
pub(crate) fn table(reports: &[PhaseReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>12} {:>6} {:>5}  verdict",
        "phase",
        "ops",
        "errors",
        "reads%",
        "w-fail",
        "p50ms",
        "p99ms",
        "maxms",
        "worst%",
        "p/r/near/st%",
        "stale",
        "lost"
    );
    for r in reports {
        let answered =
            r.served.primary + r.served.replica + r.served.near_cache + r.served.secondary;
        let share = |n: u64| {
            if answered == 0 {
                0.0
            } else {
                n as f64 * 100.0 / answered as f64
            }
        };
        let worst = match r.worst_second_pct {
            None => "-".to_owned(),
            Some(w) if w < 10.0 => format!("{w:.1}"),
            Some(w) => format!("{w:.0}"),
        };
        let _ = writeln!(
            s,
            "{:<16} {:>9} {:>7} {:>8} {:>7} {:>7.2} {:>7.2} {:>7.1} {:>7} {:>12} {:>6} {:>5}  {}",
            r.name,
            r.ops,
            r.errors,
            format_pct(r.reads_answered_pct),
            r.write_errors,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            worst,
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0}",
                share(r.served.primary),
                share(r.served.replica),
                share(r.served.near_cache),
                share(r.served.secondary)
            ),
            r.stale_reads,
            r.lost_writes,
            r.verdict
        );
    }
    let faults: Vec<_> = reports
        .iter()
        .filter_map(|r| r.fault.as_ref().map(|f| (r.name, f)))
        .collect();
    if !faults.is_empty() {
        s.push('\n');
    }
    for (name, f) in faults {
        let _ = write!(s, "{name}: {} at {:.1} s", f.action, f.at_s);
        if let (Some(p), Some(after)) = (&f.promoted, f.promoted_after_ms) {
            let _ = write!(s, "; {p} promoted after {:.0} ms", after);
        }
        let _ = write!(s, "; sequence done after {:.0} ms", f.done_after_ms);
        if f.promoted.is_some() {
            match f.first_replica_read_after_ms {
                Some(t) => {
                    let _ = write!(s, "; first replica read {t:.0} ms after the fault");
                }
                None => s.push_str("; no read answered by a replica"),
            }
            match f.first_write_after_promotion_ms {
                Some(t) => {
                    let _ = write!(s, "; first write {t:+.0} ms from the promotion");
                }
                None => s.push_str("; no write succeeded after the promotion"),
            }
        }
        if let Some(e) = &f.error {
            let _ = write!(s, "; FAILED: {e}");
        }
        s.push('\n');
    }
    s
}

/// A percentage that never rounds a miss up to 100.
/// Print `out` as one JSON line on stdout; `false` (after saying why on
/// stderr) if it cannot be encoded.
pub(crate) fn print_json(command: &str, out: &impl Serialize) -> bool {
    match serde_json::to_string(out) {
        Ok(s) => {
            println!("{s}");
            true
        }
        Err(e) => {
            eprintln!("slotguard {command}: could not encode the results: {e}");
            false
        }
    }
}

pub(crate) fn format_pct(p: f64) -> String {
    if p < 100.0 && p > 99.99 {
        "99.99".to_owned()
    } else if p >= 100.0 {
        "100".to_owned()
    } else {
        format!("{p:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::PhasePlan;

    fn rec(t_ms: u32, lat_ms: u32, write: bool, ok: bool, code: u8) -> Record {
        Record {
            phase: 0,
            t_us: t_ms * 1000,
            lat_us: lat_ms * 1000,
            key: 0,
            node: 0,
            write,
            ok,
            code,
        }
    }

    fn run(name: PhaseName, secs: u64) -> PhaseRun {
        PhaseRun {
            index: 0,
            plan: PhasePlan {
                name,
                seconds: Duration::from_secs(secs),
                hidden: false,
            },
            duration: Duration::from_millis(secs * 1000 + 300),
            fault: None,
            sweep: (0, 0),
            settle_error: None,
            hedges: crate::runner::Hedges::default(),
        }
    }

    #[test]
    fn a_clean_healthy_phase_is_ok() {
        let records: Vec<Record> = (0..2000).map(|i| rec(i, 1, i % 10 == 0, true, 0)).collect();
        let r = run(PhaseName::Healthy, 2);
        let base = baseline_rate(&records, r.duration);
        assert_eq!(base, 1000.0);
        let rep = summarize(&r, &records, &Tally::default(), base, &|_| 0);
        assert_eq!(rep.ops, 2000);
        assert_eq!(rep.writes, 200);
        assert_eq!(rep.reads, 1800);
        assert_eq!(rep.reads_answered_pct, 100.0);
        assert_eq!(rep.served.primary, 1800);
        assert_eq!(rep.worst_second_pct, Some(100.0));
        assert_eq!(rep.per_second, vec![1000, 1000]);
        assert_eq!(rep.verdict, "ok");
    }

    #[test]
    fn a_frozen_second_and_failed_reads_are_misses() {
        // second 0: 1000 ok; second 1: 100 ok + 50 failed reads (timeouts)
        let mut records: Vec<Record> = (0..1000).map(|i| rec(i, 1, false, true, 0)).collect();
        records.extend((0..100).map(|i| rec(1000 + i, 1, false, true, 1)));
        records.extend((0..50).map(|i| rec(1100 + i, 200, false, false, 7)));
        let r = run(PhaseName::PrimarySigstop, 2);
        let tally = Tally {
            stale_reads: 2,
            ..Tally::default()
        };
        let rep = summarize(&r, &records, &tally, 1000.0, &|_| 0);
        assert_eq!(rep.read_errors, 50);
        assert_eq!(rep.errors_by_kind.get("timeout"), Some(&50));
        assert_eq!(rep.served.replica, 100);
        assert_eq!(rep.worst_second_pct, Some(10.0));
        assert!(rep.reads_answered_pct < 100.0);
        assert_eq!(rep.max_ms, 200.0);
        assert_eq!(rep.misses.len(), 3, "{:?}", rep.misses);
        assert!(rep.verdict.starts_with("MISS: "));
        assert!(table(&[rep]).contains("MISS"));
    }

    #[test]
    fn lost_writes_miss_only_where_no_write_may_be_lost() {
        let records = vec![rec(0, 1, false, true, 0)];
        let counters = Tally {
            lost_writes: 3,
            ..Tally::default()
        };
        let kill = summarize(
            &run(PhaseName::PrimarySigkill, 1),
            &records,
            &counters,
            1.0,
            &|_| 0,
        );
        assert!(kill.misses.is_empty(), "{:?}", kill.misses);
        assert_eq!(kill.lost_writes, 3);
        let manual = summarize(
            &run(PhaseName::ManualFailover, 1),
            &records,
            &counters,
            1.0,
            &|_| 0,
        );
        assert_eq!(manual.misses, vec!["3 lost writes (target 0)".to_owned()]);
    }

    #[test]
    fn fault_timings_from_records() {
        let fault = FaultRun {
            affected: vec![0..=99],
            victim: Some(0),
            t_fault: Duration::from_millis(1000),
            t_promoted: Some(Duration::from_millis(3000)),
            ..FaultRun::default()
        };
        let slot_of = |key: u32| if key < 10 { 5 } else { 500 };
        let mut records = vec![
            // before the fault: ignored
            rec(500, 1, false, true, PATH_REPLICA),
            // another shard's replica: ignored
            Record {
                key: 20,
                ..rec(1200, 1, false, true, PATH_REPLICA)
            },
            // the shard's first replica read
            rec(1250, 1, false, true, PATH_REPLICA),
            // a write answered by the old primary: not the new one
            rec(2900, 1, true, true, 0),
        ];
        records.push(Record {
            node: 3,
            ..rec(3040, 1, true, true, 0)
        });
        let rep = fault_timings(&fault, &records, &slot_of);
        assert_eq!(rep.first_replica_read_after_ms, Some(250.0));
        assert_eq!(rep.first_write_after_promotion_ms, Some(40.0));
    }

    #[test]
    fn percentages_never_round_up_to_100() {
        assert_eq!(format_pct(100.0), "100");
        assert_eq!(format_pct(99.999), "99.99");
        assert_eq!(format_pct(66.666), "66.67");
    }
}
