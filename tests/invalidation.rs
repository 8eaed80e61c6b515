//! Invalidations that survive failover: a `DEL` acknowledged by a primary
//! that dies before its replica receives it must not bring the old value
//! back after the promotion.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use slotguard_core::{CacheRequest, NodeAddr, Role};
use slotguard_tests::Harness;
use tower::ServiceExt;

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// Not a test: the figures behind the choice of a replay log over `WAIT`
/// (docs/design-notes.md). `cargo test -p slotguard-tests --test
/// invalidation -- --ignored --nocapture measure_wait_cost`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn measure_wait_cost() {
    let h = Harness::start().await;
    let key: &'static str = "{wait}k";
    let req = h.to_primary(CacheRequest::delete(key));
    let primary: NodeAddr = req.node().unwrap().clone();
    const N: usize = 2000;
    let del = || {
        h.leaf
            .clone()
            .oneshot(CacheRequest::delete(key).to_node(primary.clone(), Role::Primary))
    };
    // warm up
    for _ in 0..200 {
        del().await.unwrap();
    }
    let mut plain = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        del().await.unwrap();
        plain.push(t.elapsed());
    }
    let mut waited = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        del().await.unwrap();
        let r = h.leaf.admin(&primary, &["WAIT", "1", "100"]).await.unwrap();
        assert!(matches!(r, slotguard_fred::Frame::Integer(1)), "{r:?}");
        waited.push(t.elapsed());
    }
    // GETs on the same node while another task confirms DELs with WAIT:
    // a WAIT blocks its connection, and the leaf multiplexes one
    // connection per node.
    let get_lat = |n: usize| {
        let (leaf, primary) = (h.leaf.clone(), primary.clone());
        async move {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let req = CacheRequest::get(Bytes::from_static(b"{wait}g"))
                    .to_node(primary.clone(), Role::Primary);
                leaf.clone().oneshot(req).await.unwrap();
                v.push(t.elapsed());
            }
            v
        }
    };
    let mut gets_alone = get_lat(N).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiter = {
        let (leaf, primary, stop) = (h.leaf.clone(), primary.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = CacheRequest::delete(key).to_node(primary.clone(), Role::Primary);
                leaf.clone().oneshot(req).await.unwrap();
                leaf.admin(&primary, &["WAIT", "1", "100"]).await.unwrap();
                n += 1;
            }
            n
        })
    };
    let mut gets_beside_wait = get_lat(N).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let waits = waiter.await.unwrap();
    println!(
        "DEL            p50 {:?} p99 {:?}\nDEL + WAIT 1   p50 {:?} p99 {:?}\nGET alone      p50 {:?} p99 {:?}\nGET beside DEL+WAIT loop ({waits} waits) p50 {:?} p99 {:?}",
        percentile(&mut plain, 0.5),
        percentile(&mut plain, 0.99),
        percentile(&mut waited, 0.5),
        percentile(&mut waited, 0.99),
        percentile(&mut gets_alone, 0.5),
        percentile(&mut gets_alone, 0.99),
        percentile(&mut gets_beside_wait, 0.5),
        percentile(&mut gets_beside_wait, 0.99),
    );
}
