//! What `slotguard doctor` reads from each node, and the parsers of the
//! servers' text replies (kept apart from the network so they are tested on
//! fixed text).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::nodes::{Agreement, PeerLine, SlotMove};

/// Parses `INFO`-style text (`key:value` lines; `#` headers and blank lines
/// ignored).
pub(crate) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end_matches('\r').split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// One setting read with `CONFIG GET`: its value, or why it could not be read
/// (a managed service or an ACL user without `CONFIG` refuses it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Setting {
    /// The server's value.
    Value(String),
    /// The server refused or did not know the setting.
    Unknown(String),
}

impl Setting {
    pub(crate) fn value(&self) -> Option<&str> {
        match self {
            Setting::Value(v) => Some(v),
            Setting::Unknown(_) => None,
        }
    }
}

/// Everything read from one node. `error` is set when the node could not be
/// asked at all; fields it could not give are `None`.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct NodeFacts {
    pub(crate) addr: String,
    /// `primary` or `replica`, as the topology view says.
    pub(crate) role: &'static str,
    /// The node's id in the topology view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cluster_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slots_assigned: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slots_ok: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slots_pfail: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) slots_fail: Option<u64>,
    /// `master_link_status` (replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) master_link_status: Option<String>,
    /// `master_host:master_port` (replicas): the primary it replicates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) primary: Option<String>,
    /// `master_last_io_seconds_ago` (replicas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) master_last_io_seconds_ago: Option<i64>,
    pub(crate) slot_moves: Vec<SlotMove>,
    /// How the other nodes flag this one (`fail`, `pfail`, `handshake`,
    /// `noaddr`) and how many of them say so.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) marked: BTreeMap<String, usize>,
    /// How this node's view of slot owners compares with the majority's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) view: Option<Agreement>,
    /// Found in some node's `CLUSTER NODES` but not in the topology view
    /// (a failed primary that was replaced, a node being added).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) outside_topology: bool,
    /// This node's `CLUSTER NODES` (not printed: it is summed up in
    /// `marked` and `view` of every node).
    #[serde(skip)]
    pub(crate) peers: Vec<PeerLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) require_full_coverage: Option<Setting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_timeout_ms: Option<Setting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) migration_barrier: Option<Setting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) allow_replica_migration: Option<Setting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maxmemory_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maxmemory: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) evicted_keys: Option<u64>,
}

impl NodeFacts {
    /// Fills the fields that come from `CLUSTER INFO`.
    pub(crate) fn read_cluster_info(&mut self, text: &str) {
        let info = parse_info(text);
        let num = |k: &str| info.get(k).and_then(|v| v.parse().ok());
        self.cluster_state = info.get("cluster_state").cloned();
        self.slots_assigned = num("cluster_slots_assigned");
        self.slots_ok = num("cluster_slots_ok");
        self.slots_pfail = num("cluster_slots_pfail");
        self.slots_fail = num("cluster_slots_fail");
    }

    /// Fills the fields that come from `INFO replication`, `memory` and `stats`.
    pub(crate) fn read_info(&mut self, text: &str) {
        let info = parse_info(text);
        if let Some(link) = info.get("master_link_status") {
            self.master_link_status = Some(link.clone());
        }
        if let (Some(host), Some(port)) = (info.get("master_host"), info.get("master_port")) {
            self.primary = Some(format!("{host}:{port}"));
        }
        if let Some(io) = info.get("master_last_io_seconds_ago") {
            self.master_last_io_seconds_ago = io.parse().ok();
        }
        if let Some(policy) = info.get("maxmemory_policy") {
            self.maxmemory_policy = Some(policy.clone());
        }
        if let Some(max) = info.get("maxmemory").and_then(|v| v.parse().ok()) {
            self.maxmemory = Some(max);
        }
        if let Some(ev) = info.get("evicted_keys").and_then(|v| v.parse().ok()) {
            self.evicted_keys = Some(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_parse_and_headers_are_skipped() {
        let info = parse_info("# Replication\r\nrole:slave\r\nmaster_link_status:down\r\n\r\n");
        assert_eq!(info.get("role").map(String::as_str), Some("slave"));
        assert_eq!(
            info.get("master_link_status").map(String::as_str),
            Some("down")
        );
        assert_eq!(info.len(), 2);
    }

    #[test]
    fn node_facts_read_cluster_info_and_info() {
        let mut f = NodeFacts::default();
        f.read_cluster_info(
            "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10000\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:6384\r\n",
        );
        f.read_info("master_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:1\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\nevicted_keys:3\r\n");
        assert_eq!(f.cluster_state.as_deref(), Some("fail"));
        assert_eq!(
            (f.slots_assigned, f.slots_ok, f.slots_fail),
            (Some(16384), Some(10000), Some(6384))
        );
        assert_eq!(f.master_link_status.as_deref(), Some("up"));
        assert_eq!(f.primary.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(f.master_last_io_seconds_ago, Some(1));
        assert_eq!(f.maxmemory_policy.as_deref(), Some("noeviction"));
        assert_eq!((f.maxmemory, f.evicted_keys), (Some(0), Some(3)));
    }
}
