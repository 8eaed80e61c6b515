//! A write load that remembers every outcome, and the check that no
//! acknowledged write was lost: each acknowledged key is read back from the
//! node that owns its slot when the fault is over.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{classify, BoxError, CacheRequest, CacheResponse, Failure};
use slotguard_testkit::{LocalCluster, Reply};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Failures kept in full; more are only counted (a shard without a primary
/// fails fast for seconds).
const KEEP_FAILURES: usize = 10_000;
/// Pause after a failed write, so a fast-failing shard does not spin.
const AFTER_FAILURE: Duration = Duration::from_millis(5);

/// One write's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The key (and value) written.
    pub key: Bytes,
    /// When it was sent into the stack.
    pub sent: Instant,
    /// When the stack answered.
    pub done: Instant,
    /// Its deadline.
    pub deadline: Instant,
    /// `Ok` with the node that acknowledged it, else the failure's class and text.
    pub result: Result<Option<String>, (Failure, String)>,
}

#[derive(Debug, Default)]
struct Log {
    acked: Vec<Outcome>,
    failed: Vec<Outcome>,
    failures_dropped: u64,
}

/// Writers running until [`WriteLoad::stop`]; every write has its own key,
/// all in the slot of `{tag}`.
#[derive(Debug)]
pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    log: Arc<Mutex<Log>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the load did.
#[derive(Debug)]
pub struct WriteReport {
    /// Acknowledged writes.
    pub acked: Vec<Outcome>,
    /// Failed writes (at most 10,000 kept).
    pub failed: Vec<Outcome>,
    /// Failed writes not kept.
    pub failures_dropped: u64,
}

impl WriteLoad {
    /// `workers` closed-loop writers through `stack`, each write with
    /// `timeout` as its deadline.
    pub fn spawn<S>(stack: S, tag: &str, workers: usize, timeout: Duration) -> WriteLoad
    where
        S: Service<CacheRequest, Response = CacheResponse, Error = BoxError>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Log::default()));
        let tasks = (0..workers)
            .map(|w| {
                let (stack, stop, acks, log) =
                    (stack.clone(), stop.clone(), acks.clone(), log.clone());
                let tag = tag.to_owned();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let key = Bytes::from(format!("{{{tag}}}:w{w}:{i}"));
                        let sent = Instant::now();
                        let deadline = sent + timeout;
                        let req = CacheRequest::set(key.clone(), key.clone(), None)
                            .with_deadline(deadline);
                        // Never hangs: a generous outer bound, asserted later
                        // against each write's own deadline.
                        let result =
                            tokio::time::timeout(timeout * 20, stack.clone().oneshot(req)).await;
                        let result = match result {
                            Ok(Ok(resp)) => Ok(resp.served.node.map(|n| n.to_string())),
                            Ok(Err(e)) => Err((classify(&e), e.to_string())),
                            Err(_) => Err((Failure::Other, "hung past 20 deadlines".to_owned())),
                        };
                        let ok = result.is_ok();
                        let outcome = Outcome {
                            key,
                            sent,
                            done: Instant::now(),
                            deadline,
                            result,
                        };
                        {
                            let mut log = log.lock().unwrap();
                            if ok {
                                log.acked.push(outcome);
                            } else if log.failed.len() < KEEP_FAILURES {
                                log.failed.push(outcome);
                            } else {
                                log.failures_dropped += 1;
                            }
                        }
                        if ok {
                            acks.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tokio::time::sleep(AFTER_FAILURE).await;
                        }
                    }
                })
            })
            .collect();
        WriteLoad {
            stop,
            acks,
            log,
            tasks,
        }
    }

    /// Writes acknowledged so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// Waits until `more` further writes were acknowledged (panics after `deadline`).
    pub async fn wait_for_acks(&self, more: u64, deadline: Duration) {
        let target = self.acks() + more;
        crate::eventually("acknowledged writes", deadline, || async {
            (self.acks() >= target).then_some(())
        })
        .await;
    }

    /// Stops the writers and returns every outcome.
    pub async fn stop(self) -> WriteReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        WriteReport {
            acked: log.acked,
            failed: log.failed,
            failures_dropped: log.failures_dropped,
        }
    }
}

/// Keys of `acked` that node `index` does not hold with their own value
/// (read with `MGET` on its real port, 500 keys at a time; all keys share
/// one slot).
pub fn missing_on(cluster: &LocalCluster, index: usize, acked: &[&Outcome]) -> Vec<Bytes> {
    let mut missing = Vec::new();
    for chunk in acked.chunks(500) {
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(chunk.iter().map(|o| o.key.as_ref()));
        let reply = cluster.command(index, &args).expect("MGET answered");
        let Reply::Array(Some(values)) = &reply else {
            panic!("MGET answered {reply:?}");
        };
        for (o, v) in chunk.iter().zip(values) {
            if v.as_bytes() != Some(o.key.as_ref()) {
                missing.push(o.key.clone());
            }
        }
    }
    missing
}

/// Failure classes a write may end with while a shard loses its primary;
/// anything else (a protocol or server error, a hang) is a bug.
pub fn typed_write_failure(f: Failure) -> bool {
    matches!(
        f,
        Failure::Indeterminate
            | Failure::Timeout
            | Failure::ShardUnavailable
            | Failure::CircuitOpen
            | Failure::Connection
            | Failure::ClusterDown
            | Failure::TryAgain
            | Failure::Overloaded
    )
}
