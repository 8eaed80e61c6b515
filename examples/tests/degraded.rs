//! The axum example against a local cluster whose primary is stopped past
//! its promotion, under concurrent GETs and PUTs, once with
//! `cluster-require-full-coverage no` and once with Redis's default `yes`:
//! every GET is a 200 with a body at least as new as the last acknowledged
//! PUT of its item, and PUTs of the stopped shard's items succeed again once
//! the promotion is visible.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slotguard::core::key_slot;
use slotguard_testkit::{ClusterSpec, LocalCluster};

/// Stops the example when the test ends, also on panic.
struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..250 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; (status, body). Status 0: no answer.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, Vec::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return (0, Vec::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

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
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum_app"))
        .env("SLOTGUARD_HTTP", "127.0.0.1:0")
        .env("SLOTGUARD_SEEDS", cluster.seeds().join(","))
        .env_remove("SLOTGUARD_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let app = App(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = Arc::new(
        line.trim()
            .strip_prefix("listening on http://")
            .expect("listen line")
            .to_owned(),
    );

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
        let (status, _) = http(&addr, "PUT", &format!("/items/{id}"), br#"{"v":0}"#);
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
                let (status, body) = http(&addr, "GET", &format!("/items/{id}"), b"");
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
                let (status, _) = http(&addr, "PUT", &format!("/items/{id}"), body.as_bytes());
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
        let (status, _) = http(
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
