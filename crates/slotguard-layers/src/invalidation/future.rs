//! Response future of [`InvalidationLog`](super::InvalidationLog).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use pin_project_lite::pin_project;
use slotguard_core::{classify, BoxError, CacheResponse, Failure, NodeAddr, Path};

use super::log::Log;

pin_project! {
    /// Response future of [`InvalidationLog`](super::InvalidationLog): the
    /// inner future, polled in place; a delete is logged when it completes,
    /// and a read of a recently deleted key is checked.
    pub struct ResponseFuture<F> {
        #[pin]
        fut: F,
        after: After,
    }
}

pub(crate) enum After {
    Nothing,
    /// Log the delete of `key` (its acknowledging primary, if any).
    Delete {
        log: Arc<Log>,
        key: Bytes,
        slot: u16,
    },
    /// A read of a key deleted within the window: an answer from any node
    /// but `trusted` (a primary known to hold the delete) may be the value
    /// the delete removed, resurrected by a failover: it is a miss.
    Check {
        log: Arc<Log>,
        trusted: Option<NodeAddr>,
    },
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(fut: F, after: After) -> Self {
        Self { fut, after }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = std::task::ready!(this.fut.poll(cx)).map_err(Into::into);
        match std::mem::replace(this.after, After::Nothing) {
            After::Nothing => {}
            After::Delete { log, key, slot } => {
                let owner = match &out {
                    Ok(resp) if resp.served.path == Path::Primary => resp.served.node.clone(),
                    _ => None,
                };
                // Nothing was sent: there is nothing to make sure of.
                let sent = !matches!(&out, Err(e) if classify(e) == Failure::InvalidInput);
                if sent {
                    let unconfirmed = owner.is_none();
                    log.record(key, slot, owner);
                    if unconfirmed {
                        log.wake.notify_one();
                    }
                }
            }
            After::Check { log, trusted } => {
                if let Ok(resp) = &mut out {
                    let from_cluster = matches!(resp.served.path, Path::Primary | Path::Replica);
                    let trusted = resp.served.path == Path::Primary
                        && trusted.is_some()
                        && resp.served.node == trusted;
                    if from_cluster && !trusted && resp.value.is_some() {
                        resp.value = None;
                        log.counters.distrusted.fetch_add(1, Ordering::Relaxed);
                        log.wake.notify_one();
                    }
                }
            }
        }
        Poll::Ready(out)
    }
}
