//! The response future of [`FredLeaf`](crate::FredLeaf): a reply becomes a
//! response or a typed error, and the outcome is recorded in the topology.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use fred::types::Value;
use pin_project_lite::pin_project;
use slotguard_core::op::OpKind;
use slotguard_core::{BoxError, CacheError, CacheResponse, NodeAddr, Path, Role, Topology};
use slotguard_node::{remapped_identity, AddressRemap};
use tokio::time::Instant;

use crate::convert::to_reply;

/// Turns a reply into a response and records the outcome.
pub(crate) struct Finish {
    pub(crate) addr: NodeAddr,
    pub(crate) role: Role,
    pub(crate) op: OpKind,
    pub(crate) started: Instant,
    pub(crate) topology: Option<Topology>,
    pub(crate) remap: Option<AddressRemap>,
}

impl Finish {
    fn response(&self, out: Result<Value, CacheError>) -> Result<CacheResponse, CacheError> {
        out.and_then(|value| {
            self.op
                .answer(to_reply(value), &self.addr, Path::from(self.role))
        })
        // A redirect names the target as the cluster announces it: the
        // same remap as the map's, so both name one node alike.
        .map_err(|e| e.rename_redirect(|addr| remapped_identity(self.remap.as_ref(), addr)))
    }

    /// Reported like the default leaf's calls (the controller decides
    /// about health and write fences), so the layers above see one
    /// behaviour.
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

pub(crate) type BoxFut = Pin<Box<dyn Future<Output = Result<Value, CacheError>> + Send>>;

pin_project! {
    /// Response future of [`FredLeaf`].
    pub struct ResponseFuture {
        #[pin]
        pub(crate) inner: BoxFut,
        pub(crate) finish: Option<Finish>,
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
        let out = match this.finish.take() {
            Some(f) => {
                let resp = f.response(out);
                f.record(&resp);
                resp
            }
            None => out.and_then(|_| {
                Err(CacheError::InvalidInput(
                    "request is not routed to a node".into(),
                ))
            }),
        };
        Poll::Ready(out.map_err(BoxError::from))
    }
}
