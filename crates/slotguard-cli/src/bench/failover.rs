//! `slotguard bench failover`: what a frozen primary costs the callers.
//!
//! The same cluster, stack and load as the demo (shared through
//! [`Runner`]): a healthy baseline, then one primary SIGSTOPped until its
//! replica is promoted (at most `--stop-secs`) and resumed. Reported per
//! side: the frozen shard and the other shards, before and during the stall.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::load::Record;
use crate::progress::Progress;
use crate::report::{self, format_pct};
use crate::runner::{
    ms, round3, FaultReport, FaultRun, Finished, Hedges, PhaseName, PhasePlan, PhaseRun, Runner,
};
use crate::stats::{pct, per_second_counts, percentile_ms, worst_second_pct};
use crate::LoadArgs;

/// Arguments of `slotguard bench failover`.
#[derive(Debug, clap::Args)]
pub(crate) struct FailoverArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// Longest the primary stays frozen; it is resumed as soon as a replica
    /// has taken over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) stop_secs: u64,
    /// The client under load: the slotguard stack, or redis-rs's async
    /// cluster client as a peer.
    #[arg(long, value_enum, default_value_t = FailoverClient::Slotguard)]
    pub(crate) client: FailoverClient,
}

/// The clients `bench failover` can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum FailoverClient {
    /// The slotguard stack (`SlotGuard` with an SQLite store, defaults).
    Slotguard,
    /// redis-rs's async cluster client, default settings.
    RedisRs,
}

/// Reads of one group of shards in one interval.
#[derive(Debug, Clone, Serialize)]
struct Reads {
    reads: u64,
    reads_answered_pct: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Reads slower than 50 ms (the stall target's bound).
    over_50ms: u64,
    /// The slowest reads: completion time in the window, latency, and the
    /// path that answered (or the error kind).
    slowest: Vec<SlowRead>,
}

/// One slow read.
#[derive(Debug, Clone, Serialize)]
struct SlowRead {
    t_ms: f64,
    lat_ms: f64,
    answer: &'static str,
}

/// One group of shards, before and during the stall.
#[derive(Debug, Clone, Serialize)]
struct Side {
    baseline: Reads,
    during: Reads,
}

/// Writes to the frozen shard during the stall.
#[derive(Debug, Clone, Serialize)]
struct Writes {
    writes: u64,
    errors: u64,
    /// How long a failing write took to fail (the caller's wait).
    error_p99_ms: f64,
}

/// The one JSON object `--json` prints.
#[derive(Debug, Serialize)]
struct Output {
    bench: &'static str,
    stack: &'static str,
    fault: FaultReport,
    /// From SIGSTOP to SIGCONT.
    frozen_ms: Option<f64>,
    affected_shard: Side,
    other_shards: Side,
    affected_writes: Writes,
    first_replica_answer_ms: Option<f64>,
    first_write_after_promotion_ms: Option<f64>,
    /// Slowest whole second of the fault phase, % of the baseline mean.
    worst_second_pct: Option<f64>,
    stale_reads: u64,
    lost_writes: u64,
    /// Hedged replica reads in each phase, and their share of its reads.
    hedges: HedgeReport,
}

/// Hedged replica reads of the healthy and the fault phase.
#[derive(Debug, Serialize)]
struct HedgeReport {
    healthy: Hedges,
    /// Hedges sent per read of the healthy phase, in percent.
    healthy_sent_pct: f64,
    fault: Hedges,
    fault_sent_pct: f64,
}

fn reads(records: &[&Record]) -> Reads {
    let mut lat: Vec<u32> = records.iter().map(|r| r.lat_us).collect();
    lat.sort_unstable();
    let ok = records.iter().filter(|r| r.ok).count() as u64;
    Reads {
        reads: records.len() as u64,
        reads_answered_pct: round3(pct(ok, records.len() as u64)),
        p50_ms: percentile_ms(&lat, 0.5),
        p99_ms: percentile_ms(&lat, 0.99),
        max_ms: percentile_ms(&lat, 1.0),
        over_50ms: lat.iter().filter(|&&l| l > 50_000).count() as u64,
        slowest: slowest(records),
    }
}

/// The five slowest of `records`, slowest first.
fn slowest(records: &[&Record]) -> Vec<SlowRead> {
    let mut v: Vec<&&Record> = records.iter().collect();
    v.sort_by_key(|r| std::cmp::Reverse(r.lat_us));
    v.into_iter()
        .take(5)
        .map(|r| SlowRead {
            t_ms: round3(f64::from(r.t_us) / 1000.0),
            lat_ms: round3(f64::from(r.lat_us) / 1000.0),
            answer: if r.ok {
                crate::load::PATHS
                    .get(usize::from(r.code))
                    .copied()
                    .unwrap_or("other")
            } else {
                crate::load::ERROR_KINDS
                    .get(usize::from(r.code))
                    .copied()
                    .unwrap_or("other")
            },
        })
        .collect()
}

/// The healthy baseline, then the frozen primary.
fn phase_plans(seconds: Duration) -> [PhasePlan; 2] {
    [
        PhasePlan {
            name: PhaseName::Healthy,
            seconds,
            hidden: false,
        },
        // On Redis's default full coverage, as the cluster runs it (the
        // demo's `primary-sigstop` phase sets full coverage off for itself).
        PhasePlan {
            name: PhaseName::FullCoverageSigstop,
            seconds,
            hidden: false,
        },
    ]
}

pub(crate) fn run(args: FailoverArgs) -> ExitCode {
    let load = &args.load;
    let plans = phase_plans(Duration::from_secs(load.seconds));
    let progress = Progress::new(load.json);
    let mut config = load.config();
    config.redis_rs = args.client == FailoverClient::RedisRs;
    let mut runner = match Runner::start(config, plans.len(), progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotguard bench: {}", e.0);
            return ExitCode::from(2);
        }
    };
    runner.failover_deadline = Duration::from_secs(args.stop_secs);
    let base_run = runner.run_phase(0, plans[0]);
    let fault_run = runner.run_phase(1, plans[1]);
    let done = runner.finish();
    let Some(out) = summarize(&args, &base_run, &fault_run, &done) else {
        eprintln!("slotguard bench: the fault phase ran no fault");
        return ExitCode::FAILURE;
    };
    if load.json {
        if !crate::report::print_json("bench", &out) {
            return ExitCode::FAILURE;
        }
    } else {
        print!("{}", render(&out));
    }
    if out.fault.error.is_some() || fault_run.settle_error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The records of both phases, cut by shard and by the stall window.
struct Cut<'a> {
    base: Vec<Record>,
    during: Vec<Record>,
    fault: &'a FaultRun,
    done: &'a Finished,
    /// The stall, in µs since the fault phase began.
    stall: std::ops::RangeInclusive<u128>,
}

impl Cut<'_> {
    fn affected(&self, r: &Record) -> bool {
        self.fault.affects(self.done.slot_of(r.key))
    }

    fn in_stall(&self, r: &Record) -> bool {
        self.stall.contains(&u128::from(r.t_us))
    }

    /// Reads of the frozen shard (`want`) or of the others, before and
    /// during the stall.
    fn side(&self, want: bool) -> Side {
        let of = |v: &[Record], stall_only: bool| {
            let picked: Vec<&Record> = v
                .iter()
                .filter(|r| !r.write && self.affected(r) == want)
                .filter(|r| !stall_only || self.in_stall(r))
                .collect();
            reads(&picked)
        };
        Side {
            baseline: of(&self.base, false),
            during: of(&self.during, true),
        }
    }

    /// Writes to the frozen shard during the stall.
    fn affected_writes(&self) -> Writes {
        let writes: Vec<&Record> = self
            .during
            .iter()
            .filter(|r| r.write && self.affected(r) && self.in_stall(r))
            .collect();
        let mut err_lat: Vec<u32> = writes.iter().filter(|r| !r.ok).map(|r| r.lat_us).collect();
        err_lat.sort_unstable();
        Writes {
            writes: writes.len() as u64,
            errors: err_lat.len() as u64,
            error_p99_ms: percentile_ms(&err_lat, 0.99),
        }
    }
}

/// The report of both phases; `None` if the fault phase ran no fault.
fn summarize(
    args: &FailoverArgs,
    base_run: &PhaseRun,
    fault_run: &PhaseRun,
    done: &Finished,
) -> Option<Output> {
    let fault = fault_run.fault.as_ref()?;
    let t0 = fault.t_fault.as_micros();
    let t1 = fault
        .t_back
        .unwrap_or(fault_run.duration)
        .as_micros()
        .max(t0);
    let cut = Cut {
        base: done.records_of(0),
        during: done.records_of(1),
        fault,
        done,
        stall: t0..=t1,
    };
    let timings = report::fault_timings(fault, &cut.during, &|k| done.slot_of(k));
    let baseline = report::baseline_rate(&cut.base, base_run.duration);
    let worst = worst_second_pct(
        &per_second_counts(
            cut.during.iter().filter(|r| r.ok).map(|r| r.t_us),
            fault_run.duration.as_secs() as usize,
        ),
        baseline,
    );
    let tally = done.tallies[1];
    let reads_of = |v: &[Record]| v.iter().filter(|r| !r.write).count() as u64;
    let hedges = HedgeReport {
        healthy: base_run.hedges,
        healthy_sent_pct: round3(pct(base_run.hedges.sent, reads_of(&cut.base))),
        fault: fault_run.hedges,
        fault_sent_pct: round3(pct(fault_run.hedges.sent, reads_of(&cut.during))),
    };
    Some(Output {
        bench: "failover",
        stack: match args.client {
            FailoverClient::Slotguard => crate::stack::DESCRIPTION.as_str(),
            FailoverClient::RedisRs => crate::stack::REDIS_RS_DESCRIPTION,
        },
        frozen_ms: fault
            .t_back
            .map(|b| round3(ms(b.saturating_sub(fault.t_fault)))),
        first_replica_answer_ms: timings.first_replica_read_after_ms,
        first_write_after_promotion_ms: timings.first_write_after_promotion_ms,
        fault: timings,
        affected_shard: cut.side(true),
        other_shards: cut.side(false),
        affected_writes: cut.affected_writes(),
        worst_second_pct: worst.map(round3),
        stale_reads: tally.stale_reads,
        lost_writes: tally.lost_writes,
        hedges,
    })
}

fn render(o: &Output) -> String {
    let mut s = render_header(o);
    render_reads(&mut s, o);
    render_outcome(&mut s, o);
    s
}

/// The stack, and what the fault did.
fn render_header(o: &Output) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\nslotguard bench failover — stack: {}", o.stack);
    let _ = write!(s, "{} at {:.1} s", o.fault.action, o.fault.at_s);
    if let Some(f) = o.frozen_ms {
        let _ = write!(s, ", frozen {:.0} ms", f);
    }
    if let (Some(p), Some(t)) = (&o.fault.promoted, o.fault.promoted_after_ms) {
        let _ = write!(s, "; {p} promoted after {t:.0} ms");
    }
    if let Some(e) = &o.fault.error {
        let _ = write!(s, "; FAILED: {e}");
    }
    let _ = writeln!(s, "\n");
    s
}

/// Reads of each side, before and during the stall, and the slowest.
fn render_reads(s: &mut String, o: &Output) {
    use std::fmt::Write as _;
    let _ = writeln!(
        *s,
        "{:<16} {:>8} {:>10} {:>9} {:>9} {:>8} {:>8} {:>10} {:>9} {:>9} {:>8}",
        "reads",
        "baseline",
        "answered%",
        "p50 ms",
        "p99 ms",
        "max ms",
        "stall",
        "answered%",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for (name, side) in [
        ("frozen shard", &o.affected_shard),
        ("other shards", &o.other_shards),
    ] {
        let _ = writeln!(
            *s,
            "{:<16} {:>8} {:>10} {:>9.2} {:>9.2} {:>8.1} {:>8} {:>10} {:>9.2} {:>9.2} {:>8.1}",
            name,
            side.baseline.reads,
            format_pct(side.baseline.reads_answered_pct),
            side.baseline.p50_ms,
            side.baseline.p99_ms,
            side.baseline.max_ms,
            side.during.reads,
            format_pct(side.during.reads_answered_pct),
            side.during.p50_ms,
            side.during.p99_ms,
            side.during.max_ms
        );
    }
    let _ = writeln!(
        *s,
        "frozen shard during the stall: {} reads over 50 ms; slowest {}",
        o.affected_shard.during.over_50ms,
        o.affected_shard
            .during
            .slowest
            .iter()
            .map(|r| format!("{:.0} ms at {:.0} ms ({})", r.lat_ms, r.t_ms, r.answer))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Writes, time to recovery, the worst second, correctness and hedging.
fn render_outcome(s: &mut String, o: &Output) {
    use std::fmt::Write as _;
    let opt_ms = |v: Option<f64>, signed: bool| match v {
        Some(t) if signed => format!("{t:+.0} ms"),
        Some(t) => format!("{t:.0} ms"),
        None => "none".to_owned(),
    };
    let _ = writeln!(*s);
    let _ = writeln!(
        *s,
        "writes to the frozen shard during the stall: {} ({} failed, failing p99 {:.0} ms)",
        o.affected_writes.writes, o.affected_writes.errors, o.affected_writes.error_p99_ms
    );
    let _ = writeln!(
        *s,
        "fault → first replica answer:       {}",
        opt_ms(o.first_replica_answer_ms, false)
    );
    let _ = writeln!(
        *s,
        "promotion → first successful write: {}",
        opt_ms(o.first_write_after_promotion_ms, true)
    );
    let _ = writeln!(
        *s,
        "worst second of the fault phase:    {}",
        o.worst_second_pct
            .map_or_else(|| "-".to_owned(), |w| format!("{w:.1}% of baseline"))
    );
    let _ = writeln!(
        *s,
        "stale reads {}, lost writes {}",
        o.stale_reads, o.lost_writes
    );
    let h = &o.hedges;
    let _ = writeln!(
        *s,
        "hedged reads: healthy {} sent ({:.2}% of reads), {} won, {} refused; \
         fault {} sent ({:.2}%), {} won, {} refused",
        h.healthy.sent,
        h.healthy_sent_pct,
        h.healthy.won,
        h.healthy.refused,
        h.fault.sent,
        h.fault_sent_pct,
        h.fault.won,
        h.fault.refused
    );
}
