//! The one error type of the testkit.
//!
//! Every fallible operation returns [`TestkitError`] so that tests can use `?`
//! throughout and get a message that says which node and which step failed.

use std::io;
use std::time::Duration;

use crate::cluster::NodeState;

/// Everything that can go wrong while running or poking a local cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// A socket, file or process operation failed.
    #[error("i/o error while {context}: {source}")]
    Io {
        /// What the testkit was doing, e.g. `node 2 (127.0.0.1:40001) running CLUSTER NODES`.
        context: String,
        /// The underlying error (a read timeout shows up here for paused nodes).
        #[source]
        source: io::Error,
    },
    /// The server answered with a RESP error reply.
    #[error("node {index} replied to {command} with error: {message}")]
    Server {
        /// Index of the node that answered.
        index: usize,
        /// The command (first words only).
        command: String,
        /// The error text, e.g. `MOVED 3999 127.0.0.1:40002`.
        message: String,
    },
    /// The server sent bytes that are not valid RESP2, or an unexpected reply shape.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A poll-with-deadline loop gave up.
    #[error("timed out after {waited:?} waiting for {what} (last observation: {last})")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long the loop ran.
        waited: Duration,
        /// The last reason the condition was not met, to make failures debuggable.
        last: String,
    },
    /// The index does not name a node of this cluster.
    #[error("no node with index {0}")]
    NoSuchNode(usize),
    /// The operation needs a running node, but this one is paused or killed.
    #[error("node {index} is {state}")]
    NodeUnavailable {
        /// Index of the node.
        index: usize,
        /// Its current state.
        state: NodeState,
    },
    /// A redis-server process exited while the testkit waited for it to answer PING
    /// (typically because its client or bus port was taken by another process).
    #[error("node {index} exited during startup ({status}); log tail: {log_tail}")]
    NodeExited {
        /// Index of the node.
        index: usize,
        /// The exit status as printed by std.
        status: String,
        /// The last lines of the node's `redis.log`.
        log_tail: String,
    },
    /// The node's port is served by a different process (another test's server
    /// bound it between port allocation and our start).
    #[error("port {port} of node {index} is served by another process (pid {owner_pid:?})")]
    PortInUse {
        /// Index of the node.
        index: usize,
        /// The contended client port.
        port: u16,
        /// The pid that answered, if it said.
        owner_pid: Option<u32>,
    },
    /// The redis-server process could not be spawned at all.
    #[error("could not spawn {program}: {source}")]
    Spawn {
        /// The program that was executed.
        program: String,
        /// Why spawning failed (`NotFound` means redis-server is not installed).
        #[source]
        source: io::Error,
    },
    /// Sending a signal to a node failed.
    #[error("could not send {signal} to node {index}: {source}")]
    Signal {
        /// Index of the node.
        index: usize,
        /// The signal name, e.g. `SIGSTOP`.
        signal: &'static str,
        /// The errno reported by `kill(2)`.
        #[source]
        source: io::Error,
    },
    /// The [`ClusterSpec`](crate::ClusterSpec) cannot be realised.
    #[error("invalid cluster spec: {0}")]
    InvalidSpec(String),
    /// The cluster is not in the state the operation expected.
    #[error("unexpected cluster state: {0}")]
    Unexpected(String),
}

impl TestkitError {
    /// Whether a poll loop should keep trying after this error.
    ///
    /// Network errors, error replies and "not yet" states are expected while a
    /// cluster converges; the rest (bad index, dead process, ...) will not fix
    /// themselves, so polling on would only hide the real cause behind a timeout.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Io { .. } | Self::Server { .. } | Self::Protocol(_) | Self::Unexpected(_)
        )
    }
}
