//! The degradation runbook as checks over the facts read from each node
//! (DESIGN.md §8). Pure functions, so every verdict is tested on fixed facts.

use serde::Serialize;

use super::facts::NodeFacts;
use super::{membership, settings};

/// The verdict of one check. `Fail` makes `doctor` exit non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    Ok,
    /// Could not be checked (a node refused `CONFIG`, say); not a failure.
    Unknown,
    Warn,
    Fail,
}

impl Status {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Unknown => "unknown",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) status: Status,
    pub(crate) detail: String,
}

pub(crate) fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

pub(crate) const SLOTS: u64 = slotguard::core::SLOT_COUNT as u64;

/// Every check, in runbook order. `shards_without_replica` counts the shards
/// of the topology view that have no online replica.
pub(crate) fn run(nodes: &[NodeFacts], shards_without_replica: usize) -> Vec<Check> {
    let reached: Vec<&NodeFacts> = nodes.iter().filter(|n| n.error.is_none()).collect();
    vec![
        reachable(nodes),
        membership::marked(nodes),
        membership::view_agreement(nodes),
        cluster_state(&reached),
        slots(&reached, "slots_assigned", |n| n.slots_assigned),
        slots(&reached, "slots_ok", |n| n.slots_ok),
        migrations(&reached),
        replica_links(&reached),
        replicas(shards_without_replica),
        settings::full_coverage(&reached),
        settings::node_timeout(&reached),
        settings::migration_barrier(&reached, shards_without_replica),
        evictions(&reached),
        memory_policy(&reached),
    ]
}

fn reachable(nodes: &[NodeFacts]) -> Check {
    let down: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.error.as_ref().map(|e| format!("{} ({e})", n.addr)))
        .collect();
    if down.is_empty() {
        check(
            "reachable",
            Status::Ok,
            format!("{} of {} nodes answered", nodes.len(), nodes.len()),
        )
    } else {
        check(
            "reachable",
            Status::Fail,
            format!(
                "{} of {} nodes did not answer: {}",
                down.len(),
                nodes.len(),
                down.join(", ")
            ),
        )
    }
}

fn cluster_state(nodes: &[&NodeFacts]) -> Check {
    let bad: Vec<String> = nodes
        .iter()
        .filter(|n| n.cluster_state.as_deref() != Some("ok"))
        .map(|n| format!("{}: {}", n.addr, n.cluster_state.as_deref().unwrap_or("?")))
        .collect();
    if bad.is_empty() {
        check("cluster_state", Status::Ok, "ok on every node")
    } else {
        check("cluster_state", Status::Fail, bad.join(", "))
    }
}

fn slots(
    nodes: &[&NodeFacts],
    name: &'static str,
    get: impl Fn(&NodeFacts) -> Option<u64>,
) -> Check {
    let worst = nodes
        .iter()
        .filter_map(|n| get(n).map(|v| (v, n)))
        .min_by_key(|(v, _)| *v);
    match worst {
        None => check(name, Status::Unknown, "no node reported it"),
        Some((v, _)) if v >= SLOTS => check(name, Status::Ok, format!("{SLOTS}/{SLOTS}")),
        Some((v, n)) => {
            let extra = match (n.slots_pfail, n.slots_fail) {
                (Some(p), Some(f)) if name == "slots_ok" => format!(" (pfail {p}, fail {f})"),
                _ => String::new(),
            };
            check(
                name,
                Status::Fail,
                format!("{v}/{SLOTS} at {}{extra}", n.addr),
            )
        }
    }
}

fn migrations(nodes: &[&NodeFacts]) -> Check {
    let moves: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.slot_moves.iter().map(move |m| {
                format!(
                    "slot {} {} at {} (peer {})",
                    m.slot,
                    m.state,
                    n.addr,
                    short_id(&m.peer)
                )
            })
        })
        .collect();
    if moves.is_empty() {
        check("migrating_slots", Status::Ok, "none")
    } else {
        // A failure even though resharding passes through this state: one
        // left half-done makes every request for the slot take an ASK
        // detour, and doctor cannot tell a live migration from a dead one.
        check(
            "migrating_slots",
            Status::Fail,
            format!(
                "{}: finish with CLUSTER SETSLOT <slot> NODE <target-id> on both nodes, or undo with CLUSTER SETSLOT <slot> STABLE; re-run if a resharding is under way",
                moves.join(", ")
            ),
        )
    }
}

fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

fn replica_links(nodes: &[&NodeFacts]) -> Check {
    let replicas: Vec<&&NodeFacts> = nodes.iter().filter(|n| n.role == "replica").collect();
    if replicas.is_empty() {
        return check("replica_links", Status::Unknown, "no replica answered");
    }
    let down: Vec<String> = replicas
        .iter()
        .filter(|n| n.master_link_status.as_deref() != Some("up"))
        .map(|n| {
            // The runbook's fix when the primary is gone for good and no
            // replica was promoted (no majority of primaries to vote).
            format!(
                "{} link {} (primary {}): if that primary is gone and no replica was promoted, run CLUSTER FAILOVER TAKEOVER on {}",
                n.addr,
                n.master_link_status.as_deref().unwrap_or("?"),
                n.primary.as_deref().unwrap_or("?"),
                n.addr
            )
        })
        .collect();
    if down.is_empty() {
        let lag = replicas
            .iter()
            .filter_map(|n| n.master_last_io_seconds_ago)
            .max();
        let lag = lag
            .map(|s| format!(", last io at most {s} s ago"))
            .unwrap_or_default();
        check(
            "replica_links",
            Status::Ok,
            format!("{} replicas up{lag}", replicas.len()),
        )
    } else {
        check("replica_links", Status::Fail, down.join(", "))
    }
}

fn replicas(shards_without_replica: usize) -> Check {
    if shards_without_replica == 0 {
        check(
            "replicas_per_shard",
            Status::Ok,
            "every shard has an online replica",
        )
    } else {
        check(
            "replicas_per_shard",
            Status::Warn,
            format!("{shards_without_replica} shard(s) without an online replica: reads cannot fail over"),
        )
    }
}

fn evictions(nodes: &[&NodeFacts]) -> Check {
    let counts: Vec<(u64, &str)> = nodes
        .iter()
        .filter_map(|n| n.evicted_keys.map(|e| (e, n.addr.as_str())))
        .collect();
    if counts.is_empty() {
        return check(
            "evictions",
            Status::Unknown,
            "no node reported evicted_keys",
        );
    }
    let total: u64 = counts.iter().map(|(e, _)| e).sum();
    if total == 0 {
        check("evictions", Status::Ok, "0 keys evicted")
    } else {
        let worst = counts
            .iter()
            .max_by_key(|(e, _)| *e)
            .map(|(e, a)| format!("{a}: {e}"))
            .unwrap_or_default();
        check(
            "evictions",
            Status::Warn,
            format!("{total} keys evicted since start (most at {worst}): memory is short"),
        )
    }
}

fn memory_policy(nodes: &[&NodeFacts]) -> Check {
    let primaries: Vec<&&NodeFacts> = nodes.iter().filter(|n| n.role == "primary").collect();
    let Some(first) = primaries.iter().find(|n| n.maxmemory_policy.is_some()) else {
        return check(
            "maxmemory_policy",
            Status::Unknown,
            "no primary reported it",
        );
    };
    let (mut full_fails, mut unbounded) = (Vec::new(), Vec::new());
    for n in &primaries {
        match (n.maxmemory_policy.as_deref(), n.maxmemory) {
            (Some("noeviction"), Some(max)) if max > 0 => full_fails.push(n.addr.as_str()),
            (_, Some(0)) => unbounded.push(n.addr.as_str()),
            _ => {}
        }
    }
    let policy = first.maxmemory_policy.as_deref().unwrap_or("?");
    let mut problems = Vec::new();
    if !full_fails.is_empty() {
        problems.push(format!(
            "noeviction with a maxmemory on {}: writes fail with OOM once full",
            full_fails.join(", ")
        ));
    }
    if !unbounded.is_empty() {
        problems.push(format!(
            "no maxmemory on {} of {} primaries: the cache grows until the host runs out",
            unbounded.len(),
            primaries.len()
        ));
    }
    if problems.is_empty() {
        check("maxmemory_policy", Status::Ok, policy.to_owned())
    } else {
        check(
            "maxmemory_policy",
            Status::Warn,
            format!("{policy}; {}", problems.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::facts::Setting;
    use super::*;

    fn healthy(addr: &str, role: &'static str) -> NodeFacts {
        NodeFacts {
            addr: addr.into(),
            role,
            cluster_state: Some("ok".into()),
            slots_assigned: Some(SLOTS),
            slots_ok: Some(SLOTS),
            slots_pfail: Some(0),
            slots_fail: Some(0),
            master_link_status: (role == "replica").then(|| "up".into()),
            master_last_io_seconds_ago: (role == "replica").then_some(1),
            require_full_coverage: Some(Setting::Value("no".into())),
            node_timeout_ms: Some(Setting::Value("1000".into())),
            migration_barrier: Some(Setting::Value("1".into())),
            allow_replica_migration: Some(Setting::Value("yes".into())),
            primary: (role == "replica").then(|| "a:1".into()),
            view: Some(super::super::nodes::Agreement::Majority),
            maxmemory_policy: Some("allkeys-lru".into()),
            maxmemory: Some(1 << 30),
            evicted_keys: Some(0),
            ..NodeFacts::default()
        }
    }

    fn status(checks: &[Check], name: &str) -> Status {
        checks
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
            .unwrap()
    }

    #[test]
    fn a_healthy_cluster_passes_every_check() {
        let nodes = [healthy("a:1", "primary"), healthy("b:1", "replica")];
        let checks = run(&nodes, 0);
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
    }

    #[test]
    fn failures_and_warnings_are_named() {
        let mut p = healthy("a:1", "primary");
        p.slots_ok = Some(10_000);
        p.cluster_state = Some("fail".into());
        p.require_full_coverage = Some(Setting::Value("yes".into()));
        p.evicted_keys = Some(5);
        p.maxmemory_policy = Some("noeviction".into());
        p.slot_moves = vec![super::super::nodes::SlotMove {
            slot: 9,
            state: "migrating",
            peer: "abcdef0123".into(),
        }];
        let mut r = healthy("b:1", "replica");
        r.master_link_status = Some("down".into());
        r.require_full_coverage = Some(Setting::Value("yes".into()));
        let dead = NodeFacts {
            addr: "c:1".into(),
            role: "replica",
            error: Some("timed out".into()),
            ..NodeFacts::default()
        };
        let checks = run(&[p, r, dead], 1);
        let links = checks.iter().find(|c| c.name == "replica_links").unwrap();
        assert!(
            links.detail.contains("CLUSTER FAILOVER TAKEOVER on b:1"),
            "{}",
            links.detail
        );
        for (name, want) in [
            ("reachable", Status::Fail),
            ("cluster_state", Status::Fail),
            ("slots_assigned", Status::Ok),
            ("slots_ok", Status::Fail),
            ("migrating_slots", Status::Fail),
            ("replica_links", Status::Fail),
            ("replicas_per_shard", Status::Warn),
            ("require_full_coverage", Status::Warn),
            ("evictions", Status::Warn),
            ("maxmemory_policy", Status::Warn),
        ] {
            assert_eq!(status(&checks, name), want, "{name}: {checks:#?}");
        }
        let slots_ok = checks.iter().find(|c| c.name == "slots_ok").unwrap();
        assert!(
            slots_ok.detail.contains("10000/16384 at a:1"),
            "{}",
            slots_ok.detail
        );
    }

    #[test]
    fn refused_settings_are_unknown_not_failures() {
        let mut p = healthy("a:1", "primary");
        p.require_full_coverage = Some(Setting::Unknown("NOPERM".into()));
        p.node_timeout_ms = Some(Setting::Unknown("NOPERM".into()));
        let checks = run(&[p], 0);
        assert_eq!(status(&checks, "require_full_coverage"), Status::Unknown);
        assert_eq!(status(&checks, "node_timeout"), Status::Unknown);
        assert!(checks.iter().all(|c| c.status != Status::Fail));
    }
}
