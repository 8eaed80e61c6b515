//! What a [`TopologySource`](super::TopologySource) reports.

use crate::addr::NodeAddr;
use crate::slot::SLOT_COUNT;

/// One node's view of the cluster, as a
/// [`TopologySource`](super::TopologySource) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The node that answered.
    pub source: NodeAddr,
    /// Shards with at least one slot (empty primaries are left out).
    pub shards: Vec<ShardView>,
    /// `cluster_current_epoch` of the answering node, when known.
    pub current_epoch: Option<u64>,
    /// `cluster_state:ok` at the answering node, when known.
    pub state_ok: Option<bool>,
}

impl ClusterView {
    /// How many of the 16384 slots have an owner in this view (overlapping
    /// ranges count once).
    pub fn covered_slots(&self) -> usize {
        let mut slots = vec![false; SLOT_COUNT as usize];
        for &(lo, hi) in self.shards.iter().flat_map(|s| s.slots.iter()) {
            for slot in lo..=hi.min(SLOT_COUNT - 1) {
                slots[slot as usize] = true;
            }
        }
        slots.iter().filter(|&&c| c).count()
    }
}

/// One shard in a [`ClusterView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    /// The primary.
    pub primary: NodeView,
    /// Its replicas.
    pub replicas: Vec<NodeView>,
}

/// One node in a [`ShardView`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Where to reach it.
    pub addr: NodeAddr,
    /// Its cluster node id.
    pub id: Option<String>,
    /// Whether the reporting node considers it healthy (`health: online`).
    pub online: bool,
}
