//! Network faults between the client and one node, through the testkit's
//! fault proxy in front of a real redis-server: latency with jitter, a
//! black hole, a reset, a reply cut mid-bulk.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{classify, CacheError, CacheRequest, Failure, Path};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_node::{HealthProber, NodeConfig};
use slotguard_testkit::{ClusterSpec, Direction, Faults};
use slotguard_tests::{cache_err, eventually, no_replica_reported_loading, Harness};
use tokio::time::Instant;
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(30);
/// Scheduling slack over a request's own deadline on a loaded, shared
/// machine; the largest overshoot seen is printed.
const SLACK: Duration = Duration::from_millis(500);

fn proxied() -> ClusterSpec {
    ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    }
}

/// Latency 200 ± 50 ms on one primary's replies: every request ends within
/// its deadline, reads of that shard come from its replica, and the other
/// shards are served by their primaries as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_on_one_primary_sends_its_reads_to_the_replica_and_spares_the_rest() {
    let h = Harness::start_with(proxied(), NodeConfig::default()).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let slow = h.cluster.primary_of_slot(0).unwrap();
    let slow_addr = h.cluster.addr(slow);
    let mut keys: Vec<(usize, Bytes)> = Vec::new();
    for p in h.cluster.primaries().unwrap() {
        for k in h.cluster.key_for_slot_of(p, 20).unwrap() {
            let k = Bytes::from(k);
            stack
                .clone()
                .oneshot(CacheRequest::set(k.clone(), k.clone(), None))
                .await
                .unwrap();
            keys.push((p, k));
        }
    }
    // The replica must hold the keys before its reads are compared.
    h.cluster.command_ok(slow, &["WAIT", "1", "2000"]).unwrap();
    no_replica_reported_loading(&h.cluster).await;
    h.cluster.proxy(slow).unwrap().set(
        Direction::ToClient,
        Faults::default().with_latency(Duration::from_millis(200), Duration::from_millis(50)),
    );
    let deadline = Duration::from_millis(400);
    let mut paths: HashMap<(bool, &'static str), u64> = HashMap::new();
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        for (p, k) in &keys {
            let sent = Instant::now();
            let req = CacheRequest::get(k.clone()).with_deadline(sent + deadline);
            let resp = stack.clone().oneshot(req).await;
            worst = worst.max(sent.elapsed().saturating_sub(deadline));
            assert!(
                sent.elapsed() <= deadline + SLACK,
                "a read took {:?} with a {deadline:?} deadline",
                sent.elapsed()
            );
            let resp = resp.unwrap_or_else(|e| panic!("round {round}: read of shard {p}: {e}"));
            assert_eq!(resp.value.as_ref(), Some(k));
            let on_slow = *p == slow;
            let node = resp.served.node.as_ref().map(ToString::to_string);
            if !on_slow {
                // Other shards unaffected: answered by the cluster as before
                // (their primary; on a busy machine a hedged read may be
                // answered by that primary's replica first).
                assert!(
                    matches!(resp.served.path, Path::Primary | Path::Replica),
                    "other shards unaffected: {:?}",
                    resp.served
                );
            }
            if on_slow && resp.served.path == Path::Replica {
                assert_ne!(node.as_deref(), Some(slow_addr.as_str()));
            }
            *paths.entry((on_slow, resp.served.path.name())).or_default() += 1;
        }
    }
    println!("served (slow shard?, path): {paths:?}; worst overshoot {worst:?}");
    assert!(
        paths.get(&(true, "replica")).copied().unwrap_or(0) > 0,
        "reads of the slow shard went to its replica"
    );
    // Writes to the slow shard are bounded by their deadline too.
    let key = keys.iter().find(|(p, _)| *p == slow).unwrap().1.clone();
    for _ in 0..5 {
        let sent = Instant::now();
        let req = CacheRequest::set(key.clone(), key.clone(), None).with_deadline(sent + deadline);
        let out = stack.clone().oneshot(req).await;
        assert!(sent.elapsed() <= deadline + SLACK);
        if let Err(e) = out {
            assert!(
                matches!(
                    classify(&e),
                    Failure::Indeterminate | Failure::ShardUnavailable | Failure::CircuitOpen
                ),
                "{e}"
            );
        }
    }
    h.cluster.proxy(slow).unwrap().clear();
}

/// A black hole is caught by the deadline and the connection replaced; a
/// reset fails fast; a reply cut mid-bulk is a typed error and the next
/// request on that node gets its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_reset_and_cut_reply_are_told_apart() {
    let config = NodeConfig::default().with_command_timeout(Duration::from_millis(300));
    let h = Harness::start_with(proxied(), config).await;
    let node = h.cluster.primary_of_slot(0).unwrap();
    let proxy = h.cluster.proxy(node).unwrap();
    let key = Bytes::from(h.cluster.key_for_slot_of(node, 1).unwrap().remove(0));
    let big = Bytes::from(vec![b'v'; 64 * 1024]);
    let get = || h.to_primary(CacheRequest::get(key.clone()));
    h.leaf
        .clone()
        .oneshot(h.to_primary(CacheRequest::set(key.clone(), big.clone(), None)))
        .await
        .unwrap();

    // Black hole: the deadline answers, not TCP keepalive (minutes).
    proxy.set(Direction::ToClient, Faults::default().with_black_hole());
    let dialled = proxy.accepted();
    let sent = Instant::now();
    let err = h.leaf.clone().oneshot(get()).await.unwrap_err();
    assert!(
        matches!(cache_err(&err), CacheError::Timeout { .. }),
        "{err}"
    );
    assert!(sent.elapsed() <= Duration::from_millis(300) + SLACK);
    // The connection that lost its reply is replaced (a new one is dialled).
    eventually("the stalled connection replaced", WAIT, || async {
        let _ = h.leaf.clone().oneshot(get()).await;
        (proxy.accepted() > dialled).then_some(())
    })
    .await;
    proxy.clear();
    eventually("reads again after the black hole", WAIT, || async {
        let r = h.leaf.clone().oneshot(get()).await.ok()?;
        assert_eq!(r.value.as_ref(), Some(&big), "its own reply");
        Some(())
    })
    .await;

    // Reset: typed as a connection failure, not a timeout.
    proxy.set_refuse(true);
    let err = eventually("a reset seen", WAIT, || async {
        h.leaf.clone().oneshot(get()).await.err()
    })
    .await;
    assert!(
        matches!(cache_err(&err), CacheError::Connection { .. }),
        "a reset is a connection failure: {err}"
    );
    proxy.set_refuse(false);
    eventually("reads again after the reset", WAIT, || async {
        h.leaf.clone().oneshot(get()).await.ok()
    })
    .await;

    // A reply cut after 1,000 of its 64 KiB.
    proxy.set(
        Direction::ToClient,
        Faults::default().with_close_after(1000),
    );
    let err = h.leaf.clone().oneshot(get()).await.unwrap_err();
    assert!(
        matches!(
            cache_err(&err),
            CacheError::Connection { .. } | CacheError::Protocol(_)
        ),
        "a cut reply is a typed error: {err}"
    );
    proxy.clear();
    // The next request on that node gets its own, whole reply.
    let other = Bytes::from(h.cluster.key_for_slot_of(node, 2).unwrap().remove(1));
    h.cluster
        .command_ok(
            node,
            &["SET", std::str::from_utf8(&other).unwrap(), "small"],
        )
        .unwrap();
    eventually("the next request answered", WAIT, || async {
        let r = h
            .leaf
            .clone()
            .oneshot(h.to_primary(CacheRequest::get(other.clone())))
            .await
            .ok()?;
        assert_eq!(r.value.as_deref(), Some(&b"small"[..]), "its own reply");
        Some(())
    })
    .await;
    let r = h.leaf.clone().oneshot(get()).await.unwrap();
    assert_eq!(r.value.as_ref(), Some(&big));
}
