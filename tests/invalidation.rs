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
        assert!(matches!(r, slotguard_node::Frame::Integer(1)), "{r:?}");
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

/// Whether node `index` holds `key`, asked directly (`KEYS` needs no
/// routing, so a replica answers too).
fn holds(cluster: &slotguard_testkit::LocalCluster, index: usize, key: &str) -> bool {
    let mut pattern = String::new();
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    let reply = cluster.command_str(index, &["KEYS", &pattern]).unwrap();
    reply.as_array().is_some_and(|a| !a.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_lost_in_a_failover_does_not_bring_the_old_value_back() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    use slotguard_core::{classify, Failure, Path};
    use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
    use slotguard_layers::invalidation::InvalidationLogLayer;
    use slotguard_layers::redirect::RedirectLayer;
    use slotguard_layers::replica_failover::ReplicaFailoverLayer;
    use slotguard_layers::slot_refresh::RefreshConfig;
    use slotguard_node::{HealthProber, NodeConfig};
    use slotguard_testkit::ClusterSpec;
    use slotguard_tests::eventually;

    let spec = ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    };
    let mut h = Harness::start_with(spec, NodeConfig::default()).await;
    let log = InvalidationLogLayer::new(h.topology.clone());
    let stack = tower::ServiceBuilder::new()
        .layer(log.clone())
        .layer(h.refresh_layer(RefreshConfig::default()))
        .layer(RedirectLayer::new(h.topology.clone()))
        .layer(ReplicaFailoverLayer::new(h.topology.clone()))
        .layer(
            CircuitBreakerLayer::per_node(BreakerConfig::default())
                .with_topology(h.topology.clone()),
        )
        .service(h.leaf.clone());
    log.start();
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let victim = h.cluster.primary_of_slot(0).unwrap();
    let replica = h.cluster.replicas_of(victim).unwrap()[0];
    let key = h.cluster.key_for_slot_of(victim, 1).unwrap().remove(0);
    let k = Bytes::from(key.clone());

    stack
        .clone()
        .oneshot(CacheRequest::set(k.clone(), "old", None))
        .await
        .unwrap();
    let cluster = &h.cluster;
    eventually("the replica has the value", Duration::from_secs(10), || {
        std::future::ready(holds(cluster, replica, &key).then_some(()))
    })
    .await;

    // Cut the replication stream: the primary's proxy black-holes the
    // replica's connections (they come from its own loopback address).
    let ip = cluster.source_ip(replica).unwrap();
    cluster.proxy(victim).unwrap().cut_peer(ip, true);
    eventually(
        "the primary lost its replica link",
        Duration::from_secs(10),
        || {
            let info = cluster.info(victim, "replication").unwrap_or_default();
            std::future::ready(
                (info.get("connected_slaves").map(String::as_str) == Some("0")).then_some(()),
            )
        },
    )
    .await;

    // The DEL is acknowledged by the primary ... Cutting the peer reset
    // every open connection of the primary's proxy, the stack's included:
    // a DEL that meets the reset comes back
    // `Indeterminate`, and the write is then fenced (or the breaker opens)
    // until a refresh confirms the primary. A DEL is idempotent: it is sent
    // again, as an application would.
    let give_up = Instant::now() + Duration::from_secs(10);
    let resp = loop {
        match stack.clone().oneshot(CacheRequest::delete(k.clone())).await {
            Ok(resp) => break resp,
            Err(e)
                if matches!(
                    classify(&e),
                    Failure::Indeterminate
                        | Failure::Connection
                        | Failure::ShardUnavailable
                        | Failure::CircuitOpen
                ) && Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the delete failed: {e}"),
        }
    };
    assert_eq!(resp.served.path, Path::Primary);
    assert!(resp.deleted());
    assert!(!holds(cluster, victim, &key));
    // ... and never reaches the replica.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        holds(cluster, replica, &key),
        "the replica still holds the deleted value"
    );

    // Readers through the stack from now on, across the failover.
    let stop = Arc::new(AtomicBool::new(false));
    let resurrected = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (stack, k, stop, resurrected, answered) = (
                stack.clone(),
                k.clone(),
                stop.clone(),
                resurrected.clone(),
                answered.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let req = CacheRequest::get(k.clone()).with_timeout(Duration::from_millis(500));
                    match stack.clone().oneshot(req).await {
                        Ok(resp) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            if resp.value.is_some() {
                                resurrected.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => assert!(
                            !matches!(classify(&e), Failure::Other),
                            "typed errors only: {e}"
                        ),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();

    h.cluster.kill(victim).unwrap();
    let promoted = tokio::task::block_in_place(|| {
        h.cluster.wait_for_failover(victim, Duration::from_secs(20))
    })
    .unwrap();
    assert_eq!(promoted, replica);
    // The replay reaches the new primary: the old value is gone for good.
    let cluster = &h.cluster;
    eventually(
        "the delete replayed on the new primary",
        Duration::from_secs(20),
        || std::future::ready((!holds(cluster, promoted, &key)).then_some(())),
    )
    .await;
    // The replayer counts a replay once its DEL was answered: a moment
    // after the key is gone on the server.
    eventually("the replay counted", Duration::from_secs(5), || {
        std::future::ready((log.replayed_total() >= 1).then_some(()))
    })
    .await;
    // Reads go on a while after the promotion.
    let before = answered.load(Ordering::Relaxed);
    eventually(
        "reads answered after the promotion",
        Duration::from_secs(10),
        || std::future::ready((answered.load(Ordering::Relaxed) > before + 20).then_some(())),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    println!(
        "reads answered {}, distrusted {}, replayed {}",
        answered.load(Ordering::Relaxed),
        log.distrusted_total(),
        log.replayed_total()
    );
    assert_eq!(
        resurrected.load(Ordering::Relaxed),
        0,
        "a read returned the deleted value"
    );
}
