//! [`LocalCluster`]: real redis-server processes forming a cluster on loopback.
//!
//! The parts: [`process`] (one node's process and its admin connection),
//! [`formation`] (ports, config, forming the cluster, health), [`queries`]
//! (introspection, commands, topology), [`faults`] (pause, kill, restart,
//! failover, slow commands), [`migration`] (moving slots) and [`settings`]
//! (what differs from Redis's defaults, and why).

mod faults;
mod formation;
mod migration;
mod process;
mod proxied;
mod queries;
mod settings;
mod tls;

pub use settings::{redis_default, ServerSetting, REDIS_DEFAULT_NODE_TIMEOUT_MS};
pub use tls::TlsFiles;

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::error::TestkitError;
use crate::topology::ClusterNode;

pub(crate) use process::lock;
use process::Node;

/// How often a whole cluster start is retried with fresh ports.
const START_ATTEMPTS: usize = 3;
/// How often `restart` respawns a node whose port was briefly unavailable.
const RESTART_ATTEMPTS: usize = 3;
/// TCP connect timeout for the sync client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Read/write timeout for the sync client; a paused node fails after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a freshly spawned redis-server may take to answer PING.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// How long nodes may take to learn about each other after CLUSTER MEET.
const MEET_DEADLINE: Duration = Duration::from_secs(20);
/// How long a fresh cluster may take to become healthy.
const START_OK_DEADLINE: Duration = Duration::from_secs(30);
/// How long a manual failover may take (Redis itself aborts one after 5 s).
const FAILOVER_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between polls of cheap conditions.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Pause between polls of the expensive whole-cluster health check.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Keys moved per MIGRATE call.
const MIGRATE_BATCH: usize = 100;
/// Lines of redis.log included in startup errors.
const LOG_TAIL_LINES: usize = 15;

/// Environment variable naming the redis-server binary (default: `redis-server` on PATH).
pub const REDIS_SERVER_ENV: &str = "SLOTGUARD_REDIS_SERVER";
/// Environment variable that, when set to anything but `0`, keeps the temp dir
/// (configs, logs, nodes.conf) after the cluster is dropped, for post-mortems.
pub const KEEP_DIR_ENV: &str = "SLOTGUARD_TESTKIT_KEEP_DIR";
/// Where `setpriv` is looked for; when present it ties each server's life to the spawning thread.
const SETPRIV: &str = "/usr/bin/setpriv";

/// ACL rules for a user limited to what a cache client needs (for
/// [`ClusterSpec::acl_users`]), as `docs/security.md` lists them.
///
/// What a cache client needs and nothing else: data commands, connection
/// commands (HELLO, READONLY, ASKING, PING, CLIENT TRACKING), and the
/// topology and health reads. No `@admin`, no `@dangerous`.
pub const CACHE_USER_RULES: &[&str] = &[
    "on",
    "resetkeys",
    "~*",
    "resetchannels",
    "-@all",
    "+@read",
    "+@write",
    "+@connection",
    "-@admin",
    "-@dangerous",
    "+info",
    "+role",
    "+cluster|shards",
    "+cluster|slots",
    "+cluster|info",
    "+cluster|nodes",
];

/// The shape and tuning of a [`LocalCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Number of primaries; the 16384 slots are split evenly between them (default 3).
    pub primaries: usize,
    /// Replicas attached to each primary (default 1).
    pub replicas_per_primary: usize,
    /// `cluster-node-timeout` in milliseconds; failure detection and automatic
    /// failover take a small multiple of this (default 1000).
    pub node_timeout_ms: u64,
    /// Extra `redis.conf` directives appended verbatim as `key value` lines
    /// (later lines override the testkit's own). Every other setting that
    /// shapes what clients see is Redis's default
    /// ([`non_default_settings`](ClusterSpec::non_default_settings) lists what is
    /// not); a test that needs another says why where it adds it
    /// ([`with_config`](ClusterSpec::with_config)).
    pub extra_config: Vec<(String, String)>,
    /// Put a [`FaultProxy`](crate::FaultProxy) in front of every node's
    /// client port and one in front of its bus port, announced to clients
    /// and peers ([`LocalCluster::proxy`], [`LocalCluster::partition`])
    /// (default false).
    pub proxied: bool,
    /// Serve clients over TLS: each node gets a `tls-port` (what
    /// [`LocalCluster::addr`] and the cluster's own views name), with
    /// `tls-cluster yes` and `tls-replication yes`; the plaintext port stays
    /// for the testkit's admin client. Certificates are generated per
    /// cluster ([`LocalCluster::tls`]) (default false).
    pub tls: bool,
    /// Extra ACL users, one `user` directive each, e.g.
    /// `"cache on >secret ~* -@all +@read"`. The `default` user stays open
    /// for the testkit's admin client (default none).
    pub acl_users: Vec<String>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            primaries: 3,
            replicas_per_primary: 1,
            node_timeout_ms: 1000,
            extra_config: Vec::new(),
            proxied: false,
            tls: false,
            acl_users: Vec::new(),
        }
    }
}

impl ClusterSpec {
    /// Total number of nodes (primaries plus replicas).
    pub fn node_count(&self) -> usize {
        self.primaries * (1 + self.replicas_per_primary)
    }
}

/// The testkit's view of one node's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// The process runs normally.
    Running,
    /// The process is stopped with SIGSTOP (see [`LocalCluster::pause`]).
    Paused,
    /// The process was killed and reaped (see [`LocalCluster::kill`]).
    Killed,
}

impl NodeState {
    fn to_u8(self) -> u8 {
        match self {
            NodeState::Running => 0,
            NodeState::Paused => 1,
            NodeState::Killed => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => NodeState::Running,
            1 => NodeState::Paused,
            _ => NodeState::Killed,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Running => "running",
            NodeState::Paused => "paused",
            NodeState::Killed => "killed",
        })
    }
}

/// A snapshot of one node, as returned by [`LocalCluster::nodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Position in the cluster (primaries first, then replicas grouped by primary).
    pub index: usize,
    /// `127.0.0.1:PORT` as clients see it (with `client_port`).
    pub addr: String,
    /// The node's own client port (the testkit's admin commands use it).
    pub port: u16,
    /// The port clients use: the client proxy's in a proxied cluster, else `port`.
    pub client_port: u16,
    /// The cluster-bus port (not `port + 10000`: both are allocated independently).
    pub bus_port: u16,
    /// The redis-server pid, `None` while the node is killed.
    pub pid: Option<u32>,
    /// Running, paused or killed.
    pub state: NodeState,
    /// The node's working directory (config, `nodes.conf`, `redis.log`).
    pub dir: PathBuf,
}

/// How [`LocalCluster::failover_with`] asks a replica to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailoverMode {
    /// `CLUSTER FAILOVER`: coordinated with the (reachable) primary, no writes lost.
    Coordinated,
    /// `CLUSTER FAILOVER FORCE`: does not need the primary, still needs a majority of primaries.
    Force,
    /// `CLUSTER FAILOVER TAKEOVER`: needs nobody; bumps the epoch unilaterally.
    Takeover,
}

/// A Redis Cluster of real redis-server processes on 127.0.0.1.
///
/// Node indices are stable for the cluster's life: `0..primaries` are the
/// initial primaries, followed by the replicas grouped by primary (replica `r`
/// of primary `p` is `primaries + p * replicas_per_primary + r`). Roles change
/// with failovers, indices do not.
///
/// Dropping the cluster SIGKILLs and reaps every server and removes the temp dir.
///
/// # Thread affinity
///
/// When `/usr/bin/setpriv` exists, servers are spawned with
/// `--pdeathsig KILL`, and Linux delivers that signal when the **thread** that
/// spawned them exits. Call [`start`](Self::start) and
/// [`restart`](Self::restart) from a thread that outlives the cluster (the
/// test's own thread is right; a short-lived helper thread or a `static`
/// cluster initialised from one test is not).
#[derive(Debug)]
pub struct LocalCluster {
    spec: ClusterSpec,
    nodes: Vec<Node>,
    /// Node ids by index; stable across restarts because nodes.conf is kept.
    node_ids: Vec<String>,
    /// The last `CLUSTER NODES` view of a healthy cluster (or after a manual
    /// failover/migration), used to remember who replicated whom after the
    /// live views have moved on.
    snapshot: Mutex<Vec<ClusterNode>>,
    /// Certificates of a TLS cluster.
    tls: Option<TlsFiles>,
    /// `Option` only so that Drop can keep it on request.
    dir: Option<TempDir>,
}

impl LocalCluster {
    fn node(&self, index: usize) -> Result<&Node, TestkitError> {
        self.nodes.get(index).ok_or(TestkitError::NoSuchNode(index))
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut Node, TestkitError> {
        self.nodes
            .get_mut(index)
            .ok_or(TestkitError::NoSuchNode(index))
    }

    fn live_indices(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.state() == NodeState::Running)
            .map(|n| n.index)
            .collect()
    }

    fn index_of_id(&self, id: &str) -> Option<usize> {
        self.node_ids.iter().position(|n| n == id)
    }

    fn index_of_id_or_err(&self, id: &str) -> Result<usize, TestkitError> {
        self.index_of_id(id)
            .ok_or_else(|| TestkitError::Unexpected(format!("unknown node id {id}")))
    }

    /// The view of the first live node that answers (skipping `exclude`).
    fn live_view(&self, exclude: Option<usize>) -> Result<(usize, Vec<ClusterNode>), TestkitError> {
        let mut last = None;
        for index in self.live_indices() {
            if Some(index) == exclude {
                continue;
            }
            match self.cluster_nodes(index) {
                Ok(view) => return Ok((index, view)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Unexpected("no live node to ask".into())))
    }

    fn store_snapshot(&self, view: Vec<ClusterNode>) {
        *lock(&self.snapshot) = view;
    }

    fn refresh_snapshot(&self) {
        if let Ok((_, view)) = self.live_view(None) {
            self.store_snapshot(view);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // SIGKILL everything first and reap afterwards, so shutdown takes one
        // scheduling round instead of one per node.
        for node in &self.nodes {
            if let Some(child) = node.child.as_ref() {
                let _ = node.signal_child(child, Signal::SIGCONT);
                let _ = node.signal_child(child, Signal::SIGKILL);
            }
        }
        for node in &mut self.nodes {
            node.terminate();
        }
        let keep = std::env::var(KEEP_DIR_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        if keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("slotguard-testkit: kept cluster dir {}", path.display());
            }
        }
    }
}
