//! Degradation against a real cluster: a primary stalled (SIGSTOP) or
//! killed (SIGKILL) under load, through the full stack
//! (slot_refresh → redirect → replica_failover → circuit_breaker → leaf),
//! and replica choice by replication-link health.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{classify, CacheError, CacheRequest, Consistency, Failure, NodeAddr, Path};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_node::HealthProber;
use slotguard_testkit::{ClusterSpec, LocalCluster};
use slotguard_tests::{addr, cache_err, eventually, FullStack, Harness};
use tower::ServiceExt;

const DEADLINE: Duration = Duration::from_millis(500);

/// `n` keys on each primary, written through the stack.
async fn seed_keys(h: &Harness, stack: &FullStack, n: usize) -> HashMap<usize, Vec<Bytes>> {
    let mut by_primary = HashMap::new();
    for p in h.cluster.primaries().unwrap() {
        by_primary.insert(p, h.write_keys_of(stack, p, n).await);
    }
    by_primary
}

type Tallies = Arc<Mutex<HashMap<usize, Tally>>>;

#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    failed: Vec<String>,
    by_path: HashMap<&'static str, u64>,
}

/// Closed-loop readers over every shard until `stop`; per-shard tallies.
fn spawn_readers(
    stack: &FullStack,
    keys: &HashMap<usize, Vec<Bytes>>,
    stop: Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Tallies) {
    let tallies: Tallies = Arc::default();
    let all: Vec<(usize, Bytes)> = keys
        .iter()
        .flat_map(|(p, ks)| ks.iter().map(move |k| (*p, k.clone())))
        .collect();
    let all = Arc::new(all);
    let mut workers = Vec::new();
    for w in 0..8usize {
        let (stack, stop, tallies, all) =
            (stack.clone(), stop.clone(), tallies.clone(), all.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(31);
                let (shard, key) = &all[i % all.len()];
                let req = CacheRequest::get(key.clone()).with_timeout(DEADLINE);
                let result = stack.clone().oneshot(req).await;
                let mut t = tallies.lock().unwrap();
                let tally = t.entry(*shard).or_default();
                match result {
                    Ok(resp) => {
                        assert_eq!(
                            resp.value.as_ref(),
                            Some(key),
                            "read returned the value written"
                        );
                        tally.ok += 1;
                        *tally.by_path.entry(resp.served.path.name()).or_default() += 1;
                    }
                    Err(e) => tally.failed.push(e.to_string()),
                }
            }
        }));
    }
    (workers, tallies)
}

async fn write_outcome(stack: &FullStack, key: &Bytes) -> Result<(), (Failure, String)> {
    let req = CacheRequest::set(key.clone(), key.clone(), None).with_timeout(DEADLINE);
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), stack.clone().oneshot(req))
        .await
        .expect("a write never hangs");
    // deadline plus scheduling slack on a loaded machine: "never hangs"
    assert!(started.elapsed() < DEADLINE + Duration::from_secs(2));
    result
        .map(|_| ())
        .map_err(|e| (classify(&e), e.to_string()))
}

enum Fault {
    Stop,
    Kill,
}

async fn primary_fault_under_load(fault: Fault) {
    // Replica failover is what this test measures: with Redis's default
    // `cluster-require-full-coverage yes` every shard answers CLUSTERDOWN
    // from the moment the primary is marked failed until the promotion, and
    // only a secondary path (tests/cluster_down.rs, tests/fallback.rs) can
    // answer then; this stack has none.
    let spec = ClusterSpec::default().with_config("cluster-require-full-coverage", "no");
    let h = Harness::start_with(spec, slotguard_node::NodeConfig::default()).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let keys = seed_keys(&h, &stack, 100).await;
    let victim = h.cluster.primary_of_slot(0).unwrap();
    let victim_key = keys[&victim][0].clone();

    let stop = Arc::new(AtomicBool::new(false));
    let (workers, tallies) = spawn_readers(&stack, &keys, stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut h = h;
    match fault {
        Fault::Stop => h.cluster.pause(victim).unwrap(),
        Fault::Kill => h.cluster.kill(victim).unwrap(),
    }
    let faulted = tokio::time::Instant::now();

    // Writes to the faulted shard fail typed, within their deadline.
    let mut typed_failures = 0;
    loop {
        match write_outcome(&stack, &victim_key).await {
            Ok(()) => break,
            Err((f, msg)) => {
                assert!(
                    matches!(
                        f,
                        Failure::Timeout
                            | Failure::CircuitOpen
                            | Failure::ShardUnavailable
                            | Failure::Connection
                            // sent to the stalled node when its connection
                            // was replaced: it may apply when the node wakes
                            | Failure::Indeterminate
                    ),
                    "write failed with {f:?}: {msg}"
                );
                typed_failures += 1;
            }
        }
        assert!(
            faulted.elapsed() < Duration::from_secs(20),
            "writes recover after the promotion"
        );
    }
    assert!(
        typed_failures > 0,
        "writes to the faulted shard failed before the promotion"
    );
    let promoted = h
        .cluster
        .wait_for_failover(victim, Duration::from_secs(20))
        .unwrap();
    // ... and succeed again once the promotion is visible, nothing restarted.
    for _ in 0..20 {
        write_outcome(&stack, &victim_key)
            .await
            .expect("writes succeed after the promotion");
    }
    // Keep the fault for 10 s in all under read load.
    let left = Duration::from_secs(10).saturating_sub(faulted.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let tallies = tallies.lock().unwrap();
    for (shard, t) in tallies.iter() {
        assert!(
            t.failed.is_empty(),
            "shard {shard}: {} of {} reads failed: {:?}",
            t.failed.len(),
            t.ok + t.failed.len() as u64,
            &t.failed[..t.failed.len().min(5)]
        );
        assert!(t.ok > 0);
    }
    let v = &tallies[&victim];
    assert!(
        v.by_path.get("replica").copied().unwrap_or(0) > 0,
        "the replica answered during the stall: {v:?}"
    );
    println!(
        "victim shard: {v:?}; promoted node {}",
        addr(&h.cluster, promoted)
    );
    match fault {
        Fault::Stop => h.cluster.resume(victim).unwrap(),
        Fault::Kill => h.cluster.restart(victim).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_keeps_every_read_answered() {
    primary_fault_under_load(Fault::Stop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_keeps_every_read_answered() {
    primary_fault_under_load(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_chosen_by_link_health_and_staleness_budget() {
    // The primary stays stalled with no promotion: with Redis's default
    // `cluster-require-full-coverage yes` every node would answer
    // CLUSTERDOWN once it is marked failed, and this test is about which
    // replica answers while the cluster keeps serving.
    let spec = ClusterSpec {
        replicas_per_primary: 2,
        ..ClusterSpec::default()
    }
    .with_config("cluster-require-full-coverage", "no");
    let h = Harness::start_with(spec, slotguard_node::NodeConfig::default()).await;
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = h.full_stack(&refresh);
    let prober = HealthProber::new(&h.leaf, h.topology.clone());
    let primary = h.cluster.primary_of_slot(0).unwrap();
    let (r1, r2) = {
        let r = h.cluster.replicas_of(primary).unwrap();
        (r[0], r[1])
    };
    let key = Bytes::from(h.cluster.key_for_slot_of(primary, 1).unwrap().remove(0));
    stack
        .clone()
        .oneshot(CacheRequest::set(key.clone(), "v", None))
        .await
        .unwrap();
    let cluster: &LocalCluster = &h.cluster;
    for r in [r1, r2] {
        // no promotion: this test is about reading from replicas of a stalled primary
        cluster
            .command_ok(r, &["CONFIG", "SET", "cluster-replica-no-failover", "yes"])
            .unwrap();
        let node = addr(cluster, r);
        eventually(
            "the key reached the replica",
            Duration::from_secs(10),
            || async {
                let req = CacheRequest::get(key.clone())
                    .to_node(node.clone(), slotguard_core::Role::Replica);
                let resp = h.leaf.clone().oneshot(req).await.ok()?;
                resp.value.is_some().then_some(())
            },
        )
        .await;
    }
    // r1 notices a silent primary after 1 s; r2 only after the default 60 s.
    cluster
        .command_ok(r1, &["CONFIG", "SET", "repl-timeout", "1"])
        .unwrap();
    let (a1, a2): (NodeAddr, NodeAddr) = (addr(cluster, r1), addr(cluster, r2));
    cluster.pause(primary).unwrap();

    let health1 = h.topology.health(&a1);
    eventually(
        "r1's link reported down for 2 s",
        Duration::from_secs(30),
        || async {
            prober.probe_once().await;
            (!health1.link_up() && health1.last_io() >= Duration::from_secs(2)).then_some(())
        },
    )
    .await;
    assert!(h.topology.health(&a2).link_up(), "r2's link is still up");

    // ReplicaOk: the linked replica answers, never the unlinked one.
    for _ in 0..10 {
        let resp = stack
            .clone()
            .oneshot(CacheRequest::get(key.clone()).with_timeout(DEADLINE))
            .await
            .unwrap();
        assert_eq!(resp.served.path, Path::Replica);
        assert_eq!(resp.served.node.as_ref(), Some(&a2));
        assert_eq!(resp.value.as_deref(), Some(&b"v"[..]));
    }

    // With r2 out of the picture (its breaker open), r1 answers a StaleOk
    // read only while its staleness fits the budget.
    h.topology
        .report(slotguard_core::controller::BreakerChanged::new(
            &a2,
            slotguard_core::observe::BreakerPhase::Open,
            Some(tokio::time::Instant::now() + Duration::from_secs(3600)),
            false,
        ));
    let stale = |budget| {
        CacheRequest::get(key.clone())
            .with_consistency(Consistency::StaleOk(budget))
            .with_timeout(DEADLINE)
    };
    let resp = stack
        .clone()
        .oneshot(stale(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(resp.served.node.as_ref(), Some(&a1));
    let err = stack
        .clone()
        .oneshot(stale(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            cache_err(&err),
            CacheError::Timeout { .. } | CacheError::CircuitOpen { .. }
        ),
        "no replica within a 1 s budget: the primary's error comes back ({err})"
    );
    h.topology
        .report(slotguard_core::controller::BreakerChanged::new(
            &a2,
            slotguard_core::observe::BreakerPhase::Closed,
            None,
            false,
        ));
    cluster.resume(primary).unwrap();
}

/// Callers retrying in a tight loop against a cluster that is gone get fast
/// typed errors, and their runtime keeps control: fail-fast answers spend
/// tokio's cooperative budget, so a runtime shutting down (a panicking test,
/// a service stopping) can stop tasks that never check a flag.
#[test]
fn a_dead_cluster_never_starves_the_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    struct OnDrop(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let readers = 8;
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    rt.block_on({
        let (dropped, errors) = (dropped.clone(), errors.clone());
        async move {
            let h = Harness::start().await;
            let refresh = h.refresh_layer(RefreshConfig::default());
            let stack = h.full_stack(&refresh);
            let keys = seed_keys(&h, &stack, 5).await;
            drop(h.cluster); // every node killed
            let all: Vec<Bytes> = keys.into_values().flatten().collect();
            for w in 0..readers {
                let (stack, all) = (stack.clone(), all.clone());
                let (guard, errors) = (OnDrop(dropped.clone()), errors.clone());
                tokio::spawn(async move {
                    let _guard = guard;
                    let mut i = w;
                    // Never stops by itself: only the runtime can end it.
                    loop {
                        i += 1;
                        let req =
                            CacheRequest::get(all[i % all.len()].clone()).with_timeout(DEADLINE);
                        if stack.clone().oneshot(req).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            eventually(
                "every reader gets errors",
                Duration::from_secs(10),
                || async { (errors.load(Ordering::Relaxed) > readers * 10).then_some(()) },
            )
            .await;
        }
    });
    // Shutdown drops each task at its next yield; a task that never yields
    // is leaked, and its guard never runs.
    rt.shutdown_timeout(Duration::from_secs(10));
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        readers,
        "every reader was stopped"
    );
}
