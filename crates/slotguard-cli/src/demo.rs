//! `slotguard demo`: a local cluster, a mixed load through the slotguard
//! stack, and fault phases one after another, with one result row per phase.

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::progress::Progress;
use crate::report::{self, PhaseReport};
use crate::runner::{PhaseName, PhasePlan, Runner};
use crate::LoadArgs;

/// Arguments of `slotguard demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    /// Run only these phases (comma-separated; always in the canonical order).
    /// Without `healthy`, a short unreported baseline runs first.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub(crate) phases: Vec<PhaseName>,
    #[command(flatten)]
    pub(crate) metrics: crate::metrics::MetricsArgs,
}

/// The one JSON object `--json` prints.
#[derive(Debug, Serialize)]
struct Output {
    phases: Vec<PhaseReport>,
    /// Whether every phase met its targets.
    all_targets_met: bool,
    config: Config,
    /// Why the run stopped early (exit code 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    aborted: Option<String>,
}

#[derive(Debug, Serialize)]
struct Config {
    seconds: u64,
    workers: u64,
    keys: u64,
    timeout_ms: u64,
    write_pct: u64,
    stack: &'static str,
}

/// The phases to run: the requested ones in canonical order, after a short
/// hidden baseline when `healthy` is not among them.
pub(crate) fn plan(requested: &[PhaseName], seconds: Duration) -> Vec<PhasePlan> {
    let mut names: Vec<PhaseName> = if requested.is_empty() {
        PhaseName::ALL.to_vec()
    } else {
        requested.to_vec()
    };
    names.sort_unstable();
    names.dedup();
    let mut plans = Vec::new();
    if names.first() != Some(&PhaseName::Healthy) {
        plans.push(PhasePlan {
            name: PhaseName::Healthy,
            seconds: Duration::from_secs(3),
            hidden: true,
        });
    }
    plans.extend(names.into_iter().map(|name| PhasePlan {
        name,
        seconds,
        hidden: false,
    }));
    plans
}

pub(crate) fn run(args: DemoArgs) -> ExitCode {
    let load = &args.load;
    let plans = plan(&args.phases, Duration::from_secs(load.seconds));
    let progress = Progress::new(load.json);
    let mut runner = match Runner::start(load.config(), plans.len(), progress.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotguard demo: {}", e.0);
            return ExitCode::from(2);
        }
    };
    let mut runs = Vec::new();
    let mut aborted = None;
    for (i, plan) in plans.iter().enumerate() {
        let run = runner.run_phase(i, *plan);
        let failed = run.settle_error.clone();
        runs.push(run);
        if let Some(e) = failed {
            aborted = Some(format!(
                "stopped after {}: the cluster did not become healthy again: {e}",
                plan.name.as_str()
            ));
            break;
        }
    }
    let done = runner.finish();

    let baseline = runs
        .iter()
        .find(|r| r.plan.name == PhaseName::Healthy)
        .map(|r| report::baseline_rate(&done.records_of(r.index), r.duration))
        .unwrap_or(0.0);
    let slot_of = |k: u32| done.slot_of(k);
    let reports: Vec<PhaseReport> = runs
        .iter()
        .filter(|r| !r.plan.hidden)
        .map(|r| {
            report::summarize(
                r,
                &done.records_of(r.index),
                &done.tallies[r.index],
                baseline,
                &slot_of,
            )
        })
        .collect();
    let all_targets_met = aborted.is_none() && reports.iter().all(|r| r.misses.is_empty());

    if load.json {
        let out = Output {
            phases: reports,
            all_targets_met,
            config: Config {
                seconds: load.seconds,
                workers: load.workers,
                keys: load.keys,
                timeout_ms: load.timeout_ms,
                write_pct: load.write_pct,
                stack: crate::stack::DESCRIPTION,
            },
            aborted: aborted.clone(),
        };
        if !crate::report::print_json("demo", &out) {
            return ExitCode::FAILURE;
        }
    } else {
        println!();
        println!(
            "slotguard demo — stack: {}; {} workers, {} keys, {} % writes, {} ms deadline",
            crate::stack::DESCRIPTION,
            load.workers,
            load.keys,
            load.write_pct,
            load.timeout_ms
        );
        println!(
            "worst% = slowest whole second's successful ops as % of the healthy mean; \
             p/r/near/st% = share of answered reads from primary, replica, near-cache, store"
        );
        println!();
        print!("{}", report::table(&reports));
        println!();
        if all_targets_met {
            println!("every phase met its targets");
        } else {
            let missed = reports.iter().filter(|r| !r.misses.is_empty()).count();
            println!("{missed} of {} phases missed their targets", reports.len());
        }
        if let Some(a) = &aborted {
            println!("{a}");
        }
    }
    if aborted.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_run_in_canonical_order_with_a_baseline() {
        let s = Duration::from_secs(5);
        let names = |p: Vec<PhasePlan>| -> Vec<(&str, bool)> {
            p.iter().map(|p| (p.name.as_str(), p.hidden)).collect()
        };
        assert_eq!(plan(&[], s).len(), PhaseName::ALL.len());
        assert_eq!(
            names(plan(
                &[
                    PhaseName::ManualFailover,
                    PhaseName::PrimarySigstop,
                    PhaseName::ManualFailover
                ],
                s
            )),
            vec![
                ("healthy", true),
                ("primary-sigstop", false),
                ("manual-failover", false)
            ]
        );
        assert_eq!(
            names(plan(&[PhaseName::LiveMigration, PhaseName::Healthy], s)),
            vec![("healthy", false), ("live-migration", false)]
        );
    }
}
