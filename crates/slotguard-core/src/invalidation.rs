//! Invalidation events from the cluster's node connections to a near-cache.
//!
//! The leaf publishes what the servers say changed (RESP3 client tracking
//! `invalidate` pushes) and when its knowledge was lost (a tracking connection
//! was re-established, so invalidations sent meanwhile may be missing). A
//! near-cache subscribes and evicts. The bus is a bounded broadcast: a
//! subscriber that falls behind is told so ([`Received::Lost`]) and must then
//! treat every entry as invalidated — dropping events silently would let a
//! stale value be served.
//!
//! ```
//! use bytes::Bytes;
//! use slotguard_core::invalidation::{Invalidation, InvalidationBus, Received};
//! use slotguard_core::NodeAddr;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bus = InvalidationBus::new(1024);
//! let mut rx = bus.subscribe();
//! let node: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//! bus.publish(Invalidation::Keys { node, keys: vec![Bytes::from_static(b"user:1")] });
//! match rx.recv().await {
//!     Some(Received::Event(Invalidation::Keys { keys, .. })) => assert_eq!(keys.len(), 1),
//!     other => panic!("unexpected {other:?}"),
//! }
//! # }
//! ```

use std::fmt;

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::addr::NodeAddr;

/// What a node connection learned about changed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation {
    /// The node said these keys changed (a tracking `invalidate` push).
    Keys {
        /// The node that sent the push.
        node: NodeAddr,
        /// The keys, as the server named them.
        keys: Vec<Bytes>,
    },
    /// Anything read through this node may have changed unseen: its tracking
    /// connection was (re)established or lost, or the server flushed its
    /// whole keyspace (an `invalidate` push with a null key list).
    Node {
        /// The node.
        node: NodeAddr,
    },
    /// The node's new connection tracks what it reads (RESP3 `CLIENT
    /// TRACKING ON` confirmed), until the next [`Invalidation::Node`] of
    /// the node: a key read through it from now on is invalidated when it
    /// changes. Published right after the connect's `Node` event; a
    /// connection without tracking publishes none, so a near-cache serving
    /// healthy reads (client-side caching) never trusts what it read.
    Tracking {
        /// The node.
        node: NodeAddr,
    },
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Received {
    /// One event.
    Event(Invalidation),
    /// The subscriber fell behind and events were dropped: treat every entry
    /// as invalidated.
    Lost,
}

/// A cheap-clone handle that publishes [`Invalidation`]s to every subscriber.
#[derive(Clone)]
pub struct InvalidationBus {
    tx: broadcast::Sender<Invalidation>,
}

impl InvalidationBus {
    /// A bus whose subscribers may lag by at most `capacity` events before
    /// they are told [`Received::Lost`].
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        InvalidationBus { tx }
    }

    /// Publishes one event; a bus without subscribers drops it.
    pub fn publish(&self, event: Invalidation) {
        // An error only means nobody listens, which is not a failure.
        let _ = self.tx.send(event);
    }

    /// A new subscriber; it sees the events published from now on.
    pub fn subscribe(&self) -> InvalidationReceiver {
        InvalidationReceiver {
            rx: self.tx.subscribe(),
        }
    }

    /// Number of live subscribers (publishers skip work when there are none).
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Default for InvalidationBus {
    fn default() -> Self {
        InvalidationBus::new(4096)
    }
}

impl fmt::Debug for InvalidationBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidationBus")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

/// One subscriber of an [`InvalidationBus`].
#[derive(Debug)]
pub struct InvalidationReceiver {
    rx: broadcast::Receiver<Invalidation>,
}

impl InvalidationReceiver {
    /// The next event, [`Received::Lost`] after a gap, `None` once every bus
    /// handle is dropped.
    pub async fn recv(&mut self) -> Option<Received> {
        match self.rx.recv().await {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Received::Lost),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// Like [`recv`](Self::recv) without waiting: `None` when nothing is queued
    /// or the bus is gone.
    pub fn try_recv(&mut self) -> Option<Received> {
        match self.rx.try_recv() {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Received::Lost),
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn a_lagging_subscriber_is_told_it_lost_events() {
        let bus = InvalidationBus::new(2);
        let mut rx = bus.subscribe();
        for _ in 0..5 {
            bus.publish(Invalidation::Node { node: node() });
        }
        assert_eq!(rx.try_recv(), Some(Received::Lost));
        assert!(matches!(rx.try_recv(), Some(Received::Event(_))));
    }

    #[test]
    fn publishing_without_subscribers_is_harmless() {
        let bus = InvalidationBus::new(2);
        assert_eq!(bus.subscribers(), 0);
        bus.publish(Invalidation::Node { node: node() });
        let mut rx = bus.subscribe();
        assert_eq!(rx.try_recv(), None);
    }
}
