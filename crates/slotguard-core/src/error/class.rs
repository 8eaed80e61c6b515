//! The classes layers decide on ([`Failure`]), whom a failure blames
//! ([`Blame`]), and [`classify`], which finds the class of any error that
//! crossed a layer boundary.

use std::error::Error as StdError;

use super::{BoxError, CacheError};

/// The small set of classes that layers decide on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// `MOVED`.
    Moved,
    /// `ASK`.
    Ask,
    /// `TRYAGAIN`.
    TryAgain,
    /// `CLUSTERDOWN`.
    ClusterDown,
    /// `LOADING`.
    Loading,
    /// `BUSY`.
    Busy,
    /// `READONLY`.
    ReadOnly,
    /// A deadline passed (ours, tower's or tokio's).
    Timeout,
    /// The connection failed.
    Connection,
    /// A breaker refused the call.
    CircuitOpen,
    /// A load shedder or limiter refused the call.
    Overloaded,
    /// No node can serve the slot.
    ShardUnavailable,
    /// Redirect hop limit reached.
    TooManyRedirects,
    /// A write's outcome is unknown.
    Indeterminate,
    /// The request itself is bad.
    InvalidInput,
    /// The secondary store failed.
    Secondary,
    /// A server error reply that says nothing about node health.
    Server,
    /// A reply that broke the protocol.
    Protocol,
    /// The node refused the credentials.
    Auth,
    /// The TLS handshake failed.
    Tls,
    /// Anything else.
    Other,
}

/// Whom an outcome blames: what health and breaker accounting make of it.
///
/// The one place that decides it, so the per-node breaker, the leaf's
/// health records and the failover layer agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Blame {
    /// The node (or the path to it) looks unhealthy: count it against the
    /// node; a read may be answered elsewhere.
    Node,
    /// The cluster as a whole cannot serve (`CLUSTERDOWN`): every node says
    /// so around a promotion when `cluster-require-full-coverage` is `yes`.
    /// No node's fault, and no evidence of its health either: per-node
    /// accounting counts nothing; a read may still try a replica; a global
    /// breaker counts it as a failure of the cluster.
    Cluster,
    /// The node answered (a redirect, a server error reply) or nothing was
    /// sent: it says nothing bad about the node.
    Nobody,
}

impl Failure {
    /// A short lowercase name for spans and metrics (`error.type`).
    pub fn name(self) -> &'static str {
        match self {
            Failure::Moved => "moved",
            Failure::Ask => "ask",
            Failure::TryAgain => "tryagain",
            Failure::ClusterDown => "clusterdown",
            Failure::Loading => "loading",
            Failure::Busy => "busy",
            Failure::ReadOnly => "readonly",
            Failure::Timeout => "timeout",
            Failure::Connection => "connection",
            Failure::CircuitOpen => "circuit_open",
            Failure::Overloaded => "overloaded",
            Failure::ShardUnavailable => "shard_unavailable",
            Failure::TooManyRedirects => "too_many_redirects",
            Failure::Indeterminate => "indeterminate",
            Failure::InvalidInput => "invalid_input",
            Failure::Secondary => "secondary",
            Failure::Server => "server",
            Failure::Protocol => "protocol",
            Failure::Auth => "auth",
            Failure::Tls => "tls",
            Failure::Other => "other",
        }
    }

    /// Whom this failure blames. See [`Blame`].
    pub fn blame(self) -> Blame {
        match self {
            Failure::Timeout
            | Failure::Connection
            | Failure::CircuitOpen
            | Failure::Loading
            | Failure::Busy
            | Failure::Overloaded
            | Failure::Indeterminate
            | Failure::Protocol => Blame::Node,
            Failure::ClusterDown => Blame::Cluster,
            _ => Blame::Nobody,
        }
    }

    /// The node (or the path to it) looks unhealthy: a read may be answered
    /// elsewhere, and health/breaker accounting should count it.
    /// `CLUSTERDOWN` is not a node fault ([`Blame::Cluster`]).
    pub fn is_node_fault(self) -> bool {
        self.blame() == Blame::Node
    }

    /// A cluster-wide state (`CLUSTERDOWN`), no single node's fault.
    pub fn is_cluster_wide(self) -> bool {
        self.blame() == Blame::Cluster
    }

    /// A redirect that routing layers follow.
    pub fn is_redirect(self) -> bool {
        matches!(self, Failure::Moved | Failure::Ask)
    }
}

/// Classify any error that crossed a layer boundary.
///
/// Looks at the error and then its `source()` chain, so an error wrapped by
/// another layer is still recognised.
///
/// ```
/// use slotguard_core::{classify, BoxError, CacheError, Failure};
/// let err: BoxError = Box::new(CacheError::TryAgain);
/// assert_eq!(classify(&err), Failure::TryAgain);
/// let err: BoxError = "something else".into();
/// assert_eq!(classify(&err), Failure::Other);
/// ```
pub fn classify(err: &BoxError) -> Failure {
    classify_dyn(err.as_ref())
}

/// [`classify`] for a borrowed error.
pub fn classify_dyn(err: &(dyn StdError + 'static)) -> Failure {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CacheError>() {
            return c.failure();
        }
        if e.is::<tower::timeout::error::Elapsed>() || e.is::<tokio::time::error::Elapsed>() {
            return Failure::Timeout;
        }
        if e.is::<tower::load_shed::error::Overloaded>() {
            return Failure::Overloaded;
        }
        cur = e.source();
    }
    Failure::Other
}

/// The [`CacheError`] inside a boxed error, if there is one.
pub fn as_cache_error(err: &BoxError) -> Option<&CacheError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CacheError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

impl CacheError {
    /// This error's class.
    pub fn failure(&self) -> Failure {
        match self {
            CacheError::Moved { .. } => Failure::Moved,
            CacheError::Ask { .. } => Failure::Ask,
            CacheError::TryAgain => Failure::TryAgain,
            CacheError::ClusterDown => Failure::ClusterDown,
            CacheError::Loading => Failure::Loading,
            CacheError::Busy => Failure::Busy,
            CacheError::ReadOnly => Failure::ReadOnly,
            CacheError::Timeout { .. } => Failure::Timeout,
            CacheError::Connection { .. } => Failure::Connection,
            CacheError::CircuitOpen { .. } => Failure::CircuitOpen,
            CacheError::ShardUnavailable { .. } => Failure::ShardUnavailable,
            CacheError::TooManyRedirects { .. } => Failure::TooManyRedirects,
            CacheError::Indeterminate { .. } => Failure::Indeterminate,
            CacheError::Secondary(_) => Failure::Secondary,
            CacheError::InvalidInput(_) => Failure::InvalidInput,
            CacheError::Server(_) => Failure::Server,
            CacheError::Protocol(_) => Failure::Protocol,
            CacheError::Overloaded { .. } => Failure::Overloaded,
            CacheError::Auth { .. } => Failure::Auth,
            CacheError::Tls { .. } => Failure::Tls,
            CacheError::DeadlineExceeded => Failure::Timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{parse_error_reply, BreakerScope};
    use crate::NodeAddr;

    fn from() -> NodeAddr {
        "10.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn classify_walks_sources_and_tower_errors() {
        let e: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(classify(&e), Failure::Timeout);
        let e: BoxError = Box::new(tower::load_shed::error::Overloaded::new());
        assert_eq!(classify(&e), Failure::Overloaded);
        let e: BoxError = Box::new(CacheError::CircuitOpen {
            scope: BreakerScope::Global,
        });
        assert_eq!(classify(&e), Failure::CircuitOpen);
        assert!(classify(&e).is_node_fault());
        assert_eq!(e.to_string(), "circuit open for global");
    }

    #[test]
    fn clusterdown_is_the_cluster_not_a_node() {
        let e: BoxError = Box::new(parse_error_reply(
            "CLUSTERDOWN The cluster is down",
            &from(),
        ));
        let f = classify(&e);
        assert_eq!(f, Failure::ClusterDown);
        assert_eq!(f.blame(), Blame::Cluster);
        assert!(f.is_cluster_wide());
        assert!(!f.is_node_fault());
        assert_eq!(Failure::Timeout.blame(), Blame::Node);
        assert_eq!(Failure::Moved.blame(), Blame::Nobody);
        assert!(!Failure::Timeout.is_cluster_wide());
    }
}
