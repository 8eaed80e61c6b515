//! The axum example on the fred-backed leaf (`SLOTGUARD_LEAF=fred`) against
//! a local cluster whose primary stalls (SIGSTOP) for 6 s under concurrent
//! GETs: every GET is a 200 with its item's body.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use slotguard::core::key_slot;
use slotguard_testkit::{ClusterSpec, LocalCluster};

use common::{http, App};

/// `CLIENT ID` calls on every node: fred's connection set-up sends it, the
/// default leaf's does not, so a count above zero shows fred underneath.
fn client_id_calls(cluster: &LocalCluster) -> u64 {
    (0..cluster.len())
        .filter_map(|i| cluster.info(i, "commandstats").ok())
        .filter_map(|s| s.get("cmdstat_client|id").cloned())
        .filter_map(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn every_get_is_answered_through_a_6s_primary_stall_on_the_fred_leaf() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let before = client_id_calls(&cluster);
    let (app, addr) = App::start_with(
        Some(cluster.seeds().join(",")),
        &[("SLOTGUARD_LEAF", "fred")],
    );
    let addr = Arc::new(addr);
    let victim = cluster.primary_of_slot(0).unwrap();
    let victim_slots = cluster.slots_of(victim).unwrap();
    let ids: Vec<usize> = (0..60).collect();
    assert!(ids.iter().any(|&id| {
        let slot = key_slot(format!("item:{id}").as_bytes());
        victim_slots.iter().any(|r| r.contains(&slot))
    }));
    for &id in &ids {
        let body = format!(r#"{{"v":{id}}}"#);
        let (status, _, _) = http(&addr, "PUT", &format!("/items/{id}"), body.as_bytes());
        assert_eq!(status, 204);
    }
    assert!(
        client_id_calls(&cluster) > before,
        "the app runs on fred's clients"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (gets, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let readers: Vec<_> = (0..3usize)
        .map(|t| {
            let (addr, stop, gets, bad, ids) = (
                addr.clone(),
                stop.clone(),
                gets.clone(),
                bad.clone(),
                ids.clone(),
            );
            std::thread::spawn(move || {
                let mut i = t * 17;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let id = ids[i % ids.len()];
                    let (status, _, body) = http(&addr, "GET", &format!("/items/{id}"), b"");
                    gets.fetch_add(1, Ordering::Relaxed);
                    let v: Option<u64> = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["v"].as_u64());
                    if status != 200 || v != Some(id as u64) {
                        eprintln!(
                            "GET /items/{id}: {status} {:?}",
                            String::from_utf8_lossy(&body)
                        );
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Load before the fault, the 6 s stall, load after it: durations of
    // the scenario, not synchronisation.
    std::thread::sleep(Duration::from_millis(500));
    let during = gets.load(Ordering::SeqCst);
    cluster.pause(victim).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    cluster.resume(victim).unwrap();
    let stalled = gets.load(Ordering::SeqCst) - during;
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let (gets, bad) = (gets.load(Ordering::SeqCst), bad.load(Ordering::SeqCst));
    println!("fred leaf: {gets} GETs ({stalled} during the stall), {bad} not 200 or wrong");
    assert!(stalled > 0, "GETs were answered during the stall");
    assert_eq!(bad, 0, "every GET a 200 with its own body");
    drop(app);
}
