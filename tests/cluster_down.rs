//! `CLUSTERDOWN` is the cluster's state, not a node's fault: with Redis's
//! default `cluster-require-full-coverage yes`, every shard answers
//! `CLUSTERDOWN` between a primary's failure and its replica's promotion.
//! No per-node breaker of a node that kept answering may open from that.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{classify, BreakerScope, CacheRequest, Failure, NodeAddr};
use slotguard_layers::circuit_breaker::{BreakerConfig, BreakerState, CircuitBreakerLayer};
use slotguard_layers::redirect::RedirectLayer;
use slotguard_layers::replica_failover::ReplicaFailoverLayer;
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_node::{HealthProber, NodeConfig};
use slotguard_testkit::ClusterSpec;
use slotguard_tests::{addr, eventually, Harness};
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusterdown_around_a_promotion_opens_no_breaker_of_a_live_node() {
    let spec = ClusterSpec {
        // Redis's defaults (the testkit writes `no` and `yes`).
        extra_config: vec![
            ("cluster-require-full-coverage".into(), "yes".into()),
            ("cluster-allow-reads-when-down".into(), "no".into()),
        ],
        ..ClusterSpec::default()
    };
    let h = Harness::start_with(spec, NodeConfig::default()).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let breakers =
        CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(h.topology.clone());
    let stack = tower::ServiceBuilder::new()
        .layer(refresh)
        .layer(RedirectLayer::new(h.topology.clone()))
        .layer(ReplicaFailoverLayer::new(h.topology.clone()))
        .layer(breakers.clone())
        .service(h.leaf.clone());
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();

    // 20 keys on each primary.
    let mut keys: Vec<(usize, Bytes)> = Vec::new();
    for p in h.cluster.primaries().unwrap() {
        for k in h.cluster.key_for_slot_of(p, 20).unwrap() {
            let k = Bytes::from(k);
            let req = CacheRequest::set(k.clone(), k.clone(), None);
            stack.clone().oneshot(req).await.unwrap();
            keys.push((p, k));
        }
    }
    let keys = Arc::new(keys);
    let victim = h.cluster.primary_of_slot(0).unwrap();
    let victim_addr = addr(&h.cluster, victim);

    // Closed-loop readers over every shard; count CLUSTERDOWN answers.
    let stop = Arc::new(AtomicBool::new(false));
    let cluster_down = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..8usize {
        let (stack, stop, keys, cluster_down) = (
            stack.clone(),
            stop.clone(),
            keys.clone(),
            cluster_down.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(31);
                let (_, key) = &keys[i % keys.len()];
                let req = CacheRequest::get(key.clone()).with_timeout(Duration::from_millis(500));
                match stack.clone().oneshot(req).await {
                    Ok(resp) => assert_eq!(resp.value.as_ref(), Some(key)),
                    Err(e) if classify(&e) == Failure::ClusterDown => {
                        cluster_down.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        }));
    }
    // Watch every breaker but the stalled node's (whose timeouts may open
    // it, rightly) while the fault lasts.
    let opened: Arc<Mutex<HashSet<NodeAddr>>> = Arc::default();
    let watcher = {
        let (breakers, stop, opened, victim_addr) = (
            breakers.clone(),
            stop.clone(),
            opened.clone(),
            victim_addr.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (scope, state) in breakers.states() {
                    if let BreakerScope::Node(node) = scope {
                        if state != BreakerState::Closed && node != victim_addr {
                            opened.lock().unwrap().insert(node);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    h.cluster.pause(victim).unwrap();
    let promoted = tokio::task::block_in_place(|| {
        h.cluster.wait_for_failover(victim, Duration::from_secs(20))
    })
    .unwrap();
    // Every live node says the cluster is ok again.
    let live: Vec<usize> = (0..h.cluster.len()).filter(|&i| i != victim).collect();
    eventually(
        "cluster_state:ok on every live node",
        Duration::from_secs(20),
        || {
            let ok = live.iter().all(|&i| {
                h.cluster
                    .cluster_info(i)
                    .is_ok_and(|info| info.get("cluster_state").map(String::as_str) == Some("ok"))
            });
            std::future::ready(ok.then_some(()))
        },
    )
    .await;
    // Reads keep going a while after the cluster is back: a breaker opened
    // by the storm would still be refusing now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    watcher.await.unwrap();
    h.cluster.resume(victim).unwrap();

    let seen = cluster_down.load(Ordering::Relaxed);
    println!(
        "CLUSTERDOWN answers: {seen}; promoted {}",
        addr(&h.cluster, promoted)
    );
    assert!(
        seen > 0,
        "the cluster answered CLUSTERDOWN around the promotion (else this test proves nothing)"
    );
    let opened = opened.lock().unwrap();
    assert!(
        opened.is_empty(),
        "breakers of live nodes opened: {opened:?}"
    );
}
