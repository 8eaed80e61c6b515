//! Settings of the fred leaf.

use std::time::Duration;

/// How [`FredService`](crate::FredService) talks to nodes.
///
/// Every network call has a deadline: `command_timeout` per command (or the
/// request's own deadline when that is sooner) and `connect_timeout` per
/// connection attempt.
#[derive(Debug, Clone)]
pub struct FredConfig {
    /// Deadline for one command on one node when the request has none sooner.
    /// Default 250 ms: a healthy node answers in well under a millisecond, and
    /// a read that misses this is better served elsewhere.
    pub command_timeout: Duration,
    /// Deadline for one TCP connect. Default 1 s.
    pub connect_timeout: Duration,
    /// Deadline for topology fetches (`CLUSTER SHARDS`) and health probes.
    /// Default 1 s.
    pub admin_timeout: Duration,
    /// Delay between reconnect attempts to a node that went away. Default 100 ms.
    pub reconnect_delay: Duration,
    /// Longest key accepted; longer keys fail with `InvalidInput` before any
    /// network call. Default 16 KiB.
    pub max_key_len: usize,
    /// Largest value accepted for `SET`. Default 16 MiB.
    pub max_value_len: usize,
}

impl Default for FredConfig {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            admin_timeout: Duration::from_secs(1),
            reconnect_delay: Duration::from_millis(100),
            max_key_len: 16 * 1024,
            max_value_len: 16 * 1024 * 1024,
        }
    }
}
