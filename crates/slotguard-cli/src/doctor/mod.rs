//! `slotguard doctor`: the degradation runbook against a live cluster
//! (DESIGN.md §8).
//!
//! It asks one seed for the topology, then every node it lists for
//! `CLUSTER INFO`, `CLUSTER NODES` (its own migrating/importing slots),
//! `INFO replication|memory|stats` and `CONFIG GET` of
//! `cluster-require-full-coverage` and `cluster-node-timeout`, with the
//! leaf's admin deadline on every call, and prints one row per check. A node
//! that refuses `CONFIG` (managed services, an ACL user without it) makes
//! those checks `unknown`, not failed.
//!
//! Credentials and TLS come from the environment, as for the examples:
//! `SLOTGUARD_USERNAME`, `SLOTGUARD_PASSWORD`, `SLOTGUARD_TLS_CA` (a PEM
//! file; TLS is on when set), see `docs/security.md`.
//!
//! Exit status: 0 when no check failed (warnings allowed), 1 when one did,
//! 2 when no seed answered or the arguments are wrong.

mod checks;
mod facts;

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use slotguard::node::Frame;
use slotguard::{
    core::ClusterView, NodeAddr, NodeConfig, NodeService, NodeTopologySource, TopologySource,
};

use checks::{Check, Status};
use facts::{NodeFacts, Setting};

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
    let report = match rt.block_on(examine(seeds, Duration::from_millis(args.timeout_ms))) {
        Ok(r) => r,
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
        print_table(&report);
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

async fn examine(seeds: Vec<NodeAddr>, timeout: Duration) -> Result<Report, String> {
    // Credentials and TLS as the applications get them
    // (SLOTGUARD_USERNAME, SLOTGUARD_PASSWORD, SLOTGUARD_TLS_CA, ...).
    let config = NodeConfig::from_env()
        .map_err(|e| format!("settings from the environment: {e}"))?
        .with_admin_timeout(timeout)
        .with_connect_timeout(timeout);
    let leaf = NodeService::new(config);
    let source = NodeTopologySource::new(&leaf, seeds.clone());
    let view = source
        .fetch_first(seeds.clone())
        .await
        .map_err(|e| format!("no seed answered ({}): {e}", list(&seeds)))?;
    let nodes = nodes_of(&view);
    let handles: Vec<_> = nodes
        .into_iter()
        .map(|(addr, role, id)| {
            let leaf = leaf.clone();
            tokio::spawn(async move { read_node(&leaf, addr, role, id).await })
        })
        .collect();
    let mut facts = Vec::with_capacity(handles.len());
    for h in handles {
        facts.push(h.await.map_err(|e| format!("a node check failed: {e}"))?);
    }
    // A replica counts when it says its link to the primary is up; the
    // view's `health` is no help here: Redis 7.0 reports a replica as
    // `loading` while its replication offset is 0 (an empty dataset).
    let without_replica = view
        .shards
        .iter()
        .filter(|s| {
            !s.replicas.iter().any(|r| {
                let addr = r.addr.to_string();
                facts
                    .iter()
                    .any(|f| f.addr == addr && f.master_link_status.as_deref() == Some("up"))
            })
        })
        .count();
    let checks = checks::run(&facts, without_replica);
    Ok(Report {
        command: "doctor",
        source: view.source.to_string(),
        ok: checks.iter().all(|c| c.status != Status::Fail),
        checks,
        nodes: facts,
    })
}

fn list(seeds: &[NodeAddr]) -> String {
    seeds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn nodes_of(view: &ClusterView) -> Vec<(NodeAddr, &'static str, Option<String>)> {
    let mut out = Vec::new();
    for shard in &view.shards {
        out.push((
            shard.primary.addr.clone(),
            "primary",
            shard.primary.id.clone(),
        ));
        for r in &shard.replicas {
            out.push((r.addr.clone(), "replica", r.id.clone()));
        }
    }
    out
}

/// The text of a string reply, or what went wrong.
fn text(reply: Result<Frame, slotguard::CacheError>) -> Result<String, String> {
    match reply {
        Ok(Frame::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
        Ok(f) => f
            .as_string()
            .ok_or_else(|| format!("unexpected {} reply", f.kind())),
        Err(e) => Err(e.to_string()),
    }
}

/// The value of a `CONFIG GET name` reply (RESP2 array or RESP3 map).
fn setting(reply: Result<Frame, slotguard::CacheError>) -> Setting {
    let value = match reply {
        Ok(Frame::Array(items)) => items.get(1).and_then(Frame::as_string),
        Ok(Frame::Map(pairs)) => pairs.first().and_then(|(_, v)| v.as_string()),
        Ok(Frame::Error(e)) => return Setting::Unknown(String::from_utf8_lossy(&e).into_owned()),
        Ok(other) => return Setting::Unknown(format!("unexpected {} reply", other.kind())),
        Err(e) => return Setting::Unknown(e.to_string()),
    };
    match value {
        Some(v) => Setting::Value(v),
        None => Setting::Unknown("not supported by this server".to_owned()),
    }
}

async fn read_node(
    leaf: &NodeService,
    addr: NodeAddr,
    role: &'static str,
    id: Option<String>,
) -> NodeFacts {
    let mut f = NodeFacts {
        addr: addr.to_string(),
        role,
        id,
        ..NodeFacts::default()
    };
    match text(leaf.admin(&addr, &["CLUSTER", "INFO"]).await) {
        Ok(t) => f.read_cluster_info(&t),
        Err(e) => {
            // Unreachable: the other commands would only wait out their deadlines too.
            f.error = Some(e);
            return f;
        }
    }
    const INFO: [&[&str]; 3] = [
        &["INFO", "replication"],
        &["INFO", "memory"],
        &["INFO", "stats"],
    ];
    for words in INFO {
        if let Ok(t) = text(leaf.admin(&addr, words).await) {
            f.read_info(&t);
        }
    }
    if let Ok(t) = text(leaf.admin(&addr, &["CLUSTER", "NODES"]).await) {
        f.slot_moves = facts::parse_slot_moves(&t);
    }
    f.require_full_coverage = Some(setting(
        leaf.admin(&addr, &["CONFIG", "GET", "cluster-require-full-coverage"])
            .await,
    ));
    f.node_timeout_ms = Some(setting(
        leaf.admin(&addr, &["CONFIG", "GET", "cluster-node-timeout"])
            .await,
    ));
    f
}

fn print_table(r: &Report) {
    println!(
        "slotguard doctor: topology from {} ({} nodes)",
        r.source,
        r.nodes.len()
    );
    println!();
    println!("{:<22} {:<8} DETAIL", "CHECK", "STATUS");
    for c in &r.checks {
        println!("{:<22} {:<8} {}", c.name, c.status.label(), c.detail);
    }
    println!();
    println!(
        "{:<22} {:<8} {:<6} {:>9} {:<6} {:>8}",
        "NODE", "ROLE", "STATE", "SLOTS_OK", "LINK", "EVICTED"
    );
    let dash = || "-".to_owned();
    for n in &r.nodes {
        if let Some(e) = &n.error {
            println!("{:<22} {:<8} unreachable: {e}", n.addr, n.role);
            continue;
        }
        println!(
            "{:<22} {:<8} {:<6} {:>9} {:<6} {:>8}",
            n.addr,
            n.role,
            n.cluster_state.clone().unwrap_or_else(dash),
            n.slots_ok.map(|v| v.to_string()).unwrap_or_else(dash),
            n.master_link_status.clone().unwrap_or_else(dash),
            n.evicted_keys.map(|v| v.to_string()).unwrap_or_else(dash),
        );
    }
    println!();
    let worst = r
        .checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Ok);
    println!(
        "{}",
        match worst {
            Status::Fail => "result: a check FAILED (exit 1)",
            Status::Warn => "result: no failure, some warnings",
            _ => "result: healthy",
        }
    );
}
