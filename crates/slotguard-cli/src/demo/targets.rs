//! The DESIGN.md §9 targets each phase is held to, and which it missed.
//!
//! A miss is reported with what was measured, never hidden: the table's
//! `targets missed` column and the JSON's `targets_missed` name it.
//!
//! - every phase: no stale read; the fault sequence and the phase's
//!   settings applied; the cluster healthy afterwards and the stack
//!   converged on it by itself; every key checked for lost writes;
//! - healthy, live-migration: no error, no lost write;
//! - manual-failover: every read answered, no lost write, a refused write
//!   refused typed and fast, writes back within 1 s of the promotion;
//! - a primary stalled or killed (primary-sigstop, full-coverage-sigstop,
//!   primary-sigkill, default-node-timeout): every read answered, none
//!   slower than 50 ms, no second below 90 % of the healthy rate, the other
//!   shards' read p99 within 1.5× their healthy p99, writes to the shard
//!   refused typed within 250 ms, writes back within 1 s of the promotion,
//!   no acknowledged write lost that was sent after the fault began;
//! - cluster-outage: every read answered (near-cache or store), no acknowledged write
//!   lost that was sent after the fault began.

use super::phases::{PhaseName, PhaseRun};
use super::report::PhaseReport;

/// The slowest read a stalled primary may cost (hedged replica reads).
const READ_MAX_MS: f64 = 50.0;
/// The lowest share of the healthy rate any second may keep during a stall.
const WORST_SECOND_PCT: f64 = 90.0;
/// How much the untouched shards' read p99 may grow.
const OTHER_SHARDS_P99_FACTOR: f64 = 1.5;
/// How long a write to a shard without a primary may wait for its error.
const WRITE_ERROR_MS: f64 = 250.0;
/// How soon after a promotion writes must succeed again.
const WRITE_RECOVERY_MS: f64 = 1000.0;

/// Judge `r` (summarised from `run`): fills `targets_missed`, `misses` and `verdict`.
pub(crate) fn judge(run: &PhaseRun, r: &mut PhaseReport) {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let name = run.plan.name;
    match name {
        PhaseName::Healthy | PhaseName::LiveMigration => {
            no_errors(r, &mut out);
            if r.lost_writes > 0 {
                out.push((
                    "no-lost-writes",
                    format!("{} lost writes (target 0)", r.lost_writes),
                ));
            }
        }
        PhaseName::ManualFailover => {
            reads_answered(r, &mut out);
            if r.lost_writes > 0 {
                out.push((
                    "no-lost-writes",
                    format!("{} lost writes (target 0)", r.lost_writes),
                ));
            }
            write_errors_fast(r, &mut out);
            write_recovery(r, &mut out);
        }
        PhaseName::ClusterOutage => {
            reads_answered(r, &mut out);
            lost_after_fault(r, &mut out);
        }
        _ if name.is_primary_fault() => {
            reads_answered(r, &mut out);
            if r.read_max_ms > READ_MAX_MS {
                out.push((
                    "read-max-50ms",
                    format!(
                        "slowest read {:.1} ms (target ≤ {READ_MAX_MS} ms)",
                        r.read_max_ms
                    ),
                ));
            }
            match r.worst_second_pct {
                Some(w) if w < WORST_SECOND_PCT => out.push((
                    "worst-second-90pct",
                    format!("worst second {w:.1}% of healthy (target ≥ {WORST_SECOND_PCT}%)"),
                )),
                None => out.push(("worst-second-90pct", "worst second not measured".to_owned())),
                Some(_) => {}
            }
            if let (Some(p99), Some(base)) = (
                r.other_shards_read_p99_ms,
                r.other_shards_baseline_read_p99_ms,
            ) {
                if p99 > base * OTHER_SHARDS_P99_FACTOR {
                    out.push((
                        "other-shards-p99-1.5x",
                        format!(
                            "other shards' read p99 {p99:.2} ms vs {base:.2} ms healthy \
                             (target ≤ {OTHER_SHARDS_P99_FACTOR}×)"
                        ),
                    ));
                }
            }
            write_errors_fast(r, &mut out);
            write_recovery(r, &mut out);
            lost_after_fault(r, &mut out);
        }
        _ => {}
    }
    common(run, r, &mut out);
    r.targets_missed = out.iter().map(|(t, _)| *t).collect();
    r.targets_missed.dedup();
    r.misses = out.into_iter().map(|(_, m)| m).collect();
    r.verdict = if r.misses.is_empty() {
        "ok".to_owned()
    } else {
        format!("MISS: {}", r.misses.join("; "))
    };
}

fn no_errors(r: &PhaseReport, out: &mut Vec<(&'static str, String)>) {
    if r.errors > 0 {
        out.push(("no-errors", format!("{} errors (target 0)", r.errors)));
    }
}

fn reads_answered(r: &PhaseReport, out: &mut Vec<(&'static str, String)>) {
    if r.read_errors > 0 {
        out.push((
            "reads-answered",
            format!(
                "reads answered {:.2}% ({} failed; target 100%)",
                r.reads_answered_pct, r.read_errors
            ),
        ));
    }
}

/// Writes the shard cannot take fail typed and fast (a `hung` write is
/// one the stack did not answer at all).
fn write_errors_fast(r: &PhaseReport, out: &mut Vec<(&'static str, String)>) {
    if let Some(max) = r.faulted_shard_write_error_max_ms {
        if max > WRITE_ERROR_MS {
            out.push((
                "write-error-250ms",
                format!("a refused write waited {max:.0} ms (target ≤ {WRITE_ERROR_MS} ms)"),
            ));
        }
    }
    if let Some(&hung) = r.errors_by_kind.get("hung") {
        out.push((
            "write-error-250ms",
            format!("{hung} operations not answered within twice their deadline"),
        ));
    }
}

fn write_recovery(r: &PhaseReport, out: &mut Vec<(&'static str, String)>) {
    let Some(f) = &r.fault else { return };
    if f.promoted.is_none() {
        return;
    }
    match f.first_write_after_promotion_ms {
        Some(t) if t > WRITE_RECOVERY_MS => out.push((
            "write-recovery-1s",
            format!("first write {t:.0} ms after the promotion (target ≤ {WRITE_RECOVERY_MS} ms)"),
        )),
        None => out.push((
            "write-recovery-1s",
            "no write succeeded after the promotion".to_owned(),
        )),
        Some(_) => {}
    }
}

fn lost_after_fault(r: &PhaseReport, out: &mut Vec<(&'static str, String)>) {
    if r.lost_writes_after_fault > 0 {
        out.push((
            "no-lost-writes-after-fault",
            format!(
                "{} acknowledged writes sent after the fault began were lost (target 0)",
                r.lost_writes_after_fault
            ),
        ));
    }
}

fn common(run: &PhaseRun, r: &PhaseReport, out: &mut Vec<(&'static str, String)>) {
    if r.stale_reads > 0 {
        out.push((
            "no-stale-reads",
            format!("{} stale reads (target 0)", r.stale_reads),
        ));
    }
    if let Some(e) = run.fault.as_ref().and_then(|f| f.report.error.as_ref()) {
        out.push(("fault-ran", format!("fault sequence failed: {e}")));
    }
    if let Some(e) = &run.settings_error {
        out.push(("settings-applied", format!("phase settings: {e}")));
    }
    if let Some(e) = &run.settle_error {
        out.push((
            "cluster-healthy-after",
            format!("cluster not healthy afterwards: {e}"),
        ));
    } else if let Err(e) = &run.converged {
        out.push(("stack-converges", e.clone()));
    }
    if run.sweep.1 > 0 {
        out.push((
            "keys-checked",
            format!("{} keys could not be checked for lost writes", run.sweep.1),
        ));
    }
}
