//! The text the demo prints: the table of phases, the fault lines under it,
//! and the one JSON line of `--json`.

use std::fmt::Write as _;

use serde::Serialize;

use super::report::PhaseReport;

/// A whole-second share like `worst%`, or `-` when not measured.
fn share(p: Option<f64>) -> String {
    match p {
        None => "-".to_owned(),
        Some(w) if w < 10.0 => format!("{w:.1}"),
        Some(w) => format!("{w:.0}"),
    }
}

/// The table printed at the end of `slotguard demo`.
pub(crate) fn table(reports: &[PhaseReport]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<21} {:>8} {:>6} {:>7} {:>6} {:>6} {:>7} {:>7} {:>6} {:>6} {:>15} {:>5} {:>7}  targets missed",
        "phase",
        "ops",
        "errors",
        "reads%",
        "w-fail",
        "p50ms",
        "p99ms",
        "maxms",
        "worst%",
        "shard%",
        "p/r/cc/near/st%",
        "stale",
        "lost b/a",
    );
    for r in reports {
        let answered = r.served.total();
        let path = |n: u64| {
            if answered == 0 {
                0.0
            } else {
                n as f64 * 100.0 / answered as f64
            }
        };
        let missed = if r.targets_missed.is_empty() {
            "-".to_owned()
        } else {
            r.targets_missed.join(", ")
        };
        let _ = writeln!(
            s,
            "{:<21} {:>8} {:>6} {:>7} {:>6} {:>6.2} {:>7.2} {:>7.1} {:>6} {:>6} {:>15} {:>5} {:>7}  {}",
            r.name,
            r.ops,
            r.errors,
            format_pct(r.reads_answered_pct),
            r.write_errors,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            share(r.worst_second_pct),
            share(r.faulted_shard_worst_second_pct),
            format!(
                "{:.0}/{:.0}/{:.0}/{:.0}/{:.0}",
                path(r.served.primary),
                path(r.served.replica),
                path(r.served.client_cache),
                path(r.served.near_cache),
                path(r.served.secondary)
            ),
            r.stale_reads,
            format!("{}/{}", r.lost_writes_before_fault, r.lost_writes_after_fault),
            missed
        );
    }
    s.push_str(&fault_lines(reports));
    let misses: Vec<_> = reports.iter().filter(|r| !r.misses.is_empty()).collect();
    if !misses.is_empty() {
        s.push('\n');
    }
    for r in misses {
        let _ = writeln!(s, "{} missed: {}", r.name, r.misses.join("; "));
    }
    s
}

/// One line per fault: what was done, when, and how the stack followed.
fn fault_lines(reports: &[PhaseReport]) -> String {
    let mut s = String::new();
    let faults: Vec<_> = reports
        .iter()
        .filter_map(|r| r.fault.as_ref().map(|f| (r, f)))
        .collect();
    if !faults.is_empty() {
        s.push('\n');
    }
    for (r, f) in faults {
        let _ = write!(s, "{}: {} at {:.1} s", r.name, f.action, f.at_s);
        if let (Some(p), Some(after)) = (&f.promoted, f.promoted_after_ms) {
            let _ = write!(s, "; {p} promoted after {after:.0} ms");
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
        if let Some(c) = r.converged_after_ms {
            let _ = write!(s, "; stack converged {c:.0} ms after the cluster");
        }
        if let Some(e) = &f.error {
            let _ = write!(s, "; FAILED: {e}");
        }
        s.push('\n');
    }
    s
}

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

/// A percentage that never rounds a miss up to 100.
pub(crate) fn format_pct(p: f64) -> String {
    if p < 100.0 && p > 99.99 {
        "99.99".to_owned()
    } else if p >= 100.0 {
        "100".to_owned()
    } else {
        format!("{p:.2}")
    }
}
