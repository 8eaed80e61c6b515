//! `GET /metrics` of the running axum example, through a primary stall
//! and its promotion: every slotguard metric is exposed with its type, and
//! `redis_fallback_routing_attempts_total{status}` agrees exactly with the
//! `x-served-by` headers the HTTP client saw.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use slotguard::core::key_slot;
use slotguard_testkit::{ClusterSpec, LocalCluster};

use common::{http, App};

/// Every metric the docs list, with its Prometheus type.
const METRICS: &[(&str, &str)] = &[
    ("redis_fallback_routing_attempts_total", "counter"),
    ("redis_fallback_routing_latency_seconds", "histogram"),
    ("redis_cluster_slots_assigned", "gauge"),
    ("redis_cluster_slots_ok", "gauge"),
    ("slotguard_breaker_state", "gauge"),
    ("slotguard_breaker_transitions_total", "counter"),
    ("slotguard_redirects_total", "counter"),
    ("slotguard_topology_refreshes_total", "counter"),
    ("slotguard_coalesced_total", "counter"),
    ("slotguard_store_loads_total", "counter"),
    ("slotguard_store_breaker_state", "gauge"),
    ("slotguard_near_cache_entries", "gauge"),
    ("slotguard_near_cache_bytes", "gauge"),
    ("slotguard_near_cache_hits_total", "counter"),
    ("slotguard_invalidations_replayed_total", "counter"),
    ("slotguard_write_fences_total", "counter"),
    ("slotguard_writes_refused_total", "counter"),
    ("db_client_operation_duration_seconds", "histogram"),
    (
        "slotguard_failover_first_replica_answer_seconds",
        "histogram",
    ),
    ("slotguard_failover_promotion_seen_seconds", "histogram"),
    ("slotguard_failover_first_write_seconds", "histogram"),
    ("slotguard_slots_unowned_seconds_total", "counter"),
];

/// `# TYPE` lines, and the samples of `redis_fallback_routing_attempts_total`.
fn parse(text: &str) -> (HashMap<String, String>, HashMap<String, u64>) {
    let mut types = HashMap::new();
    let mut attempts = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(ty)) = (it.next(), it.next()) {
                types.insert(name.to_owned(), ty.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("redis_fallback_routing_attempts_total{") {
            let (labels, value) = rest.split_once("} ").unwrap();
            let status = labels
                .split(',')
                .find_map(|kv| kv.strip_prefix("status=\""))
                .unwrap()
                .trim_end_matches('"');
            attempts.insert(status.to_owned(), value.trim().parse().unwrap());
        }
    }
    (types, attempts)
}

fn served_by(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| l.strip_prefix("x-served-by: "))
        .map(|v| v.trim().to_owned())
}

/// The metric status a response with `x-served-by` is counted under.
fn status_of(served: Option<&str>) -> &'static str {
    match served {
        Some("primary") => "primary_hit",
        Some("replica") => "primary_failover",
        Some("secondary") => "secondary_fallback",
        Some("near_cache") => "near_cache",
        Some("client_cache") => "client_cache",
        _ => "error",
    }
}

#[test]
fn metrics_are_scraped_through_a_stall_and_agree_with_what_clients_saw() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let (app, addr) = App::start(Some(cluster.seeds().join(",")));
    let victim = cluster.primary_of_slot(0).unwrap();
    let victim_slots = cluster.slots_of(victim).unwrap();
    let on_victim = |id: usize| {
        let slot = key_slot(format!("item:{id}").as_bytes());
        victim_slots.iter().any(|r| r.contains(&slot))
    };
    let ids: Vec<usize> = (0..30).collect();
    for &id in &ids {
        let (status, _, _) = http(&addr, "PUT", &format!("/items/{id}"), br#"{"v":0}"#);
        assert_eq!(status, 204);
    }
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut get = |id: usize| {
        let (status, head, _) = http(&addr, "GET", &format!("/items/{id}"), b"");
        // No answer at all: the server may or may not have counted it.
        assert_ne!(status, 0, "the example answers every request");
        *seen
            .entry(status_of(served_by(&head).as_deref()).to_owned())
            .or_default() += 1;
    };
    for round in 0..3 {
        for &id in &ids {
            let _ = round;
            get(id);
        }
    }
    // Items of the stalled shard written to the cluster by another client
    // and never read: not in the near-cache, not marked by a write through
    // the app, so during the stall a replica answers them.
    let cold: Vec<usize> = (100..).filter(|&id| on_victim(id)).take(20).collect();
    for &id in &cold {
        cluster
            .command_str(victim, &["SET", &format!("item:{id}"), r#"{"v":0}"#])
            .unwrap();
    }
    cluster.command_str(victim, &["WAIT", "1", "2000"]).unwrap();
    cluster.pause(victim).unwrap();
    for &id in &cold {
        get(id);
    }
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_millis(1500) {
        for &id in ids.iter().filter(|&&id| on_victim(id)) {
            get(id);
        }
    }
    cluster
        .wait_for_failover(victim, Duration::from_secs(20))
        .unwrap();
    // A PUT of the stalled shard's item succeeds once the promotion is
    // visible (its DEL is the first write on the new primary).
    let victim_id = (0..).find(|&id| on_victim(id)).unwrap();
    let promoted = Instant::now();
    loop {
        let (status, _, _) = http(&addr, "PUT", &format!("/items/{victim_id}"), br#"{"v":1}"#);
        if status == 204 {
            break;
        }
        assert!(promoted.elapsed() < Duration::from_secs(20), "PUTs recover");
        for &id in ids.iter().filter(|&&id| on_victim(id)) {
            get(id);
        }
    }
    for &id in &ids {
        get(id);
    }

    let (status, head, body) = http(&addr, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"));
    let text = String::from_utf8(body).unwrap();
    let (types, attempts) = parse(&text);
    let missing: Vec<_> = METRICS
        .iter()
        .filter(|(name, ty)| types.get(*name).map(String::as_str) != Some(*ty))
        .collect();
    let excerpt: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("_bucket"))
        .collect();
    assert!(
        missing.is_empty(),
        "not exposed with their type: {missing:?}\nseen: {seen:?}\n{}",
        excerpt.join("\n")
    );
    let seen: HashMap<String, u64> = seen.into_iter().filter(|(_, n)| *n > 0).collect();
    let attempts: HashMap<String, u64> = attempts.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(attempts, seen, "metric vs x-served-by");
    assert!(
        seen.get("primary_failover").copied().unwrap_or(0) > 0 || seen.contains_key("near_cache")
    );
    // The README's excerpt comes from here (`-- --nocapture`).
    println!("{}", excerpt.join("\n"));
    cluster.resume(victim).unwrap();
    drop(app);
}
