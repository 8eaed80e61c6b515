//! One centralized fred client per cluster node.
//!
//! fred's *cluster* client follows MOVED/ASK itself and stalls every shard
//! when one node fails (DESIGN.md §1), so slotguard keeps one *centralized*
//! client per node: replies come back raw, and a failure stays on its node.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use fred::prelude::*;
use fred::types::config::{
    ConnectionConfig, PerformanceConfig, ReconnectPolicy, ServerConfig, TcpConfig,
};
use slotguard_core::NodeAddr;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::FredConfig;

/// A node's client, whether it ever connected (to tell "still connecting"
/// from "lost": only the latter fails fast), and its connection task.
#[derive(Clone)]
pub(crate) struct NodeClient {
    pub(crate) client: Client,
    pub(crate) ever_connected: Arc<AtomicBool>,
    // Ends only when the first connection attempt failed (fail-fast first
    // connect; later drops reconnect in the background, forever).
    task: Arc<JoinHandle<Result<(), fred::error::Error>>>,
    created: Instant,
}

impl NodeClient {
    /// The node cannot take a command now: its connection was up and is
    /// down (fred is reconnecting), or the first connection attempt failed.
    /// Fail fast rather than queue behind a reconnect until the deadline.
    pub(crate) fn is_lost(&self) -> bool {
        self.task.is_finished()
            || (self.ever_connected.load(Ordering::Relaxed) && !self.client.is_connected())
    }

    pub(crate) fn mark_connected(&self) {
        if !self.ever_connected.load(Ordering::Relaxed) {
            self.ever_connected.store(true, Ordering::Relaxed);
        }
    }
}

pub(crate) struct NodePool {
    config: FredConfig,
    // Lock-free reads on the hot path; the mutex only serialises creation.
    clients: ArcSwap<HashMap<NodeAddr, NodeClient>>,
    create: Mutex<()>,
}

impl fmt::Debug for NodePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePool")
            .field("nodes", &self.clients.load().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl NodePool {
    pub(crate) fn new(config: FredConfig) -> Self {
        Self {
            config,
            clients: ArcSwap::from_pointee(HashMap::new()),
            create: Mutex::new(()),
        }
    }

    pub(crate) fn config(&self) -> &FredConfig {
        &self.config
    }

    /// The client for `addr`, created (and its connection task started) on
    /// first use, and made anew when its first connection failed (at most
    /// once per reconnect delay). Must run inside a tokio runtime.
    pub(crate) fn client(&self, addr: &NodeAddr) -> Result<NodeClient, fred::error::Error> {
        let usable = |c: &NodeClient| {
            !c.task.is_finished() || c.created.elapsed() < self.config.reconnect_delay
        };
        if let Some(c) = self.clients.load().get(addr).filter(|c| usable(c)) {
            return Ok(c.clone());
        }
        let _guard = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = self.clients.load().get(addr).filter(|c| usable(c)) {
            return Ok(c.clone());
        }
        let client = self.build(addr)?;
        // The task drives the connection; commands sent before it is up wait
        // in fred's queue, bounded by our deadline.
        let task = client.connect();
        let node = NodeClient {
            client,
            ever_connected: Arc::new(AtomicBool::new(false)),
            task: Arc::new(task),
            created: Instant::now(),
        };
        let mut map = HashMap::clone(&self.clients.load());
        map.insert(addr.clone(), node.clone());
        self.clients.store(Arc::new(map));
        Ok(node)
    }

    fn build(&self, addr: &NodeAddr) -> Result<Client, fred::error::Error> {
        let cfg = &self.config;
        let config = Config {
            server: ServerConfig::new_centralized(addr.host(), addr.port()),
            // The first connect is attempted at once (`fail_fast: false`
            // would wait one reconnect delay first: +100 ms on every new
            // node). If it fails, the task ends and `client()` makes a new
            // client on a later call; once connected, drops reconnect in
            // the background per the policy.
            fail_fast: true,
            ..Config::default()
        };
        let delay = cfg.reconnect_delay.as_millis().clamp(1, u32::MAX as u128) as u32;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_constant(0, delay))
            .set_connection_config(ConnectionConfig {
                connection_timeout: cfg.connect_timeout,
                internal_command_timeout: cfg.admin_timeout,
                // One attempt: retrying is the layers' decision, with budgets.
                max_command_attempts: 1,
                max_redirections: 0,
                // Without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to
                // each round trip of the connection handshake (PING, CLIENT
                // ID, INFO): a first call took 150 ms and tripped breakers.
                tcp: TcpConfig {
                    nodelay: Some(true),
                    ..TcpConfig::default()
                },
                ..ConnectionConfig::default()
            })
            .set_performance_config(PerformanceConfig {
                // fred cleans up its own queue entry when our deadline passes.
                default_command_timeout: cfg.command_timeout.max(cfg.admin_timeout),
                ..PerformanceConfig::default()
            })
            .build()?;
        Ok(client)
    }

    /// Close and forget clients of nodes not in `keep`.
    pub(crate) fn retain(&self, keep: &dyn Fn(&NodeAddr) -> bool) {
        let _guard = self.create.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.clients.load_full();
        if cur.keys().all(keep) {
            return;
        }
        let mut map = HashMap::new();
        for (addr, c) in cur.iter() {
            if keep(addr) {
                map.insert(addr.clone(), c.clone());
            } else {
                close(c.client.clone());
            }
        }
        self.clients.store(Arc::new(map));
    }

    pub(crate) fn addrs(&self) -> Vec<NodeAddr> {
        self.clients.load().keys().cloned().collect()
    }
}

fn close(client: Client) {
    // quit() stops the reconnect loop; without it the task would run forever.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            let _ = client.quit().await;
        });
    }
}

impl Drop for NodePool {
    fn drop(&mut self) {
        for c in self.clients.load().values() {
            close(c.client.clone());
        }
    }
}
