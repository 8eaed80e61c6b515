//! The leaf contract: what a service at the bottom of the stack must do,
//! written down once so that every leaf (`slotguard-node`'s `NodeService`,
//! `slotguard-fred`'s `FredLeaf`) meets the same one and one conformance
//! suite (`tests/conformance.rs`) runs over each.
//!
//! A leaf is:
//!
//! 1. **A `Service<CacheRequest>`** that answers from the node stamped on the
//!    request ([`Route::Node`](crate::Route::Node)), never deciding where a
//!    key lives: a request still routed by slot is
//!    [`CacheError::InvalidInput`]. Replies come back raw — `MOVED`/`ASK`
//!    are [`CacheError::Moved`]/[`CacheError::Ask`] for the routing layers;
//!    `asking` routes send `ASKING` and the command together; replica routes
//!    read in `READONLY` mode; every call is bounded by the request's
//!    deadline (capped by the leaf's own); a write whose outcome is unknown
//!    is [`CacheError::Indeterminate`]. A stalled node never delays another.
//! 2. **A [`TopologySource`]** over its own connections
//!    ([`Leaf::topology_source`]).
//! 3. **Health probes**: [`LeafControl::replication_info`] answers
//!    `INFO replication` from a replica over the connection replica reads
//!    use, which the health prober turns into link health.
//! 4. **Observations reported to the cluster owner** (DESIGN.md §2a): not
//!    part of the contract yet. Today a leaf given a topology
//!    ([`Leaf::with_topology`]) writes call outcomes into its health cells
//!    (latency, failures, write fences); issue 15 replaces that with typed
//!    observations sent to one controller, and adds the method here.
//! 5. **Shutdown**: [`LeafControl::shutdown`] stops every task the leaf
//!    runs and waits for them; later calls fail fast and nothing is dialled.
//!    A leaf runs no task of its own besides its connections: its lifecycle
//!    task runs on the topology's [`ClusterController`](crate::ClusterController)
//!    ([`Leaf::with_topology`]), whose shutdown also shuts the leaf.

use std::fmt;

use futures_util::future::BoxFuture;

use crate::{
    BoxError, CacheError, CacheRequest, CacheResponse, NodeAddr, Topology, TopologySource,
};

/// The object-safe part of the leaf contract: what a handle or a prober
/// needs from a leaf besides sending requests.
pub trait LeafControl: fmt::Debug + Send + Sync + 'static {
    /// The text of `INFO replication` from `addr`, asked over the connection
    /// that replica reads use (so a probe sees what those reads would),
    /// within the leaf's administrative deadline. `Err` when the node could
    /// not be asked or refused.
    fn replication_info(&self, addr: &NodeAddr) -> BoxFuture<'static, Result<String, CacheError>>;

    /// Stop every task of the leaf, release every connection, and return
    /// when all of them have ended. Later calls fail fast with
    /// [`CacheError::Connection`]. Shared by every clone.
    fn shutdown(&self) -> BoxFuture<'static, ()>;

    /// Tasks the leaf still runs: 0 once [`shutdown`](Self::shutdown) returned.
    fn running_tasks(&self) -> usize;

    /// Whether a connection to `addr` is open and ready.
    fn is_connected(&self, addr: &NodeAddr) -> bool;

    /// Commands sent to `addr` and not yet answered.
    fn in_flight(&self, addr: &NodeAddr) -> usize;
}

/// A leaf service: see the [module docs](self) for the contract.
pub trait Leaf:
    tower::Service<CacheRequest, Response = CacheResponse, Error = BoxError, Future: Send + 'static>
    + LeafControl
    + Clone
{
    /// Its topology source.
    type Source: TopologySource + Clone + fmt::Debug;

    /// Record call outcomes in `topology`'s health cells, and hand the
    /// leaf's own background work that follows the map (closing the
    /// connections of nodes that left) to the topology's
    /// [`ClusterController`](crate::ClusterController), together with the
    /// leaf's shutdown: the controller's shutdown stops the lifecycle task
    /// and shuts the pool. Call once, inside a tokio runtime.
    fn with_topology(self, topology: Topology) -> Self;

    /// A topology source that asks `seeds` first, over this leaf's
    /// connections (credentials and TLS included).
    fn topology_source(&self, seeds: Vec<NodeAddr>) -> Self::Source;
}
