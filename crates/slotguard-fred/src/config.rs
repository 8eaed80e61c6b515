//! Settings of the fred-backed leaf.

use std::time::Duration;

use slotguard_core::invalidation::InvalidationBus;
use slotguard_core::CacheError;
use slotguard_node::{AddressRemap, Credentials, NodeConfig, TlsConfig};

/// How [`FredLeaf`](crate::FredLeaf) talks to nodes. Every network call has
/// a deadline: `command_timeout` per command (or the request's own deadline
/// when sooner), `connect_timeout` per connection attempt, `admin_timeout`
/// per topology fetch or probe.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FredLeafConfig {
    /// Deadline of one command when the request has none sooner. Default
    /// 200 ms, as the default leaf's (see `NodeConfig::command_timeout`).
    pub command_timeout: Duration,
    /// Deadline of one connection attempt. Default 1 s.
    pub connect_timeout: Duration,
    /// Deadline of topology fetches and health probes. Default 1 s.
    pub admin_timeout: Duration,
    /// Delay between reconnect attempts. Default 100 ms.
    pub reconnect_delay: Duration,
    /// A client with commands outstanding and no reply for this long is
    /// replaced by a new one (the leaf's watchdog, measured from the oldest
    /// unanswered command; fred's own check is measured from the last
    /// write). Default 2 × `command_timeout`.
    pub stall_timeout: Option<Duration>,
    /// fred's `UnresponsiveConfig::max_timeout`, a second line of defence
    /// behind the watchdog. Default 2 s. `None` turns it off: fred then
    /// skips a timer per router loop turn, which measured up to ~2× the
    /// throughput at concurrency 64–256 (`docs/leaf-connections.md`).
    pub unresponsive_timeout: Option<Duration>,
    /// `TCP_USER_TIMEOUT` of every connection: unacknowledged data for this
    /// long closes it. Default 2 s.
    pub tcp_user_timeout: Duration,
    /// End every call's pipeline with `PING <token>` and check the token:
    /// a reply that is not the caller's own discards the client (see the
    /// crate docs). Default on.
    pub reply_marker: bool,
    /// Longest key accepted. Default 16 KiB.
    pub max_key_len: usize,
    /// Largest value accepted for `SET`. Default 16 MiB.
    pub max_value_len: usize,
    /// Commands outstanding per node client; past it a call fails at once
    /// with [`CacheError::Overloaded`]. Default 10,000.
    pub max_in_flight: usize,
    /// ACL user and password, or a password alone.
    pub credentials: Option<Credentials>,
    /// TLS on every connection (rustls, ring provider).
    pub tls: Option<TlsConfig>,
    /// Announced address → dialable address, applied to topology views and
    /// `MOVED`/`ASK` targets alike.
    pub remap: Option<AddressRemap>,
    /// Client tracking on every node client, publishing here.
    pub invalidations: Option<InvalidationBus>,
}

impl Default for FredLeafConfig {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(1),
            admin_timeout: Duration::from_secs(1),
            reconnect_delay: Duration::from_millis(100),
            stall_timeout: None,
            unresponsive_timeout: Some(Duration::from_secs(2)),
            tcp_user_timeout: Duration::from_secs(2),
            reply_marker: true,
            max_key_len: 16 * 1024,
            max_value_len: 16 * 1024 * 1024,
            max_in_flight: 10_000,
            credentials: None,
            tls: None,
            remap: None,
            invalidations: None,
        }
    }
}

impl FredLeafConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The defaults plus credentials and TLS from the same `SLOTGUARD_*`
    /// variables as [`NodeConfig::from_env`].
    pub fn from_env() -> Result<Self, CacheError> {
        Ok(Self::from_node_config(&NodeConfig::from_env()?))
    }

    /// Deadlines, limits, credentials, TLS, remap and invalidation bus of a
    /// default-leaf config, for the same cluster through fred.
    pub fn from_node_config(node: &NodeConfig) -> Self {
        Self {
            command_timeout: node.command_timeout,
            connect_timeout: node.connect_timeout,
            admin_timeout: node.admin_timeout,
            reconnect_delay: node.reconnect_delay,
            stall_timeout: node.stall_timeout,
            max_key_len: node.max_key_len,
            max_value_len: node.max_value_len,
            max_in_flight: node.max_in_flight,
            credentials: node.credentials.clone(),
            tls: node.tls.clone(),
            remap: node.remap.clone(),
            invalidations: node.invalidations.clone(),
            ..Self::default()
        }
    }

    slotguard_core::setters! {
        with_command_timeout => command_timeout: Duration,
    }

    /// Stall timeout of the watchdog.
    pub fn with_stall_timeout(mut self, timeout: Duration) -> Self {
        self.stall_timeout = Some(timeout);
        self
    }

    slotguard_core::setters! {
        with_unresponsive_timeout => unresponsive_timeout: Option<Duration>,
        with_reply_marker => reply_marker: bool,
        with_max_in_flight => max_in_flight: usize,
    }

    /// Credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Address remap.
    pub fn with_remap(mut self, remap: AddressRemap) -> Self {
        self.remap = Some(remap);
        self
    }

    /// Client tracking, publishing to `bus`.
    pub fn with_invalidations(mut self, bus: InvalidationBus) -> Self {
        self.invalidations = Some(bus);
        self
    }

    /// The effective stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        self.stall_timeout.unwrap_or(self.command_timeout * 2)
    }
}
