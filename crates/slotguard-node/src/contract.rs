//! [`NodeService`] meets the leaf contract ([`slotguard_core::leaf`]).

use futures_util::future::BoxFuture;
use slotguard_core::{CacheError, Leaf, LeafControl, NodeAddr, Topology};

use crate::pool::Mode;
use crate::resp::Frame;
use crate::service::NodeService;
use crate::source::NodeTopologySource;

impl LeafControl for NodeService {
    fn replication_info(&self, addr: &NodeAddr) -> BoxFuture<'static, Result<String, CacheError>> {
        let pool = self.pool().clone();
        let addr = addr.clone();
        Box::pin(async move {
            // The replica-mode connection: the one replica reads use.
            let timeout = pool.config().admin_timeout;
            match pool
                .admin(&addr, Mode::Replica, &["INFO", "replication"], timeout)
                .await?
            {
                Frame::Error(e) => Err(slotguard_core::op::reply_error(&e, &addr)),
                v => v.as_string().ok_or_else(|| {
                    CacheError::Protocol(format!("unexpected reply to INFO: {}", v.kind()))
                }),
            }
        })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let leaf = self.clone();
        Box::pin(async move { NodeService::shutdown(&leaf).await })
    }

    fn running_tasks(&self) -> usize {
        NodeService::running_tasks(self)
    }

    fn is_connected(&self, addr: &NodeAddr) -> bool {
        NodeService::is_connected(self, addr)
    }

    fn in_flight(&self, addr: &NodeAddr) -> usize {
        NodeService::in_flight(self, addr)
    }
}

impl Leaf for NodeService {
    type Source = NodeTopologySource;

    fn with_topology(self, topology: Topology) -> Self {
        NodeService::with_topology(self, topology)
    }

    fn topology_source(&self, seeds: Vec<NodeAddr>) -> NodeTopologySource {
        NodeTopologySource::new(self, seeds)
    }
}
