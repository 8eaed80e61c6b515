//! Deletes that survive a failover.
//!
//! Replication is asynchronous: a `DEL` acknowledged by a primary that dies
//! before its replica receives it is lost in the promotion, and the old
//! value comes back from the new primary — the one stale read a
//! cache-aside application cannot tolerate. This layer keeps a bounded log
//! of recent deletes (key, slot, time, and the primary that acknowledged
//! each) and:
//!
//! - **replays** them: when a slot's owner in the [`Topology`] is not the
//!   primary known to hold a logged delete (the slot changed owner, or the
//!   delete failed or timed out), a background task (started by
//!   [`InvalidationLogLayer::start`] on the topology's controller) sends
//!   the `DEL` again to the current owner — on every map change, and every
//!   [`LogConfig::retry_interval`] while one is unconfirmed;
//! - **distrusts** answers meanwhile: a read of a key deleted within the
//!   window, answered with a value by any node other than the primary known
//!   to hold the delete (a replica, a promoted replica before the replay
//!   reached it), is turned into a miss. A miss is safe (Fallback above
//!   loads the key from its store); the old value is not. Answers from the
//!   near-cache or the secondary store are left alone.
//!
//! Why a log and not `WAIT 1 <ms>` after each `DEL`: see
//! `docs/design-notes.md` (measured: `WAIT` doubles a healthy delete's
//! latency, blocks the node connection it is sent on, and adds its whole
//! timeout to every delete while a replica is down — exactly when a
//! failover is likely).
//!
//! Usable anywhere in the stack: replays are stamped for the slot's current
//! primary from the topology ([`Route::Node`](slotguard_core::Route::Node)),
//! so they need no routing layer below; reads are judged by who answered
//! ([`Served`](slotguard_core::Served)).
//!
//! **What remains possible**: a delete older than [`LogConfig::window`]
//! when its loss is noticed (a map that stays stale that long), or evicted
//! beyond [`LogConfig::capacity`], is not replayed; deletes made by other
//! clients are not in this log; and a slot that moves away and back between
//! two map loads looks unmoved.
//!
//! # Example
//!
//! ```
//! use slotguard_core::{CacheRequest, CacheResponse, NodeAddr, Path, Topology};
//! use slotguard_layers::invalidation::InvalidationLogLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let primary: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//! let replica: NodeAddr = "127.0.0.1:7001".parse().unwrap();
//! // A toy leaf: the primary acknowledges deletes, the replica still has
//! // the value (the delete did not reach it).
//! let leaf = service_fn({
//!     let (primary, replica) = (primary.clone(), replica.clone());
//!     move |req: CacheRequest| {
//!         let (primary, replica) = (primary.clone(), replica.clone());
//!         async move {
//!             Ok::<_, slotguard_core::BoxError>(if req.op.is_read() {
//!                 CacheResponse::from_node(Some("old".into()), replica, Path::Replica)
//!             } else {
//!                 CacheResponse::from_node(None, primary, Path::Primary)
//!             })
//!         }
//!     }
//! });
//! let log = InvalidationLogLayer::new(Topology::new());
//! let svc = ServiceBuilder::new().layer(log.clone()).service(leaf);
//! svc.clone().oneshot(CacheRequest::delete("k")).await.unwrap();
//! // The replica's answer for a key deleted moments ago is not trusted.
//! let resp = svc.oneshot(CacheRequest::get("k")).await.unwrap();
//! assert_eq!(resp.value, None);
//! assert_eq!(log.distrusted_total(), 1);
//! # }
//! ```
//!
//! [`Topology`]: slotguard_core::Topology

mod config;
pub mod future;
mod layer;
mod log;
mod replay;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use slotguard_core::{BoxError, CacheRequest, CacheResponse, Op};
use tower::Service;

pub use config::LogConfig;
pub use layer::InvalidationLogLayer;

use future::{After, ResponseFuture};
use log::Log;

/// Logs deletes and replays them after failovers. See the
/// [module docs](self).
#[derive(Clone)]
pub struct InvalidationLog<S> {
    inner: S,
    log: Arc<Log>,
}

impl<S: fmt::Debug> fmt::Debug for InvalidationLog<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidationLog")
            .field("inner", &self.inner)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl<S> Service<CacheRequest> for InvalidationLog<S>
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: CacheRequest) -> Self::Future {
        let after = match req.op {
            Op::Delete => After::Delete {
                log: self.log.clone(),
                key: req.key().clone(),
                slot: req.slot(),
            },
            Op::Get => match self.log.lookup(req.key(), req.slot()) {
                Some(trusted) => After::Check {
                    log: self.log.clone(),
                    trusted,
                },
                None => After::Nothing,
            },
            _ => After::Nothing,
        };
        ResponseFuture::new(self.inner.call(req), after)
    }
}

#[cfg(test)]
mod tests;
