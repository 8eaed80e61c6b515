//! Checks of the cluster settings every node should share
//! (`CONFIG GET cluster-*`): full coverage, node timeout, replica migration.
//! A node that refuses `CONFIG` makes them `unknown`, never failed.

use std::collections::HashMap;

use super::checks::{check, Check, Status};
use super::facts::{NodeFacts, Setting};

/// The distinct values of a setting across nodes, or the reason none was read.
fn setting_values(
    nodes: &[&NodeFacts],
    get: impl Fn(&NodeFacts) -> Option<&Setting>,
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
                    if let Setting::Unknown(e) = s {
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

pub(crate) fn full_coverage(nodes: &[&NodeFacts]) -> Check {
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

pub(crate) fn node_timeout(nodes: &[&NodeFacts]) -> Check {
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

/// `cluster-migration-barrier`: a replica moves to a primary left without
/// one only when its own primary keeps at least that many other working
/// replicas. Warns when a shard is orphaned and no replica can move.
pub(crate) fn migration_barrier(nodes: &[&NodeFacts], shards_without_replica: usize) -> Check {
    const NAME: &str = "migration_barrier";
    let values = match setting_values(nodes, |n| n.migration_barrier.as_ref()) {
        Err(why) => return check(NAME, Status::Unknown, why),
        Ok(v) if v.len() > 1 => {
            return check(
                NAME,
                Status::Warn,
                format!("differs between nodes: {}", v.join(", ")),
            )
        }
        Ok(v) => v,
    };
    let barrier: usize = values[0].parse().unwrap_or(1);
    let allowed = setting_values(nodes, |n| n.allow_replica_migration.as_ref())
        .map(|v| !v.iter().any(|x| x == "no"))
        .unwrap_or(true);
    // Working replicas per primary, as the replicas themselves report.
    let mut per_primary: HashMap<&str, usize> = HashMap::new();
    for n in nodes.iter().filter(|n| n.role == "replica") {
        if let (Some("up"), Some(p)) = (n.master_link_status.as_deref(), n.primary.as_deref()) {
            *per_primary.entry(p).or_default() += 1;
        }
    }
    let most = per_primary.values().copied().max().unwrap_or(0);
    let detail = format!(
        "{barrier}: a replica moves to an orphaned primary only if its own keeps {barrier} other working replica(s){}",
        if allowed { "" } else { "; replica migration is off (cluster-allow-replica-migration no)" }
    );
    if shards_without_replica > 0 && (!allowed || most <= barrier) {
        check(
            NAME,
            Status::Warn,
            format!(
                "{detail}; {shards_without_replica} shard(s) without a replica and no replica can move there: add replicas"
            ),
        )
    } else {
        check(NAME, Status::Ok, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: &'static str, barrier: &str, primary: &str) -> NodeFacts {
        NodeFacts {
            addr: "a:1".into(),
            role,
            master_link_status: (role == "replica").then(|| "up".into()),
            primary: (role == "replica").then(|| primary.into()),
            migration_barrier: Some(Setting::Value(barrier.into())),
            allow_replica_migration: Some(Setting::Value("yes".into())),
            ..NodeFacts::default()
        }
    }

    #[test]
    fn migration_barrier_warns_only_when_an_orphan_cannot_be_helped() {
        let one_each = [node("primary", "1", ""), node("replica", "1", "p:1")];
        let refs: Vec<&NodeFacts> = one_each.iter().collect();
        assert_eq!(migration_barrier(&refs, 0).status, Status::Ok);
        // An orphaned shard, and no primary with a spare replica.
        assert_eq!(migration_barrier(&refs, 1).status, Status::Warn);
        // A primary with two replicas can give one away.
        let spare = [
            node("replica", "1", "p:1"),
            node("replica", "1", "p:1"),
            node("primary", "1", ""),
        ];
        let refs: Vec<&NodeFacts> = spare.iter().collect();
        let c = migration_barrier(&refs, 1);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        // Disagreeing nodes, and a refused CONFIG.
        let differ = [node("primary", "1", ""), node("primary", "2", "")];
        let refs: Vec<&NodeFacts> = differ.iter().collect();
        assert_eq!(migration_barrier(&refs, 0).status, Status::Warn);
        let mut refused = node("primary", "1", "");
        refused.migration_barrier = Some(Setting::Unknown("NOPERM".into()));
        assert_eq!(migration_barrier(&[&refused], 0).status, Status::Unknown);
    }
}
