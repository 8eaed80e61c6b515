//! The request every layer and the leaf understand.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::addr::NodeAddr;
use crate::error::CacheError;
use crate::slot::key_slot;

/// What to do with the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `GET key`.
    Get,
    /// `SET key value [PX ttl]`.
    Set {
        /// The value to store.
        value: Bytes,
        /// Expiry; `None` keeps the key until deleted or evicted.
        ttl: Option<Duration>,
    },
    /// `DEL key`.
    Delete,
}

impl Op {
    /// Reads may be served by replicas, near-caches and the secondary store;
    /// writes never are.
    pub fn is_read(&self) -> bool {
        self.kind().is_read()
    }

    /// A short lowercase name for spans and metrics.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The role of a node in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Owns the shard's slots and takes writes.
    Primary,
    /// Replicates a primary; answers reads after `READONLY`.
    Replica,
}

/// Where the request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// To the primary that owns the key's slot in the current map; a routing
    /// layer (`SlotRefresh`) turns this into [`Route::Node`].
    Slot,
    /// To one node.
    Node {
        /// The node's address.
        addr: NodeAddr,
        /// The role we believe it has (a replica gets `READONLY`).
        role: Role,
        /// Send `ASKING` first (one retry after an `ASK` redirect).
        asking: bool,
    },
}

/// How fresh the answer to a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Consistency {
    /// Only the primary may answer.
    Primary,
    /// A replica with a healthy replication link may answer when the primary
    /// cannot (the default: replication lag is normally milliseconds).
    #[default]
    ReplicaOk,
    /// Any replica, near-cache entry or fallback value at most this old.
    StaleOk(Duration),
}

/// Retry bookkeeping carried with the request so nested layers share limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    /// `MOVED`/`ASK` hops taken.
    pub redirects: u8,
    /// Replica failovers taken.
    pub failovers: u8,
}

/// One cache operation on one key.
///
/// The slot is computed once, here, from the key (Redis hash-tag rules).
///
/// ```
/// use bytes::Bytes;
/// use slotguard_core::{CacheRequest, Consistency};
/// use std::time::Duration;
///
/// let get = CacheRequest::get("user:{42}:name").with_consistency(Consistency::Primary);
/// let set = CacheRequest::set("user:{42}:name", Bytes::from_static(b"ada"), Some(Duration::from_secs(60)));
/// assert_eq!(get.slot(), set.slot());
/// ```
#[derive(Debug, Clone)]
pub struct CacheRequest {
    key: Bytes,
    slot: u16,
    /// The operation.
    pub op: Op,
    /// Where it goes; layers re-stamp this.
    pub route: Route,
    /// Read freshness requirement.
    pub consistency: Consistency,
    /// Absolute deadline for the whole request across retries, if any.
    pub deadline: Option<Instant>,
    /// Retry bookkeeping.
    pub attempts: Attempts,
    /// For a `SET`: also read the key back right after it, on the same
    /// connection and in the same round trip, and answer the value read in
    /// [`CacheResponse::value`](crate::CacheResponse::value). The fallback
    /// layer asks for it under client-side caching: the read registers the
    /// key with the node's client tracking again (a write ends it), so the
    /// value it keeps is invalidated like any read's. A leaf that cannot
    /// (`ASK` redirects, the fred leaf) answers the `SET` without a value.
    pub read_back: bool,
}

impl CacheRequest {
    /// A request for `op` on `key`, routed by slot.
    pub fn new(key: impl Into<Bytes>, op: Op) -> Self {
        let key = key.into();
        let slot = key_slot(&key);
        Self {
            key,
            slot,
            op,
            route: Route::Slot,
            consistency: Consistency::default(),
            deadline: None,
            attempts: Attempts::default(),
            read_back: false,
        }
    }

    /// `GET key`.
    pub fn get(key: impl Into<Bytes>) -> Self {
        Self::new(key, Op::Get)
    }

    /// `SET key value`, with an optional expiry.
    pub fn set(key: impl Into<Bytes>, value: impl Into<Bytes>, ttl: Option<Duration>) -> Self {
        Self::new(
            key,
            Op::Set {
                value: value.into(),
                ttl,
            },
        )
    }

    /// `DEL key`.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self::new(key, Op::Delete)
    }

    /// The key.
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The key's hash slot.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// Set the read consistency.
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        self.consistency = consistency;
        self
    }

    /// Set an absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Set a deadline `timeout` from now.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.with_deadline(Instant::now() + timeout)
    }

    /// For a `SET`, read the key back in the same round trip (see
    /// [`read_back`](Self::read_back)).
    pub fn with_read_back(mut self) -> Self {
        self.read_back = true;
        self
    }

    /// Route to one node.
    pub fn with_route(mut self, route: Route) -> Self {
        self.route = route;
        self
    }

    /// Route to `addr` as a node of `role`, without `ASKING`.
    pub fn to_node(self, addr: NodeAddr, role: Role) -> Self {
        self.with_route(Route::Node {
            addr,
            role,
            asking: false,
        })
    }

    /// Check the key and value against a leaf's size limits, and a `SET`'s
    /// expiry: [`CacheError::InvalidInput`] means nothing may be sent.
    pub fn check_limits(&self, max_key_len: usize, max_value_len: usize) -> Result<(), CacheError> {
        if self.key.len() > max_key_len {
            return Err(CacheError::InvalidInput(format!(
                "key of {} bytes is over the limit of {max_key_len} bytes",
                self.key.len(),
            )));
        }
        if let Op::Set { value, ttl } = &self.op {
            if value.len() > max_value_len {
                return Err(CacheError::InvalidInput(format!(
                    "value of {} bytes is over the limit of {max_value_len} bytes",
                    value.len(),
                )));
            }
            if *ttl == Some(Duration::ZERO) {
                return Err(CacheError::InvalidInput("ttl must be positive".into()));
            }
        }
        Ok(())
    }

    /// Where a leaf sends this request: the stamped node, its role, and
    /// whether `ASKING` goes first. A request still routed by slot is
    /// [`CacheError::InvalidInput`]: a leaf never decides where a key lives.
    pub fn leaf_route(&self) -> Result<(&NodeAddr, Role, bool), CacheError> {
        match &self.route {
            Route::Node { addr, role, asking } => Ok((addr, *role, *asking)),
            Route::Slot => Err(CacheError::InvalidInput(
                "request is not routed to a node: put a routing layer (slot_refresh) in front of the leaf"
                    .into(),
            )),
        }
    }

    /// The deadline of one leaf call made at `now`: the request's own,
    /// capped at `cap` from now. [`CacheError::DeadlineExceeded`] when it has
    /// already passed: nothing is sent, and the node did nothing wrong (a
    /// breaker must not count it).
    pub fn call_deadline(&self, now: Instant, cap: Duration) -> Result<Instant, CacheError> {
        let cap = now + cap;
        let deadline = self.deadline.map_or(cap, |d| d.min(cap));
        if deadline <= now {
            return Err(CacheError::DeadlineExceeded);
        }
        Ok(deadline)
    }

    /// The node this request is stamped for, if any.
    pub fn node(&self) -> Option<&NodeAddr> {
        match &self.route {
            Route::Node { addr, .. } => Some(addr),
            Route::Slot => None,
        }
    }
}
