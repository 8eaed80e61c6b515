//! The topology source over the fred leaf's clients: the default leaf's
//! `CLUSTER SHARDS`/`CLUSTER SLOTS`/`CLUSTER INFO` reading, fed with fred's
//! replies.

use std::fmt;

use futures_util::future::BoxFuture;
use slotguard_core::{BoxError, CacheError, ClusterView, NodeAddr, TopologySource};
use slotguard_node::{fetch_view_with, Frame};

use crate::convert::to_frame;
use crate::service::FredLeaf;

/// A [`TopologySource`] asking nodes through [`FredLeaf`]'s clients
/// (credentials and TLS included), each fetch within the leaf's
/// `admin_timeout`.
#[derive(Clone)]
pub struct FredTopologySource {
    leaf: FredLeaf,
    seeds: Vec<NodeAddr>,
}

impl fmt::Debug for FredTopologySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredTopologySource")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl FredTopologySource {
    /// A source sharing `leaf`'s clients, starting from `seeds`.
    pub fn new(leaf: &FredLeaf, seeds: Vec<NodeAddr>) -> Self {
        Self {
            leaf: leaf.clone(),
            seeds,
        }
    }
}

impl TopologySource for FredTopologySource {
    fn fetch_view(&self, node: &NodeAddr) -> BoxFuture<'static, Result<ClusterView, BoxError>> {
        let leaf = self.leaf.clone();
        let node = node.clone();
        Box::pin(async move {
            let cfg = leaf.config();
            let timeout = cfg.admin_timeout;
            let tls = cfg.tls.is_some();
            let remap = cfg.remap.clone();
            let ask = |words: &'static [&'static str]| -> BoxFuture<'_, Result<Frame, CacheError>> {
                let leaf = leaf.clone();
                let node = node.clone();
                Box::pin(async move {
                    match leaf.admin(&node, false, words).await {
                        Ok(v) => Ok(to_frame(v)),
                        // The parser tells "unknown command" (a server
                        // before CLUSTER SHARDS) from other refusals.
                        Err(CacheError::Server(text)) => Ok(Frame::Error(text.into_bytes().into())),
                        Err(e) => Err(e),
                    }
                })
            };
            let fetch = fetch_view_with(&node, tls, remap.as_ref(), ask);
            match tokio::time::timeout(timeout, fetch).await {
                Ok(r) => r.map_err(BoxError::from),
                Err(_) => Err(CacheError::Timeout { node }.into()),
            }
        })
    }

    fn seeds(&self) -> Vec<NodeAddr> {
        self.seeds.clone()
    }
}
