//! The leaf `Service`: one request, one node, one deadline.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use pin_project_lite::pin_project;
use slotguard_core::{
    BoxError, CacheError, CacheRequest, CacheResponse, NodeAddr, Op, Path, Role, Route, Topology,
};
use tokio::time::Instant;

use crate::config::FredConfig;
use crate::convert::{del_reply, get_reply, map_error, set_reply};
use crate::pool::{NodeClient, NodePool};

/// The fred-backed leaf: sends each request to the node stamped on it.
///
/// One centralized fred client per node (created on first use, reconnecting
/// in the background), so a stalled node never delays another. Each call
/// has a deadline: the request's own, capped by
/// [`FredConfig::command_timeout`]. `asking` routes send `ASKING` and the
/// command as one pipeline; replica routes send `READONLY` in the same
/// pipeline, so a replica connection is read-only after every reconnect
/// without a race. Replies come back raw: `MOVED`/`ASK` are
/// [`CacheError::Moved`]/[`CacheError::Ask`] for the routing layers.
///
/// The leaf never decides where a key lives: a request still routed by
/// [`Route::Slot`] is an [`CacheError::InvalidInput`] (put `SlotRefresh` in
/// front, or stamp a [`Route::Node`]).
///
/// ```no_run
/// use slotguard_core::{CacheRequest, Role};
/// use slotguard_fred::{FredConfig, FredService};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), slotguard_core::BoxError> {
/// let leaf = FredService::new(FredConfig::default());
/// let node = "127.0.0.1:7000".parse()?;
/// let resp = leaf.oneshot(CacheRequest::get("k").to_node(node, Role::Primary)).await?;
/// println!("{:?}", resp.value);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FredService {
    pool: Arc<NodePool>,
    topology: Option<Topology>,
}

impl fmt::Debug for FredService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredService")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl FredService {
    /// A leaf with no clients yet; they are made on first use of each node.
    pub fn new(config: FredConfig) -> Self {
        Self {
            pool: Arc::new(NodePool::new(config)),
            topology: None,
        }
    }

    /// Record each call's outcome (latency EWMA, consecutive failures) in
    /// the health cells of `topology`, where failover and breakers read it.
    pub fn with_topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// The settings.
    pub fn config(&self) -> &FredConfig {
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

    fn validate(&self, req: &CacheRequest) -> Result<(), CacheError> {
        let cfg = self.pool.config();
        if req.key().len() > cfg.max_key_len {
            return Err(CacheError::InvalidInput(format!(
                "key of {} bytes is over the limit of {} bytes",
                req.key().len(),
                cfg.max_key_len
            )));
        }
        if let Op::Set { value, ttl } = &req.op {
            if value.len() > cfg.max_value_len {
                return Err(CacheError::InvalidInput(format!(
                    "value of {} bytes is over the limit of {} bytes",
                    value.len(),
                    cfg.max_value_len
                )));
            }
            if *ttl == Some(Duration::ZERO) {
                return Err(CacheError::InvalidInput("ttl must be positive".into()));
            }
        }
        Ok(())
    }

    fn start(&self, req: CacheRequest) -> Result<Call, CacheError> {
        self.validate(&req)?;
        let (addr, role, asking) = match &req.route {
            Route::Node { addr, role, asking } => (addr.clone(), *role, *asking),
            Route::Slot => {
                return Err(CacheError::InvalidInput(
                    "request is not routed to a node: put a routing layer (slot_refresh) in front of the leaf"
                        .into(),
                ))
            }
        };
        let now = Instant::now();
        let cap = now + self.pool.config().command_timeout;
        let deadline = req.deadline.map_or(cap, |d| d.min(cap));
        if deadline <= now {
            return Err(CacheError::Timeout { node: addr });
        }
        let client = self
            .pool
            .client(&addr)
            .map_err(|e| CacheError::Connection {
                node: addr.clone(),
                detail: e.details().to_owned(),
            })?;
        if client.is_lost() {
            return Err(CacheError::Connection {
                node: addr,
                detail: "not connected (reconnecting)".into(),
            });
        }
        Ok(Call {
            client,
            addr,
            role,
            asking,
            key: req.key().clone(),
            op: req.op,
            deadline,
        })
    }
}

struct Call {
    client: NodeClient,
    addr: NodeAddr,
    role: Role,
    asking: bool,
    op: Op,
    key: Bytes,
    deadline: Instant,
}

fn command(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::FirstKey, false)
}

impl Call {
    async fn run(self) -> Result<CacheResponse, CacheError> {
        let addr = self.addr.clone();
        match tokio::time::timeout_at(self.deadline, self.exec()).await {
            Ok(result) => result,
            // A timed-out write may still apply when the node wakes; callers
            // that care treat `Timeout` on a write as indeterminate.
            Err(_elapsed) => Err(CacheError::Timeout { node: addr }),
        }
    }

    async fn exec(self) -> Result<CacheResponse, CacheError> {
        let is_write = !self.op.is_read();
        let (name, args): (&'static str, Vec<Value>) = match &self.op {
            Op::Get => ("GET", vec![Value::Bytes(self.key.clone())]),
            Op::Set { value, ttl } => {
                let mut args = vec![Value::Bytes(self.key.clone()), Value::Bytes(value.clone())];
                if let Some(ttl) = ttl {
                    let ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
                    args.push(Value::from_static_str("PX"));
                    args.push(Value::Integer(ms));
                }
                ("SET", args)
            }
            Op::Delete => ("DEL", vec![Value::Bytes(self.key.clone())]),
            _ => return Err(CacheError::InvalidInput("operation not supported".into())),
        };
        let client = &self.client.client;
        let reply: Result<Value, fred::error::Error> = if self.asking || self.role == Role::Replica
        {
            let pipeline = client.pipeline();
            if self.role == Role::Replica {
                let _: () = pipeline
                    .custom(command("READONLY"), Vec::<Value>::new())
                    .await
                    .map_err(|e| map_error(e, &self.addr, is_write))?;
            }
            if self.asking {
                let _: () = pipeline
                    .custom(command("ASKING"), Vec::<Value>::new())
                    .await
                    .map_err(|e| map_error(e, &self.addr, is_write))?;
            }
            let _: () = pipeline
                .custom(command(name), args)
                .await
                .map_err(|e| map_error(e, &self.addr, is_write))?;
            // The command's own reply decides; READONLY/ASKING failing would
            // show up as MOVED on the command itself.
            pipeline.try_all::<Value>().await.pop().unwrap_or_else(|| {
                Err(fred::error::Error::new(
                    fred::error::ErrorKind::Protocol,
                    "empty pipeline reply",
                ))
            })
        } else {
            client.custom::<Value, Value>(command(name), args).await
        };
        let value = reply.map_err(|e| map_error(e, &self.addr, is_write))?;
        self.client.mark_connected();
        let path = match self.role {
            Role::Primary => Path::Primary,
            Role::Replica => Path::Replica,
        };
        let mut resp = CacheResponse::from_node(None, self.addr.clone(), path);
        match &self.op {
            Op::Get => resp.value = get_reply(value)?,
            Op::Set { .. } => set_reply(value)?,
            Op::Delete => resp.deleted = del_reply(value)?,
            _ => {}
        }
        Ok(resp)
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Result<CacheResponse, CacheError>> + Send>>;

pin_project! {
    /// Response future of [`FredService`].
    pub struct ResponseFuture {
        #[pin]
        inner: BoxFut,
        health: Option<(Topology, NodeAddr, Instant)>,
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some((topology, addr, started)) = this.health.take() {
            let health = topology.health(&addr);
            match &out {
                Ok(_) => health.record_success(started.elapsed()),
                Err(e) if e.failure().is_node_fault() => health.record_failure(),
                // A server reply (MOVED, WRONGTYPE, ...) proves the node is up.
                Err(_) => health.record_success(started.elapsed()),
            }
        }
        Poll::Ready(out.map_err(BoxError::from))
    }
}

impl tower::Service<CacheRequest> for FredService {
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Per-node clients queue internally; back-pressure belongs to tower's
        // concurrency/load-shed layers, which the application places.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let node = req.node().cloned();
        let health = match (&self.topology, node) {
            (Some(t), Some(addr)) => Some((t.clone(), addr, Instant::now())),
            _ => None,
        };
        let inner: BoxFut = match self.start(req) {
            Ok(call) => Box::pin(call.run()),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        ResponseFuture { inner, health }
    }
}
