//! The leaf `Service`: one request, one node, one deadline, over fred.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::Value;
use slotguard_core::op::Arg;
use slotguard_core::{
    BoxError, CacheError, CacheRequest, CacheResponse, NodeAddr, Route, Topology,
};
use tokio::time::Instant;

use crate::config::FredLeafConfig;
use crate::convert::{is_server_reply, map_error};
use crate::future::{BoxFut, Finish, ResponseFuture};
use crate::pool::{command, InFlight, Mode, NodeClient, Pool};

/// The fred-backed leaf: sends each request to the node stamped on it,
/// over one centralized fred `Client` per node (two for a node also read as
/// a replica: the replica-mode client sends `READONLY` after every
/// connect). See the [crate docs](crate) for what it guarantees and what
/// fred does not let it.
///
/// ```no_run
/// use slotguard_core::{CacheRequest, Role};
/// use slotguard_fred::{FredLeaf, FredLeafConfig};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), slotguard_core::BoxError> {
/// let leaf = FredLeaf::new(FredLeafConfig::default());
/// let node = "127.0.0.1:7000".parse()?;
/// let resp = leaf.oneshot(CacheRequest::get("k").to_node(node, Role::Primary)).await?;
/// println!("{:?}", resp.value);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FredLeaf {
    pub(crate) pool: Arc<Pool>,
    topology: Option<Topology>,
    tokens: Arc<AtomicU64>,
}

impl fmt::Debug for FredLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredLeaf")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl FredLeaf {
    /// A leaf with no clients yet; they are made on first use of each node.
    pub fn new(config: FredLeafConfig) -> Self {
        Self {
            pool: Arc::new(Pool::new(config)),
            topology: None,
            tokens: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Record each call's outcome in `topology`'s health cells, and (inside
    /// a tokio runtime) hand the lifecycle task that closes the clients of
    /// nodes gone from the map for 30 s to the topology's
    /// [`ClusterController`](slotguard_core::ClusterController), whose
    /// shutdown stops it and shuts this leaf.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        if tokio::runtime::Handle::try_current().is_ok() && self.pool.claim_lifecycle() {
            let controller = topology.controller();
            let weak = Arc::downgrade(&self.pool);
            let _ = controller.spawn(crate::lifecycle::run(weak.clone(), topology.clone()));
            controller.on_shutdown(async move {
                if let Some(pool) = weak.upgrade() {
                    pool.shutdown().await;
                }
            });
        }
        self.topology = Some(topology);
        self
    }

    /// The settings.
    pub fn config(&self) -> &FredLeafConfig {
        self.pool.config()
    }

    /// Close every client and wait for every task of the leaf (fred's
    /// connection tasks included). Later calls fail fast.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    /// Tasks this leaf still runs.
    pub fn running_tasks(&self) -> usize {
        self.pool.running_tasks()
    }

    /// Nodes that currently have a client.
    pub fn connected_nodes(&self) -> Vec<NodeAddr> {
        self.pool.addrs()
    }

    /// Whether a client of `addr` is connected.
    pub fn is_connected(&self, addr: &NodeAddr) -> bool {
        self.pool.of(addr).iter().any(|c| c.is_connected())
    }

    /// Calls outstanding to `addr`.
    pub fn in_flight(&self, addr: &NodeAddr) -> usize {
        self.pool.of(addr).iter().map(|c| c.in_flight()).sum()
    }

    /// Send an administrative command to `addr` (its primary-mode client
    /// unless `mode` says otherwise) within `admin_timeout`; an error reply
    /// is `Err`.
    pub(crate) async fn admin(
        &self,
        addr: &NodeAddr,
        replica: bool,
        words: &'static [&'static str],
    ) -> Result<Value, CacheError> {
        let mode = if replica {
            Mode::Replica
        } else {
            Mode::Primary
        };
        let node = self.pool.client(addr, mode)?;
        let (name, rest) = words
            .split_first()
            .ok_or_else(|| CacheError::InvalidInput("empty administrative command".into()))?;
        let args: Vec<Value> = rest.iter().map(|w| Value::from_static_str(w)).collect();
        let timeout = self.pool.config().admin_timeout;
        match tokio::time::timeout(
            timeout,
            node.client
                .custom::<Value, Value>(crate::pool::command(name), args),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(&e, addr, false)),
            Err(_) => Err(CacheError::Timeout { node: addr.clone() }),
        }
    }

    fn start(&self, req: &CacheRequest, now: Instant) -> Result<Call, CacheError> {
        let cfg = self.pool.config();
        req.check_limits(cfg.max_key_len, cfg.max_value_len)?;
        let (addr, role, asking) = req.leaf_route()?;
        let addr = addr.clone();
        let deadline = req.call_deadline(now, cfg.command_timeout)?;
        let cmd = req.op.command(req.key());
        let (name, args) = (cmd.name(), cmd.args().map(to_value).collect());
        let node = self.pool.client(&addr, Mode::from(role))?;
        if node.is_lost() {
            return Err(match node.failure() {
                Some(e @ (CacheError::Auth { .. } | CacheError::Tls { .. })) => e,
                _ => CacheError::Connection {
                    node: addr,
                    detail: "not connected (reconnecting)".into(),
                },
            });
        }
        let guard = node.enter(self.pool.config().max_in_flight)?;
        let marker = self
            .pool
            .config()
            .reply_marker
            .then(|| self.tokens.fetch_add(1, Ordering::Relaxed));
        Ok(Call {
            node,
            pool: self.pool.clone(),
            _guard: guard,
            asking,
            name,
            args,
            marker,
            deadline,
            is_write: !req.op.is_read(),
        })
    }
}

/// A command argument as fred takes it (the key and value are shared, not
/// copied).
fn to_value(arg: Arg<'_>) -> Value {
    match arg {
        Arg::Word(w) => Value::from_static_str(w),
        Arg::Bytes(b) => Value::Bytes(b.clone()),
        Arg::Int(n) => Value::Integer(n),
    }
}

/// One call, ready to send.
struct Call {
    node: Arc<NodeClient>,
    pool: Arc<Pool>,
    _guard: InFlight,
    asking: bool,
    name: &'static str,
    args: Vec<Value>,
    marker: Option<u64>,
    deadline: Instant,
    is_write: bool,
}

impl Call {
    async fn run(self) -> Result<Value, CacheError> {
        let node = self.node.clone();
        let addr = self.node.addr.clone();
        let is_write = self.is_write;
        let out = tokio::time::timeout_at(self.deadline, self.exec()).await;
        if out.is_err() {
            node.abandon();
            // fred keeps a command queued behind a connect that was refused
            // (credentials, TLS) until our deadline: report the refusal.
            if let Some(e @ (CacheError::Auth { .. } | CacheError::Tls { .. })) = node.failure() {
                return Err(e);
            }
        }
        match out {
            Ok(r) => r,
            // A write that may have left applies when a stalled node wakes.
            Err(_) if is_write => Err(CacheError::Indeterminate {
                node: addr,
                detail: "no reply within the deadline".into(),
            }),
            Err(_) => Err(CacheError::Timeout { node: addr }),
        }
    }

    async fn exec(self) -> Result<Value, CacheError> {
        let readonly = self.node.needs_readonly();
        let addr = &self.node.addr;
        if !readonly && !self.asking && self.marker.is_none() {
            let r = self
                .node
                .client
                .custom::<Value, Value>(command(self.name), self.args)
                .await;
            if r.as_ref().is_ok() || r.as_ref().is_err_and(is_server_reply) {
                self.node.progressed();
            }
            return r.map_err(|e| map_error(&e, addr, self.is_write));
        }
        // One pipeline, one write: READONLY (until the connect hook has
        // confirmed it), ASKING, the command, and the marker.
        let pipeline = self.node.client.pipeline();
        let queue = |r: Result<(), FredError>| r.map_err(|e| map_error(&e, addr, self.is_write));
        if readonly {
            queue(
                pipeline
                    .custom(command("READONLY"), Vec::<Value>::new())
                    .await,
            )?;
        }
        if self.asking {
            queue(
                pipeline
                    .custom(command("ASKING"), Vec::<Value>::new())
                    .await,
            )?;
        }
        queue(pipeline.custom(command(self.name), self.args).await)?;
        let token = self.marker.map(|t| format!("sg{t}"));
        if let Some(token) = &token {
            queue(
                pipeline
                    .custom(command("PING"), vec![Value::from(token.as_str())])
                    .await,
            )?;
        }
        let mut replies: Vec<Result<Value, FredError>> = pipeline.try_all().await;
        if replies
            .iter()
            .any(|r| r.is_ok() || r.as_ref().is_err_and(is_server_reply))
        {
            self.node.progressed();
        }
        let mark = match token {
            Some(_) => replies.pop(),
            None => None,
        };
        let reply = replies
            .pop()
            .ok_or_else(|| CacheError::Protocol("empty pipeline reply".into()))?;
        if readonly && replies.first().is_some_and(|r| r.is_ok()) {
            self.node.readonly_confirmed();
        }
        if let (Some(token), Some(mark)) = (token, mark) {
            check_marker(&token, &mark, &reply).map_err(|detail| {
                // Replies on this client can no longer be trusted to reach
                // their own callers: discard it; the next call makes another.
                tracing::warn!(node = %addr, %detail, "reply out of place: replacing the fred client");
                self.pool.replace(&self.node);
                if self.is_write {
                    CacheError::Indeterminate {
                        node: addr.clone(),
                        detail: detail.clone(),
                    }
                } else {
                    CacheError::Protocol(detail)
                }
            })?;
        }
        reply.map_err(|e| map_error(&e, addr, self.is_write))
    }
}

/// Whether the marker came back in its place. `Err`: the replies of this
/// pipeline are not its own.
fn check_marker(
    token: &str,
    mark: &Result<Value, FredError>,
    reply: &Result<Value, FredError>,
) -> Result<(), String> {
    match mark {
        Ok(v) if v.as_bytes() == Some(token.as_bytes()) => Ok(()),
        Ok(_) => Err(format!("marker {token} answered by another reply")),
        // A node that refuses every command (LOADING, BUSY, NOAUTH) refuses
        // the marker too.
        Err(e) if is_server_reply(e) => match reply {
            Err(r) if is_server_reply(r) => Ok(()),
            _ => Err(format!(
                "marker {token} answered by an error: {}",
                e.details()
            )),
        },
        // The connection failed under the pipeline: the command's own
        // error says so.
        Err(_) => match reply {
            Ok(_) => Err(format!(
                "marker {token} lost while its command was answered"
            )),
            Err(_) => Ok(()),
        },
    }
}

impl tower::Service<CacheRequest> for FredLeaf {
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each node client bounds its own calls (`Overloaded` past it): one
        // saturated node must not hold back the others.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let now = Instant::now();
        let finish = match &req.route {
            Route::Node { addr, role, .. } => Some(Finish {
                addr: addr.clone(),
                role: *role,
                op: req.op.kind(),
                started: now,
                topology: self.topology.clone(),
                remap: self.pool.config().remap.clone(),
            }),
            Route::Slot => None,
        };
        let inner: BoxFut = match self.start(&req, now) {
            Ok(call) => Box::pin(call.run()),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        ResponseFuture { inner, finish }
    }
}
