//! What a read does once the cluster answered: keep the value, or fall
//! back to the near-cache and the store.

use std::sync::Arc;

use bytes::Bytes;
use slotguard_core::observe::{self, Observation};
use slotguard_core::{
    classify, BoxError, CacheRequest, CacheResponse, Consistency, LoadCause, Path,
};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::near::Fill;
use super::{falls_back, future, near_response, record_load, secondary_response, Core};

/// What a read keeps for after the cluster answered.
pub(crate) struct ReadCtx<S> {
    pub(super) core: Arc<Core<S>>,
    pub(super) key: Bytes,
    pub(super) slot: u16,
    pub(super) start: u64,
    // When the read began (clock nanos): a value it returns is at most this
    // old, whatever the cluster's latency.
    pub(super) started_at: u64,
    pub(super) marked: bool,
    pub(super) consistency: Consistency,
    pub(super) deadline: Option<Instant>,
    // A store load a hedge started (see `hedge`) that the cluster's answer
    // beat: a miss or a failure after it awaits this one rather than
    // loading again.
    pub(super) hedge_load: Option<PendingLoad>,
}

/// A store load in flight, and whether this read started it.
pub(crate) type PendingLoad =
    futures_util::future::BoxFuture<'static, (Result<Option<Bytes>, BoxError>, bool)>;

impl<S> ReadCtx<S>
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    /// The cluster answered: the final result, or the fallback to run.
    pub(crate) fn after_cluster(self, out: Result<CacheResponse, BoxError>) -> future::Outcome {
        let state = &self.core.state;
        match out {
            Ok(resp) => {
                let from_primary = resp.served.path == Path::Primary;
                if self.marked && from_primary {
                    // An authoritative answer of a read that began after
                    // the mark.
                    state.marks.clear(&self.key, self.start);
                }
                match &resp.value {
                    Some(value) => {
                        if matches!(resp.served.path, Path::Primary | Path::Replica) {
                            self.keep(value, resp.served.node.clone());
                        }
                        Ok(Ok(resp))
                    }
                    None => Err(Box::pin(self.miss(from_primary))),
                }
            }
            Err(err) => {
                if !falls_back(classify(&err)) {
                    return Ok(Err(err));
                }
                Err(Box::pin(self.degraded(err)))
            }
        }
    }

    /// Keep a value in the near-cache once the key is hot.
    pub(super) fn keep(&self, value: &Bytes, node: Option<slotguard_core::NodeAddr>) {
        let state = &self.core.state;
        let Some(near) = &state.near else { return };
        if !near.admit(&self.key, value.len(), self.started_at) {
            return;
        }
        let owner = state.owner(self.slot);
        let tracked = state.tracked(node.as_ref(), owner.as_ref());
        state.fill(
            &self.key,
            Fill {
                value: value.clone(),
                node,
                owner,
                slot: self.slot,
                epoch: self.start,
                fetched: self.started_at,
                tracked,
            },
        );
    }

    /// The store's answer, and whether this read started the load (a
    /// hedge's load when one is in flight).
    pub(super) async fn load(
        &mut self,
        cause: LoadCause,
    ) -> (Result<Option<Bytes>, BoxError>, bool) {
        let (out, leader) = match self.hedge_load.take() {
            Some(pending) => pending.await,
            None => self.start_load(cause).await,
        };
        if leader {
            record_load(&out);
        }
        (out, leader)
    }

    /// A store load that owns what it needs (a hedge keeps it past the
    /// read's borrow).
    pub(super) fn start_load(&self, cause: LoadCause) -> PendingLoad {
        let (core, key, deadline) = (self.core.clone(), self.key.clone(), self.deadline);
        Box::pin(async move {
            let (out, leader) = core
                .store
                .load(&core.state.flights, &key, cause, deadline)
                .await;
            (out.map_err(Into::into), leader)
        })
    }

    /// A near-cache answer for a read the cluster could not answer well.
    pub(super) fn stale_answer(&self) -> Option<CacheResponse> {
        if self.marked {
            return None;
        }
        let state = &self.core.state;
        let budget = state.degraded_budget(self.consistency)?;
        let (value, node, age) = state.serve(&self.key, self.slot, budget)?;
        observe::record(Observation::NearCacheHit);
        Some(near_response(value, node, age))
    }

    pub(super) async fn miss(mut self, from_primary: bool) -> Result<CacheResponse, BoxError> {
        if !from_primary {
            // A replica's miss while the primary failed: the cluster is
            // degraded, and a recent copy (from the store or the primary)
            // is as good as another store load.
            if let Some(resp) = self.stale_answer() {
                return Ok(resp);
            }
        }
        observe::record(Observation::SecondaryFallback {
            cause: LoadCause::Miss,
            failure: None,
        });
        let (value, leader) = self.load(LoadCause::Miss).await;
        let value = value?;
        if let Some(v) = &value {
            // One write-back per load, by the read that started it.
            if from_primary && leader {
                self.write_back(v.clone());
            }
            self.keep(v, None);
        }
        Ok(secondary_response(value))
    }

    pub(super) async fn degraded(mut self, err: BoxError) -> Result<CacheResponse, BoxError> {
        if let Some(resp) = self.stale_answer() {
            return Ok(resp);
        }
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(err);
        }
        tracing::debug!(target: "slotguard::fallback", error = %err, "secondary_fallback");
        observe::record(Observation::SecondaryFallback {
            cause: LoadCause::ClusterFailure,
            failure: Some(classify(&err)),
        });
        let value = self.load(LoadCause::ClusterFailure).await.0?;
        if let Some(v) = &value {
            self.keep(v, None);
        }
        Ok(secondary_response(value))
    }

    /// Cache-aside: write the store's value back, without waiting for it.
    pub(super) fn write_back(&self, value: Bytes) {
        let Some(wb) = self.core.config.write_back.clone() else {
            return;
        };
        let state = &self.core.state;
        let Ok(permit) = state.write_backs.clone().try_acquire_owned() else {
            return;
        };
        // Invalidated while we loaded: the value may be the replaced one.
        let Some(done) = state.begin_write_back(&self.key, self.start) else {
            return;
        };
        let svc = self
            .core
            .spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let req = CacheRequest::set(self.key.clone(), value, Some(wb.ttl)).with_timeout(wb.timeout);
        let (owner, key) = (state.clone(), self.key.clone());
        // On the controller: its shutdown ends a write-back in flight too.
        // After it, the write-back is dropped unstarted (its guards with it).
        let _ = state.controller.spawn(async move {
            let _ = tokio::time::timeout(wb.timeout, svc.oneshot(req)).await;
            owner.end_write_back(&key, done);
            drop(permit);
        });
    }
}
