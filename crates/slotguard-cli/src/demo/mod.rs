//! `slotguard demo`: a local cluster on Redis's defaults, a mixed load
//! through the slotguard stack on the handle's defaults, and fault phases
//! one after another, with one result row per phase judged against
//! DESIGN.md §9, and optionally an HTML report with a chart per phase.
//!
//! The parts: [`phases`] (what a run is made of), [`runner`] (cluster,
//! stack, load, settling between phases) and [`faults`] (the fault
//! sequences), [`load`], [`record`] and [`check`] (the closed-loop load,
//! what it records, and how it tells stale reads from lost writes), [`stats`] (pure measurement), [`report`] (per-phase figures),
//! [`targets`] (which targets a phase missed), [`table`] and [`html`]
//! (the output), [`progress`] (live lines on stderr).

mod check;
mod faults;
mod html;
pub(crate) mod load;
mod phases;
pub(crate) mod progress;
mod record;
pub(crate) mod report;
pub(crate) mod runner;
pub(crate) mod stats;
mod table;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use slotguard_testkit::{redis_default, ServerSetting};

use progress::Progress;
use report::{Baseline, PhaseReport, Setting};
use runner::{PhaseName, PhasePlan, Runner};

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
    /// Skip the slow `default-node-timeout` phase (a 20 s primary stall).
    #[arg(long)]
    pub(crate) quick: bool,
    /// Also write a self-contained HTML report (inline SVG charts) here.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
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
    /// Server settings of the whole run that differ from Redis's defaults
    /// (each phase lists its own in `settings`).
    server_settings: Vec<ServerSettingOut>,
    /// Settings single phases add for their duration (`CONFIG SET`).
    phase_settings: Vec<String>,
    /// Client settings that differ from the `SlotGuard` handle's defaults.
    client_settings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ServerSettingOut {
    name: String,
    value: String,
    redis_default: Option<&'static str>,
    why: &'static str,
}

/// The phases to run: the requested ones in canonical order (without
/// `default-node-timeout` when `quick`), after a short hidden baseline when
/// `healthy` is not among them.
pub(crate) fn plan(requested: &[PhaseName], quick: bool, seconds: Duration) -> Vec<PhasePlan> {
    let mut names: Vec<PhaseName> = if requested.is_empty() {
        PhaseName::ALL.to_vec()
    } else {
        requested.to_vec()
    };
    if quick {
        names.retain(|&n| n != PhaseName::DefaultNodeTimeout);
    }
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

/// The server settings phase `name` ran with that differ from Redis's
/// defaults: the cluster's, overridden by the phase's own.
fn phase_settings(cluster: &[ServerSetting], name: PhaseName) -> Vec<Setting> {
    let mut out: Vec<Setting> = cluster
        .iter()
        .map(|s| Setting {
            name: s.name.clone(),
            value: s.value.clone(),
            redis_default: s.redis_default,
        })
        .collect();
    for (key, value) in name.settings() {
        out.retain(|s| s.name != *key);
        let default = redis_default(key);
        if default != Some(*value) {
            out.push(Setting {
                name: (*key).to_owned(),
                value: (*value).to_owned(),
                redis_default: default,
            });
        }
    }
    out
}

/// Client settings that differ from the handle's defaults.
fn client_settings(load: &LoadArgs) -> Vec<String> {
    let handle = slotguard::DEFAULT_REQUEST_TIMEOUT.as_millis();
    let mut out = Vec::new();
    if u128::from(load.timeout_ms) != handle {
        out.push(format!(
            "request deadline {} ms (handle: {handle} ms)",
            load.timeout_ms
        ));
    }
    out
}

pub(crate) fn run(args: DemoArgs) -> ExitCode {
    let load = &args.load;
    let plans = plan(&args.phases, args.quick, Duration::from_secs(load.seconds));
    let progress = Progress::new(load.json);
    let mut runner = match Runner::start(load.config(), plans.len(), progress.clone()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slotguard demo: {}", e.0);
            return ExitCode::from(2);
        }
    };
    let server = runner.server_settings();
    let (runs, aborted) = run_phases(&mut runner, &plans);
    let done = runner.finish();
    let reports = phase_reports(&runs, &done, &server);
    let all_targets_met = aborted.is_none() && reports.iter().all(|r| r.misses.is_empty());
    let config = config_of(load, &server, &plans);
    let mut code = if aborted.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    if let Some(path) = &args.report {
        let page = html::page(&header(&config), &reports);
        if let Err(e) = std::fs::write(path, page) {
            eprintln!("slotguard demo: could not write {}: {e}", path.display());
            code = ExitCode::FAILURE;
        }
    }
    let out = Output {
        phases: reports,
        all_targets_met,
        config,
        aborted,
    };
    if load.json {
        if !report::print_json("demo", &out) {
            return ExitCode::FAILURE;
        }
    } else {
        print_text(&out);
    }
    code
}

/// Every phase in order; stops after one the cluster did not recover from
/// (why, in the second place).
fn run_phases(runner: &mut Runner, plans: &[PhasePlan]) -> (Vec<runner::PhaseRun>, Option<String>) {
    let mut runs = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let run = runner.run_phase(i, *plan);
        let failed = run.settle_error.clone();
        runs.push(run);
        if let Some(e) = failed {
            let why = format!(
                "stopped after {}: the cluster did not become healthy again: {e}",
                plan.name.as_str()
            );
            return (runs, Some(why));
        }
    }
    (runs, None)
}

/// One judged report per shown phase, against the healthy phase's rate.
fn phase_reports(
    runs: &[runner::PhaseRun],
    done: &runner::Finished,
    server: &[ServerSetting],
) -> Vec<PhaseReport> {
    let baseline = runs
        .iter()
        .find(|r| r.plan.name == PhaseName::Healthy)
        .map(|r| Baseline {
            records: done.records_of(r.index),
            duration: r.duration,
        })
        .unwrap_or_default();
    let slot_of = |k: u32| done.slot_of(k);
    runs.iter()
        .filter(|r| !r.plan.hidden)
        .map(|r| {
            let mut rep = report::summarize(
                r,
                &done.records_of(r.index),
                &done.tallies[r.index],
                &baseline,
                &slot_of,
                phase_settings(server, r.plan.name),
            );
            targets::judge(r, &mut rep);
            rep
        })
        .collect()
}

/// The run's setup as reported: load, stack, and every setting that
/// differs from a default.
fn config_of(load: &LoadArgs, server: &[ServerSetting], plans: &[PhasePlan]) -> Config {
    Config {
        seconds: load.seconds,
        workers: load.workers,
        keys: load.keys,
        timeout_ms: load.timeout_ms,
        write_pct: load.write_pct,
        stack: crate::stack::DESCRIPTION.as_str(),
        server_settings: server
            .iter()
            .map(|s| ServerSettingOut {
                name: s.name.clone(),
                value: s.value.clone(),
                redis_default: s.redis_default,
                why: s.why,
            })
            .collect(),
        phase_settings: plans
            .iter()
            .filter(|p| !p.hidden)
            .flat_map(|p| {
                p.name.settings().iter().map(move |(k, v)| {
                    let default = redis_default(k).unwrap_or("?");
                    format!("{}: {k} {v} (Redis: {default})", p.name.as_str())
                })
            })
            .collect(),
        client_settings: client_settings(load),
    }
}

/// The header, the table and the verdict, on stdout.
fn print_text(out: &Output) {
    println!();
    print!("{}", header(&out.config));
    println!(
        "worst% = slowest whole second's successful ops as % of the healthy mean (shard%: \
         the faulted shard's keys only); p/r/cc/near/st% = share of answered reads from \
         primary, replica, client-side caching (healthy hits), near-cache (for failed \
         reads), store; lost b/a = acknowledged writes lost, \
         sent before/after the fault began"
    );
    println!();
    print!("{}", table::table(&out.phases));
    println!();
    if out.all_targets_met {
        println!("every phase met its targets");
    } else {
        let missed = out.phases.iter().filter(|r| !r.misses.is_empty()).count();
        println!("{missed} of {} phases missed targets", out.phases.len());
    }
    if let Some(a) = &out.aborted {
        println!("{a}");
    }
}

/// The lines above the table: the stack, the load, and every setting that
/// differs from Redis's and the handle's defaults.
fn header(c: &Config) -> String {
    let mut s = format!(
        "slotguard demo — stack: {}\nload: {} workers, {} keys, {} % writes, {} ms request \
         deadline\n",
        c.stack, c.workers, c.keys, c.write_pct, c.timeout_ms
    );
    s.push_str("server settings that differ from Redis's defaults:\n");
    for st in &c.server_settings {
        s.push_str(&format!(
            "  {} {} (Redis: {}) — {}\n",
            st.name,
            st.value,
            st.redis_default.unwrap_or("?"),
            st.why
        ));
    }
    for p in &c.phase_settings {
        s.push_str(&format!("  for the phase {p}\n"));
    }
    if c.client_settings.is_empty() {
        s.push_str("client settings that differ from the SlotGuard handle's defaults: none\n");
    } else {
        s.push_str("client settings that differ from the SlotGuard handle's defaults:\n");
        for cs in &c.client_settings {
            s.push_str(&format!("  {cs}\n"));
        }
    }
    s
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
        assert_eq!(plan(&[], false, s).len(), PhaseName::ALL.len());
        let quick = plan(&[], true, s);
        assert_eq!(quick.len(), PhaseName::ALL.len() - 1);
        assert!(quick
            .iter()
            .all(|p| p.name != PhaseName::DefaultNodeTimeout));
        assert_eq!(
            names(plan(
                &[
                    PhaseName::ManualFailover,
                    PhaseName::PrimarySigstop,
                    PhaseName::ManualFailover
                ],
                false,
                s
            )),
            vec![
                ("healthy", true),
                ("primary-sigstop", false),
                ("manual-failover", false)
            ]
        );
        assert_eq!(
            names(plan(
                &[PhaseName::LiveMigration, PhaseName::Healthy],
                false,
                s
            )),
            vec![("healthy", false), ("live-migration", false)]
        );
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn a_phase_setting_that_is_redis_default_leaves_the_list() {
        let cluster = slotguard_testkit::ClusterSpec::default().non_default_settings();
        let names = |p: PhaseName| -> Vec<String> {
            phase_settings(&cluster, p)
                .into_iter()
                .map(|s| format!("{}={}", s.name, s.value))
                .collect()
        };
        assert!(names(PhaseName::Healthy).contains(&"cluster-node-timeout=1000".to_owned()));
        assert!(!names(PhaseName::DefaultNodeTimeout)
            .iter()
            .any(|s| s.starts_with("cluster-node-timeout")));
        assert!(names(PhaseName::PrimarySigstop)
            .contains(&"cluster-require-full-coverage=no".to_owned()));
        assert!(!names(PhaseName::FullCoverageSigstop)
            .iter()
            .any(|s| s.starts_with("cluster-require-full-coverage")));
    }
}
