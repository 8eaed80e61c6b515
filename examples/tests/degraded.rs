//! The axum example against a local cluster whose primary is stopped past
//! its promotion, under concurrent GETs and PUTs, once with
//! `cluster-require-full-coverage no` and once with Redis's default `yes`:
//! every GET is a 200 with a body at least as new as the last acknowledged
//! PUT of its item, and PUTs of the stopped shard's items succeed again once
//! the promotion is visible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slotguard::core::key_slot;
use slotguard_testkit::{ClusterSpec, LocalCluster};

use common::{http, App};

fn version_of(body: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v["v"].as_u64().unwrap()
}

fn run(full_coverage: &str) {
    let spec = ClusterSpec {
        extra_config: vec![("cluster-require-full-coverage".into(), full_coverage.into())],
        ..ClusterSpec::default()
    };
    let cluster = LocalCluster::start(spec).unwrap();
    let (app, addr) = App::start(Some(cluster.seeds().join(",")));
    let addr = Arc::new(addr);

    // Items spread over the shards; which ones live on the victim.
    let victim = cluster.primary_of_slot(0).unwrap();
    let victim_slots = cluster.slots_of(victim).unwrap();
    let on_victim = |id: usize| {
        let slot = key_slot(format!("item:{id}").as_bytes());
        victim_slots.iter().any(|r| r.contains(&slot))
    };
    let ids: Vec<usize> = (0..60).collect();
    assert!(ids.iter().any(|&id| on_victim(id)));
    // Written only by the recovery loop below (its own versions).
    let victim_id = (1000..).find(|&id| on_victim(id)).unwrap();
    let acked: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    for &id in ids.iter().chain([&victim_id]) {
        let (status, _, _) = http(&addr, "PUT", &format!("/items/{id}"), br#"{"v":0}"#);
        assert_eq!(status, 204);
        acked.lock().unwrap().insert(id, 0);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (gets, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut threads = Vec::new();
    for t in 0..3usize {
        let (addr, acked, stop, gets, bad, ids) = (
            addr.clone(),
            acked.clone(),
            stop.clone(),
            gets.clone(),
            bad.clone(),
            ids.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut i = t * 17;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = ids[i % ids.len()];
                let floor = acked.lock().unwrap()[&id];
                let (status, _, body) = http(&addr, "GET", &format!("/items/{id}"), b"");
                gets.fetch_add(1, Ordering::Relaxed);
                if status != 200 || version_of(&body) < floor {
                    eprintln!(
                        "GET /items/{id}: {status} {:?} (floor {floor})",
                        String::from_utf8_lossy(&body)
                    );
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let writer = {
        let (addr, acked, stop, ids) = (addr.clone(), acked.clone(), stop.clone(), ids.clone());
        std::thread::spawn(move || {
            let mut version: HashMap<usize, u64> = HashMap::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let id = ids[(i * 7) % ids.len()];
                let n = version.entry(id).or_default();
                *n += 1;
                let body = format!(r#"{{"v":{n}}}"#);
                let (status, _, _) = http(&addr, "PUT", &format!("/items/{id}"), body.as_bytes());
                if status == 204 {
                    let mut acked = acked.lock().unwrap();
                    let a = acked.get_mut(&id).unwrap();
                    *a = (*a).max(*n);
                }
                // pacing of the write load, not synchronisation
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    cluster.pause(victim).unwrap();
    cluster
        .wait_for_failover(victim, Duration::from_secs(20))
        .unwrap();
    // PUTs of the stopped shard's items succeed again once the promotion
    // is visible to the app.
    let promoted = Instant::now();
    let mut n = 0u64;
    loop {
        n += 1;
        let body = format!(r#"{{"v":{n}}}"#);
        let (status, _, _) = http(
            &addr,
            "PUT",
            &format!("/items/{victim_id}"),
            body.as_bytes(),
        );
        if status == 204 {
            let mut acked = acked.lock().unwrap();
            let a = acked.get_mut(&victim_id).unwrap();
            *a = (*a).max(n);
            break;
        }
        assert!(
            promoted.elapsed() < Duration::from_secs(20),
            "PUTs recover after the promotion (last status {status})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    writer.join().unwrap();
    cluster.resume(victim).unwrap();
    let (gets, bad) = (gets.load(Ordering::SeqCst), bad.load(Ordering::SeqCst));
    println!("full coverage {full_coverage}: {gets} GETs, {bad} not 200 or stale");
    assert!(gets > 0);
    assert_eq!(
        bad, 0,
        "every GET a 200, none older than the last acknowledged PUT"
    );
    drop(app);
}

#[test]
fn gets_stay_200_and_fresh_through_a_promotion_without_full_coverage() {
    run("no");
}

#[test]
fn gets_stay_200_and_fresh_through_a_promotion_with_full_coverage() {
    run("yes");
}
