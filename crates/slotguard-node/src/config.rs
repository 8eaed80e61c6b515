//! Settings of the leaf.

use std::time::Duration;

use slotguard_core::invalidation::InvalidationBus;

use crate::credentials::Credentials;
use crate::remap::AddressRemap;
use crate::tls::TlsConfig;

/// How [`NodeService`](crate::NodeService) talks to nodes.
///
/// Every network call has a deadline: `command_timeout` per command (or the
/// request's own deadline when that is sooner) and `connect_timeout` per
/// connection attempt; a connection that stops answering is replaced after
/// the stall timeout. Replies are bounded: nesting depth, element counts and
/// bulk lengths over the limits are a typed error and a new connection.
///
/// Built from [`NodeConfig::default`] (or [`NodeConfig::from_env`]) with the
/// `with_*` methods; the fields are public to read. The struct is
/// `#[non_exhaustive]` so that settings can be added without breaking
/// users.
///
/// ```
/// use std::time::Duration;
/// use slotguard_node::{Credentials, NodeConfig};
/// let config = NodeConfig::default()
///     .with_command_timeout(Duration::from_millis(100))
///     .with_max_in_flight(1_000)
///     .with_credentials(Credentials::user("cache", "s3cret"));
/// assert_eq!(config.command_timeout, Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Deadline for one command on one node when the request has none sooner.
    /// Default 200 ms: a healthy node answers in well under a millisecond, and
    /// a read that misses this is better served elsewhere. Below the 250 ms
    /// in which a write to a stalled primary must get its typed error
    /// (DESIGN.md §9): with the timeout at 250 ms, the error always landed
    /// a millisecond or two past it (`slotguard demo`, every stall phase).
    pub command_timeout: Duration,
    /// Deadline for one TCP connect. Default 1 s.
    pub connect_timeout: Duration,
    /// Deadline for topology fetches (`CLUSTER SHARDS`) and health probes.
    /// Default 1 s.
    pub admin_timeout: Duration,
    /// Least time between two connection attempts to one node. Default 100 ms.
    pub reconnect_delay: Duration,
    /// A connection with commands outstanding that reads nothing for this
    /// long is closed and dialled anew. `None` (the default): twice
    /// `command_timeout`.
    pub stall_timeout: Option<Duration>,
    /// Longest key accepted; longer keys fail with `InvalidInput` before any
    /// network call. Default 16 KiB.
    pub max_key_len: usize,
    /// Largest value accepted for `SET`, and largest bulk reply read (a
    /// larger one is refused before it is buffered, and the connection is
    /// replaced; never below 1 MiB for replies). Default 16 MiB.
    pub max_value_len: usize,
    /// Deepest nesting of a reply. Default 32 (Redis's deepest cache and
    /// topology replies nest 4 levels).
    pub max_reply_depth: usize,
    /// Most elements in one reply, all aggregates together. Default 1,048,576.
    pub max_reply_elements: usize,
    /// Most commands outstanding on one node connection; past it, calls fail
    /// at once with `CacheError::Overloaded`. Default 10,000.
    pub max_in_flight: usize,
    /// Credentials sent on every connection (commands, topology fetch,
    /// probes). Default `None`: no `AUTH`.
    pub credentials: Option<Credentials>,
    /// TLS on every connection. Default `None`: plaintext.
    pub tls: Option<TlsConfig>,
    /// Announced addresses → dialable ones, for topology views and
    /// `MOVED`/`ASK` alike. Default `None`: announced addresses are dialled
    /// (IPv6 hosts still in canonical form).
    pub remap: Option<AddressRemap>,
    /// How long the connections of a node that left the slot map are kept
    /// before they are closed and forgotten (checked by the leaf's
    /// lifecycle task, started by `NodeService::with_topology`). A node
    /// that comes back within it keeps its connections: a view that
    /// briefly misses a node (mid-failover) costs no reconnect. Default 30 s.
    pub node_grace: Duration,
    /// Where RESP3 client tracking invalidations go. With a bus, every node
    /// connection that speaks RESP3 enables `CLIENT TRACKING ON NOLOOP`
    /// after its handshake, on every (re)connect, and publishes the server's
    /// `invalidate` pushes as [`Invalidation::Keys`] (keys *other* clients
    /// changed: a write through this leaf is the caller's to account for, as
    /// the fallback layer does); a connect, a lost connection or a flush
    /// (null key list) as [`Invalidation::Node`], and a connection that
    /// tracks as [`Invalidation::Tracking`]. Default `None`: no tracking.
    ///
    /// [`Invalidation::Keys`]: slotguard_core::invalidation::Invalidation::Keys
    /// [`Invalidation::Node`]: slotguard_core::invalidation::Invalidation::Node
    /// [`Invalidation::Tracking`]: slotguard_core::invalidation::Invalidation::Tracking
    pub invalidations: Option<InvalidationBus>,
}

impl NodeConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_command_timeout => command_timeout: Duration,
        with_connect_timeout => connect_timeout: Duration,
        with_admin_timeout => admin_timeout: Duration,
        with_reconnect_delay => reconnect_delay: Duration,
    }

    /// These settings with a fixed [`stall_timeout`](Self::stall_timeout).
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = Some(timeout);
        self
    }

    slotguard_core::setters! {
        with_max_key_len => max_key_len: usize,
        with_max_value_len => max_value_len: usize,
        with_max_reply_depth => max_reply_depth: usize,
        with_max_reply_elements => max_reply_elements: usize,
        with_max_in_flight => max_in_flight: usize,
        with_node_grace => node_grace: Duration,
    }

    /// These settings with `credentials` on every connection.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// These settings with announced addresses remapped.
    pub fn with_remap(mut self, remap: AddressRemap) -> Self {
        self.remap = Some(remap);
        self
    }

    /// These settings with client tracking on every connection, publishing
    /// to `bus` (see [`invalidations`](Self::invalidations)).
    pub fn with_invalidations(mut self, bus: InvalidationBus) -> Self {
        self.invalidations = Some(bus);
        self
    }

    /// These settings with TLS on every connection.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The stall timeout in force.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout
            .unwrap_or(self.command_timeout.saturating_mul(2))
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            admin_timeout: Duration::from_secs(1),
            reconnect_delay: Duration::from_millis(100),
            stall_timeout: None,
            max_key_len: 16 * 1024,
            max_value_len: 16 * 1024 * 1024,
            max_reply_depth: 32,
            max_reply_elements: 1 << 20,
            max_in_flight: 10_000,
            credentials: None,
            tls: None,
            remap: None,
            node_grace: Duration::from_secs(30),
            invalidations: None,
        }
    }
}
