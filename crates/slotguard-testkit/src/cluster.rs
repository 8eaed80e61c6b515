//! [`LocalCluster`]: real redis-server processes forming a cluster on loopback.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::error::TestkitError;
use crate::resp::{self, Conn, Reply};
use crate::slot::{key_slot, SLOT_COUNT};
use crate::topology::{self, ClusterNode};

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
    /// (later lines override the testkit's defaults).
    pub extra_config: Vec<(String, String)>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            primaries: 3,
            replicas_per_primary: 1,
            node_timeout_ms: 1000,
            extra_config: Vec::new(),
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
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The client port.
    pub port: u16,
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

#[derive(Debug)]
struct Node {
    index: usize,
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
    /// A [`NodeState`] as u8; atomic so that pause/resume work through `&self`
    /// (tests share `&LocalCluster` with worker threads).
    state: AtomicU8,
    /// A cached connection, so polling loops do not churn through ephemeral
    /// ports; dropped on any error so a timed-out reply is never read later.
    conn: Mutex<Option<Conn>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a connection half-used in a
    // way we rely on, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn describe<A: AsRef<[u8]>>(args: &[A]) -> String {
    let words: Vec<String> = args
        .iter()
        .take(2)
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    words.join(" ")
}

/// Errors that mean the server closed a cached connection before it saw the
/// command, so one retry on a fresh connection is safe.
fn is_stale(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

impl Node {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    fn state(&self) -> NodeState {
        NodeState::from_u8(self.state.load(Ordering::SeqCst))
    }

    fn set_state(&self, state: NodeState) {
        self.state.store(state.to_u8(), Ordering::SeqCst);
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn io_error(&self, what: &str, source: io::Error) -> TestkitError {
        if source.kind() == io::ErrorKind::InvalidData {
            return TestkitError::Protocol(format!(
                "node {} ({}) {what}: {source}",
                self.index,
                self.addr()
            ));
        }
        TestkitError::Io {
            context: format!("node {} ({}) running {what}", self.index, self.addr()),
            source,
        }
    }

    /// Runs one command, reusing the cached connection when possible.
    fn exec<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Reply, TestkitError> {
        let payload = resp::encode(args);
        let mut cached = lock(&self.conn);
        if let Some(conn) = cached.as_mut() {
            match conn.roundtrip(&payload) {
                Ok(reply) => return Ok(reply),
                Err(err) => {
                    *cached = None;
                    if !is_stale(&err) {
                        return Err(self.io_error(&describe(args), err));
                    }
                }
            }
        }
        let mut conn = Conn::connect(self.socket_addr(), CONNECT_TIMEOUT, IO_TIMEOUT)
            .map_err(|e| self.io_error(&describe(args), e))?;
        let reply = conn
            .roundtrip(&payload)
            .map_err(|e| self.io_error(&describe(args), e))?;
        *cached = Some(conn);
        Ok(reply)
    }

    /// Runs a command and turns an error reply into [`TestkitError::Server`].
    fn exec_ok<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Reply, TestkitError> {
        match self.exec(args)? {
            Reply::Error(message) => Err(TestkitError::Server {
                index: self.index,
                command: describe(args),
                message,
            }),
            reply => Ok(reply),
        }
    }

    fn drop_conn(&self) {
        *lock(&self.conn) = None;
    }

    fn signal(&self, signal: Signal, name: &'static str) -> Result<(), TestkitError> {
        let pid = self.pid().ok_or(TestkitError::NodeUnavailable {
            index: self.index,
            state: NodeState::Killed,
        })?;
        let raw = i32::try_from(pid).map_err(|_| {
            TestkitError::Unexpected(format!("pid {pid} of node {} out of range", self.index))
        })?;
        send_signal(Pid::from_raw(raw), signal).map_err(|errno| TestkitError::Signal {
            index: self.index,
            signal: name,
            source: io::Error::from(errno),
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts redis-server on this node's config. Does not wait for it.
    fn spawn(&mut self) -> Result<(), TestkitError> {
        let server = std::env::var(REDIS_SERVER_ENV).unwrap_or_else(|_| "redis-server".to_owned());
        let mut cmd = if Path::new(SETPRIV).exists() {
            // setpriv sets PR_SET_PDEATHSIG and then execs, so the child pid is
            // redis-server's own pid (what pause/kill must signal) and a test
            // process that dies without running Drop cannot orphan servers.
            let mut c = Command::new(SETPRIV);
            c.arg("--pdeathsig").arg("KILL").arg(&server);
            c
        } else {
            Command::new(&server)
        };
        cmd.arg(&self.conf)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|source| TestkitError::Spawn {
            program: server.clone(),
            source,
        })?;
        self.child = Some(child);
        self.set_state(NodeState::Running);
        self.drop_conn();
        Ok(())
    }

    /// Polls PING until the node answers; fails fast if the process exits.
    fn wait_ready(&mut self, deadline: Duration) -> Result<(), TestkitError> {
        let what = format!("node {} ({}) to answer PING", self.index, self.addr());
        poll(&what, deadline, POLL_INTERVAL, || {
            if let Some(child) = self.child.as_mut() {
                let exited = child.try_wait().map_err(|e| TestkitError::Io {
                    context: format!("checking process of node {}", self.index),
                    source: e,
                })?;
                if let Some(status) = exited {
                    // Reap already happened in try_wait; forget the child.
                    self.child = None;
                    self.set_state(NodeState::Killed);
                    return Err(TestkitError::NodeExited {
                        index: self.index,
                        status: status.to_string(),
                        log_tail: self.log_tail(LOG_TAIL_LINES),
                    });
                }
            }
            match self.exec(&["PING"])? {
                Reply::Simple(s) if s == "PONG" => {}
                other => return Err(TestkitError::Unexpected(format!("PING answered {other:?}"))),
            }
            // Another test process may have started its own redis-server on
            // this port between allocation and our bind; it answers PING just
            // as well, and forming a cluster with it would merge two clusters.
            let info = self.exec_ok(&["INFO", "server"])?;
            let info = parse_info(&reply_text(self.index, "INFO server", &info)?);
            let answered_by = info.get("process_id").and_then(|p| p.parse::<u32>().ok());
            match (answered_by, self.pid()) {
                (Some(theirs), Some(ours)) if theirs == ours => Ok(()),
                (theirs, _) => {
                    self.drop_conn();
                    Err(TestkitError::PortInUse {
                        index: self.index,
                        port: self.port,
                        owner_pid: theirs,
                    })
                }
            }
        })
    }

    /// SIGKILLs and reaps the process, if any. Never fails: used by Drop.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process does die from SIGKILL, but SIGCONT first costs
            // nothing and avoids relying on that corner of signal semantics.
            let _ = self.signal_child(&child, Signal::SIGCONT);
            let _ = self.signal_child(&child, Signal::SIGKILL);
            let _ = child.wait();
        }
        self.set_state(NodeState::Killed);
        self.drop_conn();
    }

    fn signal_child(&self, child: &Child, signal: Signal) -> Result<(), ()> {
        let raw = i32::try_from(child.id()).map_err(|_| ())?;
        send_signal(Pid::from_raw(raw), signal).map_err(|_| ())
    }
}

/// Polls `check` every `interval` until it succeeds, it fails with a
/// non-transient error, or `deadline` passes (then [`TestkitError::Timeout`]).
fn poll<T>(
    what: &str,
    deadline: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<T, TestkitError>,
) -> Result<T, TestkitError> {
    let started = Instant::now();
    loop {
        let last = match check() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() => e.to_string(),
            Err(e) => return Err(e),
        };
        if started.elapsed() >= deadline {
            return Err(TestkitError::Timeout {
                what: what.to_owned(),
                waited: started.elapsed(),
                last,
            });
        }
        std::thread::sleep(interval);
    }
}

/// Binds `count` distinct loopback ports at once and releases them.
///
/// Holding all listeners until the end guarantees the ports differ from each
/// other; another process may still grab one before redis-server binds it,
/// which `start` handles by retrying with fresh ports.
fn allocate_ports(count: usize) -> Result<Vec<u16>, TestkitError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| TestkitError::Io {
            context: "allocating loopback ports".to_owned(),
            source,
        })?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|source| TestkitError::Io {
            context: "reading allocated port".to_owned(),
            source,
        })
}

fn quote(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

fn node_config(spec: &ClusterSpec, port: u16, bus_port: u16, dir: &Path) -> String {
    let mut conf = format!(
        "# generated by slotguard-testkit\n\
         dir {dir}\n\
         port {port}\n\
         bind 127.0.0.1\n\
         protected-mode no\n\
         daemonize no\n\
         logfile {log}\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {timeout}\n\
         cluster-port {bus_port}\n\
         cluster-require-full-coverage no\n\
         cluster-allow-reads-when-down yes\n\
         cluster-replica-validity-factor 0\n\
         enable-debug-command yes\n\
         appendonly no\n\
         save \"\"\n\
         repl-diskless-sync-delay 0\n",
        dir = quote(dir),
        log = quote(&dir.join("redis.log")),
        timeout = spec.node_timeout_ms,
    );
    // repl-diskless-sync-delay defaults to 5 s in Redis 7, which would make
    // every replica (re)sync, and so every start, 5 s slower.
    for (key, value) in &spec.extra_config {
        conf.push_str(&format!("{key} {value}\n"));
    }
    conf
}

fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn reply_text(index: usize, what: &str, reply: &Reply) -> Result<String, TestkitError> {
    reply
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| TestkitError::Protocol(format!("node {index}: {what} returned {reply:?}")))
}

/// The first view a health check saw: its node, slot ownership and replication links.
type Reference = (usize, topology::Ownership, Vec<(String, Option<String>)>);

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
    /// `Option` only so that Drop can keep it on request.
    dir: Option<TempDir>,
}

impl LocalCluster {
    /// Starts and forms a cluster, blocking until it is healthy
    /// (see [`wait_until_ok`](Self::wait_until_ok)).
    ///
    /// If a node fails to start (typically a port grabbed by another process
    /// between allocation and bind) the whole start is retried with fresh
    /// ports, up to 3 attempts.
    pub fn start(spec: ClusterSpec) -> Result<LocalCluster, TestkitError> {
        if spec.primaries == 0 {
            return Err(TestkitError::InvalidSpec(
                "at least one primary is needed".into(),
            ));
        }
        if spec.primaries > usize::from(SLOT_COUNT) {
            return Err(TestkitError::InvalidSpec(format!(
                "{} primaries but only {SLOT_COUNT} slots",
                spec.primaries
            )));
        }
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&spec) {
                Ok(cluster) => return Ok(cluster),
                // Only a server dying at startup is plausibly a port race.
                Err(e @ (TestkitError::NodeExited { .. } | TestkitError::PortInUse { .. })) => {
                    last_err = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| TestkitError::Unexpected("no start attempt made".into())))
    }

    fn try_start(spec: &ClusterSpec) -> Result<LocalCluster, TestkitError> {
        // Every `CLUSTER SETSLOT`, failover and epoch bump makes a node save
        // and fsync nodes.conf with its event loop blocked. On a disk with
        // much dirty data (a CI machine right after a build) an fsync can
        // take longer than a client's deadline (suspected cause of timeouts
        // mid-migration in clean-clone CI runs, seen only there). On tmpfs
        // fsync costs nothing; $TMPDIR, when set, wins.
        let shm = std::path::Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("slotguard-testkit-");
        let made = if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
            builder.tempdir_in(shm).or_else(|_| builder.tempdir())
        } else {
            builder.tempdir()
        };
        let dir = made.map_err(|source| TestkitError::Io {
            context: "creating temp dir".to_owned(),
            source,
        })?;
        let count = spec.node_count();
        let ports = allocate_ports(count * 2)?;
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let (port, bus_port) = (ports[2 * index], ports[2 * index + 1]);
            let node_dir = dir.path().join(format!("node-{index}-{port}"));
            let io_err = |source| TestkitError::Io {
                context: format!("preparing {}", node_dir.display()),
                source,
            };
            fs::create_dir(&node_dir).map_err(io_err)?;
            let conf = node_dir.join("redis.conf");
            fs::write(&conf, node_config(spec, port, bus_port, &node_dir)).map_err(io_err)?;
            nodes.push(Node {
                index,
                port,
                bus_port,
                dir: node_dir,
                conf,
                child: None,
                state: AtomicU8::new(NodeState::Killed.to_u8()),
                conn: Mutex::new(None),
            });
        }
        // Build the value first so that Drop cleans up whatever was spawned
        // if any later step fails.
        let mut cluster = LocalCluster {
            spec: spec.clone(),
            nodes,
            node_ids: Vec::new(),
            snapshot: Mutex::new(Vec::new()),
            dir: Some(dir),
        };
        // Spawn all, then wait for all, so the servers boot in parallel.
        for node in &mut cluster.nodes {
            node.spawn()?;
        }
        for node in &mut cluster.nodes {
            node.wait_ready(READY_DEADLINE)?;
        }
        cluster.form()?;
        Ok(cluster)
    }

    /// Joins the running, empty nodes into a cluster (what `redis-cli --cluster create` does).
    fn form(&mut self) -> Result<(), TestkitError> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let reply = node.exec_ok(&["CLUSTER", "MYID"])?;
            ids.push(reply_text(node.index, "CLUSTER MYID", &reply)?);
        }
        self.node_ids = ids;

        // Distinct epochs up front avoid the epoch-collision dance, which
        // would otherwise delay convergence after MEET.
        for node in &self.nodes {
            let epoch = (node.index + 1).to_string();
            node.exec_ok(&["CLUSTER", "SET-CONFIG-EPOCH", &epoch])?;
        }
        let primaries = self.spec.primaries;
        let total = usize::from(SLOT_COUNT);
        for p in 0..primaries {
            let first = p * total / primaries;
            let last = (p + 1) * total / primaries - 1;
            self.nodes[p].exec_ok(&[
                "CLUSTER",
                "ADDSLOTSRANGE",
                &first.to_string(),
                &last.to_string(),
            ])?;
        }
        for other in self.nodes.iter().skip(1) {
            self.nodes[0].exec_ok(&[
                "CLUSTER",
                "MEET",
                "127.0.0.1",
                &other.port.to_string(),
                &other.bus_port.to_string(),
            ])?;
        }
        let count = self.nodes.len();
        poll(
            "all nodes to know each other after CLUSTER MEET",
            MEET_DEADLINE,
            POLL_INTERVAL,
            || {
                for node in &self.nodes {
                    let view = self.cluster_nodes(node.index)?;
                    let known = view
                        .iter()
                        .filter(|n| !n.is_joining() && self.index_of_id(&n.id).is_some())
                        .count();
                    if known != count {
                        return Err(TestkitError::Unexpected(format!(
                            "node {} knows {known} of {count} nodes",
                            node.index
                        )));
                    }
                }
                Ok(())
            },
        )?;
        for p in 0..primaries {
            for r in 0..self.spec.replicas_per_primary {
                let replica = primaries + p * self.spec.replicas_per_primary + r;
                self.nodes[replica].exec_ok(&["CLUSTER", "REPLICATE", &self.node_ids[p]])?;
            }
        }
        self.wait_until_ok(START_OK_DEADLINE)
    }

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

    // ----- introspection -------------------------------------------------

    /// The spec the cluster was started with.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// All nodes, including paused and killed ones.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .map(|n| NodeInfo {
                index: n.index,
                addr: n.addr(),
                port: n.port,
                bus_port: n.bus_port,
                pid: n.pid(),
                state: n.state(),
                dir: n.dir.clone(),
            })
            .collect()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `127.0.0.1:PORT` of node `index`.
    ///
    /// # Panics
    ///
    /// If `index` is out of range (a bug in the calling test).
    pub fn addr(&self, index: usize) -> String {
        self.nodes[index].addr()
    }

    /// Addresses of all nodes, to use as client seeds.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// The node's state as tracked by the testkit.
    pub fn node_state(&self, index: usize) -> Result<NodeState, TestkitError> {
        Ok(self.node(index)?.state())
    }

    /// The cluster node id (40 hex digits) of node `index`.
    pub fn node_id(&self, index: usize) -> Result<String, TestkitError> {
        self.node(index)?;
        self.node_ids
            .get(index)
            .cloned()
            .ok_or_else(|| TestkitError::Unexpected(format!("node {index} has no id yet")))
    }

    /// The index of the node listening on `addr` (`127.0.0.1:PORT` or
    /// `localhost:PORT`; a `@busport` suffix as in CLUSTER NODES is ignored).
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        let addr = addr.split('@').next().unwrap_or(addr);
        let (host, port) = addr.rsplit_once(':')?;
        if !matches!(host, "127.0.0.1" | "localhost" | "") {
            return None;
        }
        let port: u16 = port.parse().ok()?;
        self.nodes.iter().position(|n| n.port == port)
    }

    /// Path of node `index`'s `redis.log`.
    pub fn log_path(&self, index: usize) -> Result<PathBuf, TestkitError> {
        Ok(self.node(index)?.log_path())
    }

    /// The last `lines` lines of node `index`'s `redis.log` (handy in assertion messages).
    pub fn log_tail(&self, index: usize, lines: usize) -> Result<String, TestkitError> {
        Ok(self.node(index)?.log_tail(lines))
    }

    /// The temp dir holding every node's directory.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(TempDir::path)
    }

    // ----- commands ------------------------------------------------------

    /// Runs any command on one node and returns its reply; an error reply is
    /// `Ok(Reply::Error(..))`. Uses a sync RESP2 client with a 1 s connect and
    /// 2 s read/write timeout, so a paused node yields `Err`, never a hang.
    pub fn command(&self, index: usize, args: &[&[u8]]) -> Result<Reply, TestkitError> {
        self.node(index)?.exec(args)
    }

    /// Like [`command`](Self::command) with string arguments.
    pub fn command_str(&self, index: usize, args: &[&str]) -> Result<Reply, TestkitError> {
        self.node(index)?.exec(args)
    }

    /// Like [`command_str`](Self::command_str), but an error reply becomes
    /// [`TestkitError::Server`].
    pub fn command_ok(&self, index: usize, args: &[&str]) -> Result<Reply, TestkitError> {
        self.node(index)?.exec_ok(args)
    }

    /// `INFO <section>` parsed into `key -> value` (an empty section means plain `INFO`).
    pub fn info(
        &self,
        index: usize,
        section: &str,
    ) -> Result<HashMap<String, String>, TestkitError> {
        let node = self.node(index)?;
        let reply = if section.is_empty() {
            node.exec_ok(&["INFO"])?
        } else {
            node.exec_ok(&["INFO", section])?
        };
        Ok(parse_info(&reply_text(index, "INFO", &reply)?))
    }

    /// `CLUSTER INFO` parsed into `key -> value`.
    pub fn cluster_info(&self, index: usize) -> Result<HashMap<String, String>, TestkitError> {
        let reply = self.node(index)?.exec_ok(&["CLUSTER", "INFO"])?;
        Ok(parse_info(&reply_text(index, "CLUSTER INFO", &reply)?))
    }

    /// `CLUSTER NODES` of node `index`, parsed.
    pub fn cluster_nodes(&self, index: usize) -> Result<Vec<ClusterNode>, TestkitError> {
        let reply = self.node(index)?.exec_ok(&["CLUSTER", "NODES"])?;
        topology::parse_cluster_nodes(&reply_text(index, "CLUSTER NODES", &reply)?)
    }

    /// The first element of `ROLE`: `"master"` or `"slave"`.
    pub fn role(&self, index: usize) -> Result<String, TestkitError> {
        let reply = self.node(index)?.exec_ok(&["ROLE"])?;
        reply
            .as_array()
            .and_then(|items| items.first())
            .and_then(Reply::as_str)
            .map(str::to_owned)
            .ok_or_else(|| TestkitError::Protocol(format!("node {index}: ROLE returned {reply:?}")))
    }

    // ----- topology ------------------------------------------------------

    /// Index of the primary serving `slot`, according to the first live
    /// (not paused, not killed) node that answers.
    pub fn primary_of_slot(&self, slot: u16) -> Result<usize, TestkitError> {
        let (asked, view) = self.live_view(None)?;
        let owner = view
            .iter()
            .find(|n| n.is_master() && n.owns(slot))
            .ok_or_else(|| {
                TestkitError::Unexpected(format!("slot {slot} has no owner in node {asked}'s view"))
            })?;
        self.index_of_id_or_err(&owner.id)
    }

    /// Indices of the nodes that replicate `primary_index`, according to a live
    /// node (killed replicas are still listed while the cluster remembers them).
    pub fn replicas_of(&self, primary_index: usize) -> Result<Vec<usize>, TestkitError> {
        let id = self.node_id(primary_index)?;
        let (_, view) = self.live_view(None)?;
        let mut out = view
            .iter()
            .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| self.index_of_id_or_err(&n.id))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        Ok(out)
    }

    /// Indices of the primaries that own at least one slot, according to a live node.
    pub fn primaries(&self) -> Result<Vec<usize>, TestkitError> {
        let (_, view) = self.live_view(None)?;
        let mut out = view
            .iter()
            .filter(|n| n.is_master() && !n.slots.is_empty())
            .map(|n| self.index_of_id_or_err(&n.id))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_unstable();
        Ok(out)
    }

    /// The slot ranges node `index` serves, according to a live node.
    pub fn slots_of(&self, index: usize) -> Result<Vec<RangeInclusive<u16>>, TestkitError> {
        let id = self.node_id(index)?;
        let (_, view) = self.live_view(None)?;
        Ok(view
            .into_iter()
            .find(|n| n.id == id)
            .map(|n| n.slots)
            .unwrap_or_default())
    }

    /// `n` distinct keys whose slots `primary_index` currently serves.
    pub fn key_for_slot_of(
        &self,
        primary_index: usize,
        n: usize,
    ) -> Result<Vec<String>, TestkitError> {
        let slots = self.slots_of(primary_index)?;
        if slots.is_empty() && n > 0 {
            return Err(TestkitError::Unexpected(format!(
                "node {primary_index} serves no slots"
            )));
        }
        let mut keys = Vec::with_capacity(n);
        let mut i: u64 = 0;
        while keys.len() < n {
            let key = format!("sg:key:{primary_index}:{i}");
            let slot = key_slot(key.as_bytes());
            if slots.iter().any(|r| r.contains(&slot)) {
                keys.push(key);
            }
            i += 1;
        }
        Ok(keys)
    }

    // ----- health --------------------------------------------------------

    /// Waits until the cluster is healthy as seen from every live (not paused,
    /// not killed) node: `cluster_state:ok`; all 16384 slots assigned and ok;
    /// every node knows all nodes (none in handshake) and flags no live node
    /// as failing; all views agree on who owns each slot range (and owners
    /// are live) and on who replicates whom; no live primary is left without
    /// slots; every live replica has `master_link_status:up`.
    ///
    /// The "no primary without slots" rule holds in the testkit's default
    /// configuration because Redis 7 turns a primary that loses its last slot
    /// into a replica; if `extra_config` sets
    /// `cluster-allow-replica-migration no` and a test moves a primary's slots
    /// to several nodes, this never becomes ok.
    pub fn wait_until_ok(&self, deadline: Duration) -> Result<(), TestkitError> {
        let view = poll(
            "cluster to become healthy",
            deadline,
            HEALTH_POLL_INTERVAL,
            || self.check_health(),
        )?;
        self.store_snapshot(view);
        Ok(())
    }

    /// One health check; `Err(Unexpected)` says what is not ok yet.
    fn check_health(&self) -> Result<Vec<ClusterNode>, TestkitError> {
        let live = self.live_indices();
        let not_yet = |msg: String| Err(TestkitError::Unexpected(msg));
        let mut reference: Option<Reference> = None;
        let mut last_view = Vec::new();
        for &index in &live {
            let info = self.cluster_info(index)?;
            let field = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
            if field("cluster_state") != "ok" {
                return not_yet(format!(
                    "node {index}: cluster_state:{}",
                    field("cluster_state")
                ));
            }
            let full = SLOT_COUNT.to_string();
            for key in ["cluster_slots_assigned", "cluster_slots_ok"] {
                if field(key) != full {
                    return not_yet(format!("node {index}: {key}:{}", field(key)));
                }
            }
            let view = self.cluster_nodes(index)?;
            if view.len() != self.nodes.len() {
                return not_yet(format!(
                    "node {index} knows {} of {} nodes",
                    view.len(),
                    self.nodes.len()
                ));
            }
            let mut myself_is_replica = false;
            for n in &view {
                if n.is_joining() {
                    return not_yet(format!("node {index} sees {} in handshake", n.addr));
                }
                let Some(other) = self.index_of_id(&n.id) else {
                    return not_yet(format!("node {index} lists unknown node {}", n.id));
                };
                if n.is_myself() {
                    myself_is_replica = n.is_replica();
                    // Redis turns a primary that lost its last slot (e.g. the
                    // old primary after a manual failover) into a replica a
                    // moment later; until then the topology is not settled.
                    if n.is_master() && n.slots.is_empty() {
                        return not_yet(format!(
                            "node {index} is a primary without slots (not yet turned into a replica)"
                        ));
                    }
                }
                if self.nodes[other].state() == NodeState::Running && n.is_failing() {
                    return not_yet(format!(
                        "node {index} flags live node {other} as {}",
                        n.flags.join(",")
                    ));
                }
            }
            let owners = topology::ownership(&view);
            for (first, last, id) in &owners {
                let owner = self.index_of_id_or_err(id)?;
                if self.nodes[owner].state() != NodeState::Running {
                    return not_yet(format!(
                        "node {index} says slots {first}-{last} belong to {} node {owner}",
                        self.nodes[owner].state()
                    ));
                }
            }
            // Who replicates whom, restricted to live nodes (views may lag on
            // dead ones, which is harmless).
            let mut roles: Vec<(String, Option<String>)> = view
                .iter()
                .filter(|n| {
                    self.index_of_id(&n.id)
                        .is_some_and(|i| self.nodes[i].state() == NodeState::Running)
                })
                .map(|n| (n.id.clone(), n.master_id.clone()))
                .collect();
            roles.sort();
            match &reference {
                None => reference = Some((index, owners, roles)),
                Some((ref_index, ref_owners, _)) if *ref_owners != owners => {
                    return not_yet(format!(
                        "nodes {ref_index} and {index} disagree on slot ownership"
                    ));
                }
                Some((ref_index, _, ref_roles)) if *ref_roles != roles => {
                    return not_yet(format!(
                        "nodes {ref_index} and {index} disagree on who replicates whom"
                    ));
                }
                Some(_) => {}
            }
            if myself_is_replica {
                let repl = self.info(index, "replication")?;
                let link = repl
                    .get("master_link_status")
                    .map(String::as_str)
                    .unwrap_or("?");
                if link != "up" {
                    return not_yet(format!("replica {index}: master_link_status:{link}"));
                }
            }
            last_view = view;
        }
        if live.is_empty() {
            return not_yet("no live nodes".to_owned());
        }
        Ok(last_view)
    }

    // ----- faults --------------------------------------------------------

    /// Freezes node `index` with SIGSTOP. Its sockets stay open, so peers and
    /// clients see timeouts rather than refused connections. Idempotent.
    pub fn pause(&self, index: usize) -> Result<(), TestkitError> {
        let node = self.node(index)?;
        match node.state() {
            NodeState::Killed => Err(TestkitError::NodeUnavailable {
                index,
                state: NodeState::Killed,
            }),
            NodeState::Paused => Ok(()),
            NodeState::Running => {
                node.signal(Signal::SIGSTOP, "SIGSTOP")?;
                node.set_state(NodeState::Paused);
                Ok(())
            }
        }
    }

    /// Continues a paused node with SIGCONT. A no-op on a running node.
    pub fn resume(&self, index: usize) -> Result<(), TestkitError> {
        let node = self.node(index)?;
        match node.state() {
            NodeState::Killed => Err(TestkitError::NodeUnavailable {
                index,
                state: NodeState::Killed,
            }),
            NodeState::Running => Ok(()),
            NodeState::Paused => {
                node.signal(Signal::SIGCONT, "SIGCONT")?;
                node.set_state(NodeState::Running);
                Ok(())
            }
        }
    }

    /// SIGKILLs node `index` and reaps it. Works on paused nodes; a no-op on killed ones.
    pub fn kill(&mut self, index: usize) -> Result<(), TestkitError> {
        let node = self.node_mut(index)?;
        if node.child.is_some() {
            // Signal while the child is still ours: until it is reaped its pid
            // cannot be reused, so this can only hit our redis-server.
            node.signal(Signal::SIGKILL, "SIGKILL")?;
        }
        if let Some(mut child) = node.child.take() {
            child.wait().map_err(|source| TestkitError::Io {
                context: format!("reaping node {index}"),
                source,
            })?;
        }
        node.set_state(NodeState::Killed);
        node.drop_conn();
        Ok(())
    }

    /// Starts node `index` again with the same port, directory and
    /// `nodes.conf` (so the same node id), and waits until it answers PING.
    /// A running or paused node is killed first. Rejoining the cluster
    /// happens on its own; use [`wait_until_ok`](Self::wait_until_ok) to wait for it.
    ///
    /// Call this from a thread that outlives the cluster (see the type docs).
    pub fn restart(&mut self, index: usize) -> Result<(), TestkitError> {
        self.kill(index)?;
        let node = self.node_mut(index)?;
        let mut last = None;
        for attempt in 0..RESTART_ATTEMPTS {
            if attempt > 0 {
                // Something briefly held our port (e.g. an outgoing connection's
                // ephemeral port); give it a moment before binding again.
                std::thread::sleep(Duration::from_millis(200));
            }
            node.spawn()?;
            match node.wait_ready(READY_DEADLINE) {
                Ok(()) => return Ok(()),
                Err(e @ (TestkitError::NodeExited { .. } | TestkitError::PortInUse { .. })) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Unexpected("no restart attempt made".into())))
    }

    /// Runs `CLUSTER FAILOVER` on replica `replica_index` and waits (up to
    /// ~10 s) until its `ROLE` says master.
    pub fn failover(&self, replica_index: usize) -> Result<(), TestkitError> {
        self.failover_with(replica_index, FailoverMode::Coordinated)
    }

    /// [`failover`](Self::failover) with an explicit `FORCE`/`TAKEOVER` mode.
    pub fn failover_with(
        &self,
        replica_index: usize,
        mode: FailoverMode,
    ) -> Result<(), TestkitError> {
        let node = self.node(replica_index)?;
        match mode {
            FailoverMode::Coordinated => node.exec_ok(&["CLUSTER", "FAILOVER"])?,
            FailoverMode::Force => node.exec_ok(&["CLUSTER", "FAILOVER", "FORCE"])?,
            FailoverMode::Takeover => node.exec_ok(&["CLUSTER", "FAILOVER", "TAKEOVER"])?,
        };
        let what = format!("node {replica_index} to become master after CLUSTER FAILOVER");
        poll(&what, FAILOVER_DEADLINE, POLL_INTERVAL, || {
            let role = self.role(replica_index)?;
            if role == "master" {
                Ok(())
            } else {
                Err(TestkitError::Unexpected(format!("ROLE is {role}")))
            }
        })?;
        self.refresh_snapshot();
        Ok(())
    }

    /// Waits until a replica of `old_primary` has been promoted: its `ROLE`
    /// says master and its own `CLUSTER NODES` shows it serving every slot
    /// `old_primary` served. Returns the new primary's index.
    ///
    /// Which replicas and slots belonged to `old_primary` is read from a live
    /// node's current view when it still shows `old_primary` with slots, and
    /// otherwise from the last healthy snapshot, so calling this after the
    /// failover already happened still works.
    pub fn wait_for_failover(
        &self,
        old_primary: usize,
        deadline: Duration,
    ) -> Result<usize, TestkitError> {
        let old_id = self.node_id(old_primary)?;
        let analyse = |view: &[ClusterNode]| {
            let slots = view
                .iter()
                .find(|n| n.id == old_id)
                .map(|n| n.slots.clone())
                .unwrap_or_default();
            let replicas: Vec<String> = view
                .iter()
                .filter(|n| n.master_id.as_deref() == Some(old_id.as_str()))
                .map(|n| n.id.clone())
                .collect();
            (slots, replicas)
        };
        let current = self
            .live_view(Some(old_primary))
            .map(|(_, v)| analyse(&v))
            .unwrap_or_default();
        let (slots, replica_ids) = if current.0.is_empty() {
            analyse(&lock(&self.snapshot))
        } else {
            current
        };
        if slots.is_empty() {
            return Err(TestkitError::Unexpected(format!(
                "node {old_primary} served no slots, so there is no failover to wait for"
            )));
        }
        let candidates = replica_ids
            .iter()
            .map(|id| self.index_of_id_or_err(id))
            .collect::<Result<Vec<_>, _>>()?;
        let what = format!(
            "a replica of node {old_primary} (candidates {candidates:?}) to take over its slots"
        );
        let new_primary = poll(&what, deadline, POLL_INTERVAL, || {
            let mut last = TestkitError::Unexpected("no live candidate".to_owned());
            for &c in &candidates {
                if c == old_primary || self.nodes[c].state() != NodeState::Running {
                    continue;
                }
                let check = || -> Result<usize, TestkitError> {
                    let role = self.role(c)?;
                    if role != "master" {
                        return Err(TestkitError::Unexpected(format!("node {c} ROLE is {role}")));
                    }
                    let view = self.cluster_nodes(c)?;
                    let mine = view
                        .iter()
                        .find(|n| n.is_myself())
                        .map(|n| n.slots.clone())
                        .unwrap_or_default();
                    if topology::covers(&mine, &slots) {
                        Ok(c)
                    } else {
                        Err(TestkitError::Unexpected(format!(
                            "node {c} is master but does not serve all of {slots:?} yet"
                        )))
                    }
                };
                match check() {
                    Ok(c) => return Ok(c),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })?;
        Ok(new_primary)
    }

    // ----- slot migration ------------------------------------------------

    /// Starts moving `slot`: `CLUSTER SETSLOT slot IMPORTING <from-id>` on
    /// `to` first, then `MIGRATING <to-id>` on `from` (the order Redis
    /// documents, so no request is ever redirected to a node not yet importing).
    pub fn begin_migration(&self, slot: u16, from: usize, to: usize) -> Result<(), TestkitError> {
        if from == to {
            return Err(TestkitError::Unexpected(format!(
                "cannot migrate slot {slot} from node {from} to itself"
            )));
        }
        let slot_s = slot.to_string();
        let (from_id, to_id) = (self.node_id(from)?, self.node_id(to)?);
        self.node(to)?
            .exec_ok(&["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id])?;
        self.node(from)?
            .exec_ok(&["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id])?;
        Ok(())
    }

    /// Moves every key of `slot` from `from` to `to` with
    /// `CLUSTER GETKEYSINSLOT` + `MIGRATE ... REPLACE KEYS` in batches of 100.
    /// Returns how many keys were moved.
    pub fn migrate_keys(&self, slot: u16, from: usize, to: usize) -> Result<usize, TestkitError> {
        let source = self.node(from)?;
        let target_port = self.node(to)?.port.to_string();
        let slot_s = slot.to_string();
        let batch = MIGRATE_BATCH.to_string();
        let mut moved = 0;
        loop {
            let reply = source.exec_ok(&["CLUSTER", "GETKEYSINSLOT", &slot_s, &batch])?;
            let keys: Vec<Vec<u8>> = reply
                .as_array()
                .ok_or_else(|| TestkitError::Protocol(format!("GETKEYSINSLOT returned {reply:?}")))?
                .iter()
                .filter_map(|k| k.as_bytes().map(<[u8]>::to_vec))
                .collect();
            if keys.is_empty() {
                return Ok(moved);
            }
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                b"127.0.0.1",
                target_port.as_bytes(),
                b"",
                b"0",
                b"1500",
                b"REPLACE",
                b"KEYS",
            ];
            args.extend(keys.iter().map(Vec::as_slice));
            source.exec_ok(&args)?;
            moved += keys.len();
        }
    }

    /// Ends a migration: `CLUSTER SETSLOT slot NODE <to-id>` on `to`, then on
    /// the source (the slot's current owner), then on every other live primary.
    pub fn finish_migration(&self, slot: u16, to: usize) -> Result<(), TestkitError> {
        let to_id = self.node_id(to)?;
        let (_, view) = self.live_view(None)?;
        let source = view
            .iter()
            .find(|n| n.is_master() && n.owns(slot))
            .map(|n| self.index_of_id_or_err(&n.id))
            .transpose()?;
        let slot_s = slot.to_string();
        let setslot = [
            "CLUSTER",
            "SETSLOT",
            slot_s.as_str(),
            "NODE",
            to_id.as_str(),
        ];
        self.node(to)?.exec_ok(&setslot)?;
        let mut done = vec![to];
        if let Some(source) = source.filter(|s| *s != to) {
            self.node(source)?.exec_ok(&setslot)?;
            done.push(source);
        }
        for n in view.iter().filter(|n| n.is_master()) {
            let Some(index) = self.index_of_id(&n.id) else {
                continue;
            };
            if done.contains(&index) || self.nodes[index].state() != NodeState::Running {
                continue;
            }
            self.nodes[index].exec_ok(&setslot)?;
        }
        Ok(())
    }

    /// Moves every slot of `slots` from `from` to `to`, one slot at a time
    /// (begin, migrate keys, finish).
    pub fn move_slots(
        &self,
        slots: RangeInclusive<u16>,
        from: usize,
        to: usize,
    ) -> Result<(), TestkitError> {
        for slot in slots {
            self.begin_migration(slot, from, to)?;
            self.migrate_keys(slot, from, to)?;
            self.finish_migration(slot, to)?;
        }
        self.refresh_snapshot();
        Ok(())
    }

    // ----- latency faults ------------------------------------------------

    /// Sends `DEBUG SLEEP seconds` to node `index` and returns without waiting
    /// for the reply: a background thread owns the connection and reads the
    /// reply when the server wakes up. While asleep the node answers nothing.
    pub fn debug_sleep(&self, index: usize, seconds: f64) -> Result<(), TestkitError> {
        let node = self.node(index)?;
        let what = "DEBUG SLEEP";
        let mut conn = Conn::connect(node.socket_addr(), CONNECT_TIMEOUT, IO_TIMEOUT)
            .map_err(|e| node.io_error(what, e))?;
        let secs = seconds.max(0.0);
        conn.send(&resp::encode(&["DEBUG", "SLEEP", &secs.to_string()]))
            .map_err(|e| node.io_error(what, e))?;
        // Keep the socket open until the reply arrives so the server never sees
        // an early close; the thread ends by itself at the latest 5 s after the
        // sleep should have ended.
        let wait = Duration::from_secs_f64(secs.min(3600.0)) + Duration::from_secs(5);
        conn.set_read_timeout(wait)
            .map_err(|e| node.io_error(what, e))?;
        std::thread::Builder::new()
            .name(format!("slotguard-testkit-debug-sleep-{index}"))
            .spawn(move || {
                let _ = conn.read_reply();
            })
            .map_err(|source| TestkitError::Io {
                context: "spawning DEBUG SLEEP reader thread".to_owned(),
                source,
            })?;
        Ok(())
    }

    /// `CLIENT PAUSE millis` on node `index`: client commands stall (but the
    /// cluster bus keeps running, unlike [`pause`](Self::pause)).
    pub fn client_pause(&self, index: usize, millis: u64) -> Result<(), TestkitError> {
        self.node(index)?
            .exec_ok(&["CLIENT", "PAUSE", &millis.to_string()])?;
        Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_info_text() {
        let m = parse_info("# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n\r\n");
        assert_eq!(m.get("cluster_state").map(String::as_str), Some("ok"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn config_has_required_directives() {
        let spec = ClusterSpec {
            extra_config: vec![("maxmemory".into(), "10mb".into())],
            ..ClusterSpec::default()
        };
        let conf = node_config(&spec, 7000, 17001, Path::new("/tmp/x"));
        for needle in [
            "port 7000\n",
            "cluster-port 17001\n",
            "cluster-node-timeout 1000\n",
            "enable-debug-command yes\n",
            "save \"\"\n",
            "logfile \"/tmp/x/redis.log\"\n",
            "maxmemory 10mb\n",
        ] {
            assert!(conf.contains(needle), "missing {needle:?} in\n{conf}");
        }
    }

    #[test]
    fn allocates_distinct_ports() {
        let ports = allocate_ports(12).unwrap();
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
    }
}
