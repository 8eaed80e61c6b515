//! Errors slotguard creates ([`CacheError`]), the one function that
//! classifies any error ([`classify`], in `class.rs`) and the one that maps
//! a server's error reply to a [`CacheError`] ([`parse_error_reply`], in
//! `reply.rs`).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::addr::NodeAddr;

/// The error type between layers: any error, boxed (tower's convention, so
/// tower's own layers such as `Timeout` and `LoadShed` compose with ours).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What a circuit breaker guards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerScope {
    /// One node, keyed by its address.
    Node(NodeAddr),
    /// Every call through the breaker.
    Global,
}

impl fmt::Display for BreakerScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerScope::Node(addr) => write!(f, "node {addr}"),
            BreakerScope::Global => f.write_str("global"),
        }
    }
}

/// Every error that slotguard's own code creates.
///
/// Errors travel between layers as [`BoxError`]; use [`classify`] rather than
/// downcasting by hand, so tower's errors (`Elapsed`, `Overloaded`) are
/// classified too. Cheap to clone, so coalesced callers can share one.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The slot is served by another node (`MOVED`).
    #[error("slot {slot} moved to {addr}")]
    Moved {
        /// The hash slot.
        slot: u16,
        /// The node that owns it now.
        addr: NodeAddr,
    },
    /// The slot is being migrated and this key is on the target (`ASK`).
    #[error("slot {slot} is migrating, ask {addr}")]
    Ask {
        /// The hash slot.
        slot: u16,
        /// The migration target to ask once.
        addr: NodeAddr,
    },
    /// The keys are being migrated; retry shortly (`TRYAGAIN`).
    #[error("slot is being migrated, try again")]
    TryAgain,
    /// The node says the cluster cannot serve this slot (`CLUSTERDOWN`).
    #[error("cluster is down")]
    ClusterDown,
    /// The node is loading its dataset (`LOADING`).
    #[error("node is loading its dataset")]
    Loading,
    /// The node is running a script or function (`BUSY`).
    #[error("node is busy running a script")]
    Busy,
    /// A write reached a replica (`READONLY`): the node lost its primary role.
    #[error("write reached a read-only replica")]
    ReadOnly,
    /// No reply from the node within the call's deadline.
    #[error("timed out waiting for {node}")]
    Timeout {
        /// The node that did not answer.
        node: NodeAddr,
    },
    /// The node could not be reached or the connection broke.
    #[error("connection to {node} failed: {detail}")]
    Connection {
        /// The node.
        node: NodeAddr,
        /// What the client reported.
        detail: String,
    },
    /// A circuit breaker is open: the call was not attempted.
    #[error("circuit open for {scope}")]
    CircuitOpen {
        /// What the open breaker guards.
        scope: BreakerScope,
    },
    /// No node can serve this slot for this request (e.g. a write while the
    /// shard's primary is down).
    #[error("no node can serve slot {slot}")]
    ShardUnavailable {
        /// The hash slot.
        slot: u16,
    },
    /// The request was redirected more times than allowed.
    #[error("too many redirects for slot {slot}")]
    TooManyRedirects {
        /// The hash slot.
        slot: u16,
    },
    /// A write was sent but no reply came: it may or may not have applied.
    #[error("write to {node} may or may not have applied: {detail}")]
    Indeterminate {
        /// The node the write was sent to.
        node: NodeAddr,
        /// Why the outcome is unknown.
        detail: String,
    },
    /// The secondary (authoritative) store failed.
    #[error("secondary store failed: {0}")]
    Secondary(Arc<dyn StdError + Send + Sync + 'static>),
    /// The request is invalid (oversize key or value, unroutable request);
    /// nothing was sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Any other error reply from a server (e.g. `WRONGTYPE`, `OOM`).
    #[error("server error: {0}")]
    Server(String),
    /// A reply that does not fit the protocol or the command (the
    /// connection it came on was replaced).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request's own deadline passed while it waited for an answer it
    /// did not send itself (e.g. a coalesced read sharing another call).
    #[error("request deadline passed")]
    DeadlineExceeded,
    /// The node has as many commands outstanding as allowed: nothing was
    /// sent.
    #[error("node {node} is overloaded: too many commands in flight")]
    Overloaded {
        /// The saturated node.
        node: NodeAddr,
    },
    /// The node refused the credentials (wrong password or user, or none
    /// given where one is required): nothing was sent. A configuration
    /// problem, not a node fault; the detail is the server's text and never
    /// holds the secret.
    #[error("authentication to {node} failed: {detail}")]
    Auth {
        /// The node that refused.
        node: NodeAddr,
        /// The server's reason (`WRONGPASS ...`, `NOAUTH ...`).
        detail: String,
    },
    /// The TLS handshake with the node failed (unknown CA, a certificate
    /// for another name, a plaintext port): nothing was sent.
    #[error("tls handshake with {node} failed: {detail}")]
    Tls {
        /// The node.
        node: NodeAddr,
        /// What rustls reported.
        detail: String,
    },
}

mod class;
mod reply;

pub use class::{as_cache_error, classify, classify_dyn, Blame, Failure};
pub use reply::{parse_error_reply, reply_error};

impl CacheError {
    /// A `MOVED`/`ASK` with its target renamed by `rename` (a leaf's address
    /// remap, so a redirect and the slot map name one node alike); any
    /// other error unchanged.
    pub fn rename_redirect(self, rename: impl FnOnce(&NodeAddr) -> NodeAddr) -> Self {
        match self {
            CacheError::Moved { slot, addr } => CacheError::Moved {
                slot,
                addr: rename(&addr),
            },
            CacheError::Ask { slot, addr } => CacheError::Ask {
                slot,
                addr: rename(&addr),
            },
            other => other,
        }
    }
}
