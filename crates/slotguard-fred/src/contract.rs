//! [`FredLeaf`] meets the leaf contract ([`slotguard_core::leaf`]).

use futures_util::future::BoxFuture;
use slotguard_core::{CacheError, Leaf, LeafControl, NodeAddr, Topology};

use crate::convert::to_frame;
use crate::service::FredLeaf;
use crate::source::FredTopologySource;

impl LeafControl for FredLeaf {
    fn replication_info(&self, addr: &NodeAddr) -> BoxFuture<'static, Result<String, CacheError>> {
        let leaf = self.clone();
        let addr = addr.clone();
        Box::pin(async move {
            // The replica-mode client: the one replica reads use.
            let v = leaf.admin(&addr, true, &["INFO", "replication"]).await?;
            let frame = to_frame(v);
            frame.as_string().ok_or_else(|| {
                CacheError::Protocol(format!("unexpected reply to INFO: {}", frame.kind()))
            })
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let leaf = self.clone();
        Box::pin(async move { FredLeaf::shutdown(&leaf).await })
    }

    fn running_tasks(&self) -> usize {
        FredLeaf::running_tasks(self)
    }

    fn is_connected(&self, addr: &NodeAddr) -> bool {
        FredLeaf::is_connected(self, addr)
    }

    fn in_flight(&self, addr: &NodeAddr) -> usize {
        FredLeaf::in_flight(self, addr)
    }
}

impl Leaf for FredLeaf {
    type Source = FredTopologySource;

    fn with_topology(self, topology: Topology) -> Self {
        FredLeaf::with_topology(self, topology)
    }

    fn topology_source(&self, seeds: Vec<NodeAddr>) -> FredTopologySource {
        FredTopologySource::new(self, seeds)
    }
}
