//! A read of a marked key hedged to the store
//! ([`FallbackConfig::marked_hedge`](super::FallbackConfig::marked_hedge)).
//!
//! A marked key may only be answered by its primary or the store (a replica
//! may hold the value the write replaced). Without a hedge, a read of one
//! on a stalled primary waits for the leaf's command timeout before the
//! store answers; with one it waits for the primary's hedge delay, then
//! takes whichever of the two answers first. The primary's call goes on
//! until then: if it wins, its answer clears the mark as usual.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use slotguard_core::observe::{self, Observation};
use slotguard_core::{BoxError, CacheRequest, CacheResponse, Failure, LoadCause};
use tower::Service;

use super::{secondary_response, ReadCtx};

/// Whichever answered first.
enum First {
    Cluster(Result<CacheResponse, BoxError>),
    Store(Result<Option<Bytes>, BoxError>),
}

impl<S> ReadCtx<S>
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// The read, with the store asked too once `delay` has passed without
    /// an answer from the cluster.
    pub(super) async fn hedged<F, E>(
        self,
        cluster: F,
        delay: Duration,
    ) -> Result<CacheResponse, BoxError>
    where
        F: Future<Output = Result<CacheResponse, E>>,
        E: Into<BoxError>,
    {
        // The error converted as it is produced: the inner service's own
        // error type (maybe not `Send`) is never held across an await.
        let mut cluster = pin!(cluster.map(|out| out.map_err(Into::into)));
        let out = match tokio::time::timeout(delay, cluster.as_mut()).await {
            Ok(out) => out,
            Err(_late) => match self.race(cluster.as_mut()).await {
                Ok(resp) => return Ok(resp),
                Err(out) => out,
            },
        };
        match self.after_cluster(out) {
            Ok(done) => done,
            Err(fallback) => fallback.await,
        }
    }

    /// The primary is late: the store's answer if it comes first and is
    /// good (`Ok`), else the cluster's outcome (`Err`), handled as if no
    /// hedge had been sent (its fallback joins the store load in flight).
    async fn race<F>(
        &self,
        mut cluster: Pin<&mut F>,
    ) -> Result<CacheResponse, Result<CacheResponse, BoxError>>
    where
        F: Future<Output = Result<CacheResponse, BoxError>>,
    {
        let first = {
            // Dropped when the cluster answers first: the load goes on for
            // anyone who shares it, and ends by its own deadline.
            let mut store = pin!(self.load(LoadCause::ClusterFailure));
            tokio::select! {
                out = cluster.as_mut() => First::Cluster(out),
                (value, _leader) = &mut store => First::Store(value),
            }
        };
        match first {
            First::Cluster(out) => Err(out),
            First::Store(Ok(value)) => {
                observe::record(Observation::SecondaryFallback {
                    cause: LoadCause::ClusterFailure,
                    failure: Some(Failure::Timeout),
                });
                if let Some(v) = &value {
                    self.keep(v, None);
                }
                Ok(secondary_response(value))
            }
            // The store failed (or its breaker is open): the primary may
            // still answer.
            First::Store(Err(_)) => Err(cluster.await),
        }
    }
}
