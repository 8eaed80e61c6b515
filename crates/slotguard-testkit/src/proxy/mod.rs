//! [`FaultProxy`]: a TCP proxy in front of one node, with faults switched at run time.

mod pump;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::cluster::lock;

/// How long the proxy waits to reach its upstream for a new connection.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which way bytes flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// From the client to the server (requests).
    ToServer,
    /// From the server to the client (replies).
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// The faults of one direction. `Faults::default()` is a plain pipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// Delay added to every chunk.
    pub latency: Duration,
    /// Each chunk's delay is `latency ± jitter`, uniformly (order is kept).
    pub jitter: Duration,
    /// At most this many bytes per second.
    pub bytes_per_sec: Option<u64>,
    /// Read and drop everything: nothing arrives on the other side.
    pub black_hole: bool,
    /// Each connection may carry this many more bytes, then it is closed.
    pub close_after: Option<u64>,
}

impl Faults {
    /// Add `latency ± jitter` to every chunk.
    pub fn with_latency(mut self, latency: Duration, jitter: Duration) -> Self {
        self.latency = latency;
        self.jitter = jitter.min(latency);
        self
    }

    /// Limit the rate to `bytes_per_sec` (at least 1).
    pub fn with_bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.bytes_per_sec = Some(bytes_per_sec.max(1));
        self
    }

    /// Drop everything.
    pub fn with_black_hole(mut self) -> Self {
        self.black_hole = true;
        self
    }

    /// Close each connection after `bytes` more bytes.
    pub fn with_close_after(mut self, bytes: u64) -> Self {
        self.close_after = Some(bytes);
        self
    }
}

/// State shared between the handle and the proxy's tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    faults: Mutex<[Faults; 2]>,
    /// Bumped on every change of `faults`, so a pump re-arms `close_after`.
    generation: AtomicU64,
    refuse: AtomicBool,
    isolated: AtomicBool,
    cut_peers: Mutex<Vec<IpAddr>>,
    /// Each bump resets every open connection.
    reset: watch::Sender<u64>,
    accepted: AtomicU64,
    open: AtomicUsize,
}

impl Shared {
    fn faults(&self, dir: Direction) -> (Faults, u64) {
        let faults = lock(&self.faults)[dir.index()].clone();
        (faults, self.generation.load(Ordering::SeqCst))
    }

    /// Whether traffic from or to `peer` is dropped (a partition).
    fn blocked(&self, peer: IpAddr) -> bool {
        self.isolated.load(Ordering::SeqCst) || lock(&self.cut_peers).contains(&peer)
    }

    fn bump_reset(&self) {
        self.reset.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A TCP proxy in front of one node whose faults a test switches at run
/// time.
///
/// The proxy runs on its own thread with its own tokio runtime, so sync
/// tests use it as easily as async ones, and its timers never share a
/// runtime with the client under test. Faults apply per [`Direction`]:
///
/// - latency with jitter (each chunk is delayed, order is kept);
/// - a bandwidth limit;
/// - a black hole: connections are accepted, bytes are read and dropped,
///   nothing is ever answered (ending it resets the open connections);
/// - close after N bytes: each connection carries at most N more bytes in
///   that direction, then both sides are closed (a reply cut mid-bulk);
/// - resets: [`FaultProxy::reset_connections`] sends RST on every open
///   connection, [`FaultProxy::set_refuse`] resets new ones at accept.
///
/// For partitions, [`FaultProxy::set_isolated`] black-holes every
/// connection and [`FaultProxy::cut_peer`] only those from one source
/// address (nodes of a proxied [`LocalCluster`](crate::LocalCluster) each
/// connect from their own 127.0.0.x).
///
/// ```no_run
/// use std::time::Duration;
/// use slotguard_testkit::{Direction, FaultProxy, Faults};
///
/// # fn main() -> std::io::Result<()> {
/// let proxy = FaultProxy::start("127.0.0.1:7000".parse().unwrap())?;
/// let client_sees = proxy.listen_addr(); // dial this instead of :7000
/// proxy.set(Direction::ToClient, Faults::default().with_latency(Duration::from_millis(200), Duration::from_millis(50)));
/// proxy.clear(); // back to a plain pipe
/// # let _ = client_sees; Ok(()) }
/// ```
///
/// Dropping it stops the proxy and closes every connection through it.
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("listen", &self.listen)
            .field("upstream", &self.upstream)
            .field("faults", &*lock(&self.shared.faults))
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// A proxy on a free port of 127.0.0.1 in front of `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream)
    }

    /// A proxy listening on `listen` in front of `upstream`.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<FaultProxy> {
        let shared = Arc::new(Shared {
            faults: Mutex::new([Faults::default(), Faults::default()]),
            generation: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            isolated: AtomicBool::new(false),
            cut_peers: Mutex::new(Vec::new()),
            reset: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Bind on this thread so an error reaches the caller directly.
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let bound = std_listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("slotguard-testkit-proxy-{}", bound.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = pump::accept_loop(listener, upstream, task_shared) => {}
                        _ = shutdown_rx => {}
                    }
                });
                // Dropping the runtime here cancels every connection task,
                // which closes their sockets.
            })?;
        Ok(FaultProxy {
            listen: bound,
            upstream,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// Where clients connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where the proxy forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Replace the faults of one direction (applies to open connections
    /// too). Ending a black hole resets the open connections: bytes it
    /// swallowed are gone, and a stream must not resume with a gap (a real
    /// black hole ends with the connection, not with lost bytes).
    pub fn set(&self, dir: Direction, faults: Faults) {
        let ended = {
            let mut all = lock(&self.shared.faults);
            let ended = all[dir.index()].black_hole && !faults.black_hole;
            all[dir.index()] = faults;
            ended
        };
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        if ended {
            self.shared.bump_reset();
        }
    }

    /// The same faults in both directions.
    pub fn set_both(&self, faults: Faults) {
        self.set(Direction::ToServer, faults.clone());
        self.set(Direction::ToClient, faults);
    }

    /// The current faults of one direction.
    pub fn faults(&self, dir: Direction) -> Faults {
        self.shared.faults(dir).0
    }

    /// No faults at all: a plain pipe again (also ends refusing, isolation
    /// and cut peers). Open connections stay open, unless a black hole,
    /// isolation or a cut peer ends (see [`set`](Self::set)).
    pub fn clear(&self) {
        self.set_both(Faults::default());
        self.shared.refuse.store(false, Ordering::SeqCst);
        let was_isolated = self.shared.isolated.swap(false, Ordering::SeqCst);
        let had_cuts = {
            let mut peers = lock(&self.shared.cut_peers);
            let had = !peers.is_empty();
            peers.clear();
            had
        };
        if was_isolated || had_cuts {
            self.shared.bump_reset();
        }
    }

    /// Send RST on every open connection (both sides) now.
    pub fn reset_connections(&self) {
        self.shared.bump_reset();
    }

    /// While on, every new connection is reset as soon as it is accepted,
    /// and the open ones are reset now.
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
        if on {
            self.shared.bump_reset();
        }
    }

    /// While on, every connection is a black hole both ways; turning it on
    /// or off resets the open connections, so no stream resumes with a gap.
    pub fn set_isolated(&self, on: bool) {
        self.shared.isolated.store(on, Ordering::SeqCst);
        self.shared.bump_reset();
    }

    /// While on, connections from `peer` are black holes both ways;
    /// switching resets the open connections.
    pub fn cut_peer(&self, peer: IpAddr, on: bool) {
        {
            let mut peers = lock(&self.shared.cut_peers);
            peers.retain(|p| *p != peer);
            if on {
                peers.push(peer);
            }
        }
        self.shared.bump_reset();
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Ends within one poll of the runtime: the accept loop and every
            // connection are cancelled with it.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
