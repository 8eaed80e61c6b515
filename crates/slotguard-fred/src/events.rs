//! One task per node client: what fred announces (connects, errors,
//! invalidations) and the stall watchdog.
//!
//! Why a watchdog of our own: fred's unresponsive check is measured from
//! the connection's last *write* and cleared by any read, so steady traffic
//! to a silent node postpones it without end. This one is measured from the
//! oldest unanswered call: commands outstanding and no reply for the stall
//! timeout, and the client is replaced by a new one.

use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{EventInterface, TrackingInterface};
use fred::types::client::Invalidation as FredInvalidation;
use fred::types::config::Server;
use slotguard_core::invalidation::{Invalidation, InvalidationBus};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;

use fred::interfaces::ClientLike;
use fred::types::Value;

use crate::pool::{command, node_invalidated, NodeClient, Pool};

/// The receivers, taken before the client connects so that the first
/// connect is seen.
pub(crate) struct Events {
    reconnect: Receiver<Server>,
    errors: Receiver<(FredError, Option<Server>)>,
    invalidations: Receiver<FredInvalidation>,
}

impl Events {
    pub(crate) fn subscribe(node: &NodeClient) -> Self {
        let client: &Client = &node.client;
        Self {
            reconnect: client.reconnect_rx(),
            errors: client.error_rx(),
            invalidations: client.invalidation_rx(),
        }
    }

    /// Until the client is closed or the leaf is gone.
    pub(crate) async fn run(
        mut self,
        node: Arc<NodeClient>,
        pool: Weak<Pool>,
        bus: Option<InvalidationBus>,
    ) {
        let Some(stall) = pool.upgrade().map(|p| p.config().stall_timeout()) else {
            return;
        };
        let tick = (stall / 4).max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = node.cancelled() => return,
                r = self.reconnect.recv() => match r {
                    Ok(_) => on_connect(&node, bus.as_ref()).await,
                    Err(RecvError::Lagged(_)) => on_connect(&node, bus.as_ref()).await,
                    Err(RecvError::Closed) => return,
                },
                r = self.errors.recv() => match r {
                    // The connection is gone, and its tracking table with it.
                    Ok(_) | Err(RecvError::Lagged(_)) => node_invalidated(bus.as_ref(), &node.addr),
                    Err(RecvError::Closed) => return,
                },
                r = self.invalidations.recv() => match r {
                    Ok(inv) => publish(bus.as_ref(), &node, inv),
                    Err(RecvError::Lagged(_)) => node_invalidated(bus.as_ref(), &node.addr),
                    Err(RecvError::Closed) => return,
                },
                _ = interval.tick() => {
                    if node.stalled_for().is_some_and(|d| d >= stall) {
                        tracing::warn!(node = %node.addr, "no reply within the stall timeout: replacing the fred client");
                        node_invalidated(bus.as_ref(), &node.addr);
                        if let Some(pool) = pool.upgrade() {
                            pool.replace(&node);
                        }
                        return;
                    }
                }
            }
        }
    }
}

fn publish(bus: Option<&InvalidationBus>, node: &NodeClient, inv: FredInvalidation) {
    let Some(bus) = bus else { return };
    if inv.keys.is_empty() {
        // A null key list (`FLUSHALL`): every key of this node.
        node_invalidated(Some(bus), &node.addr);
        return;
    }
    bus.publish(Invalidation::Keys {
        node: node.addr.clone(),
        keys: inv.keys.into_iter().map(|k| k.into_bytes()).collect(),
    });
}

/// Send `READONLY` (replica mode) and `CLIENT TRACKING ON` (with a bus) on
/// a client that just connected.
async fn on_connect(node: &NodeClient, bus: Option<&InvalidationBus>) {
    node.connected();
    if node.is_replica() {
        let ok: Result<Value, _> = node
            .client
            .custom(command("READONLY"), Vec::<Value>::new())
            .await;
        if ok.is_ok() {
            node.readonly_confirmed();
        }
    }
    if let Some(bus) = bus {
        // Default (not broadcast) mode on this connection: the server
        // tracks exactly the keys read here. fred does not re-enable it
        // after a reconnect: this hook does.
        if let Err(e) = node
            .client
            .start_tracking(None, false, false, false, false)
            .await
        {
            tracing::warn!(node = %node.addr, error = %e, "client tracking refused: near-cache entries of this node get no invalidations");
        }
        // Keys read on the previous connection are tracked no more.
        node_invalidated(Some(bus), &node.addr);
    }
}
