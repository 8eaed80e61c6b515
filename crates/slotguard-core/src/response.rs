//! What comes back, and who answered.

use std::time::Duration;

use bytes::Bytes;

use crate::addr::NodeAddr;

/// Which source answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// The slot's primary.
    Primary,
    /// A replica of the slot's primary.
    Replica,
    /// The local near-cache, for a read the cluster could not answer (or
    /// within a raised `fresh_for`).
    NearCache,
    /// The secondary (authoritative) store.
    Secondary,
    /// Client-side caching: the near-cache answered a healthy read from an
    /// entry kept exact by RESP3 client tracking, without asking the
    /// cluster. Nothing failed: this is a hit, not a fallback.
    ClientCache,
}

impl Path {
    /// A short lowercase name for spans and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Path::Primary => "primary",
            Path::Replica => "replica",
            Path::NearCache => "near_cache",
            Path::Secondary => "secondary",
            Path::ClientCache => "client_cache",
        }
    }
}

impl From<crate::request::Role> for Path {
    /// The path of an answer from a node of this role.
    fn from(role: crate::request::Role) -> Self {
        match role {
            crate::request::Role::Primary => Path::Primary,
            crate::request::Role::Replica => Path::Replica,
        }
    }
}

/// Provenance of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The source.
    pub path: Path,
    /// The node, for cluster answers.
    pub node: Option<NodeAddr>,
    /// How old the value may be, when known (near-cache entries, replicas
    /// with a known lag).
    pub age: Option<Duration>,
}

/// The answer to a [`CacheRequest`](crate::CacheRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheResponse {
    /// `GET`: the value, `None` when absent. `SET`: `None`. `DEL`: `None`;
    /// see [`CacheResponse::deleted`].
    pub value: Option<Bytes>,
    /// `DEL`: how many keys were removed (0 or 1).
    pub deleted: u64,
    /// Who answered.
    pub served: Served,
}

impl CacheResponse {
    /// A response from a cluster node.
    pub fn from_node(value: Option<Bytes>, node: NodeAddr, path: Path) -> Self {
        Self {
            value,
            deleted: 0,
            served: Served {
                path,
                node: Some(node),
                age: None,
            },
        }
    }

    /// `DEL`: whether the key existed.
    pub fn deleted(&self) -> bool {
        self.deleted > 0
    }
}
