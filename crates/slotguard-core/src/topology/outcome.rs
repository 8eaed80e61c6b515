//! One call's outcome, recorded in its node's health cell: the same
//! bookkeeping for every leaf, so the layers above see one behaviour.

use tokio::time::Instant;

use super::Topology;
use crate::addr::NodeAddr;
use crate::error::{CacheError, Failure};
use crate::observe::{self, Observation};
use crate::response::CacheResponse;

impl Topology {
    /// Record the outcome of one call to `addr` that began at `started`.
    ///
    /// A success, or a server reply that is not a fault (`MOVED`,
    /// `WRONGTYPE`, ...), proves the node is up and feeds its latency. A node
    /// fault counts as a failure and is observed (`NodeFault`); one that
    /// means we lost touch with the node (a connection, protocol or
    /// indeterminate failure, or a node fault classed `ClusterDown`) also
    /// fences its writes and asks for a refresh. Other cluster-wide failures
    /// are the cluster's state, not the node's; refused credentials or TLS
    /// say nothing about its health.
    pub fn record_call(
        &self,
        addr: &NodeAddr,
        started: Instant,
        out: &Result<CacheResponse, CacheError>,
    ) {
        self.with_health(addr, |health| match out {
            Ok(_) => health.record_success(started.elapsed()),
            Err(e) if e.failure().is_node_fault() => {
                health.record_failure();
                observe::record(Observation::NodeFault {
                    node: addr.clone(),
                    failure: e.failure(),
                });
                if fences_writes(e.failure()) {
                    // The node may be stalled or cut off past a promotion:
                    // no write goes to it until a fresh view confirms it
                    // (slot_refresh asks for one and checks the fence).
                    if health.fence_writes() {
                        self.observe(|| Observation::FenceSet { node: addr.clone() });
                    }
                    self.request_refresh();
                }
            }
            Err(e) if e.failure().is_cluster_wide() => {}
            Err(CacheError::Auth { .. } | CacheError::Tls { .. }) => {}
            Err(_) => health.record_success(started.elapsed()),
        });
    }
}

/// Failures that mean we lost touch with the node (or it says it lost
/// touch with its cluster), as opposed to a node that answered busy. A
/// read's timeout is not among them: failover gives a primary's read a
/// short deadline of its own, and a slow primary is not a lost one (its
/// breaker, opened by such timeouts, fences it if they go on); a write's
/// timeout is `Indeterminate`.
fn fences_writes(failure: Failure) -> bool {
    matches!(
        failure,
        Failure::Connection | Failure::Indeterminate | Failure::Protocol | Failure::ClusterDown
    )
}
