//! The degradation runbook as checks over the facts read from each node
//! (DESIGN.md §8). Pure functions, so every verdict is tested on fixed facts.

use serde::Serialize;

use super::facts::NodeFacts;

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

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

const SLOTS: u64 = slotguard::core::SLOT_COUNT as u64;

/// Every check, in runbook order. `shards_without_replica` counts the shards
/// of the topology view that have no online replica.
pub(crate) fn run(nodes: &[NodeFacts], shards_without_replica: usize) -> Vec<Check> {
    let reached: Vec<&NodeFacts> = nodes.iter().filter(|n| n.error.is_none()).collect();
    vec![
        reachable(nodes),
        cluster_state(&reached),
        slots(&reached, "slots_assigned", |n| n.slots_assigned),
        slots(&reached, "slots_ok", |n| n.slots_ok),
        migrations(&reached),
        replica_links(&reached),
        replicas(shards_without_replica),
        full_coverage(&reached),
        node_timeout(&reached),
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
        // A migration in progress is normal during resharding; one left
        // half-done makes every request for the slot take an ASK detour.
        check("migrating_slots", Status::Warn, moves.join(", "))
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
            format!(
                "{}: {}",
                n.addr,
                n.master_link_status.as_deref().unwrap_or("?")
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

/// The distinct values of a setting across nodes, or the reason none was read.
fn setting_values(
    nodes: &[&NodeFacts],
    get: impl Fn(&NodeFacts) -> Option<&super::facts::Setting>,
) -> Result<Vec<String>, String> {
    let mut values: Vec<String> = Vec::new();
    let mut why = None;
    for n in nodes {
        match get(n) {
            Some(s) => match s.value() {
                Some(v) => {
                    if !values.iter().any(|x| x == v) {
                        values.push(v.to_owned());
                    }
                }
                None => {
                    if let super::facts::Setting::Unknown(e) = s {
                        why.get_or_insert_with(|| e.clone());
                    }
                }
            },
            None => {
                why.get_or_insert_with(|| "not read".to_owned());
            }
        }
    }
    if values.is_empty() {
        Err(why.unwrap_or_else(|| "no node answered".to_owned()))
    } else {
        Ok(values)
    }
}

fn full_coverage(nodes: &[&NodeFacts]) -> Check {
    match setting_values(nodes, |n| n.require_full_coverage.as_ref()) {
        Err(why) => check("require_full_coverage", Status::Unknown, why),
        Ok(v) if v == ["no"] => check("require_full_coverage", Status::Ok, "no: shards that can answer keep answering"),
        Ok(v) if v == ["yes"] => check(
            "require_full_coverage",
            Status::Warn,
            "yes: one shard without a primary makes every node refuse with CLUSTERDOWN until a promotion; slotguard's fallback path answers meanwhile",
        ),
        Ok(v) => check("require_full_coverage", Status::Warn, format!("differs between nodes: {}", v.join(", "))),
    }
}

fn node_timeout(nodes: &[&NodeFacts]) -> Check {
    match setting_values(nodes, |n| n.node_timeout_ms.as_ref()) {
        Err(why) => check("node_timeout", Status::Unknown, why),
        Ok(v) if v.len() > 1 => check(
            "node_timeout",
            Status::Warn,
            format!("differs between nodes: {} ms", v.join(", ")),
        ),
        Ok(v) => {
            let ms: u64 = v[0].parse().unwrap_or(0);
            let detail = format!(
                "{ms} ms: a dead primary is replaced after about {:.1} s",
                ms as f64 * 2.0 / 1000.0
            );
            check("node_timeout", Status::Ok, detail)
        }
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
        p.slot_moves = vec![super::super::facts::SlotMove {
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
        for (name, want) in [
            ("reachable", Status::Fail),
            ("cluster_state", Status::Fail),
            ("slots_assigned", Status::Ok),
            ("slots_ok", Status::Fail),
            ("migrating_slots", Status::Warn),
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
