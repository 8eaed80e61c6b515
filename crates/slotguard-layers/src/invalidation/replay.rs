//! The task that sends logged deletes again to their slot's new owner.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use slotguard_core::{key_slot, BoxError, CacheRequest, CacheResponse, Path, Role, Topology};
use tower::util::BoxCloneService;
use tower::{Service, ServiceExt};

use super::log::{Log, Replay};

/// What replays are sent through: a clone of the service below the layer,
/// registered by `layer()` (boxed, so the task is not generic).
pub(crate) type ReplaySvc = BoxCloneService<CacheRequest, CacheResponse, BoxError>;

/// Register `svc` (the service below the layer) as the one replays go
/// through. Nothing starts here: the owner starts the replayer.
pub(crate) fn register<S>(log: &Log, svc: S)
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let boxed = BoxCloneService::new(svc.map_err(Into::into));
    *log.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(boxed);
    // One stored permit: a replayer that is not waiting yet still sees it.
    log.registered.notify_one();
}

/// Start the replayer once, on the topology's controller.
pub(crate) fn start(log: &Arc<Log>, topology: &Topology) {
    if log.replayer.load(Ordering::Relaxed) || log.replayer.swap(true, Ordering::AcqRel) {
        return;
    }
    let task = run(Arc::downgrade(log), topology.clone());
    if topology.controller().spawn(task).is_none() {
        log.replayer.store(false, Ordering::Release);
    }
}

/// The service registered by `layer()`, once there is one.
async fn sender(log: &Log) -> ReplaySvc {
    loop {
        if let Some(svc) = log.sender.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return svc;
        }
        log.registered.notified().await;
    }
}

/// Until the log is dropped: on every map change, every wake-up and, while
/// something is unconfirmed, every retry interval, replay what is pending.
async fn run(log: Weak<Log>, topology: Topology) {
    let Some(svc) = (match log.upgrade() {
        Some(l) => Some(sender(&l).await),
        None => None,
    }) else {
        return;
    };
    // Behind a lock so the task is `Send` (a `BoxCloneService` is not
    // `Sync`); each replay takes a clone.
    let svc = std::sync::Mutex::new(svc);
    let mut generation = topology.load().generation();
    let mut retry = false;
    loop {
        let Some(l) = log.upgrade() else { return };
        // Without anything pending, still wake up now and then to notice
        // that the layer is gone.
        let wait = if retry {
            l.config.retry_interval
        } else {
            l.config.window
        };
        {
            let woken = l.wake.notified();
            tokio::select! {
                _ = topology.changed_since(generation) => {}
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let map = topology.load();
        generation = map.generation();
        let work = l.pending(&map);
        drop(map);
        retry = !work.is_empty();
        if retry {
            let before = l.counters.replayed.load(Ordering::Relaxed);
            replay_all(&svc, &l, work).await;
            let count = l
                .counters
                .replayed
                .load(Ordering::Relaxed)
                .saturating_sub(before);
            if count > 0 {
                topology.observe(|| slotguard_core::Observation::InvalidationsReplayed { count });
            }
        }
    }
}

async fn replay_all(svc: &std::sync::Mutex<ReplaySvc>, log: &Log, work: Vec<Replay>) {
    let timeout = log.config.replay_timeout;
    futures_util::stream::iter(work)
        .for_each_concurrent(log.config.replay_concurrency, |r| async move {
            let req = CacheRequest::delete(r.key.clone())
                .to_node(r.target.clone(), Role::Primary)
                .with_timeout(timeout);
            // The request carries its deadline; this bounds a leaf that
            // ignores it.
            let one = svc.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let out = tokio::time::timeout(timeout, one.oneshot(req)).await;
            match out {
                Ok(Ok(resp)) if resp.served.path == Path::Primary => {
                    if let Some(node) = resp.served.node {
                        tracing::info!(
                            target: "slotguard::invalidation",
                            node = %node,
                            slot = key_slot(&r.key),
                            "delete_replayed"
                        );
                        log.confirm(&r.key, key_slot(&r.key), r.seq, node);
                        log.counters.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(target: "slotguard::invalidation", error = %e, "delete_replay_failed");
                }
                Err(_) => {
                    tracing::debug!(target: "slotguard::invalidation", "delete_replay_timed_out");
                }
            }
        })
        .await;
}
