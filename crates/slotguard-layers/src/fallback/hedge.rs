//! A read of a marked key hedged to the store
//! ([`FallbackConfig::marked_hedge`](super::FallbackConfig::marked_hedge)).
//!
//! A marked key may only be answered by its primary or the store (a replica
//! may hold the value the write replaced). Without a hedge, a read of one
//! on a stalled primary waits for the leaf's command timeout before the
//! store answers; with one it waits for the primary's hedge delay, then
//! takes whichever of the two answers first. If the primary wins, its
//! answer clears the mark as usual; a miss or a failure after it awaits the
//! hedge's load instead of starting another. If the store wins, the
//! primary's call is dropped, which its breaker counts as nothing.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;

use futures_util::FutureExt;
use slotguard_core::observe::{self, Observation};
use slotguard_core::{classify, BoxError, CacheRequest, CacheResponse, LoadCause};
use tokio::time::Instant;
use tower::Service;

use super::{falls_back, record_load, secondary_response, ReadCtx};

/// How the race between the primary and the store ended.
enum Raced {
    /// The read's answer.
    Done(Result<CacheResponse, BoxError>),
    /// The cluster's outcome, to handle as if no hedge had been sent.
    Cluster(Result<CacheResponse, BoxError>),
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
        mut self,
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
            // A caller that has given up starts no load.
            Err(_) if self.deadline.is_some_and(|d| d <= Instant::now()) => cluster.await,
            Err(_late) => match self.race(cluster.as_mut()).await {
                Raced::Done(done) => return done,
                Raced::Cluster(out) => out,
            },
        };
        match self.after_cluster(out) {
            Ok(done) => done,
            Err(fallback) => fallback.await,
        }
    }

    /// The primary is late: start the store load and take whichever
    /// answers first.
    async fn race<F>(&mut self, mut cluster: Pin<&mut F>) -> Raced
    where
        F: Future<Output = Result<CacheResponse, BoxError>>,
    {
        let mut store = self.start_load(LoadCause::ClusterFailure);
        let stored = tokio::select! {
            out = cluster.as_mut() => {
                // Kept for a miss or a failure, which would load anyway.
                self.hedge_load = Some(store);
                return Raced::Cluster(out);
            }
            stored = &mut store => stored,
        };
        let (value, leader) = stored;
        if leader {
            record_load(&value);
        }
        match value {
            Ok(value) => {
                observe::record(Observation::SecondaryFallback {
                    cause: LoadCause::ClusterFailure,
                    failure: None,
                });
                if let Some(v) = &value {
                    self.keep(v, None);
                }
                Raced::Done(Ok(secondary_response(value)))
            }
            // The store failed (or its breaker is open): the primary may
            // still answer. If it fails too, the store's error is the
            // answer: loading again would fail the same way, and a marked
            // read has no other path.
            Err(store_err) => {
                let out = cluster.await;
                match &out {
                    Err(e) if falls_back(classify(e)) => Raced::Done(Err(store_err)),
                    _ => Raced::Cluster(out),
                }
            }
        }
    }
}
