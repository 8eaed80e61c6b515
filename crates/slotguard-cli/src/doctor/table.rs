//! The text report: one row per check, one row per node the cluster knows.

use super::checks::Status;
use super::facts::NodeFacts;
use super::nodes::Agreement;
use super::Report;

pub(super) fn print(r: &Report) {
    println!(
        "slotguard doctor: topology from {} ({} nodes known to the cluster)",
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
        "{:<22} {:<8} {:<6} {:>9} {:<6} {:>8}  MARKED BY OTHERS",
        "NODE", "ROLE", "STATE", "SLOTS_OK", "LINK", "EVICTED"
    );
    for n in &r.nodes {
        println!("{}", node_row(n));
    }
    println!();
    let worst = r
        .checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(Status::Ok);
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    match worst {
        Status::Fail => println!("result: FAILED: {} (exit 1)", failed.join(", ")),
        Status::Warn => println!("result: no failure, some warnings"),
        _ => println!("result: healthy"),
    }
}

fn node_row(n: &NodeFacts) -> String {
    let marks = marks(n);
    if let Some(e) = &n.error {
        return format!("{:<22} {:<8} unreachable: {e}  {marks}", n.addr, n.role);
    }
    let dash = || "-".to_owned();
    format!(
        "{:<22} {:<8} {:<6} {:>9} {:<6} {:>8}  {marks}",
        n.addr,
        n.role,
        n.cluster_state.clone().unwrap_or_else(dash),
        n.slots_ok.map(|v| v.to_string()).unwrap_or_else(dash),
        n.master_link_status.clone().unwrap_or_else(dash),
        n.evicted_keys.map(|v| v.to_string()).unwrap_or_else(dash),
    )
}

/// `fail by 4, pfail by 1; outside the majority view`, or `-`.
fn marks(n: &NodeFacts) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !n.marked.is_empty() {
        parts.push(
            n.marked
                .iter()
                .map(|(flag, by)| format!("{flag} by {by}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    match n.view {
        Some(Agreement::SlotsDiffer) => {
            parts.push("slot owners differ from the majority view".into())
        }
        Some(Agreement::EpochsDiffer) => parts.push("older epochs than the majority view".into()),
        _ => {}
    }
    if n.outside_topology {
        parts.push("not in the topology view".into());
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join("; ")
    }
}
