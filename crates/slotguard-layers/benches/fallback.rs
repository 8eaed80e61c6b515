//! What the fallback layer costs and saves, over in-memory services.
//!
//! `cargo bench -p slotguard-layers --bench fallback`
//!
//! - `hit/leaf`, `hit/fallback`: a read the cluster answers with a value,
//!   without and with the fallback layer (default settings: the hot keys
//!   are kept in the near-cache as a side effect, healthy reads still go to
//!   the cluster). The difference is the layer's overhead on healthy hits.
//! - `near_cache_hit`: the same reads answered by the near-cache (entries
//!   fresh for 60 s), the cluster not called.
//! - `zipf_mix/leaf`, `zipf_mix/fallback`: the hot-key load of `slotguard
//!   bench throughput --loads zipf` (90 % GET / 10 % SET, keys drawn
//!   Zipf(0.99) over 10,000 keys) from 16 tasks on a two-thread runtime,
//!   without and with the fallback layer (default settings). The
//!   difference is what the layer costs a default handle with a store on
//!   that load: admissions, refreshes and invalidations of the near-cache
//!   and the marks, with both threads touching them.
//! - `herd_1000_misses`: 1,000 concurrent reads of one key the cluster does
//!   not hold, the store answering after 1 ms; the time of the whole herd,
//!   and (printed) how many store loads each herd made.
#![allow(missing_docs)]

use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use slotguard_core::{
    BoxError, CacheError, CacheRequest, CacheResponse, NodeAddr, Path, SecondaryRequest,
};
use slotguard_layers::fallback::{FallbackConfig, FallbackLayer, NearCacheConfig};
use tower::{service_fn, Layer, Service, ServiceExt};

#[path = "support/criterion.rs"]
mod settings;

const KEYS: usize = 4096;

/// Answers every read at once with a value (or with none: `miss`).
#[derive(Clone)]
struct Leaf {
    value: Option<Bytes>,
    node: NodeAddr,
}

impl Service<CacheRequest> for Leaf {
    type Response = CacheResponse;
    type Error = BoxError;
    type Future = Ready<Result<CacheResponse, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: CacheRequest) -> Self::Future {
        ready(Ok(CacheResponse::from_node(
            self.value.clone(),
            self.node.clone(),
            Path::Primary,
        )))
    }
}

fn keys() -> Arc<Vec<Bytes>> {
    Arc::new(
        (0..KEYS)
            .map(|i| Bytes::from(format!("item:{i}")))
            .collect(),
    )
}

async fn run<S>(svc: &S, keys: &[Bytes], n: u64) -> usize
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut near = 0;
    for i in 0..n as usize {
        let req = CacheRequest::get(keys[i % keys.len()].clone());
        let resp = svc.clone().oneshot(req).await;
        if let Ok(r) = &resp {
            near += usize::from(matches!(r.served.path, Path::NearCache | Path::ClientCache));
        }
        let _ = black_box(resp);
    }
    near
}

fn hits(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let keys = keys();
    let leaf = Leaf {
        value: Some(Bytes::from_static(b"{\"name\":\"ada\"}")),
        node: NodeAddr::new("127.0.0.1", 7000),
    };
    let store = service_fn(|_req: SecondaryRequest| async { Ok::<_, CacheError>(None) });
    c.bench_function("hit/leaf", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                run(&leaf, &keys, iters).await;
                start.elapsed()
            })
        })
    });
    let fallback = rt.block_on(async { FallbackLayer::new(store).layer(leaf.clone()) });
    c.bench_function("hit/fallback", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                run(&fallback, &keys, iters).await;
                start.elapsed()
            })
        })
    });
    let near = NearCacheConfig::default().with_fresh_for(Duration::from_secs(60));
    let layer = FallbackLayer::new(store)
        .with_config(FallbackConfig::default().with_near_cache(Some(near)));
    let cached = rt.block_on(async {
        let svc = layer.layer(leaf.clone());
        // Two reads of every key admit it; the third is (nearly always) a
        // near-cache hit.
        run(&svc, &keys, 2 * KEYS as u64).await;
        let n = run(&svc, &keys, KEYS as u64).await;
        println!("near_cache_hit: {n} of {KEYS} reads answered by the near-cache");
        assert!(n * 100 >= KEYS * 95, "near-cache answers: {n} of {KEYS}");
        svc
    });
    c.bench_function("near_cache_hit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                run(&cached, &keys, iters).await;
                start.elapsed()
            })
        })
    });
}

/// Key indices drawn Zipf(0.99) over `n` keys (inverse CDF over a table,
/// a xorshift for the uniform draws): the same sequence every run.
fn zipf_sequence(n: usize, len: usize) -> Vec<u32> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(0.99)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|&c| c < u).min(n - 1) as u32
        })
        .collect()
}

/// `iters` operations of the zipf mix over `svc`, from `TASKS` tasks.
async fn zipf_mix<S>(svc: &S, keys: &Arc<Vec<Bytes>>, seq: &Arc<Vec<u32>>, iters: u64) -> Duration
where
    S: Service<CacheRequest, Response = CacheResponse> + Clone + Send + 'static,
    S::Error: std::fmt::Debug + Send,
    S::Future: Send,
{
    const TASKS: u64 = 16;
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (svc, keys, seq) = (svc.clone(), keys.clone(), seq.clone());
            tokio::spawn(async move {
                let value = Bytes::from_static(b"{\"name\":\"ada\"}");
                let mut i = (t as usize * 7919) % seq.len();
                for n in 0..iters / TASKS {
                    let key = keys[seq[i] as usize].clone();
                    i = (i + 1) % seq.len();
                    let req = if n % 10 == 9 {
                        CacheRequest::set(key, value.clone(), None)
                    } else {
                        CacheRequest::get(key)
                    };
                    let _ = black_box(svc.clone().oneshot(req).await);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    start.elapsed()
}

fn mix(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let keys: Arc<Vec<Bytes>> = Arc::new(
        (0..10_000)
            .map(|i| Bytes::from(format!("sg:tput:{i}")))
            .collect(),
    );
    let seq = Arc::new(zipf_sequence(keys.len(), 1 << 16));
    let leaf = Leaf {
        value: Some(Bytes::from_static(b"{\"name\":\"ada\"}")),
        node: NodeAddr::new("127.0.0.1", 7000),
    };
    let store = service_fn(|_req: SecondaryRequest| async { Ok::<_, CacheError>(None) });
    c.bench_function("zipf_mix/leaf", |b| {
        b.iter_custom(|iters| rt.block_on(zipf_mix(&leaf, &keys, &seq, iters)))
    });
    let fallback = rt.block_on(async { FallbackLayer::new(store).layer(leaf.clone()) });
    c.bench_function("zipf_mix/fallback", |b| {
        b.iter_custom(|iters| rt.block_on(zipf_mix(&fallback, &keys, &seq, iters)))
    });
}

fn herd(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let loads = Arc::new(AtomicU64::new(0));
    let store = {
        let loads = loads.clone();
        service_fn(move |_req: SecondaryRequest| {
            loads.fetch_add(1, Ordering::Relaxed);
            async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, CacheError>(Some(Bytes::from_static(b"v")))
            }
        })
    };
    let leaf = Leaf {
        value: None,
        node: NodeAddr::new("127.0.0.1", 7000),
    };
    // No write-back: every herd misses again (a fresh key per herd anyway).
    let layer =
        FallbackLayer::new(store).with_config(FallbackConfig::default().with_write_back(None));
    let svc = rt.block_on(async { layer.layer(leaf) });
    let herds = AtomicU64::new(0);
    c.bench_function("herd_1000_misses", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let h = herds.fetch_add(1, Ordering::Relaxed);
                    let key = Bytes::from(format!("herd:{h}"));
                    let calls: Vec<_> = (0..1000)
                        .map(|_| svc.clone().oneshot(CacheRequest::get(key.clone())))
                        .collect();
                    for out in futures_util::future::join_all(calls).await {
                        let _ = black_box(out);
                    }
                }
                start.elapsed()
            })
        })
    });
    let (l, h) = (loads.load(Ordering::Relaxed), herds.load(Ordering::Relaxed));
    println!(
        "herd_1000_misses: {l} store loads over {h} herds of 1,000 misses ({:.3} per herd)",
        l as f64 / h.max(1) as f64
    );
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    hits(c, &rt);
    mix(c);
    herd(c, &rt);
}

criterion_group! {
    name = fallback;
    // Short enough for a shared 2-core machine.
    config = settings::short(30);
    targets = benches
}
criterion_main!(fallback);
