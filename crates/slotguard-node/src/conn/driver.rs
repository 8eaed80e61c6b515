//! The task behind a [`Conn`](super::Conn) once it is connected
//! (`connect.rs`): one poll loop that takes queued commands, writes, reads,
//! decodes and dispatches, in named steps.

use std::collections::VecDeque;
use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use slotguard_core::NodeAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::tracking::Tracker;
use super::{Cmd, ConnConfig, ConnError, Reply, Request, Shared, CLOSED, READY};
use crate::resp::{encode_command, Arg, Decoder, Frame};

/// Stop taking new commands into one write past this many bytes, so one
/// flood cannot grow the write buffer without bound between two writes.
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Read buffer growth step.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// Run the connection on a stream whose handshake is done.
pub(super) async fn drive<S>(
    addr: NodeAddr,
    stream: S,
    rbuf: BytesMut,
    rx: mpsc::UnboundedReceiver<Request>,
    shared: Arc<Shared>,
    config: &ConnConfig,
    tracked: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut driver = Driver::new(addr.clone(), stream, rx, shared.clone(), config);
    driver.rbuf = rbuf;
    // With a bus, every connect says "anything read through this node may
    // have changed" (tracked or not: see `tracking`); a tracked one then
    // publishes the server's pushes, and its end says so again.
    let tracker = config
        .tracking
        .as_ref()
        .map(|bus| Tracker::new(bus.clone(), addr));
    if tracked {
        driver.tracker = tracker.clone();
    }
    shared.state.store(READY, Ordering::Release);
    // After READY: a caller that sees `ever_connected` and a connection not
    // yet ready is looking at a replacement, never at this first one.
    shared.ever_connected.store(true, Ordering::Release);
    if let Some(t) = &tracker {
        t.node_invalidated();
        if tracked {
            t.tracking_on();
        }
    }
    driver.await;
    if let Some(t) = &tracker {
        t.node_invalidated();
    }
}

enum Pending {
    /// A caller's command (the receiver may be gone: the reply is dropped).
    Reply {
        tx: oneshot::Sender<Reply>,
        cmd: Cmd,
    },
    /// `ASKING`: reply read and dropped.
    Ignore,
    /// The end-of-batch `PING <token>`.
    Marker(u64),
}

struct Held {
    tx: oneshot::Sender<Reply>,
    frame: Frame,
}

struct Driver<S> {
    addr: NodeAddr,
    stream: S,
    rx: mpsc::UnboundedReceiver<Request>,
    rx_closed: bool,
    shared: Arc<Shared>,
    wbuf: BytesMut,
    rbuf: BytesMut,
    decoder: Decoder,
    pending: VecDeque<Pending>,
    /// Replies read for the current batch, delivered at its marker.
    held: Vec<Held>,
    /// `sg:<16 hex>:`, unique to this connection; a marker is it + a number.
    token: [u8; 20],
    seq: u64,
    /// Last read, or when commands started waiting on an idle connection.
    activity: Instant,
    stall_after: std::time::Duration,
    stall: Pin<Box<Sleep>>,
    stall_armed: bool,
    /// Commands are queued in `wbuf` with no marker after them yet.
    batch_open: bool,
    /// The task yielded once since the batch opened.
    yielded: bool,
    /// Client tracking is on: `invalidate` pushes go to its bus.
    tracker: Option<Tracker>,
}

impl<S> Driver<S> {
    fn new(
        addr: NodeAddr,
        stream: S,
        rx: mpsc::UnboundedReceiver<Request>,
        shared: Arc<Shared>,
        config: &ConnConfig,
    ) -> Self {
        let now = Instant::now();
        Self {
            addr,
            stream,
            rx,
            rx_closed: false,
            shared,
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::new(config.limits),
            pending: VecDeque::new(),
            held: Vec::new(),
            token: new_token(),
            seq: 0,
            activity: now,
            stall_after: config.stall_timeout,
            stall: Box::pin(tokio::time::sleep_until(now + config.stall_timeout)),
            stall_armed: false,
            batch_open: false,
            yielded: false,
            tracker: None,
        }
    }

    /// Queue one command for the next write; false if it was abandoned.
    fn enqueue(&mut self, req: Request) -> bool {
        if req.tx.is_closed() {
            // Abandoned before it was written: never send it.
            self.shared.done(1);
            return false;
        }
        if self.pending.is_empty() {
            self.activity = Instant::now();
        }
        if req.asking {
            encode_command(&mut self.wbuf, [Arg::Word("ASKING")]);
            self.pending.push_back(Pending::Ignore);
        }
        req.cmd.encode(&mut self.wbuf);
        self.pending.push_back(Pending::Reply {
            tx: req.tx,
            cmd: req.cmd,
        });
        true
    }

    fn push_marker(&mut self) {
        self.seq += 1;
        let mut num = itoa::Buffer::new();
        let digits = num.format(self.seq).as_bytes();
        let mut token = [0u8; 40];
        token[..20].copy_from_slice(&self.token);
        token[20..20 + digits.len()].copy_from_slice(digits);
        let token = bytes::Bytes::copy_from_slice(&token[..20 + digits.len()]);
        encode_command(&mut self.wbuf, [Arg::Word("PING"), Arg::Bytes(&token)]);
        self.pending.push_back(Pending::Marker(self.seq));
    }

    /// The marker number if `frame` is one of this connection's markers.
    fn marker_of(&self, frame: &Frame) -> Option<u64> {
        let b = frame.as_bytes()?;
        let digits = b.strip_prefix(&self.token[..])?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    /// Match one reply to its command. `Err` means the reply stream no
    /// longer lines up: the connection must go.
    fn on_frame(&mut self, frame: Frame) -> Result<(), &'static str> {
        if let Frame::Push(items) = &frame {
            // Out of band (client tracking, pub/sub): not a command's reply.
            if let Some(tracker) = &self.tracker {
                tracker.on_push(items);
            }
            return Ok(());
        }
        match self.pending.pop_front() {
            None => Err("reply with no command outstanding"),
            Some(Pending::Reply { tx, cmd }) => {
                if self.marker_of(&frame).is_some() || !cmd.fits(&frame) {
                    // Put it back so it is failed with the others.
                    self.pending.push_front(Pending::Reply { tx, cmd });
                    return Err("reply does not fit its command (a reply was skipped or added)");
                }
                self.held.push(Held { tx, frame });
                Ok(())
            }
            Some(Pending::Ignore) => {
                if self.marker_of(&frame).is_some() {
                    return Err("marker in place of a reply (a reply was skipped)");
                }
                Ok(())
            }
            Some(Pending::Marker(seq)) => match &frame {
                // A node that refuses PING (LOADING, BUSY) refuses the
                // batch's commands too: errors carry no one else's value.
                Frame::Error(_) => self.release(),
                f if self.marker_of(f) == Some(seq) => self.release(),
                _ => Err("marker missing (a reply was added or reordered)"),
            },
        }
    }

    fn release(&mut self) -> Result<(), &'static str> {
        self.shared.done(self.held.len());
        for held in self.held.drain(..) {
            let _ = held.tx.send(Ok(held.frame));
        }
        Ok(())
    }

    /// Close: every command outstanding fails (the first with `protocol`
    /// when its own reply broke the stream), then every queued one, unsent.
    fn fail(&mut self, reason: String, protocol: bool) {
        self.fail_as(reason, protocol, true);
    }

    /// [`Driver::fail`]; `suspect`: whether callers should fail fast until
    /// a new connection is up (the connection broke with commands
    /// outstanding). A stall is not: the node may only be slow (a `MIGRATE`
    /// blocking it, a loaded machine), and callers fast-failing in a burst
    /// would open its breaker; they wait on the new connection instead,
    /// bounded by their deadlines, and a node that stays stalled gets its
    /// breaker opened by those timeouts.
    fn fail_as(&mut self, reason: String, protocol: bool, suspect: bool) {
        if suspect && (!self.pending.is_empty() || !self.held.is_empty() || protocol) {
            self.shared.broke_busy.store(true, Ordering::Release);
        }
        self.shared.close();
        tracing::debug!(node = %self.addr, %reason, "closing node connection");
        let reason: Arc<str> = reason.into();
        let err = |protocol| ConnError {
            written: true,
            protocol,
            refused: None,
            reason: reason.clone(),
        };
        let mut n = 0;
        for held in self.held.drain(..) {
            n += 1;
            let _ = held.tx.send(Err(err(false)));
        }
        let mut first = protocol;
        for p in self.pending.drain(..) {
            if let Pending::Reply { tx, .. } = p {
                n += 1;
                let _ = tx.send(Err(err(first)));
                first = false;
            }
        }
        self.shared.done(n);
        self.rx.close();
        while let Ok(req) = self.rx.try_recv() {
            self.shared.done(1);
            let _ = req.tx.send(Err(ConnError {
                written: false,
                protocol: false,
                refused: None,
                reason: reason.clone(),
            }));
        }
    }
}

/// What one step of [`Driver::poll`] found.
enum Step {
    /// Go on to the next step; `true` if this one did something (the loop
    /// runs again until a round does nothing).
    Next(bool),
    /// Return `Pending` now (the task woke itself to yield).
    Yield,
    /// The connection is done (closed or failed): return `Ready`.
    Done,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Driver<S> {
    /// 1. Everything queued since the last write joins one batch.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Step {
        let mut progress = false;
        if !self.rx_closed {
            // Commands already waiting for replies: a batch can wait one
            // scheduling round for company without adding latency that
            // matters. With nothing outstanding, write at once.
            let busy = self
                .pending
                .iter()
                .any(|p| matches!(p, Pending::Reply { .. }));
            if !busy && !self.batch_open {
                self.yielded = true;
            }
            while self.wbuf.len() < MAX_BATCH_BYTES {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(req)) => {
                        self.batch_open |= self.enqueue(req);
                        progress = true;
                    }
                    Poll::Ready(None) => {
                        self.rx_closed = true;
                        progress = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if self.batch_open {
            if !self.yielded {
                // Let the other runnable tasks queue their commands before
                // this batch is written. A caller's send wakes this task
                // into tokio's LIFO slot, so without this it runs right
                // after every single send and writes one command at a time
                // (measured: ~0.5 writes per command at concurrency 64). A
                // task that wakes itself is polled again after the other
                // runnable ones.
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Step::Yield;
            }
            self.push_marker();
            self.batch_open = false;
            self.yielded = false;
        }
        Step::Next(progress)
    }

    /// 2. Write.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Step {
        let mut progress = false;
        while !self.wbuf.is_empty() {
            // One buffer, written with writev: the same syscall fred uses,
            // so per-command write counts compare like for like.
            let slice = [io::IoSlice::new(&self.wbuf)];
            match Pin::new(&mut self.stream).poll_write_vectored(cx, &slice) {
                Poll::Ready(Ok(0)) => {
                    self.fail("connection closed while writing".into(), false);
                    return Step::Done;
                }
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    progress = true;
                }
                Poll::Ready(Err(e)) => {
                    self.fail(format!("write failed: {e}"), false);
                    return Step::Done;
                }
                Poll::Pending => break,
            }
        }
        Step::Next(progress)
    }

    /// 3. Read and dispatch.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Step {
        let want = self.decoder.need().saturating_sub(self.rbuf.len());
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK.max(want) {
            self.rbuf.reserve(READ_CHUNK.max(want));
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) => {
                self.fail("connection closed by the node".into(), false);
                Step::Done
            }
            Poll::Ready(Ok(_)) => {
                self.activity = Instant::now();
                self.dispatch()
            }
            Poll::Ready(Err(e)) => {
                let reason = match e.kind() {
                    io::ErrorKind::ConnectionReset => "connection reset by the node".into(),
                    _ => format!("read failed: {e}"),
                };
                self.fail(reason, false);
                Step::Done
            }
            Poll::Pending => Step::Next(false),
        }
    }

    /// Every whole frame read so far, to its command.
    fn dispatch(&mut self) -> Step {
        loop {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => {
                    if let Err(why) = self.on_frame(frame) {
                        self.fail(why.into(), true);
                        return Step::Done;
                    }
                }
                Ok(None) => return Step::Next(true),
                Err(e) => {
                    self.fail(e.to_string(), true);
                    return Step::Done;
                }
            }
        }
    }

    /// 4. Done: no handle left and nothing outstanding.
    fn poll_finished(&mut self, _cx: &mut Context<'_>) -> Step {
        if self.rx_closed && self.pending.is_empty() && self.wbuf.is_empty() {
            self.shared.close();
            return Step::Done;
        }
        Step::Next(false)
    }

    /// 5. Replacement: commands outstanding, nothing read for too long.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Step {
        if self.pending.is_empty() {
            self.stall_armed = false;
            return Step::Next(false);
        }
        let due = self.activity + self.stall_after;
        if !self.stall_armed {
            self.stall.as_mut().reset(due);
            self.stall_armed = true;
        }
        if self.stall.as_mut().poll(cx).is_pending() {
            return Step::Next(false);
        }
        if Instant::now() >= due {
            let after = self.stall_after;
            self.fail_as(
                format!("no reply for {after:?}, connection replaced"),
                false,
                false,
            );
            return Step::Done;
        }
        self.stall.as_mut().reset(due);
        // Registers the timer again.
        Step::Next(self.stall.as_mut().poll(cx).is_ready())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Driver<S> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let steps: [fn(&mut Self, &mut Context<'_>) -> Step; 5] = [
            Self::poll_batch,
            Self::poll_flush,
            Self::poll_read,
            Self::poll_finished,
            Self::poll_stall,
        ];
        loop {
            let mut progress = false;
            for step in steps {
                match step(this, cx) {
                    Step::Next(p) => progress |= p,
                    Step::Yield => return Poll::Pending,
                    Step::Done => return Poll::Ready(()),
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        // A runtime shutting down drops the task mid-flight: callers still
        // waiting get a typed error rather than a dropped channel.
        if self.shared.state.load(Ordering::Acquire) != CLOSED {
            self.fail("connection task stopped".into(), false);
        }
    }
}

fn new_token() -> [u8; 20] {
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r =
        std::collections::hash_map::RandomState::new().hash_one((n, std::time::SystemTime::now()));
    let mut token = [0u8; 20];
    token[..3].copy_from_slice(b"sg:");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in 0..16 {
        token[3 + i] = HEX[((r >> (60 - 4 * i)) & 0xf) as usize];
    }
    token[19] = b':';
    token
}
