//! RESP3 client tracking: the server tells this connection when a key it
//! read changes, and the leaf publishes that to the application's
//! [`InvalidationBus`] (a near-cache subscribes and evicts).
//!
//! Why per connection, in default (not broadcast) mode: the server tracks
//! exactly the keys read on this connection and sends an `invalidate` push
//! on the same connection, in RESP3 — no extra connection per node, no
//! `REDIRECT` client to keep alive, and nothing for keys nobody cached.
//!
//! Why a `Node` invalidation on every connect and on every loss: the
//! server's tracking table belongs to the connection. Invalidations sent
//! while no connection was up are lost, and keys read on an earlier
//! connection are tracked no more: whatever was read through this node may
//! have changed unseen. A connection that enabled tracking then publishes
//! `Tracking`: until the node's next `Node` event, what is read through it
//! will be invalidated (client-side caching trusts only such reads).
//!
//! Tracking needs RESP3: a connection whose handshake stayed on RESP2 (a
//! server without `HELLO`) does not enable it and publishes a `Node`
//! invalidation on connect, so nothing read through it is kept as fresh
//! on the strength of invalidations that cannot come. A server that refuses
//! `CLIENT TRACKING` (an ACL without it) is treated the same way; the
//! connection still serves commands.

use bytes::{Bytes, BytesMut};
use slotguard_core::invalidation::{Invalidation, InvalidationBus};
use slotguard_core::NodeAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::handshake::HandshakeError;
use super::ConnConfig;
use crate::resp::{encode_command, Arg, Decoder, Frame};

/// Publishes what one connection learns.
#[derive(Debug, Clone)]
pub(super) struct Tracker {
    bus: InvalidationBus,
    node: NodeAddr,
}

impl Tracker {
    pub(super) fn new(bus: InvalidationBus, node: NodeAddr) -> Self {
        Self { bus, node }
    }

    /// Everything read through this node may have changed unseen.
    pub(super) fn node_invalidated(&self) {
        self.bus.publish(Invalidation::Node {
            node: self.node.clone(),
        });
    }

    /// This connection tracks what it reads from now on.
    pub(super) fn tracking_on(&self) {
        self.bus.publish(Invalidation::Tracking {
            node: self.node.clone(),
        });
    }

    /// A push frame arrived; publish it if it is an invalidation.
    pub(super) fn on_push(&self, items: &[Frame]) {
        let [kind, keys, ..] = items else {
            return;
        };
        if !kind
            .as_bytes()
            .is_some_and(|k| k.eq_ignore_ascii_case(b"invalidate"))
        {
            // pub/sub or another kind of push: not ours.
            return;
        }
        match keys {
            Frame::Array(frames) => {
                if self.bus.subscribers() == 0 {
                    return;
                }
                let keys: Vec<Bytes> = frames
                    .iter()
                    .filter_map(|k| match k {
                        Frame::Bulk(b) | Frame::Simple(b) => Some(b.clone()),
                        _ => None,
                    })
                    .collect();
                if keys.len() < frames.len() {
                    // A key we cannot name: be safe, drop all of this node.
                    self.node_invalidated();
                    return;
                }
                self.bus.publish(Invalidation::Keys {
                    node: self.node.clone(),
                    keys,
                });
            }
            // A null key list (`FLUSHALL`, `FLUSHDB`), or a shape we do not
            // know: every key of this node.
            _ => self.node_invalidated(),
        }
    }
}

/// `CLIENT TRACKING ON NOLOOP` on a connection whose handshake switched to
/// RESP3: the server reports keys other clients change.
/// `Ok(false)`: the server refused; the connection is usable without
/// tracking. Bytes read past the reply stay in `rbuf`. The caller bounds it
/// with the connect deadline.
pub(super) async fn enable<S>(
    stream: &mut S,
    config: &ConnConfig,
    rbuf: &mut BytesMut,
) -> Result<bool, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut wbuf = BytesMut::with_capacity(64);
    encode_command(
        &mut wbuf,
        [
            Arg::Word("CLIENT"),
            Arg::Word("TRACKING"),
            Arg::Word("ON"),
            // Not for this connection's own writes: the fallback layer marks
            // every write it sends (before and after), and a push for it
            // arriving after the next read would only force that key to the
            // primary once more (a hot key written by this client would miss
            // the near-cache twice per write instead of once).
            Arg::Word("NOLOOP"),
        ],
    );
    stream
        .write_all(&wbuf)
        .await
        .map_err(|e| HandshakeError::Other(format!("write failed: {e}")))?;
    let mut decoder = Decoder::new(config.limits);
    loop {
        match decoder
            .decode(rbuf)
            .map_err(|e| HandshakeError::Other(e.to_string()))?
        {
            // Out of band: cannot be about this connection's keys yet.
            Some(Frame::Push(_)) => continue,
            Some(Frame::Simple(s)) if s.eq_ignore_ascii_case(b"OK") => return Ok(true),
            Some(Frame::Error(e)) => {
                tracing::warn!(
                    error = %String::from_utf8_lossy(&e[..e.len().min(200)]),
                    "client tracking refused: near-cache entries of this node get no invalidations"
                );
                return Ok(false);
            }
            Some(other) => {
                return Err(HandshakeError::Other(format!(
                    "unexpected reply to CLIENT TRACKING: {}",
                    other.kind()
                )))
            }
            None => {}
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(4096);
        }
        let n = stream
            .read_buf(rbuf)
            .await
            .map_err(|e| HandshakeError::Other(format!("read failed: {e}")))?;
        if n == 0 {
            return Err(HandshakeError::Other(
                "connection closed during CLIENT TRACKING".into(),
            ));
        }
    }
}
