//! One node's redis-server process and the testkit's admin connection to it.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;

use super::proxied::Proxies;
use super::queries::{parse_info, reply_text};
use super::{
    NodeState, CONNECT_TIMEOUT, IO_TIMEOUT, LOG_TAIL_LINES, POLL_INTERVAL, REDIS_SERVER_ENV,
    SETPRIV,
};
use crate::error::TestkitError;
use crate::resp::{self, Conn, Reply};

#[derive(Debug)]
pub(super) struct Node {
    pub(super) index: usize,
    pub(super) port: u16,
    pub(super) bus_port: u16,
    pub(super) dir: PathBuf,
    pub(super) conf: PathBuf,
    pub(super) child: Option<Child>,
    /// A [`NodeState`] as u8; atomic so that pause/resume work through `&self`
    /// (tests share `&LocalCluster` with worker threads).
    pub(super) state: AtomicU8,
    /// A cached connection, so polling loops do not churn through ephemeral
    /// ports; dropped on any error so a timed-out reply is never read later.
    pub(super) conn: Mutex<Option<Conn>>,
    /// The node's fault proxies, in a proxied cluster.
    pub(super) proxies: Option<Proxies>,
    /// The TLS client port, in a TLS cluster.
    pub(super) tls_port: Option<u16>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a connection half-used in a
    // way we rely on, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn describe<A: AsRef<[u8]>>(args: &[A]) -> String {
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
    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where clients reach the node: its client proxy, if any, else its
    /// TLS port, if any.
    pub(super) fn client_port(&self) -> u16 {
        self.proxies
            .as_ref()
            .map(Proxies::client_port)
            .or(self.tls_port)
            .unwrap_or(self.port)
    }

    /// The bus port peers reach: the bus proxy's, if any.
    pub(super) fn announced_bus_port(&self) -> u16 {
        self.proxies
            .as_ref()
            .map_or(self.bus_port, Proxies::bus_port)
    }

    /// `127.0.0.1:PORT` with the port clients use.
    pub(super) fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port())
    }

    pub(super) fn socket_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    pub(super) fn state(&self) -> NodeState {
        NodeState::from_u8(self.state.load(Ordering::SeqCst))
    }

    pub(super) fn set_state(&self, state: NodeState) {
        self.state.store(state.to_u8(), Ordering::SeqCst);
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub(super) fn io_error(&self, what: &str, source: io::Error) -> TestkitError {
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
    pub(super) fn exec<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Reply, TestkitError> {
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
    pub(super) fn exec_ok<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Reply, TestkitError> {
        match self.exec(args)? {
            Reply::Error(message) => Err(TestkitError::Server {
                index: self.index,
                command: describe(args),
                message,
            }),
            reply => Ok(reply),
        }
    }

    pub(super) fn drop_conn(&self) {
        *lock(&self.conn) = None;
    }

    pub(super) fn signal(&self, signal: Signal, name: &'static str) -> Result<(), TestkitError> {
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

    pub(super) fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    pub(super) fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts redis-server on this node's config. Does not wait for it.
    pub(super) fn spawn(&mut self) -> Result<(), TestkitError> {
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
    pub(super) fn wait_ready(&mut self, deadline: Duration) -> Result<(), TestkitError> {
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
    pub(super) fn terminate(&mut self) {
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

    pub(super) fn signal_child(&self, child: &Child, signal: Signal) -> Result<(), ()> {
        let raw = i32::try_from(child.id()).map_err(|_| ())?;
        send_signal(Pid::from_raw(raw), signal).map_err(|_| ())
    }
}

/// Polls `check` every `interval` until it succeeds, it fails with a
/// non-transient error, or `deadline` passes (then [`TestkitError::Timeout`]).
pub(super) fn poll<T>(
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
