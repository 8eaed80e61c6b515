//! The node connections, one per node and mode, made on first use.
//!
//! A node has a *primary-mode* connection (plain) and, once something reads
//! from it as a replica, a *replica-mode* one (`READONLY` on every connect).
//! They are kept apart rather than toggling `READONLY`/`READWRITE` on one
//! connection: a read that must come from a primary, sent to a node that was
//! demoted, gets `MOVED` (and fixes the map) instead of a replica's answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use slotguard_core::{NodeAddr, Role};
use tokio::time::Instant;

use crate::config::NodeConfig;
use crate::conn::{Conn, ConnConfig, Refused};
use crate::resp::Limits;
use tokio_util::task::TaskTracker;

/// Which kind of connection to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Primary,
    Replica,
}

impl From<Role> for Mode {
    fn from(role: Role) -> Self {
        match role {
            Role::Replica => Mode::Replica,
            _ => Mode::Primary,
        }
    }
}

/// Why no connection can take a command now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// The connection was lost and a new one is being made (or waits for the
    /// reconnect delay): fail fast instead of queueing behind it.
    Reconnecting,
    /// The last handshake was refused (credentials, TLS) and the next try is
    /// not due yet: the same error again, without dialling.
    Refused(Refused, Arc<str>),
    /// The leaf was shut down: nothing is dialled any more.
    ShutDown,
}

/// Least time between two dials to a node whose last handshake was
/// refused. A wrong password is a configuration error: retrying it every
/// `reconnect_delay` (100 ms) would hammer the server (and fill its ACL
/// log) without a chance of success, while a fixed configuration or a
/// rotated secret should take effect soon.
const REFUSED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// One node in one mode: its current connection, replaced when it closes.
pub(crate) struct NodeSlot {
    addr: NodeAddr,
    config: ConnConfig,
    reconnect_delay: std::time::Duration,
    conn: ArcSwapOption<Conn>,
    ever_connected: Arc<AtomicBool>,
    last_dial: Mutex<Option<Instant>>,
    /// When the lifecycle task first found this node missing from the map.
    departed: Mutex<Option<Instant>>,
    tasks: TaskTracker,
    shut_down: Arc<AtomicBool>,
}

impl fmt::Debug for NodeSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSlot")
            .field("addr", &self.addr)
            .field("conn", &self.conn.load())
            .finish()
    }
}

impl NodeSlot {
    /// The connection to send on: the current one if open (a first
    /// connection that is still connecting queues commands; a replacement
    /// does not), else a new one is dialled, at most once per reconnect
    /// delay.
    pub(crate) fn conn(&self) -> Result<Arc<Conn>, Unavailable> {
        self.current().unwrap_or_else(|| self.redial())
    }

    /// What the current connection offers, `None` if there is none open: it
    /// takes commands when up, or when it is a first connection still
    /// connecting; a replacement still connecting makes callers fail fast.
    fn current(&self) -> Option<Result<Arc<Conn>, Unavailable>> {
        let guard = self.conn.load();
        let c = guard.as_ref().filter(|c| !c.is_closed())?;
        Some(
            if c.is_ready() || !self.ever_connected.load(Ordering::Acquire) {
                Ok(c.clone())
            } else {
                Err(Unavailable::Reconnecting)
            },
        )
    }

    fn redial(&self) -> Result<Arc<Conn>, Unavailable> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Unavailable::ShutDown);
        }
        let mut last = self.last_dial.lock().unwrap_or_else(|p| p.into_inner());
        // Another caller may have dialled while we waited for the lock.
        if let Some(current) = self.current() {
            return current;
        }
        // A node that closed an idle connection (its `timeout` setting, a
        // restart, `CLIENT KILL`) is dialled again at once, like a first
        // time: callers wait for the new connection. One that broke under
        // load (or refused the dial) is dialled at most once per reconnect
        // delay, and callers fail fast until the new connection is up.
        let old = self.conn.load_full();
        let broke_busy = old.as_ref().is_some_and(|c| c.broke_busy());
        let now = Instant::now();
        if let Some((kind, reason)) = old.as_ref().and_then(|c| c.refused()) {
            if last.is_some_and(|t| now.duration_since(t) < REFUSED_RETRY) {
                return Err(Unavailable::Refused(*kind, reason.clone()));
            }
        }
        if broke_busy && last.is_some_and(|t| now.duration_since(t) < self.reconnect_delay) {
            return Err(Unavailable::Reconnecting);
        }
        *last = Some(now);
        if !broke_busy {
            self.ever_connected.store(false, Ordering::Release);
        }
        // Read before the dial starts: the new connection may be up (and set
        // the flag) before `open` returns.
        let replacement = self.ever_connected.load(Ordering::Acquire);
        let conn = Arc::new(Conn::open(
            self.addr.clone(),
            self.config.clone(),
            self.ever_connected.clone(),
            &self.tasks,
        ));
        self.conn.store(Some(conn.clone()));
        if replacement {
            // Callers fail fast until the new connection is up.
            return Err(Unavailable::Reconnecting);
        }
        Ok(conn)
    }

    /// Whether the current connection is open and ready.
    pub(crate) fn is_connected(&self) -> bool {
        self.conn
            .load()
            .as_ref()
            .is_some_and(|c| c.is_ready() && !c.is_closed())
    }

    /// Commands outstanding on the current connection.
    pub(crate) fn in_flight(&self) -> usize {
        self.conn.load().as_ref().map_or(0, |c| c.in_flight())
    }
}

pub(crate) struct NodePool {
    config: NodeConfig,
    // Lock-free reads on the hot path; the mutex only serialises creation.
    slots: ArcSwap<HashMap<(NodeAddr, Mode), Arc<NodeSlot>>>,
    create: Mutex<()>,
    /// The connection tasks (the lifecycle task runs on the topology's
    /// controller, which shuts this pool down with its own shutdown).
    tasks: TaskTracker,
    shut_down: Arc<AtomicBool>,
    lifecycle_started: AtomicBool,
}

impl fmt::Debug for NodePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePool")
            .field("nodes", &self.addrs())
            .finish()
    }
}

impl NodePool {
    pub(crate) fn new(config: NodeConfig) -> Self {
        Self {
            config,
            slots: ArcSwap::from_pointee(HashMap::new()),
            create: Mutex::new(()),
            tasks: TaskTracker::new(),
            shut_down: Arc::new(AtomicBool::new(false)),
            lifecycle_started: AtomicBool::new(false),
        }
    }

    /// Whether the lifecycle task is to be started now (only once).
    pub(crate) fn claim_lifecycle(&self) -> bool {
        !self.lifecycle_started.swap(true, Ordering::AcqRel)
    }

    /// Connection tasks still running.
    pub(crate) fn running_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Stop everything and wait: every connection is released (its task ends once the replies it waits for
    /// are in, or its stall timeout fires), and nothing is dialled again.
    pub(crate) async fn shutdown(&self) {
        self.shut_down.store(true, Ordering::Release);
        {
            let _guard = self.create.lock().unwrap_or_else(|p| p.into_inner());
            let slots = self.slots.swap(Arc::new(HashMap::new()));
            for slot in slots.values() {
                slot.conn.store(None);
            }
        }
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// One lifecycle pass: slots of nodes `in_map` says are gone get their
    /// departure time; those gone for `grace` are dropped (their
    /// connections close once their replies are in). A node back in the
    /// map keeps its slots.
    pub(crate) fn sweep(&self, in_map: &dyn Fn(&NodeAddr) -> bool, grace: std::time::Duration) {
        let now = Instant::now();
        let mut expired = false;
        for ((addr, _), slot) in self.slots.load().iter() {
            let mut departed = slot.departed.lock().unwrap_or_else(|p| p.into_inner());
            if in_map(addr) {
                *departed = None;
            } else {
                let since = *departed.get_or_insert(now);
                expired |= now.duration_since(since) >= grace;
            }
        }
        if !expired {
            return;
        }
        let gone = |slot: &NodeSlot| {
            slot.departed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| now.duration_since(t) >= grace)
        };
        let _guard = self.create.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.slots.load_full();
        let map: HashMap<_, _> = cur
            .iter()
            .filter(|(_, s)| !gone(s))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((addr, mode), slot) in cur.iter() {
            if gone(slot) {
                tracing::debug!(node = %addr, ?mode, "closing the connection of a node that left");
                slot.conn.store(None);
            }
        }
        self.slots.store(Arc::new(map));
    }

    pub(crate) fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn conn_config(&self, mode: Mode) -> ConnConfig {
        let cfg = &self.config;
        ConnConfig {
            connect_timeout: cfg.connect_timeout,
            stall_timeout: cfg.stall_timeout(),
            limits: Limits {
                max_depth: cfg.max_reply_depth,
                max_elements: cfg.max_reply_elements,
                // Admin replies (INFO, CLUSTER SHARDS) are bulks too: never
                // below 1 MiB, whatever the value limit.
                max_bulk: cfg.max_value_len.max(1024 * 1024),
                max_line: 64 * 1024,
            },
            readonly: mode == Mode::Replica,
            max_in_flight: cfg.max_in_flight,
            credentials: cfg.credentials.clone(),
            tls: cfg.tls.clone(),
            tracking: cfg.invalidations.clone(),
        }
    }

    /// The slot of `addr` in `mode`, if it was ever used.
    pub(crate) fn find(&self, addr: &NodeAddr, mode: Mode) -> Option<Arc<NodeSlot>> {
        self.slots.load().get(&(addr.clone(), mode)).cloned()
    }

    /// Send an administrative command to `addr` and wait for its reply, at
    /// most `timeout`.
    pub(crate) async fn admin(
        &self,
        addr: &NodeAddr,
        mode: Mode,
        words: &'static [&'static str],
        timeout: std::time::Duration,
    ) -> Result<crate::resp::Frame, slotguard_core::CacheError> {
        use crate::convert::{conn_error, send_error, unavailable};
        let conn = self
            .slot(addr, mode)
            .conn()
            .map_err(|e| unavailable(e, addr))?;
        let rx = conn
            .send(crate::conn::Cmd::Admin(words), false)
            .map_err(|e| send_error(e, addr))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(frame))) => Ok(frame),
            Ok(Ok(Err(e))) => Err(conn_error(e, addr, false)),
            Ok(Err(_)) => Err(slotguard_core::CacheError::Connection {
                node: addr.clone(),
                detail: "connection closed".into(),
            }),
            Err(_) => Err(slotguard_core::CacheError::Timeout { node: addr.clone() }),
        }
    }

    /// The slot of `addr` in `mode`, created on first use.
    pub(crate) fn slot(&self, addr: &NodeAddr, mode: Mode) -> Arc<NodeSlot> {
        let key = (addr.clone(), mode);
        if let Some(s) = self.slots.load().get(&key) {
            return s.clone();
        }
        let _guard = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.slots.load().get(&key) {
            return s.clone();
        }
        let slot = Arc::new(NodeSlot {
            addr: addr.clone(),
            config: self.conn_config(mode),
            reconnect_delay: self.config.reconnect_delay,
            conn: ArcSwapOption::empty(),
            ever_connected: Arc::new(AtomicBool::new(false)),
            last_dial: Mutex::new(None),
            departed: Mutex::new(None),
            tasks: self.tasks.clone(),
            shut_down: self.shut_down.clone(),
        });
        let mut map = HashMap::clone(&self.slots.load());
        map.insert(key, slot.clone());
        self.slots.store(Arc::new(map));
        slot
    }

    /// Close and forget the connections of nodes not in `keep`: dropping a
    /// connection's last handle ends its task once its replies are in.
    pub(crate) fn retain(&self, keep: &dyn Fn(&NodeAddr) -> bool) {
        let _guard = self.create.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.slots.load_full();
        if cur.keys().all(|(a, _)| keep(a)) {
            return;
        }
        let map = cur
            .iter()
            .filter(|((a, _), _)| keep(a))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.slots.store(Arc::new(map));
    }

    pub(crate) fn addrs(&self) -> Vec<NodeAddr> {
        let mut v: Vec<NodeAddr> = self.slots.load().keys().map(|(a, _)| a.clone()).collect();
        v.sort_by(|a, b| (a.host(), a.port()).cmp(&(b.host(), b.port())));
        v.dedup();
        v
    }
}
