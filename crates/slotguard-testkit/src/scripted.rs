//! A scripted RESP2 node: a TCP server on 127.0.0.1 that plays a one-node
//! Redis Cluster (owning all 16384 slots) and, for the keys a test scripts,
//! sends replies no real server sends: garbage, absurd lengths, deep nesting,
//! nothing at all, or a connection closed mid-reply.
//!
//! Its behaviour, defaults and shutdown are documented on [`ScriptedNode`],
//! which is what the crate re-exports; the pieces live in `parse` (reading
//! commands), `commands` (default replies) and `conn` (one connection thread).

mod commands;
mod conn;
mod parse;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::TestkitError;
use commands::{Identity, Store};

/// Distinct command names counted one by one; past this, new names are only
/// counted in the total, so a client sending random names cannot grow the map
/// without bound.
const MAX_COUNTED_NAMES: usize = 4096;

/// What the node does with every command on a scripted key.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Write these raw bytes as the reply (any RESP, or garbage).
    Reply(Vec<u8>),
    /// Send no reply for this command; the following commands are answered normally.
    Skip,
    /// From this command on, the connection reads (and counts) everything and
    /// never answers, until the client closes it.
    Silence,
    /// Write these bytes (e.g. an absurd length header), then [`Action::Silence`].
    ReplyThenSilence(Vec<u8>),
    /// Write these bytes (e.g. a reply cut mid-bulk), then close the connection.
    ReplyThenClose(Vec<u8>),
    /// Close the connection without a reply (replies to earlier commands of the
    /// same read are written first).
    Close,
    /// Answer normally after this delay, modelling a slow node: the
    /// connection's later commands wait too, other connections do not.
    Delay(Duration),
}

impl Action {
    /// `depth` nested one-element arrays around `:1`: `*1\r\n` × depth, then
    /// `:1\r\n` (100 000 deep is about 400 KB), for parsers that recurse.
    pub fn nested(depth: usize) -> Action {
        let mut bytes = Vec::with_capacity(depth.saturating_mul(4).saturating_add(4));
        for _ in 0..depth {
            bytes.extend_from_slice(b"*1\r\n");
        }
        bytes.extend_from_slice(b":1\r\n");
        Action::Reply(bytes)
    }

    /// A bulk string header claiming 2 GiB (`$2147483647\r\n`), then silence:
    /// a client that allocates what the header claims is in trouble.
    pub fn huge_bulk_header() -> Action {
        Action::ReplyThenSilence(b"$2147483647\r\n".to_vec())
    }

    /// An array header claiming `len` elements (e.g. `*1000000000\r\n`), then silence.
    pub fn huge_array(len: u64) -> Action {
        Action::ReplyThenSilence(format!("*{len}\r\n").into_bytes())
    }

    /// Bytes that are not RESP at all: `?\x00\xffhello\r\n`.
    pub fn garbage() -> Action {
        Action::Reply(b"?\x00\xffhello\r\n".to_vec())
    }

    /// A bulk string header for 100 bytes followed by 10 of them, then close.
    pub fn cut_bulk() -> Action {
        Action::ReplyThenClose(b"$100\r\n0123456789".to_vec())
    }

    /// An error reply with this text, e.g. `MOVED 42 10.255.255.1:7000` for a
    /// redirect to a node that does not exist. CR/LF in `msg` are kept
    /// verbatim, so this can also build a broken error line.
    pub fn error(msg: &str) -> Action {
        Action::Reply(format!("-{msg}\r\n").into_bytes())
    }
}

impl fmt::Debug for Action {
    // The derived form would print every byte of a 400 KB reply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn bytes(b: &[u8]) -> String {
            let shown: String = b
                .iter()
                .take(32)
                .flat_map(|c| c.escape_ascii())
                .map(char::from)
                .collect();
            let more = if b.len() > 32 { "..." } else { "" };
            format!("{} bytes: \"{shown}{more}\"", b.len())
        }
        match self {
            Action::Reply(b) => write!(f, "Reply({})", bytes(b)),
            Action::Skip => f.write_str("Skip"),
            Action::Silence => f.write_str("Silence"),
            Action::ReplyThenSilence(b) => write!(f, "ReplyThenSilence({})", bytes(b)),
            Action::ReplyThenClose(b) => write!(f, "ReplyThenClose({})", bytes(b)),
            Action::Close => f.write_str("Close"),
            Action::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
        }
    }
}

/// State shared by the handle, the accept thread and the connection threads.
#[derive(Debug)]
struct Shared {
    me: Identity,
    addr: SocketAddr,
    stopping: AtomicBool,
    // Answer `HELLO 3` (else: unknown command, as a RESP2-only server).
    resp3: AtomicBool,
    // Arc so that a connection can use a 400 KB reply without copying it.
    scripts: Mutex<HashMap<Vec<u8>, Arc<Action>>>,
    store: Store,
    accepted: AtomicUsize,
    open: AtomicUsize,
    commands: AtomicUsize,
    by_name: Mutex<HashMap<String, usize>>,
    conns: Mutex<Vec<JoinHandle<()>>>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// update under these locks is a single map or vector operation).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn count(&self, name: &str) {
        self.commands.fetch_add(1, Ordering::SeqCst);
        let mut by_name = lock(&self.by_name);
        if let Some(n) = by_name.get_mut(name) {
            *n += 1;
        } else if by_name.len() < MAX_COUNTED_NAMES {
            by_name.insert(name.to_owned(), 1);
        }
    }

    /// The script for a command, if it is a GET/SET/DEL on a scripted key.
    fn speaks_resp3(&self) -> bool {
        self.resp3.load(Ordering::SeqCst)
    }

    fn script_for(&self, name: &str, cmd: &parse::Command) -> Option<Arc<Action>> {
        if !matches!(name, "GET" | "SET" | "DEL") {
            return None;
        }
        let key = cmd.get(1)?;
        lock(&self.scripts).get(key).cloned()
    }
}

/// A fake cluster node on 127.0.0.1 whose replies tests can script per key.
///
/// It plays a one-node Redis Cluster that owns all 16384 slots and, for the
/// keys a test scripts with an [`Action`], sends replies no real server
/// sends: garbage, absurd lengths, deep nesting, nothing at all, or a
/// connection closed mid-reply. Share it between threads freely: every
/// method takes `&self`.
///
/// ## Example
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use slotguard_testkit::{Action, ScriptedNode, TestkitError};
///
/// fn main() -> Result<(), TestkitError> {
///     let node = ScriptedNode::start()?;
///     node.set("greeting", "hello");
///     // Every command on this key now gets half a bulk string, then EOF.
///     node.script("broken", Action::cut_bulk());
///
///     let mut client = TcpStream::connect(node.addr()).expect("connect");
///     client
///         .write_all(b"GET greeting\r\n*2\r\n$3\r\nGET\r\n$6\r\nbroken\r\n")
///         .expect("write");
///     let mut got = Vec::new();
///     client.read_to_end(&mut got).expect("read");
///     assert_eq!(got, b"$5\r\nhello\r\n$100\r\n0123456789");
///     assert_eq!(node.command_count("get"), 2);
///     Ok(())
/// } // Drop stops every thread and closes every socket.
/// ```
///
/// ## Behaviour
///
/// * Commands are RESP2 arrays of bulk strings, or inline (`PING\r\n`). A
///   protocol error is answered with `-ERR Protocol error: ...` and the
///   connection is closed, as Redis does.
/// * Unscripted commands get Redis-like answers: `GET`/`SET [EX s|PX ms]`/`DEL`
///   on an in-memory store, `PING [msg]`, `ECHO`, `+OK` for `READONLY`,
///   `READWRITE`, `ASKING`, `AUTH`, `CLIENT`, `SELECT`, `QUIT` (then close),
///   `ROLE`, `CLUSTER SHARDS|SLOTS|INFO|NODES|MYID`, `INFO [section]`, and
///   `-ERR unknown command ...` for everything else (including `HELLO`: the
///   node speaks RESP2 only).
/// * A script applies to `GET`, `SET` and `DEL` whose first key is the scripted
///   key, on every connection, until [`ScriptedNode::clear`].
/// * Replies to the commands of one read are written together, as Redis does.
///
/// ## Threads and shutdown
///
/// One accept thread and one thread per connection. Connection sockets have a
/// short read timeout so their threads notice shutdown; `Drop` sets a flag,
/// wakes the blocked `accept` with a connection of its own, and joins every
/// thread, so after it returns the port is closed and no thread is left.
pub struct ScriptedNode {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl ScriptedNode {
    /// Binds a free port on 127.0.0.1 and starts accepting connections.
    pub fn start() -> Result<ScriptedNode, TestkitError> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| TestkitError::Io { context, source }
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("binding a scripted node"))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the scripted node's address"))?;
        let shared = Arc::new(Shared {
            me: Identity {
                port: addr.port(),
                id: node_id(addr.port()),
            },
            addr,
            stopping: AtomicBool::new(false),
            resp3: AtomicBool::new(false),
            scripts: Mutex::default(),
            store: Store::default(),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            commands: AtomicUsize::new(0),
            by_name: Mutex::default(),
            conns: Mutex::default(),
        });
        let for_thread = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name(format!("scripted-accept-{}", addr.port()))
            .spawn(move || accept_loop(&for_thread, &listener))
            .map_err(io("spawning the scripted node's accept thread"))?;
        Ok(ScriptedNode {
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to (127.0.0.1 and the allocated port).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The 40-hex-digit node id reported by `CLUSTER SHARDS`/`SLOTS`/`NODES`.
    pub fn node_id(&self) -> &str {
        &self.shared.me.id
    }

    /// While on, `HELLO 3` is answered with a RESP3 map (so a client
    /// switches to RESP3 and may enable client tracking); the other replies
    /// stay RESP2, which RESP3 clients read too. Off by default: `HELLO` is
    /// an unknown command, as on a server before Redis 6.
    pub fn speak_resp3(&self, on: bool) {
        self.shared.resp3.store(on, Ordering::SeqCst);
    }

    /// Applies `action` to every later GET/SET/DEL on `key` (replacing any
    /// earlier script for it) until [`clear`](Self::clear).
    pub fn script(&self, key: impl AsRef<[u8]>, action: Action) {
        lock(&self.shared.scripts).insert(key.as_ref().to_vec(), Arc::new(action));
    }

    /// Removes the script for `key`: its commands get default replies again.
    /// Connections already silenced stay silent.
    pub fn clear(&self, key: impl AsRef<[u8]>) {
        lock(&self.shared.scripts).remove(key.as_ref());
    }

    /// Removes every script.
    pub fn clear_all(&self) {
        lock(&self.shared.scripts).clear();
    }

    /// Stores `value` under `key` (no expiry), as a `SET` would.
    pub fn set(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.shared.store.set(key.as_ref(), value.as_ref(), None);
    }

    /// The value stored under `key`, e.g. to check that a client's `SET` arrived.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        self.shared.store.get(key.as_ref())
    }

    /// Connections accepted since start.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open: accepted, and not yet closed by the client
    /// or by a scripted close.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Commands parsed since start, on all connections (silenced ones included).
    pub fn commands_received(&self) -> usize {
        self.shared.commands.load(Ordering::SeqCst)
    }

    /// Commands named `name` (case-insensitive, e.g. `"READONLY"`) parsed
    /// since start. For `CLUSTER SHARDS` ask for `"CLUSTER"`.
    pub fn command_count(&self, name: &str) -> usize {
        lock(&self.shared.by_name)
            .get(&name.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }
}

/// Test-only view of whether a node's threads are gone: each of them holds the
/// shared state, so it is freed exactly when the last thread has exited.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Liveness(std::sync::Weak<Shared>);

#[cfg(test)]
impl Liveness {
    pub(crate) fn all_gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

#[cfg(test)]
impl ScriptedNode {
    pub(crate) fn liveness(&self) -> Liveness {
        Liveness(Arc::downgrade(&self.shared))
    }
}

impl fmt::Debug for ScriptedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedNode")
            .field("addr", &self.shared.addr)
            .field("node_id", &self.shared.me.id)
            .field("scripted_keys", &lock(&self.shared.scripts).len())
            .field("connections_accepted", &self.connections_accepted())
            .field("open_connections", &self.open_connections())
            .field("commands_received", &self.commands_received())
            .finish()
    }
}

impl Drop for ScriptedNode {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            // `accept` blocks; a connection of our own wakes it up to see the
            // flag. Should connecting fail every time (the process is out of
            // file descriptors), the thread is left to exit on the next
            // connection rather than hanging this drop.
            let woken = (0..10).any(|_| {
                accept.is_finished()
                    || TcpStream::connect_timeout(&self.shared.addr, Duration::from_secs(1)).is_ok()
            });
            if woken {
                let _ = accept.join();
            }
        }
        // The accept thread has exited (or cannot spawn more), so this list is
        // complete; each connection thread sees the flag within one read timeout.
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for conn in conns {
            let _ = conn.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if shared.stopping() {
            return;
        }
        match stream {
            Ok(stream) => spawn_connection(shared, stream),
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Decrements the open-connection count when a connection thread ends, however it ends.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

fn spawn_connection(shared: &Arc<Shared>, stream: TcpStream) {
    shared.accepted.fetch_add(1, Ordering::SeqCst);
    shared.open.fetch_add(1, Ordering::SeqCst);
    let guard = OpenGuard(Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name(format!("scripted-conn-{}", shared.addr.port()))
        .spawn(move || {
            let guard = guard;
            conn::serve(&guard.0, stream);
        });
    // On a failed spawn the closure, guard and stream included, is dropped:
    // the client sees the connection closed and the count is restored.
    if let Ok(handle) = spawned {
        let mut conns = lock(&shared.conns);
        conns.retain(|h| !h.is_finished());
        conns.push(handle);
    }
}

/// 40 hex digits, different for every node of every test run.
fn node_id(port: u16) -> String {
    let state = RandomState::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut id = String::with_capacity(48);
    for part in 0u8..3 {
        let mut h = state.build_hasher();
        h.write_u16(port);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u8(part);
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id.truncate(40);
    id
}
