#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{
    BoxError, CacheError, CacheRequest, CacheResponse, Op, Path, SecondaryRequest,
};
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};

use super::*;
use crate::test_support::addr;

mod client_side;
mod guard;
mod hedge;
mod invalidation;
mod reads;

/// What the fake cluster does with the next requests.
#[derive(Clone, Debug)]
pub(super) enum Mode {
    /// Answer from its own key → value map (primary).
    Serve,
    /// Fail every request with this error.
    Fail(CacheError),
}

#[derive(Clone)]
pub(super) struct FakeCluster {
    pub(super) mode: Arc<Mutex<Mode>>,
    pub(super) data: Arc<Mutex<std::collections::HashMap<Bytes, Bytes>>>,
    pub(super) seen: Arc<Mutex<Vec<CacheRequest>>>,
    pub(super) delay: Arc<Mutex<Duration>>,
    // Extra delay of `SET`s only.
    pub(super) set_delay: Arc<Mutex<Duration>>,
    // Extra delay of `DEL`s only.
    pub(super) del_delay: Arc<Mutex<Duration>>,
    // Answer `SET`s asked to read back with no value, as a leaf that
    // cannot read back does.
    pub(super) no_read_back: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeCluster {
    pub(super) fn new() -> Self {
        FakeCluster {
            mode: Arc::new(Mutex::new(Mode::Serve)),
            data: Arc::default(),
            seen: Arc::default(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            set_delay: Arc::new(Mutex::new(Duration::ZERO)),
            del_delay: Arc::new(Mutex::new(Duration::ZERO)),
            no_read_back: Arc::default(),
        }
    }

    pub(super) fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub(super) fn put(&self, k: &str, v: &str) {
        self.data.lock().unwrap().insert(
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v.as_bytes()),
        );
    }

    pub(super) fn seen(&self) -> Vec<CacheRequest> {
        self.seen.lock().unwrap().clone()
    }

    pub(super) fn service(&self) -> BoxCloneService<CacheRequest, CacheResponse, BoxError> {
        let me = self.clone();
        BoxCloneService::new(service_fn(move |req: CacheRequest| {
            let me = me.clone();
            async move {
                me.seen.lock().unwrap().push(req.clone());
                let mut delay = *me.delay.lock().unwrap();
                match req.op {
                    Op::Set { .. } => delay += *me.set_delay.lock().unwrap(),
                    Op::Delete => delay += *me.del_delay.lock().unwrap(),
                    _ => {}
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let mode = me.mode.lock().unwrap().clone();
                let node = addr(1);
                match mode {
                    Mode::Fail(e) => Err::<CacheResponse, BoxError>(e.into()),
                    Mode::Serve => {
                        let mut data = me.data.lock().unwrap();
                        let value = match &req.op {
                            Op::Get => data.get(req.key()).cloned(),
                            Op::Set { value, .. } => {
                                data.insert(req.key().clone(), value.clone());
                                // The read-back: the value right after the write.
                                (req.read_back && !me.no_read_back.load(Ordering::SeqCst))
                                    .then(|| value.clone())
                            }
                            _ => {
                                data.remove(req.key());
                                None
                            }
                        };
                        Ok(CacheResponse::from_node(value, node, Path::Primary))
                    }
                }
            }
        }))
    }
}

#[derive(Clone)]
pub(super) struct FakeStore {
    pub(super) data: Arc<Mutex<std::collections::HashMap<Bytes, Bytes>>>,
    pub(super) loads: Arc<AtomicUsize>,
    pub(super) in_flight: Arc<AtomicUsize>,
    pub(super) max_in_flight: Arc<AtomicUsize>,
    pub(super) delay: Duration,
    pub(super) fail: Arc<Mutex<bool>>,
}

impl FakeStore {
    pub(super) fn new(delay: Duration) -> Self {
        FakeStore {
            data: Arc::default(),
            loads: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            delay,
            fail: Arc::new(Mutex::new(false)),
        }
    }

    pub(super) fn put(&self, k: &str, v: &[u8]) {
        self.data.lock().unwrap().insert(
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v),
        );
    }

    pub(super) fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    pub(super) fn service(&self) -> BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError> {
        let me = self.clone();
        BoxCloneService::new(service_fn(move |req: SecondaryRequest| {
            let me = me.clone();
            async move {
                me.loads.fetch_add(1, Ordering::SeqCst);
                let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_in_flight.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(me.delay).await;
                me.in_flight.fetch_sub(1, Ordering::SeqCst);
                if *me.fail.lock().unwrap() {
                    return Err::<Option<Bytes>, BoxError>("store exploded".into());
                }
                Ok(me.data.lock().unwrap().get(req.key()).cloned())
            }
        }))
    }
}

pub(super) fn timeout_err() -> CacheError {
    CacheError::Timeout { node: addr(1) }
}

pub(super) type Svc = Fallback<
    BoxCloneService<CacheRequest, CacheResponse, BoxError>,
    BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError>,
>;

pub(super) fn stack(
    layer: &FallbackLayer<BoxCloneService<SecondaryRequest, Option<Bytes>, BoxError>>,
    cluster: &FakeCluster,
) -> Svc {
    let svc = layer.layer(cluster.service());
    layer.start();
    svc
}

pub(super) fn get(
    svc: &Svc,
    key: &str,
) -> impl std::future::Future<Output = Result<CacheResponse, BoxError>> + Send + 'static {
    svc.clone().oneshot(CacheRequest::get(key.to_owned()))
}

pub(super) fn near_config() -> FallbackConfig {
    FallbackConfig::default()
}

#[test]
fn the_cluster_attempt_leaves_a_quarter_of_the_callers_time_for_the_store() {
    use super::cluster_deadline;
    use std::time::Duration;
    let now = tokio::time::Instant::now();
    let ms = Duration::from_millis;
    // A 200 ms caller: 150 ms for the cluster.
    assert_eq!(
        cluster_deadline(now, ms(300), Some(now + ms(200))),
        now + ms(150)
    );
    // A 1 s caller: the cap.
    assert_eq!(
        cluster_deadline(now, ms(300), Some(now + ms(1000))),
        now + ms(300)
    );
    // No caller deadline: the cap; a deadline already past stays past.
    assert_eq!(cluster_deadline(now, ms(300), None), now + ms(300));
    assert_eq!(cluster_deadline(now, ms(300), Some(now)), now);
}
