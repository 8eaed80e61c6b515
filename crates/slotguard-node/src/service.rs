//! The leaf `Service`: one request, one node, one deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use slotguard_core::op::{OpKind, Reply as ReplyKind};
use slotguard_core::{
    BoxError, CacheError, CacheRequest, CacheResponse, NodeAddr, Op, Path, Role, Route, Topology,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, Timeout};

use crate::config::NodeConfig;
use crate::conn::{Cmd, Reply};
use crate::convert::{conn_error, send_error, unavailable};
use crate::pool::{Mode, NodePool};
use crate::remap::{identity, AddressRemap};
use crate::resp::Frame;

/// The leaf: sends each request to the node stamped on it.
///
/// One connection per node (two for a node also read as a replica: see
/// below), created on first use and replaced when it breaks or stalls, so a
/// stalled node never delays another. Commands from many callers to one
/// node leave in shared writes. Each call has a deadline: the request's own,
/// capped by [`NodeConfig::command_timeout`]. `asking` routes send `ASKING`
/// just before the command; replica routes use a connection that sent
/// `READONLY` first, after every (re)connect. Replies come back raw:
/// `MOVED`/`ASK` are [`CacheError::Moved`]/[`CacheError::Ask`] for the
/// routing layers; a reply that breaks the protocol or the bounds of
/// [`NodeConfig`] is [`CacheError::Protocol`] and a new connection. A
/// write that was sent and then timed out, or whose connection was lost
/// after it was sent, is [`CacheError::Indeterminate`] (it may still
/// apply). With [`with_topology`](Self::with_topology), a node that let a
/// write time out or cannot be reached has its writes fenced (the leaf
/// reports each call's outcome to the topology's
/// [`ClusterController`](slotguard_core::ClusterController), which decides)
/// until a fresh view confirms it.
///
/// A `SET` with [`read_back`](CacheRequest::read_back) (not after `ASKING`)
/// is followed by a `GET` of its key on the same connection, queued right
/// behind it: the response carries the value read, or none when that read
/// failed or missed the deadline (the write's own outcome stands).
///
/// The leaf never decides where a key lives: a request still routed by
/// [`Route::Slot`] is an [`CacheError::InvalidInput`] (put `SlotRefresh` in
/// front, or stamp a [`Route::Node`]).
///
/// ```no_run
/// use slotguard_core::{CacheRequest, Role};
/// use slotguard_node::{NodeConfig, NodeService};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), slotguard_core::BoxError> {
/// let leaf = NodeService::new(NodeConfig::default());
/// let node = "127.0.0.1:7000".parse()?;
/// let resp = leaf.oneshot(CacheRequest::get("k").to_node(node, Role::Primary)).await?;
/// println!("{:?}", resp.value);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NodeService {
    pool: Arc<NodePool>,
    topology: Option<Topology>,
}

impl fmt::Debug for NodeService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeService")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl NodeService {
    /// A leaf with no clients yet; they are made on first use of each node.
    pub fn new(config: NodeConfig) -> Self {
        Self {
            pool: Arc::new(NodePool::new(config)),
            topology: None,
        }
    }

    /// Record each call's outcome (latency EWMA, consecutive failures) in
    /// the health cells of `topology`, where failover and breakers read it.
    ///
    /// Inside a tokio runtime this also hands the leaf's lifecycle task to
    /// the topology's [`ClusterController`](slotguard_core::ClusterController):
    /// connections of nodes that left the map are closed after
    /// [`NodeConfig::node_grace`]. The controller's shutdown stops it and
    /// shuts this leaf ([`NodeService::shutdown`]).
    pub fn with_topology(mut self, topology: Topology) -> Self {
        if tokio::runtime::Handle::try_current().is_ok() && self.pool.claim_lifecycle() {
            let grace = self.pool.config().node_grace;
            let controller = topology.controller();
            let weak = Arc::downgrade(&self.pool);
            let _ = controller.spawn(crate::lifecycle::run(weak.clone(), topology.clone(), grace));
            // The pool is held weakly: a leaf dropped without shutdown still
            // goes away, and the controller only shuts a live one.
            controller.on_shutdown(async move {
                if let Some(pool) = weak.upgrade() {
                    pool.shutdown().await;
                }
            });
        }
        self.topology = Some(topology);
        self
    }

    /// Release every connection, and wait until all of their tasks have
    /// ended: a connection still waiting for replies ends when they are in
    /// (or at its stall timeout), so this returns within about
    /// `2 × command_timeout` plus `connect_timeout`. Later calls fail at once
    /// with [`CacheError::Connection`], and nothing is dialled again.
    /// Every clone of this leaf shares the shutdown.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    /// Tasks this leaf still runs (its connections): 0 after
    /// [`NodeService::shutdown`] returned.
    pub fn running_tasks(&self) -> usize {
        self.pool.running_tasks()
    }

    /// The settings.
    pub fn config(&self) -> &NodeConfig {
        self.pool.config()
    }

    /// Close the clients of nodes for which `keep` is false (nodes that left
    /// the cluster), so their reconnect loops stop.
    pub fn retain_nodes(&self, keep: impl Fn(&NodeAddr) -> bool) {
        self.pool.retain(&keep);
    }

    /// Nodes that currently have a client.
    pub fn connected_nodes(&self) -> Vec<NodeAddr> {
        self.pool.addrs()
    }

    pub(crate) fn pool(&self) -> &Arc<NodePool> {
        &self.pool
    }

    /// Whether a connection to `addr` (either mode) is open and ready.
    pub fn is_connected(&self, addr: &NodeAddr) -> bool {
        [Mode::Primary, Mode::Replica]
            .iter()
            .filter_map(|m| self.pool.find(addr, *m))
            .any(|slot| slot.is_connected())
    }

    /// Send an administrative command (`words`, e.g. `&["CLUSTER", "INFO"]`)
    /// to `addr` on its primary-mode connection and return the reply, within
    /// the configured `admin_timeout`. An error reply is returned as
    /// [`Frame::Error`](crate::Frame::Error), not as `Err`: callers such as
    /// `slotguard doctor` report a refused command (an ACL user without
    /// `CONFIG`) as such. `Err` means the node could not be asked.
    pub async fn admin(
        &self,
        addr: &NodeAddr,
        words: &'static [&'static str],
    ) -> Result<crate::Frame, CacheError> {
        let timeout = self.pool.config().admin_timeout;
        self.pool.admin(addr, Mode::Primary, words, timeout).await
    }

    /// Commands outstanding to `addr` (both modes).
    pub fn in_flight(&self, addr: &NodeAddr) -> usize {
        [Mode::Primary, Mode::Replica]
            .iter()
            .filter_map(|m| self.pool.find(addr, *m))
            .map(|slot| slot.in_flight())
            .sum()
    }

    /// Send `req` to its node; the receiver yields the reply.
    fn start(&self, req: &CacheRequest, now: Instant) -> Result<Waiting, CacheError> {
        let cfg = self.pool.config();
        req.check_limits(cfg.max_key_len, cfg.max_value_len)?;
        let (addr, role, asking) = req.leaf_route()?;
        let deadline = req.call_deadline(now, cfg.command_timeout)?;
        let cmd = Cmd::Op(req.op.command(req.key()));
        let conn = self
            .pool
            .slot(addr, Mode::from(role))
            .conn()
            .map_err(|e| unavailable(e, addr))?;
        let rx = conn.send(cmd, asking).map_err(|e| send_error(e, addr))?;
        // Right behind the `SET` on the same connection, so the node runs it
        // after the write (other callers' commands may come between: the
        // read sees whatever is there by then, and tracks the key from
        // then on). Not after `ASKING`: that would need its own `ASKING`,
        // for a slot in the middle of a move.
        let read_back = (req.read_back && !asking && matches!(req.op, Op::Set { .. }))
            .then(|| conn.send(Cmd::Op(Op::Get.command(req.key())), false).ok())
            .flatten()
            .map(|rx| Box::new((rx, deadline)));
        Ok(Waiting {
            rx: tokio::time::timeout_at(deadline, rx),
            read_back,
        })
    }
}

/// A read-back's reply and the call's deadline: boxed, so the futures of
/// the calls without one stay as small as they were.
type ReadBack = Box<(oneshot::Receiver<Reply>, Instant)>;

struct Waiting {
    rx: Timeout<oneshot::Receiver<Reply>>,
    read_back: Option<ReadBack>,
}

/// The `SET` succeeded: answer it with the value its read-back found (none
/// when the read-back failed or missed the deadline; the write stands).
fn read_back_of(
    mut resp: CacheResponse,
    (rx, deadline): (oneshot::Receiver<Reply>, Instant),
) -> futures_util::future::BoxFuture<'static, Result<CacheResponse, CacheError>> {
    Box::pin(async move {
        if let Ok(Ok(Ok(frame))) = tokio::time::timeout_at(deadline, rx).await {
            if let ReplyKind::Bulk(b) | ReplyKind::String(b) = frame.into_reply() {
                resp.value = Some(b);
            }
        }
        Ok(resp)
    })
}

/// What the response future needs to turn a reply into a response.
struct CallInfo {
    addr: NodeAddr,
    role: Role,
    op: OpKind,
    started: Instant,
    topology: Option<Topology>,
    /// Applied to `MOVED`/`ASK` targets, as to the topology views.
    remap: Option<AddressRemap>,
}

impl CallInfo {
    fn response(&self, reply: Frame) -> Result<CacheResponse, CacheError> {
        self.op
            .answer(reply.into_reply(), &self.addr, Path::from(self.role))
            // A redirect names the target as the cluster announces it: the
            // same remap as the map's, so both name one node alike.
            .map_err(|e| e.rename_redirect(|addr| identity(self.remap.as_ref(), addr)))
    }

    fn is_write(&self) -> bool {
        !self.op.is_read()
    }

    fn record(&self, out: &Result<CacheResponse, CacheError>) {
        if let Some(topology) = &self.topology {
            topology.report(slotguard_core::controller::CallEnded::new(
                &self.addr,
                self.started,
                out,
            ));
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Waiting { #[pin] rx: Timeout<oneshot::Receiver<Reply>>, read_back: Option<ReadBack> },
        ReadingBack { fut: futures_util::future::BoxFuture<'static, Result<CacheResponse, CacheError>> },
        Done { result: Option<Result<CacheResponse, CacheError>> },
    }
}

pin_project! {
    /// Response future of [`NodeService`].
    pub struct ResponseFuture {
        #[pin]
        state: State,
        info: Option<CallInfo>,
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<CacheResponse, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        let out = match this.state.project() {
            StateProj::Done { result } => {
                // A call that fails fast (connection lost, overloaded) is
                // ready at once: it spends tokio's cooperative budget like
                // any I/O, so a caller retrying in a loop against a dead
                // node still yields to its runtime.
                let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                coop.made_progress();
                result.take().unwrap_or_else(|| {
                    Err(CacheError::Protocol(
                        "response polled after completion".into(),
                    ))
                })
            }
            StateProj::ReadingBack { fut } => std::task::ready!(fut.as_mut().poll(cx)),
            StateProj::Waiting { rx, read_back } => {
                let reply = std::task::ready!(rx.poll(cx));
                let out = match this.info.as_ref() {
                    None => Err(CacheError::Protocol(
                        "response polled after completion".into(),
                    )),
                    Some(info) => match reply {
                        Ok(Ok(Ok(frame))) => info.response(frame),
                        Ok(Ok(Err(e))) => Err(conn_error(e, &info.addr, info.is_write())),
                        // The connection task dropped the command unsent.
                        Ok(Err(_closed)) => Err(CacheError::Connection {
                            node: info.addr.clone(),
                            detail: "connection closed".into(),
                        }),
                        // A write that may have left applies when a stalled
                        // node wakes: its outcome is unknown, and nothing
                        // may retry it as if it had failed.
                        Err(_elapsed) if info.is_write() => Err(CacheError::Indeterminate {
                            node: info.addr.clone(),
                            detail: "no reply within the deadline".into(),
                        }),
                        Err(_elapsed) => Err(CacheError::Timeout {
                            node: info.addr.clone(),
                        }),
                    },
                };
                match (out, read_back.take()) {
                    (Ok(resp), Some(rb)) => {
                        let fut = read_back_of(resp, *rb);
                        self.as_mut()
                            .project()
                            .state
                            .set(State::ReadingBack { fut });
                        return self.poll(cx);
                    }
                    (out, _) => out,
                }
            }
        };
        let this = self.project();
        if let Some(info) = this.info.take() {
            info.record(&out);
        }
        Poll::Ready(out.map_err(BoxError::from))
    }
}

impl tower::Service<CacheRequest> for NodeService {
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each node connection bounds its own commands in flight and fails a
        // call at once past the bound (`CacheError::Overloaded`): one
        // saturated node must not hold back requests to the others, which a
        // `Pending` here would.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let now = Instant::now();
        let (addr, role) = match &req.route {
            Route::Node { addr, role, .. } => (Some(addr.clone()), *role),
            Route::Slot => (None, Role::Primary),
        };
        let op = req.op.kind();
        let info = addr.map(|addr| CallInfo {
            addr,
            role,
            op,
            started: now,
            topology: self.topology.clone(),
            remap: self.pool.config().remap.clone(),
        });
        let state = match self.start(&req, now) {
            Ok(w) => State::Waiting {
                rx: w.rx,
                read_back: w.read_back,
            },
            Err(e) => State::Done {
                result: Some(Err(e)),
            },
        };
        ResponseFuture { state, info }
    }
}
