//! Errors slotguard creates, and the one function that classifies any error.

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

/// Parse a Redis error reply (the text after `-`) into a [`CacheError`].
///
/// `node` is the node that sent it: a `MOVED`/`ASK` with an empty host
/// (`MOVED 12 :7001`, which Redis 7 sends when it does not know its endpoint)
/// means that node's host. A redirect whose slot or address does not parse
/// is a [`CacheError::Protocol`] error, never a panic.
///
/// ```
/// use slotguard_core::{parse_error_reply, CacheError, NodeAddr};
/// let from: NodeAddr = "127.0.0.1:7000".parse().unwrap();
/// match parse_error_reply("MOVED 3999 127.0.0.1:7001", &from) {
///     CacheError::Moved { slot, addr } => {
///         assert_eq!(slot, 3999);
///         assert_eq!(addr.port(), 7001);
///     }
///     other => panic!("{other}"),
/// }
/// ```
pub fn parse_error_reply(text: &str, node: &NodeAddr) -> CacheError {
    let text = text.trim_end_matches(['\r', '\n']);
    let mut parts = text.split_ascii_whitespace();
    let code = parts.next().unwrap_or("");
    match code {
        "MOVED" | "ASK" => {
            let redirect = (|| {
                let slot: u16 = parts.next()?.parse().ok()?;
                if slot >= crate::slot::SLOT_COUNT {
                    return None;
                }
                let mut addr: NodeAddr = parts.next()?.parse().ok()?;
                if parts.next().is_some() {
                    return None;
                }
                if addr.host().is_empty() {
                    addr = NodeAddr::new(node.host(), addr.port());
                }
                Some((slot, addr))
            })();
            match (code, redirect) {
                ("MOVED", Some((slot, addr))) => CacheError::Moved { slot, addr },
                (_, Some((slot, addr))) => CacheError::Ask { slot, addr },
                (_, None) => CacheError::Protocol(format!(
                    "malformed redirect from {node}: {}",
                    truncate(text)
                )),
            }
        }
        "TRYAGAIN" => CacheError::TryAgain,
        "CLUSTERDOWN" | "MASTERDOWN" => CacheError::ClusterDown,
        "LOADING" => CacheError::Loading,
        "BUSY" => CacheError::Busy,
        "READONLY" => CacheError::ReadOnly,
        _ => CacheError::Server(truncate(text).to_owned()),
    }
}

/// Error texts come from the network: keep what we copy into errors bounded.
fn truncate(s: &str) -> &str {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> NodeAddr {
        "10.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn parses_redirects() {
        match parse_error_reply("MOVED 3999 127.0.0.1:6381", &from()) {
            CacheError::Moved { slot: 3999, addr } => {
                assert_eq!(addr.to_string(), "127.0.0.1:6381")
            }
            e => panic!("{e:?}"),
        }
        match parse_error_reply("ASK 12 ::1:6381", &from()) {
            CacheError::Ask { slot: 12, addr } => {
                assert_eq!(addr.host(), "::1");
                assert_eq!(addr.port(), 6381);
            }
            e => panic!("{e:?}"),
        }
        match parse_error_reply("ASK 12 [2001:db8::2]:6381", &from()) {
            CacheError::Ask { slot: 12, addr } => assert_eq!(addr.host(), "2001:db8::2"),
            e => panic!("{e:?}"),
        }
        match parse_error_reply("MOVED 1 :7002", &from()) {
            CacheError::Moved { slot: 1, addr } => assert_eq!(addr.to_string(), "10.0.0.1:7002"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn garbage_redirects_are_typed_errors() {
        for text in [
            "MOVED",
            "MOVED 1",
            "MOVED x 1.2.3.4:5",
            "MOVED 16384 1.2.3.4:5",
            "MOVED 99999999999 1.2.3.4:5",
            "MOVED 1 1.2.3.4",
            "MOVED 1 1.2.3.4:99999",
            "MOVED 1 1.2.3.4:5 extra",
            "ASK 1 [::1:5",
            "ASK 1 \u{0}:5",
            "MOVED -1 1.2.3.4:5",
        ] {
            let e = parse_error_reply(text, &from());
            assert!(matches!(e, CacheError::Protocol(_)), "{text:?} gave {e:?}");
        }
        let long = format!("MOVED 1 {}", "a".repeat(100_000));
        assert!(parse_error_reply(&long, &from()).to_string().len() < 400);
    }

    #[test]
    fn other_codes() {
        let n = from();
        assert!(matches!(
            parse_error_reply("TRYAGAIN Multiple keys", &n),
            CacheError::TryAgain
        ));
        assert!(matches!(
            parse_error_reply("CLUSTERDOWN Hash slot not served", &n),
            CacheError::ClusterDown
        ));
        assert!(matches!(
            parse_error_reply("LOADING Redis is loading", &n),
            CacheError::Loading
        ));
        assert!(matches!(
            parse_error_reply("BUSY Redis is busy", &n),
            CacheError::Busy
        ));
        assert!(matches!(
            parse_error_reply("READONLY You can't write", &n),
            CacheError::ReadOnly
        ));
        assert!(matches!(
            parse_error_reply("WRONGTYPE Operation", &n),
            CacheError::Server(_)
        ));
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
