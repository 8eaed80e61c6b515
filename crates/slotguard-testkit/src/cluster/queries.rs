//! Asking a cluster: introspection, raw commands, topology.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::process::Node;
use super::{ClusterSpec, LocalCluster, NodeInfo, NodeState, TlsFiles};
use crate::error::TestkitError;
use crate::resp::Reply;
use crate::slot::key_slot;
use crate::topology::{self, ClusterNode};

pub(super) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub(super) fn reply_text(index: usize, what: &str, reply: &Reply) -> Result<String, TestkitError> {
    reply
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| TestkitError::Protocol(format!("node {index}: {what} returned {reply:?}")))
}

impl LocalCluster {
    // ----- introspection -------------------------------------------------

    /// The certificates of a TLS cluster ([`ClusterSpec::tls`]).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The spec the cluster was started with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// All nodes, including paused and killed ones.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                index: n.index,
                addr: n.client_addr(),
                port: n.port,
                client_port: n.client_port(),
                bus_port: n.bus_port,
                pid: n.pid(),
                state: n.state(),
                dir: n.dir.clone(),
            })
            .collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `127.0.0.1:PORT` of node `index`, as clients see it (its client
    /// proxy's in a proxied cluster).
    ///
    /// # Panics
    ///
    /// If `index` is out of range (a bug in the calling test).
    pub fn addr(&self, index: usize) -> String {
        self.nodes[index].client_addr()
    }

    /// Addresses of all nodes, to use as client seeds.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(Node::client_addr).collect()
    }

    /// The node's state as tracked by the testkit.
    pub fn node_state(&self, index: usize) -> Result<NodeState, TestkitError> {
        Ok(self.node(index)?.state())
    }

    /// The cluster node id (40 hex digits) of node `index`.
    pub fn node_id(&self, index: usize) -> Result<String, TestkitError> {
        self.node(index)?;
        self.node_ids
            .get(index)
            .cloned()
            .ok_or_else(|| TestkitError::Unexpected(format!("node {index} has no id yet")))
    }

    /// The index of the node listening on `addr` (`127.0.0.1:PORT` or
    /// `localhost:PORT`, its own port or its client proxy's; a `@busport`
    /// suffix as in CLUSTER NODES is ignored).
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        let addr = addr.split('@').next().unwrap_or(addr);
        let (host, port) = addr.rsplit_once(':')?;
        if !matches!(host, "127.0.0.1" | "localhost" | "") {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        self.nodes
            .iter()
            .position(|n| n.port == port || n.client_port() == port)
    }

    /// Path of node `index`'s `redis.log`.
    pub fn log_path(&self, index: usize) -> Result<PathBuf, TestkitError> {
        Ok(self.node(index)?.log_path())
    }

    /// The last `lines` lines of node `index`'s `redis.log` (handy in assertion messages).
    pub fn log_tail(&self, index: usize, lines: usize) -> Result<String, TestkitError> {
        Ok(self.node(index)?.log_tail(lines))
    }

    /// The temp dir holding every node's directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    // ----- commands ------------------------------------------------------

    /// Runs any command on one node and returns its reply; an error reply is
    /// `Ok(Reply::Error(..))`. Uses a sync RESP2 client with a 1 s connect and
    /// 2 s read/write timeout, so a paused node yields `Err`, never a hang.
    pub fn command(&self, index: usize, args: &[&[u8]]) -> Result<Reply, TestkitError> {
        self.node(index)?.exec(args)
    }

    /// Like [`command`](Self::command) with string arguments.
    pub fn command_str(&self, index: usize, args: &[&str]) -> Result<Reply, TestkitError> {
        self.node(index)?.exec(args)
    }

    /// Normal client connections on node `index` other than the testkit's
    /// own (the one asking): the connections a client under test holds
    /// there (`CLIENT LIST TYPE normal`).
    pub fn client_connections(&self, index: usize) -> Result<usize, TestkitError> {
        let list = self.command_ok(index, &["CLIENT", "LIST", "TYPE", "normal"])?;
        let text = list.as_str().unwrap_or_default();
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
            .saturating_sub(1))
    }

    /// Like [`command_str`](Self::command_str), but an error reply becomes
    /// [`TestkitError::Server`].
    pub fn command_ok(&self, index: usize, args: &[&str]) -> Result<Reply, TestkitError> {
        self.node(index)?.exec_ok(args)
    }

    /// `INFO <section>` parsed into `key -> value` (an empty section means plain `INFO`).
    pub fn info(
        &self,
        index: usize,
        section: &str,
    ) -> Result<HashMap<String, String>, TestkitError> {
        let node = self.node(index)?;
        let reply = if section.is_empty() {
            node.exec_ok(&["INFO"])?
        } else {
            node.exec_ok(&["INFO", section])?
        };
        Ok(parse_info(&reply_text(index, "INFO", &reply)?))
    }

    /// `CLUSTER INFO` parsed into `key -> value`.
    pub fn cluster_info(&self, index: usize) -> Result<HashMap<String, String>, TestkitError> {
        let reply = self.node(index)?.exec_ok(&["CLUSTER", "INFO"])?;
        Ok(parse_info(&reply_text(index, "CLUSTER INFO", &reply)?))
    }

    /// `CLUSTER NODES` of node `index`, parsed.
    pub fn cluster_nodes(&self, index: usize) -> Result<Vec<ClusterNode>, TestkitError> {
        let reply = self.node(index)?.exec_ok(&["CLUSTER", "NODES"])?;
        topology::parse_cluster_nodes(&reply_text(index, "CLUSTER NODES", &reply)?)
    }

    /// The first element of `ROLE`: `"master"` or `"slave"`.
    pub fn role(&self, index: usize) -> Result<String, TestkitError> {
        let reply = self.node(index)?.exec_ok(&["ROLE"])?;
        reply
            .as_array()
            .and_then(|items| items.first())
            .and_then(Reply::as_str)
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Protocol(format!("node {index}: ROLE returned {reply:?}")))
    }

    // ----- topology ------------------------------------------------------

    /// Index of the primary serving `slot`, according to the first live
    /// (not paused, not killed) node that answers.
    pub fn primary_of_slot(&self, slot: u16) -> Result<usize, TestkitError> {
        let (asked, view) = self.live_view(None)?;
        let owner = view
            .iter()
            .find(|n| n.is_master() && n.owns(slot))
            .ok_or_else(|| {
                TestkitError::Unexpected(format!("slot {slot} has no owner in node {asked}'s view"))
            })?;
        self.index_of_id_or_err(&owner.id)
    }

    /// Indices of the nodes that replicate `primary_index`, according to a live
    /// node (killed replicas are still listed while the cluster remembers them).
    pub fn replicas_of(&self, primary_index: usize) -> Result<Vec<usize>, TestkitError> {
        let id = self.node_id(primary_index)?;
        let (_, view) = self.live_view(None)?;
        let mut out = view
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| self.index_of_id_or_err(&n.id))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        Ok(out)
    }

    /// Indices of the primaries that own at least one slot, according to a live node.
    pub fn primaries(&self) -> Result<Vec<usize>, TestkitError> {
        let (_, view) = self.live_view(None)?;
        let mut out = view
            .iter()
            .filter(|n| n.is_master() && !n.slots.is_empty())
            .map(|n| self.index_of_id_or_err(&n.id))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        Ok(out)
    }

    /// The slot ranges node `index` serves, according to a live node.
    pub fn slots_of(&self, index: usize) -> Result<Vec<RangeInclusive<u16>>, TestkitError> {
        let id = self.node_id(index)?;
        let (_, view) = self.live_view(None)?;
        Ok(view
            .into_iter()
            .find(|n| n.id == id)
            .map(|n| n.slots)
            .unwrap_or_default())
    }

    /// `n` distinct keys whose slots `primary_index` currently serves.
    pub fn key_for_slot_of(
        &self,
        primary_index: usize,
        n: usize,
    ) -> Result<Vec<String>, TestkitError> {
        let slots = self.slots_of(primary_index)?;
        if slots.is_empty() && n > 0 {
            return Err(TestkitError::Unexpected(format!(
                "node {primary_index} serves no slots"
            )));
        }
        let mut keys = Vec::with_capacity(n);
        let mut i: u64 = 0;
        while keys.len() < n {
            let key = format!("sg:key:{primary_index}:{i}");
            let slot = key_slot(key.as_bytes());
            if slots.iter().any(|r| r.contains(&slot)) {
                keys.push(key);
            }
            i += 1;
        }
        Ok(keys)
    }
}
