//! One connection to one node: a single task that owns the socket, batches
//! every queued command into shared writes, decodes replies with the bounded
//! decoder and hands each reply to its own caller.
//!
//! Why not fred's centralized client (measured, docs/leaf-connections.md):
//! it sent ~1.2 `writev` per command at concurrency 64 (no batching across
//! callers), its decoder recurses (a deep reply aborted the process), a
//! connection that stopped answering was never replaced, and after a reply
//! went missing it handed each later reply to the request before it.
//!
//! What a connection guarantees (DESIGN.md §6):
//! - *Batching*: commands that arrive while the task is busy leave in one
//!   write.
//! - *Reply integrity*: replies are matched in order, and a command whose
//!   caller gave up keeps its place, so its reply is read and dropped. Each
//!   batch ends with `PING <token>`, a marker unique to the connection;
//!   replies of a batch reach their callers only once the marker's echo
//!   arrives in its place, and a reply of the wrong shape for its command
//!   (or a marker out of place) discards the connection. A node that skips
//!   or invents a reply therefore costs typed errors, never a value handed
//!   to the wrong request.
//! - *Bounded decoding*: see [`crate::resp`].
//! - *Replacement*: a connection with commands outstanding that reads
//!   nothing for the stall timeout is closed; the pool dials anew.
//! - *Handshake* ([`handshake`]): `HELLO 3` (with `AUTH` when there are
//!   credentials) and, on a replica connection, `READONLY`, answered before
//!   the connection takes commands, so no read can overtake `READONLY` and a
//!   refused password is one typed error ([`Refused`]) for the callers
//!   waiting, not an error reply each.
//! - *Client tracking* ([`tracking`]), when the leaf has an invalidation
//!   bus: `CLIENT TRACKING ON` after a RESP3 handshake, `invalidate` pushes
//!   published to the bus.
//! - *Back-pressure*: at most `max_in_flight` commands outstanding; beyond,
//!   a send fails with [`SendError::Overloaded`] at once.

mod connect;
mod driver;
mod handshake;
mod tracking;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use slotguard_core::invalidation::InvalidationBus;
use slotguard_core::op::Command;
use slotguard_core::NodeAddr;
use tokio::sync::{mpsc, oneshot};

use crate::credentials::Credentials;
use crate::resp::{encode_command, Arg, Frame, Limits};
use crate::tls::TlsConfig;

/// Settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) limits: Limits,
    pub(crate) readonly: bool,
    pub(crate) max_in_flight: usize,
    /// Sent in the handshake; redacted in `Debug`.
    pub(crate) credentials: Option<Credentials>,
    pub(crate) tls: Option<TlsConfig>,
    /// Client tracking on, publishing here ([`tracking`]).
    pub(crate) tracking: Option<InvalidationBus>,
}

/// A command to send.
#[derive(Debug, Clone)]
pub(crate) enum Cmd {
    /// A cache operation: its command, reply check and answer are the
    /// operation's own ([`slotguard_core::op`]).
    Op(Command),
    /// An administrative command of fixed words (`CLUSTER SHARDS`, `INFO
    /// replication`); any reply shape.
    Admin(&'static [&'static str]),
}

impl Cmd {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Cmd::Op(cmd) => encode_command(
                buf,
                std::iter::once(Arg::Word(cmd.name())).chain(cmd.args()),
            ),
            Cmd::Admin(words) => encode_command(buf, words.iter().map(|w| Arg::Word(w))),
        }
    }

    /// Whether `frame` is a reply this command can get. Anything else means
    /// the reply stream no longer lines up with the commands.
    fn fits(&self, frame: &Frame) -> bool {
        match self {
            Cmd::Op(cmd) => cmd.kind().fits(frame.shape()),
            Cmd::Admin(_) => true,
        }
    }
}

/// Why a command got no reply.
#[derive(Debug, Clone)]
pub(crate) struct ConnError {
    /// The command was written: a write may have applied.
    pub(crate) written: bool,
    /// This command's own reply broke the protocol (vs. another's).
    pub(crate) protocol: bool,
    /// The connection was never set up because the node (or its TLS layer)
    /// refused us: a configuration problem, not a node fault.
    pub(crate) refused: Option<Refused>,
    pub(crate) reason: Arc<str>,
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Wrong or missing credentials.
    Auth,
    /// Certificate or TLS protocol failure.
    Tls,
}

pub(crate) type Reply = Result<Frame, ConnError>;

/// What [`Conn::send`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The connection is closed; nothing was sent.
    Closed,
    /// `max_in_flight` commands are outstanding; nothing was sent.
    Overloaded,
    /// The handshake was refused; nothing was sent.
    Refused(Refused, Arc<str>),
}

pub(crate) struct Request {
    cmd: Cmd,
    asking: bool,
    tx: oneshot::Sender<Reply>,
}

const CONNECTING: u8 = 0;
const READY: u8 = 1;
const CLOSED: u8 = 2;

/// State shared by a connection's handle and its task.
struct Shared {
    state: AtomicU8,
    in_flight: AtomicUsize,
    max_in_flight: usize,
    /// Set once the TCP connection is up (kept by the pool across redials).
    ever_connected: Arc<AtomicBool>,
    /// The connection broke with commands outstanding (or stalled), as
    /// opposed to a node closing an idle connection.
    broke_busy: AtomicBool,
    /// Set when the handshake was refused: the pool answers with it, without
    /// dialling, until a retry is due.
    refused: OnceLock<(Refused, Arc<str>)>,
}

impl Shared {
    fn close(&self) {
        self.state.store(CLOSED, Ordering::Release);
    }
    fn done(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The handle callers send through; the task ends when every handle is
/// dropped and every outstanding reply has arrived (or the connection broke).
pub(crate) struct Conn {
    tx: mpsc::UnboundedSender<Request>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("state", &self.shared.state.load(Ordering::Relaxed))
            .field("in_flight", &self.shared.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl Conn {
    /// Start connecting to `addr` in a new task (inside a tokio runtime).
    /// Commands sent before the connection is up wait for it, bounded by
    /// their callers' deadlines.
    pub(crate) fn open(
        addr: NodeAddr,
        config: ConnConfig,
        ever_connected: Arc<AtomicBool>,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: AtomicU8::new(CONNECTING),
            in_flight: AtomicUsize::new(0),
            max_in_flight: config.max_in_flight.max(1),
            ever_connected,
            broke_busy: AtomicBool::new(false),
            refused: OnceLock::new(),
        });
        // On the leaf's tracker: `NodeService::shutdown` waits for it.
        tasks.spawn(connect::run(addr, config, rx, shared.clone()));
        Self { tx, shared }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == CLOSED || self.tx.is_closed()
    }

    /// Whether this connection broke while commands were outstanding: its
    /// node is suspect, so callers fail fast until a new one is up.
    pub(crate) fn broke_busy(&self) -> bool {
        self.shared.broke_busy.load(Ordering::Acquire)
    }

    /// Why the handshake was refused, if it was.
    pub(crate) fn refused(&self) -> Option<&(Refused, Arc<str>)> {
        self.shared.refused.get()
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.shared.state.load(Ordering::Acquire) == READY
    }

    /// Commands sent and not yet answered (or failed).
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Queue `cmd` (after `ASKING` when `asking`); the receiver yields its
    /// reply. Dropping the receiver abandons the command: it keeps its place
    /// on the connection and its reply is discarded.
    pub(crate) fn send(
        &self,
        cmd: Cmd,
        asking: bool,
    ) -> Result<oneshot::Receiver<Reply>, SendError> {
        if self.is_closed() {
            return Err(self.closed());
        }
        // Take a place only below the bound, so the count never exceeds it,
        // not even for a moment (an add-then-undo would let concurrent
        // callers overshoot it briefly).
        let max = self.shared.max_in_flight;
        if self
            .shared
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(SendError::Overloaded);
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request { cmd, asking, tx }).is_err() {
            self.shared.done(1);
            return Err(self.closed());
        }
        Ok(rx)
    }

    /// Why a send to this closed connection fails: its refusal, if the
    /// handshake failed before the command arrived.
    fn closed(&self) -> SendError {
        match self.refused() {
            Some((kind, reason)) => SendError::Refused(*kind, reason.clone()),
            None => SendError::Closed,
        }
    }
}

#[cfg(test)]
mod tests;
