//! Reading the cluster: the seed's topology view, then every node the
//! cluster knows. The topology view lists only nodes that serve slots or
//! replicate them, so a primary that failed and was replaced drops out of
//! it; every node's own `CLUSTER NODES` still lists it (flagged `fail`).
//! So doctor asks every node of the view, then every node any of them lists
//! that it has not asked yet, until no new node turns up.

use std::time::Duration;

use slotguard::node::Frame;
use slotguard::{
    core::ClusterView, node::AddressRemap, NodeAddr, NodeConfig, NodeService, NodeTopologySource,
    TopologySource,
};

use super::facts::{NodeFacts, Setting};
use super::nodes::{self, Agreement, PeerLine};

/// Rounds of "ask the nodes the others listed": one is enough unless
/// nodes are being added while doctor runs; the bound keeps it finite.
const MAX_ROUNDS: usize = 3;

/// What doctor learned about the cluster.
pub(super) struct Discovery {
    /// The node whose topology view was used.
    pub(super) source: String,
    pub(super) facts: Vec<NodeFacts>,
    /// Shards of the topology view without a replica whose link is up.
    pub(super) shards_without_replica: usize,
}

/// A node to ask: its address (none when the cluster knows none), role and id.
struct Candidate {
    addr: Option<NodeAddr>,
    role: &'static str,
    id: Option<String>,
    outside_topology: bool,
}

pub(super) async fn discover(seeds: Vec<NodeAddr>, timeout: Duration) -> Result<Discovery, String> {
    // Credentials and TLS as the applications get them
    // (SLOTGUARD_USERNAME, SLOTGUARD_PASSWORD, SLOTGUARD_TLS_CA, ...).
    let config = NodeConfig::from_env()
        .map_err(|e| format!("settings from the environment: {e}"))?
        .with_admin_timeout(timeout)
        .with_connect_timeout(timeout);
    let remap = config.remap.clone();
    let leaf = NodeService::new(config);
    let source = NodeTopologySource::new(&leaf, seeds.clone());
    let view = source
        .fetch_first(seeds.clone())
        .await
        .map_err(|e| format!("no seed answered ({}): {e}", list(&seeds)))?;
    let mut facts = read_all(&leaf, of_view(&view)).await?;
    for _ in 0..MAX_ROUNDS {
        let more = unknown_peers(&facts, remap.as_ref());
        if more.is_empty() {
            break;
        }
        facts.extend(read_all(&leaf, more).await?);
    }
    annotate(&mut facts);
    // A replica counts when it says its link to the primary is up; the
    // view's `health` is no help here: Redis 7.0 reports a replica as
    // `loading` while its replication offset is 0 (an empty dataset).
    let shards_without_replica = view
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
    Ok(Discovery {
        source: view.source.to_string(),
        facts,
        shards_without_replica,
    })
}

fn list(seeds: &[NodeAddr]) -> String {
    seeds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn of_view(view: &ClusterView) -> Vec<Candidate> {
    let mut out = Vec::new();
    for shard in &view.shards {
        let nodes = std::iter::once((&shard.primary, "primary"))
            .chain(shard.replicas.iter().map(|r| (r, "replica")));
        for (node, role) in nodes {
            out.push(Candidate {
                addr: Some(node.addr.clone()),
                role,
                id: node.id.clone(),
                outside_topology: false,
            });
        }
    }
    out
}

/// Nodes some answering node lists that no fact covers yet (by id, or by
/// address for facts without an id).
fn unknown_peers(facts: &[NodeFacts], remap: Option<&AddressRemap>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = Vec::new();
    let lines = facts.iter().flat_map(|f| f.peers.iter());
    for line in lines {
        let addr = line.addr.as_ref().map(|a| match remap {
            Some(r) => r.apply(a),
            None => a.clone(),
        });
        let known = facts.iter().any(|f| {
            f.id.as_deref() == Some(line.id.as_str())
                || (f.id.is_none() && addr.as_ref().is_some_and(|a| f.addr == a.to_string()))
        });
        let queued = out
            .iter()
            .any(|c| c.id.as_deref() == Some(line.id.as_str()));
        if !known && !queued {
            out.push(Candidate {
                addr,
                role: line.role(),
                id: Some(line.id.clone()),
                outside_topology: true,
            });
        }
    }
    out
}

async fn read_all(leaf: &NodeService, nodes: Vec<Candidate>) -> Result<Vec<NodeFacts>, String> {
    let handles: Vec<_> = nodes
        .into_iter()
        .map(|c| {
            let leaf = leaf.clone();
            // The CLI's own runtime: every node is asked at once, so a
            // paused node costs one deadline, not one per node.
            tokio::spawn(async move { read_node(&leaf, c).await })
        })
        .collect();
    let mut facts = Vec::with_capacity(handles.len());
    for h in handles {
        facts.push(h.await.map_err(|e| format!("a node check failed: {e}"))?);
    }
    Ok(facts)
}

/// Every node's `CLUSTER NODES` together: whether its view of slot owners
/// is the majority's, and how the others flag each node.
fn annotate(facts: &mut [NodeFacts]) {
    let (marks, agreement) = {
        let views: Vec<&[PeerLine]> = facts
            .iter()
            .filter(|f| !f.peers.is_empty())
            .map(|f| f.peers.as_slice())
            .collect();
        let beliefs: Vec<_> = views.iter().map(|v| nodes::belief(v)).collect();
        let agreement = nodes::agreement(&beliefs);
        // Flags only count from nodes that share the majority's slot owners:
        // a node cut off in a minority flags every other node `fail`, which
        // says nothing about them (view_agreement names that node instead).
        let trusted: Vec<&[PeerLine]> = views
            .iter()
            .zip(&agreement)
            .filter(|(_, a)| **a != Agreement::SlotsDiffer)
            .map(|(v, _)| *v)
            .collect();
        (nodes::marks(&trusted), agreement)
    };
    let mut agreement = agreement.into_iter();
    for f in facts.iter_mut() {
        if let Some(m) = f.id.as_ref().and_then(|id| marks.get(id)) {
            f.marked = m.clone();
        }
        if !f.peers.is_empty() {
            f.view = agreement.next();
        }
    }
}

/// The text of a string reply, or what the node answered instead.
fn text(reply: Frame) -> Result<String, String> {
    match reply {
        Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
        f => f
            .as_string()
            .ok_or_else(|| format!("unexpected {} reply", f.kind())),
    }
}

/// The value of a `CONFIG GET name` reply (RESP2 array or RESP3 map).
fn setting(reply: Frame) -> Setting {
    let value = match reply {
        Frame::Array(items) => items.get(1).and_then(Frame::as_string),
        Frame::Map(pairs) => pairs.first().and_then(|(_, v)| v.as_string()),
        Frame::Error(e) => return Setting::Unknown(String::from_utf8_lossy(&e).into_owned()),
        other => return Setting::Unknown(format!("unexpected {} reply", other.kind())),
    };
    match value {
        Some(v) => Setting::Value(v),
        None => Setting::Unknown("not supported by this server".to_owned()),
    }
}

async fn read_node(leaf: &NodeService, c: Candidate) -> NodeFacts {
    let mut f = NodeFacts {
        addr: c
            .addr
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string),
        role: c.role,
        id: c.id,
        outside_topology: c.outside_topology,
        ..NodeFacts::default()
    };
    match c.addr {
        None => f.error = Some("the cluster knows no address for it".to_owned()),
        Some(addr) => {
            if let Err(e) = ask_all(leaf, &addr, &mut f).await {
                f.error = Some(e);
            }
        }
    }
    f
}

/// Asks one node everything doctor reads, filling `f`. `Err` when the node
/// could not be asked (or stopped answering): the remaining commands would
/// only wait out their deadlines too, so a node that stalls midway costs
/// two deadlines, not nine. A refused command (an error reply) is not that.
async fn ask_all(leaf: &NodeService, addr: &NodeAddr, f: &mut NodeFacts) -> Result<(), String> {
    let ask = |words: &'static [&'static str]| async move {
        leaf.admin(addr, words).await.map_err(|e| e.to_string())
    };
    f.read_cluster_info(&text(ask(&["CLUSTER", "INFO"]).await?)?);
    const INFO: [&[&str]; 3] = [
        &["INFO", "replication"],
        &["INFO", "memory"],
        &["INFO", "stats"],
    ];
    for words in INFO {
        if let Ok(t) = text(ask(words).await?) {
            f.read_info(&t);
        }
    }
    if let Ok(t) = text(ask(&["CLUSTER", "NODES"]).await?) {
        f.peers = nodes::parse_cluster_nodes(&t);
        if let Some(me) = nodes::myself(&f.peers) {
            f.slot_moves = me.moves.clone();
            f.id.get_or_insert_with(|| me.id.clone());
        }
    }
    f.require_full_coverage = Some(setting(
        ask(&["CONFIG", "GET", "cluster-require-full-coverage"]).await?,
    ));
    f.node_timeout_ms = Some(setting(
        ask(&["CONFIG", "GET", "cluster-node-timeout"]).await?,
    ));
    f.migration_barrier = Some(setting(
        ask(&["CONFIG", "GET", "cluster-migration-barrier"]).await?,
    ));
    f.allow_replica_migration = Some(setting(
        ask(&["CONFIG", "GET", "cluster-allow-replica-migration"]).await?,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(id: &str, cluster_nodes: &str) -> NodeFacts {
        NodeFacts {
            addr: format!("{id}:1"),
            id: Some(id.to_owned()),
            peers: nodes::parse_cluster_nodes(cluster_nodes),
            ..NodeFacts::default()
        }
    }

    #[test]
    fn a_minority_nodes_flags_do_not_count() {
        // a and b agree that b took over c's slots and flag c failed; c,
        // cut off, still owns its slots and flags a and b pfail.
        let majority = "aaa 1.1.1.1:1@2 master - 0 0 1 connected 0-8191\n\
                        bbb 1.1.1.2:1@2 master - 0 0 3 connected 8192-16383\n\
                        ccc 1.1.1.3:1@2 master,fail - 0 0 2 connected\n";
        let mut all = vec![
            facts("aaa", &majority.replacen("master -", "myself,master -", 1)),
            facts("bbb", majority),
            facts(
                "ccc",
                "aaa 1.1.1.1:1@2 master,fail? - 0 0 1 connected 0-8191\n\
                 bbb 1.1.1.2:1@2 slave,fail? ccc 0 0 2 connected\n\
                 ccc 1.1.1.3:1@2 myself,master - 0 0 2 connected 8192-16383\n",
            ),
        ];
        annotate(&mut all);
        assert_eq!(all[2].view, Some(Agreement::SlotsDiffer));
        assert_eq!(all[0].view, Some(Agreement::Majority));
        assert_eq!(all[2].marked.get("fail"), Some(&2), "{:?}", all[2].marked);
        assert!(all[0].marked.is_empty(), "{:?}", all[0].marked);
        assert!(all[1].marked.is_empty(), "{:?}", all[1].marked);
    }
}
