//! The fallback layer over the full stack against a real cluster, with the
//! SQLite store behind it: herds of misses, every primary paused, a primary
//! stopped past its promotion under mixed load, and deletes followed by a
//! degraded cluster.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{BoxError, CacheRequest, Path, SecondaryRequest};
use slotguard_layers::fallback::{Fallback, FallbackLayer};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_node::{HealthProber, ProberHandle};
use slotguard_store::SqliteStore;
use slotguard_testkit::ClusterSpec;
use slotguard_tests::{FullStack, Harness};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};

type StoreSvc = BoxCloneSyncService<SecondaryRequest, Option<Bytes>, BoxError>;
type Stack = Fallback<FullStack, StoreSvc>;

/// What the store saw.
#[derive(Clone, Default)]
struct Counters {
    loads: Arc<AtomicUsize>,
    per_key: Arc<Mutex<HashMap<Bytes, usize>>>,
    max_per_key: Arc<AtomicUsize>,
}

impl Counters {
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

/// The SQLite store, counting loads (and concurrent loads per key), each
/// answered after `delay`.
fn counted(store: SqliteStore, delay: Duration) -> (StoreSvc, Counters) {
    let counters = Counters::default();
    let c = counters.clone();
    let svc = service_fn(move |req: SecondaryRequest| {
        let (store, c) = (store.clone(), c.clone());
        async move {
            c.loads.fetch_add(1, Ordering::SeqCst);
            {
                let mut per_key = c.per_key.lock().unwrap();
                let n = per_key.entry(req.key().clone()).or_default();
                *n += 1;
                c.max_per_key.fetch_max(*n, Ordering::SeqCst);
            }
            tokio::time::sleep(delay).await;
            let out = store.get(req.key().clone()).await;
            *c.per_key.lock().unwrap().get_mut(req.key()).unwrap() -= 1;
            out.map_err(BoxError::from)
        }
    });
    (BoxCloneSyncService::new(svc), counters)
}

struct Setup {
    h: Harness,
    stack: Stack,
    store: SqliteStore,
    counters: Counters,
    _prober: ProberHandle,
    _dir: tempfile::TempDir,
}

async fn setup(spec: ClusterSpec, store_delay: Duration) -> Setup {
    let h = Harness::start_with(spec, Default::default()).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("items.db")).unwrap();
    let (svc, counters) = counted(store.clone(), store_delay);
    let layer = FallbackLayer::new(svc).with_topology(h.topology.clone());
    let stack = layer.layer(h.full_stack(&refresh));
    layer.start();
    Setup {
        h,
        stack,
        store,
        counters,
        _prober: prober,
        _dir: dir,
    }
}

/// Acceptance 1: a herd of 1,000 concurrent misses on one key makes one
/// store load and every caller gets the value, with the key's primary up
/// and with it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_misses_make_one_store_load() {
    // A long node timeout: the stopped primary is not replaced while the
    // herd runs (a promotion would flush the slot, and the new primary's
    // miss would be a second, legitimate load).
    let spec = ClusterSpec {
        node_timeout_ms: 10_000,
        ..ClusterSpec::default()
    };
    let s = setup(spec, Duration::from_millis(100)).await;
    let victim = s.h.cluster.primary_of_slot(0).unwrap();
    let keys = s.h.keys_of(victim, 2);
    for (round, key) in keys.iter().enumerate() {
        let stopped = round == 1;
        let value = Bytes::from(format!("value of {key:?}"));
        s.store.put(key.clone(), value.clone()).await.unwrap();
        if stopped {
            s.h.cluster.pause(victim).unwrap();
        }
        let before = s.counters.loads();
        let calls: Vec<_> = (0..1000)
            .map(|_| {
                let req = CacheRequest::get(key.clone()).with_timeout(Duration::from_secs(5));
                tokio::spawn(s.stack.clone().oneshot(req))
            })
            .collect();
        for call in calls {
            let resp = call.await.unwrap().unwrap();
            assert_eq!(resp.value.as_ref(), Some(&value), "stopped: {stopped}");
        }
        assert_eq!(
            s.counters.loads() - before,
            1,
            "one store load (primary stopped: {stopped})"
        );
    }
    s.h.cluster.resume(victim).unwrap();
}

/// (since the pause, path, age, key)
type Answer = (Duration, Path, Option<Duration>, Bytes);

/// Acceptance 3: every primary paused (no replicas, so nothing is
/// promoted): hot keys come from the near-cache within `max_stale`, then
/// from the store; no read fails; never two loads of one key at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_primary_paused_reads_come_from_the_near_cache_then_the_store() {
    let spec = ClusterSpec {
        replicas_per_primary: 0,
        ..ClusterSpec::default()
    };
    let s = setup(spec, Duration::from_millis(5)).await;
    let primaries = s.h.cluster.primaries().unwrap();
    let mut hot = Vec::new();
    for &p in &primaries {
        hot.extend(s.h.keys_of(p, 4));
    }
    for k in &hot {
        s.store.put(k.clone(), k.clone()).await.unwrap();
        let set = CacheRequest::set(k.clone(), k.clone(), None);
        s.stack.clone().oneshot(set).await.unwrap();
        for _ in 0..3 {
            let resp = s.stack.clone().oneshot(CacheRequest::get(k.clone())).await;
            assert_eq!(resp.unwrap().served.path, Path::Primary);
        }
    }
    for &p in &primaries {
        s.h.cluster.pause(p).unwrap();
    }
    let paused = Instant::now();
    let hot = Arc::new(hot);
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4usize)
        .map(|w| {
            let (stack, hot, answers, failures) = (
                s.stack.clone(),
                hot.clone(),
                answers.clone(),
                failures.clone(),
            );
            tokio::spawn(async move {
                let mut i = w * 7;
                while paused.elapsed() < Duration::from_millis(4500) {
                    i += 1;
                    let key = hot[i % hot.len()].clone();
                    let req = CacheRequest::get(key.clone()).with_timeout(Duration::from_secs(2));
                    match stack.clone().oneshot(req).await {
                        Ok(resp) => {
                            assert_eq!(resp.value.as_ref(), Some(&key), "the value written");
                            answers.lock().unwrap().push((
                                paused.elapsed(),
                                resp.served.path,
                                resp.served.age,
                                key,
                            ));
                        }
                        Err(e) => {
                            eprintln!("read failed: {e}");
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    for &p in &primaries {
        s.h.cluster.resume(p).unwrap();
    }
    let answers = answers.lock().unwrap();
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no read failed");
    let max_stale = Duration::from_secs(2);
    let near: Vec<_> = answers.iter().filter(|a| a.1 == Path::NearCache).collect();
    assert!(
        near.iter().any(|a| a.0 < Duration::from_secs(1)),
        "hot keys answered from the near-cache at first"
    );
    for a in &near {
        assert!(
            a.2.unwrap() <= max_stale,
            "near-cache answer within max_stale: {a:?}"
        );
    }
    for k in hot.iter() {
        assert!(
            answers.iter().any(|a| a.1 == Path::Secondary && a.3 == k),
            "{k:?} was loaded from the store once its copy aged"
        );
        assert!(
            answers
                .iter()
                .all(|a| a.1 != Path::Primary || a.0 < max_stale),
            "no primary answered while paused"
        );
    }
    assert!(s.counters.max_per_key.load(Ordering::SeqCst) <= 1);
    println!(
        "{} answers: {} near-cache, {} store; {} store loads",
        answers.len(),
        near.len(),
        answers.iter().filter(|a| a.1 == Path::Secondary).count(),
        s.counters.loads()
    );
}

/// Acceptance 5, first half: after a `Delete` through the stack the old
/// value is never returned while the cluster degrades (the key's primary
/// stopped until its replica is promoted), neither from the near-cache
/// (which held it) nor from a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_never_comes_back_while_the_cluster_degrades() {
    let s = setup(ClusterSpec::default(), Duration::from_millis(1)).await;
    let victim = s.h.cluster.primary_of_slot(0).unwrap();
    let key = s.h.keys_of(victim, 1).remove(0);
    s.store.put(key.clone(), "old").await.unwrap();
    let set = CacheRequest::set(key.clone(), "old", None);
    s.stack.clone().oneshot(set).await.unwrap();
    for _ in 0..3 {
        let resp = s
            .stack
            .clone()
            .oneshot(CacheRequest::get(key.clone()))
            .await;
        assert_eq!(resp.unwrap().value.as_deref(), Some(&b"old"[..]));
    }
    // The application's update: the store, then a delete through the stack.
    s.store.put(key.clone(), "new").await.unwrap();
    let del = CacheRequest::delete(key.clone()).with_timeout(Duration::from_secs(1));
    assert!(s.stack.clone().oneshot(del).await.unwrap().deleted());
    s.h.cluster.pause(victim).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let paths: Arc<Mutex<HashMap<&'static str, usize>>> = Arc::default();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (stack, key, stop, paths) =
                (s.stack.clone(), key.clone(), stop.clone(), paths.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = CacheRequest::get(key.clone()).with_timeout(Duration::from_secs(2));
                    let resp = stack.clone().oneshot(req).await.expect("answered");
                    assert_eq!(
                        resp.value.as_deref(),
                        Some(&b"new"[..]),
                        "never the deleted value: {:?}",
                        resp.served
                    );
                    *paths
                        .lock()
                        .unwrap()
                        .entry(resp.served.path.name())
                        .or_default() += 1;
                }
            })
        })
        .collect();
    let promoted = tokio::task::block_in_place(|| {
        s.h.cluster
            .wait_for_failover(victim, Duration::from_secs(20))
            .unwrap()
    });
    // Reads keep going for a while after the promotion too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    s.h.cluster.resume(victim).unwrap();
    let paths = paths.lock().unwrap();
    println!("answers by path: {paths:?}; promoted node {promoted}");
    assert!(paths.get("secondary").copied().unwrap_or(0) > 0);
    assert_eq!(paths.get("near_cache"), None);
}

/// Acceptance 4: Redis's default `cluster-require-full-coverage yes`, a
/// primary stopped past its promotion, readers and writers (store, then a
/// delete through the stack) on every shard: every read is answered and
/// none is older than the last acknowledged write of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_coverage_and_a_stopped_primary_answer_every_read_with_nothing_stale() {
    let spec = ClusterSpec {
        extra_config: vec![("cluster-require-full-coverage".into(), "yes".into())],
        ..ClusterSpec::default()
    };
    let s = setup(spec, Duration::from_millis(1)).await;
    let victim = s.h.cluster.primary_of_slot(0).unwrap();
    let mut keys = Vec::new();
    for p in s.h.cluster.primaries().unwrap() {
        keys.extend(s.h.keys_of(p, 10));
    }
    for k in &keys {
        s.store.put(k.clone(), "0").await.unwrap();
    }
    let keys = Arc::new(keys);
    let acked: Arc<Mutex<HashMap<Bytes, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failed, stale) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (stack, keys, acked, stop) =
            (s.stack.clone(), keys.clone(), acked.clone(), stop.clone());
        let (reads, failed, stale) = (reads.clone(), failed.clone(), stale.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w * 13;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = keys[i % keys.len()].clone();
                let floor = acked.lock().unwrap().get(&key).copied().unwrap_or(0);
                let req = CacheRequest::get(key.clone()).with_timeout(Duration::from_secs(1));
                match stack.clone().oneshot(req).await {
                    Ok(resp) => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        let v: u64 = std::str::from_utf8(resp.value.as_deref().expect("a value"))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if v < floor {
                            eprintln!("stale: {key:?} gave {v} < {floor} via {:?}", resp.served);
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        eprintln!("read failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    {
        let (stack, keys, acked, stop, store) = (
            s.stack.clone(),
            keys.clone(),
            acked.clone(),
            stop.clone(),
            s.store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut versions: HashMap<Bytes, u64> = HashMap::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = keys[(i * 7) % keys.len()].clone();
                let n = versions.entry(key.clone()).or_default();
                *n += 1;
                let n = *n;
                store.put(key.clone(), n.to_string()).await.unwrap();
                let del = CacheRequest::delete(key.clone()).with_timeout(Duration::from_secs(1));
                if stack.clone().oneshot(del).await.is_ok() {
                    let mut acked = acked.lock().unwrap();
                    let a = acked.entry(key).or_default();
                    *a = (*a).max(n);
                }
                // pacing of the write load, not synchronisation
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.h.cluster.pause(victim).unwrap();
    tokio::task::block_in_place(|| {
        s.h.cluster
            .wait_for_failover(victim, Duration::from_secs(20))
            .unwrap()
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    s.h.cluster.resume(victim).unwrap();
    let (reads, failed, stale) = (
        reads.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        stale.load(Ordering::SeqCst),
    );
    println!(
        "{reads} reads, {failed} failed, {stale} stale; {} store loads",
        s.counters.loads()
    );
    assert!(reads > 0);
    assert_eq!(failed, 0, "every read answered");
    assert_eq!(stale, 0, "no read older than the last acknowledged write");
}
