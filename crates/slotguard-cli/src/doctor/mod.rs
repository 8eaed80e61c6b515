//! `slotguard doctor`: the degradation runbook against a live cluster
//! (DESIGN.md §8).
//!
//! It asks one seed for the topology, then every node the cluster knows
//! (the view's nodes, then every node their `CLUSTER NODES` list, failed
//! ones included) for `CLUSTER INFO`, `CLUSTER NODES`,
//! `INFO replication|memory|stats` and `CONFIG GET` of the cluster
//! settings, with the leaf's admin deadline on every call, and prints one
//! row per check. A node that does not answer is a finding, never left out.
//! A node that refuses `CONFIG` (managed services, an ACL user without it)
//! makes those checks `unknown`, not failed.
//!
//! The parts: [`discover`] (the network), [`facts`] and [`nodes`] (parsers
//! and the views compared), [`checks`], [`membership`] and [`settings`]
//! (pure verdicts), [`table`] (the text output).
//!
//! Credentials and TLS come from the environment, as for the examples:
//! `SLOTGUARD_USERNAME`, `SLOTGUARD_PASSWORD`, `SLOTGUARD_TLS_CA` (a PEM
//! file; TLS is on when set), see `docs/security.md`.
//!
//! Exit status: 0 when no check failed (warnings allowed), 1 when one did,
//! 2 when no seed answered or the arguments are wrong.

mod checks;
mod discover;
mod facts;
mod membership;
mod nodes;
mod settings;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use slotguard::NodeAddr;

use checks::{Check, Status};
use facts::NodeFacts;

/// `slotguard doctor` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DoctorArgs {
    /// Nodes to ask for the topology (host:port); default: $SLOTGUARD_SEEDS.
    #[arg(value_name = "SEED")]
    pub(crate) seeds: Vec<NodeAddr>,
    /// Deadline of each command sent to a node, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) timeout_ms: u64,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The whole report (`--json`).
#[derive(Debug, Serialize)]
struct Report {
    command: &'static str,
    /// The node whose topology view was used.
    source: String,
    /// No check failed.
    ok: bool,
    checks: Vec<Check>,
    nodes: Vec<NodeFacts>,
}

pub(crate) fn run(args: DoctorArgs) -> ExitCode {
    let seeds = match seeds(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("slotguard doctor: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotguard doctor: could not start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let found = rt.block_on(discover::discover(
        seeds,
        Duration::from_millis(args.timeout_ms),
    ));
    let report = match found {
        Ok(d) => {
            let checks = checks::run(&d.facts, d.shards_without_replica);
            Report {
                command: "doctor",
                source: d.source,
                ok: checks.iter().all(|c| c.status != Status::Fail),
                checks,
                nodes: d.facts,
            }
        }
        Err(e) => {
            eprintln!("slotguard doctor: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        if !crate::report::print_json("doctor", &report) {
            return ExitCode::from(2);
        }
    } else {
        table::print(&report);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn seeds(args: &DoctorArgs) -> Result<Vec<NodeAddr>, String> {
    if !args.seeds.is_empty() {
        return Ok(args.seeds.clone());
    }
    match slotguard::node::seeds_from_env() {
        Ok(Some(seeds)) => Ok(seeds),
        Ok(None) => Err(format!(
            "no seed given: pass host:port or set {}",
            slotguard::node::ENV_SEEDS
        )),
        Err(e) => Err(e.to_string()),
    }
}
