//! Races on one breaker's state machine.

use std::sync::atomic::Ordering;

use slotguard_core::{CacheError, CacheRequest, NodeAddr, Role};

use super::super::config::BreakerConfig;
use super::super::registry::Shared;
use super::*;

#[test]
fn racing_failures_open_a_breaker_once() {
    let shared = Shared::per_node(BreakerConfig {
        minimum_calls: 1_000_000,
        consecutive_failures: 50,
        // no timing in the test: it stays open, and no call is slow
        open_duration: std::time::Duration::from_secs(3600),
        slow_call_duration: std::time::Duration::from_secs(3600),
        ..BreakerConfig::default()
    });
    let req = CacheRequest::get("k").to_node(NodeAddr::new("127.0.0.1", 1), Role::Primary);
    let breaker = shared.breaker_for(&req).unwrap();
    let timeout: Result<(), BoxError> = Err(CacheError::Timeout {
        node: NodeAddr::new("127.0.0.1", 1),
    }
    .into());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    if let Some(permit) = breaker.admit(Instant::now(), false) {
                        permit.finish(&timeout);
                    }
                }
            });
        }
    });
    assert_eq!(shared.counters().opened.load(Ordering::Relaxed), 1);
    assert_eq!(breaker.state(Instant::now()), BreakerState::Open);
    assert!(breaker.admit(Instant::now(), false).is_none());
}

#[test]
fn racing_successes_keep_a_breaker_closed() {
    let shared = Shared::per_node(BreakerConfig {
        minimum_calls: 1,
        // no timing in the test: no call is slow
        slow_call_duration: std::time::Duration::from_secs(3600),
        ..BreakerConfig::default()
    });
    let req = CacheRequest::get("k").to_node(NodeAddr::new("127.0.0.1", 1), Role::Primary);
    let breaker = shared.breaker_for(&req).unwrap();
    let ok: Result<(), BoxError> = Ok(());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..500 {
                    breaker.admit(Instant::now(), false).unwrap().finish(&ok);
                }
            });
        }
    });
    assert_eq!(shared.counters().opened.load(Ordering::Relaxed), 0);
    assert_eq!(breaker.state(Instant::now()), BreakerState::Closed);
}
