//! One centralized fred client per node and mode, with the tasks the leaf
//! adds around it: re-sending `READONLY` and `CLIENT TRACKING ON` after
//! every (re)connect, forwarding invalidations, and the stall watchdog.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::prelude::Builder;
use fred::types::config::{
    Config, ConnectionConfig, PerformanceConfig, ReconnectPolicy, Server, ServerConfig, TcpConfig,
    TlsConfig as FredTls, TlsConnector, UnresponsiveConfig,
};
use fred::types::{ClusterHash, CustomCommand, RespVersion};
use slotguard_core::invalidation::{Invalidation, InvalidationBus};
use slotguard_core::{CacheError, NodeAddr, Role};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FredLeafConfig;

/// A node is read in one of two modes; a replica-mode client sends
/// `READONLY` after every connect.
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

pub(crate) fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

/// One fred client and what the leaf knows about it.
pub(crate) struct NodeClient {
    pub(crate) client: Client,
    pub(crate) addr: NodeAddr,
    mode: Mode,
    /// `READONLY` confirmed on the current connection (replica mode).
    readonly: AtomicBool,
    ever_connected: AtomicBool,
    /// fred's connection task ended: the first connect failed, or quit.
    ended: AtomicBool,
    in_flight: AtomicUsize,
    /// Calls given up at their deadline with no reply since: their commands
    /// are still in fred's queue, unanswered.
    abandoned: AtomicUsize,
    /// Milliseconds since the pool's epoch of the last reply, or of the
    /// first command after an idle spell: the watchdog's clock.
    progress: AtomicU64,
    created: Instant,
    cancel: CancellationToken,
    epoch: Instant,
    /// Why the connection task ended, when it did with an error (refused
    /// credentials or TLS are reported as such, not as "reconnecting").
    failure: Mutex<Option<CacheError>>,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("addr", &self.addr)
            .field("mode", &self.mode)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Counts one call outstanding on a client until dropped.
pub(crate) struct InFlight(Arc<NodeClient>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl NodeClient {
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Take a place among the calls outstanding, or `Overloaded`.
    pub(crate) fn enter(self: &Arc<Self>, max: usize) -> Result<InFlight, CacheError> {
        let mut cur = self.in_flight.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return Err(CacheError::Overloaded {
                    node: self.addr.clone(),
                });
            }
            match self.in_flight.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(seen) => cur = seen,
            }
        }
        if cur == 0 && self.abandoned.load(Ordering::Acquire) == 0 {
            // The watchdog measures from the oldest unanswered command.
            self.progress.store(self.now_ms(), Ordering::Release);
        }
        Ok(InFlight(self.clone()))
    }

    /// Milliseconds since the watchdog's clock last moved, when commands
    /// are outstanding.
    pub(crate) fn stalled_for(&self) -> Option<Duration> {
        if self.in_flight() == 0 && self.abandoned.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.progress.load(Ordering::Acquire));
        Some(Duration::from_millis(since))
    }

    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// A reply came in on this client: fred hands replies out in order, so
    /// every command sent before it was answered too.
    pub(crate) fn progressed(&self) {
        self.progress.store(self.now_ms(), Ordering::Release);
        self.abandoned.store(0, Ordering::Release);
    }

    /// A call gave up at its deadline; its command stays unanswered.
    pub(crate) fn abandon(&self) {
        self.abandoned.fetch_add(1, Ordering::AcqRel);
    }

    /// The node cannot take a command now: its connection was up and is
    /// down (fred is reconnecting), or the first attempt failed.
    pub(crate) fn is_lost(&self) -> bool {
        self.ended.load(Ordering::Acquire)
            || (self.ever_connected.load(Ordering::Acquire) && !self.client.is_connected())
    }

    /// Whether replica reads must send `READONLY` in their own pipeline
    /// (the connect hook has not confirmed it on this connection yet).
    pub(crate) fn needs_readonly(&self) -> bool {
        self.mode == Mode::Replica && !self.readonly.load(Ordering::Acquire)
    }

    /// A connection (first or new) is up: `READONLY` is not sent on it yet.
    pub(crate) fn connected(&self) {
        self.ever_connected.store(true, Ordering::Release);
        self.readonly.store(false, Ordering::Release);
    }

    pub(crate) fn is_replica(&self) -> bool {
        self.mode == Mode::Replica
    }

    pub(crate) fn readonly_confirmed(&self) {
        self.readonly.store(true, Ordering::Release);
    }

    /// Why the first connect failed, if it did.
    pub(crate) fn failure(&self) -> Option<CacheError> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn is_connected(&self) -> bool {
        !self.ended.load(Ordering::Acquire) && self.client.is_connected()
    }
}

pub(crate) struct Pool {
    config: FredLeafConfig,
    // Lock-free reads on the hot path; the mutex only serialises changes.
    clients: ArcSwap<HashMap<(NodeAddr, Mode), Arc<NodeClient>>>,
    change: Mutex<()>,
    tasks: TaskTracker,
    shut_down: AtomicBool,
    lifecycle: AtomicBool,
    epoch: Instant,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("clients", &self.clients.load().len())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(config: FredLeafConfig) -> Self {
        Self {
            config,
            clients: ArcSwap::from_pointee(HashMap::new()),
            change: Mutex::new(()),
            tasks: TaskTracker::new(),
            shut_down: AtomicBool::new(false),
            lifecycle: AtomicBool::new(false),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn config(&self) -> &FredLeafConfig {
        &self.config
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Claim the one lifecycle task.
    pub(crate) fn claim_lifecycle(&self) -> bool {
        !self.lifecycle.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn running_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn find(&self, addr: &NodeAddr, mode: Mode) -> Option<Arc<NodeClient>> {
        self.clients.load().get(&(addr.clone(), mode)).cloned()
    }

    /// Every client of `addr`.
    pub(crate) fn of(&self, addr: &NodeAddr) -> Vec<Arc<NodeClient>> {
        [Mode::Primary, Mode::Replica]
            .into_iter()
            .filter_map(|m| self.find(addr, m))
            .collect()
    }

    pub(crate) fn addrs(&self) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = self.clients.load().keys().map(|(a, _)| a.clone()).collect();
        out.sort_by_key(|a| a.to_string());
        out.dedup();
        out
    }

    /// The client for `addr` in `mode`, made (and its tasks started) on
    /// first use, and made anew when its first connect failed (at most once
    /// per reconnect delay) or the watchdog replaced it.
    pub(crate) fn client(
        self: &Arc<Self>,
        addr: &NodeAddr,
        mode: Mode,
    ) -> Result<Arc<NodeClient>, CacheError> {
        let usable = |c: &Arc<NodeClient>| {
            !c.cancel.is_cancelled()
                && (!c.ended.load(Ordering::Acquire)
                    || c.created.elapsed() < self.config.reconnect_delay)
        };
        let key = (addr.clone(), mode);
        if let Some(c) = self.clients.load().get(&key).filter(|c| usable(c)) {
            return Ok(c.clone());
        }
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_shut_down() {
            return Err(CacheError::Connection {
                node: addr.clone(),
                detail: "leaf shut down".into(),
            });
        }
        if let Some(c) = self.clients.load().get(&key).filter(|c| usable(c)) {
            return Ok(c.clone());
        }
        let client = self.build(addr).map_err(|e| CacheError::Connection {
            node: addr.clone(),
            detail: e.details().to_owned(),
        })?;
        let node = Arc::new(NodeClient {
            client,
            addr: addr.clone(),
            mode,
            readonly: AtomicBool::new(false),
            ever_connected: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            created: Instant::now(),
            cancel: CancellationToken::new(),
            epoch: self.epoch,
            failure: Mutex::new(None),
        });
        // Subscribe before connecting: the first connect is announced on
        // the same channel as every reconnect.
        let events = crate::events::Events::subscribe(&node);
        let handle = node.client.connect();
        let watched = node.clone();
        self.tasks.spawn(async move {
            if let Ok(Err(e)) = handle.await {
                let e = crate::convert::map_error(&e, &watched.addr, false);
                *watched.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
            watched.ended.store(true, Ordering::Release);
        });
        self.tasks.spawn(events.run(
            node.clone(),
            Arc::downgrade(self),
            self.config.invalidations.clone(),
        ));
        let mut map = HashMap::clone(&self.clients.load());
        if let Some(old) = map.insert(key, node.clone()) {
            self.close(&old);
        }
        self.clients.store(Arc::new(map));
        Ok(node)
    }

    fn build(&self, addr: &NodeAddr) -> Result<Client, fred::error::Error> {
        let cfg = &self.config;
        let server = match &cfg.tls {
            Some(tls) => Server::new_with_tls(
                addr.host().to_owned(),
                addr.port(),
                Some(tls.server_name_for(addr)),
            ),
            None => Server::new(addr.host().to_owned(), addr.port()),
        };
        let tls = cfg.tls.as_ref().map(|t| {
            FredTls::from(TlsConnector::Rustls(tokio_rustls::TlsConnector::from(
                t.rustls_client_config(),
            )))
        });
        let config = Config {
            server: ServerConfig::Centralized { server },
            version: RespVersion::RESP3,
            username: cfg.credentials.as_ref().and_then(|c| c.username.clone()),
            password: cfg
                .credentials
                .as_ref()
                .map(|c| c.password.expose().to_owned()),
            tls,
            // The first connect is attempted at once; if it fails the task
            // ends and `client()` makes a new client on a later call.
            fail_fast: true,
            ..Config::default()
        };
        let delay = cfg
            .reconnect_delay
            .as_millis()
            .clamp(1, u128::from(u32::MAX)) as u32;
        let mut tcp = TcpConfig {
            // Without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to
            // each round trip of fred's connection handshake.
            nodelay: Some(true),
            ..TcpConfig::default()
        };
        tcp.user_timeout = Some(cfg.tcp_user_timeout);
        Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_constant(0, delay))
            .set_connection_config(ConnectionConfig {
                connection_timeout: cfg.connect_timeout,
                internal_command_timeout: cfg.admin_timeout,
                // One attempt: retrying is the layers' decision.
                max_command_attempts: 1,
                max_redirections: 0,
                unresponsive: match cfg.unresponsive_timeout {
                    Some(t) => UnresponsiveConfig {
                        max_timeout: Some(t),
                        interval: (t / 4).max(Duration::from_millis(10)),
                    },
                    None => UnresponsiveConfig::default(),
                },
                tcp,
                ..ConnectionConfig::default()
            })
            .set_performance_config(PerformanceConfig {
                // Our own deadline governs; fred's only cleans up after it.
                default_command_timeout: cfg.command_timeout.max(cfg.admin_timeout),
                ..PerformanceConfig::default()
            })
            .build()
    }

    /// Forget `node` (if it is still the current client) and close it:
    /// the watchdog found it stalled, or its node left.
    pub(crate) fn replace(&self, node: &Arc<NodeClient>) {
        let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
        let key = (node.addr.clone(), node.mode);
        let cur = self.clients.load_full();
        if cur.get(&key).is_some_and(|c| Arc::ptr_eq(c, node)) {
            let mut map = HashMap::clone(&cur);
            map.remove(&key);
            self.clients.store(Arc::new(map));
        }
        self.close(node);
    }

    /// Stop `node`'s tasks and its reconnect loop.
    fn close(&self, node: &Arc<NodeClient>) {
        node.cancel.cancel();
        let client = node.client.clone();
        let grace = self.config.admin_timeout;
        // `quit` waits for the connection: bounded, on the tracker so that
        // shutdown waits for it.
        let quit = async move {
            if tokio::time::timeout(grace, client.quit()).await.is_err() {
                let _ = client.force_reconnection().await;
            }
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            self.tasks.spawn(quit);
        }
    }

    /// Close and forget clients of nodes for which `keep` is false.
    pub(crate) fn retain(&self, keep: &dyn Fn(&NodeAddr) -> bool) {
        let gone: Vec<Arc<NodeClient>> = self
            .clients
            .load()
            .iter()
            .filter(|((a, _), _)| !keep(a))
            .map(|(_, c)| c.clone())
            .collect();
        for c in gone {
            self.replace(&c);
        }
    }

    /// Close everything and wait for every task.
    pub(crate) async fn shutdown(&self) {
        let all = {
            let _guard = self.change.lock().unwrap_or_else(|p| p.into_inner());
            self.shut_down.store(true, Ordering::Release);
            self.clients.swap(Arc::new(HashMap::new()))
        };
        for c in all.values() {
            self.close(c);
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for Pool {
    /// The last handle of the leaf is gone without `shutdown`: stop the
    /// clients' reconnect loops and tasks anyway (without waiting for them).
    fn drop(&mut self) {
        for c in self.clients.load().values() {
            c.cancel.cancel();
            let client = c.client.clone();
            let grace = self.config.admin_timeout;
            // On the pool's tracker, bounded like every quit (nothing of
            // ours runs detached or unbounded).
            if tokio::runtime::Handle::try_current().is_ok() {
                self.tasks.spawn(async move {
                    let _ = tokio::time::timeout(grace, client.quit()).await;
                });
            }
        }
    }
}

/// A `Node` invalidation: whatever was read through `addr` may have
/// changed unseen (a connection, and its tracking table, was lost).
pub(crate) fn node_invalidated(bus: Option<&InvalidationBus>, addr: &NodeAddr) {
    if let Some(bus) = bus {
        bus.publish(Invalidation::Node { node: addr.clone() });
    }
}
