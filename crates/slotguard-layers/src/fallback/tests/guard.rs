//! The store guard's composition: what its breaker counts.

use std::time::Duration;

use slotguard_core::{classify, Failure};

use super::*;
use crate::circuit_breaker::BreakerState;

/// A load that waited for a slot past its bound is `Overloaded`, which is
/// the guard's own congestion, not the store's failure: the breaker counts
/// only the timed-out loads.
#[tokio::test(start_paused = true)]
async fn a_wait_for_a_load_slot_is_overloaded_and_no_store_failure() {
    let cluster = FakeCluster::new();
    cluster.set_mode(Mode::Fail(timeout_err()));
    // Every load hangs until its timeout.
    let store = FakeStore::new(Duration::from_secs(3600));
    let layer = FallbackLayer::new(store.service()).with_config(
        FallbackConfig::new()
            .with_store_concurrency(1)
            .with_store_timeout(Duration::from_secs(1))
            .with_store_breaker(StoreBreakerConfig::new(2, Duration::from_secs(60))),
    );
    let svc = stack(&layer, &cluster);
    // One load holds the only slot; two more queue for it, in this order.
    let holder = tokio::spawn(get(&svc, "h"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = tokio::spawn(get(&svc, "w1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(get(&svc, "w2"));

    let e = holder.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(layer.store_breaker_state(), BreakerState::Closed);
    // The slot went to the first in line; the second's wait ran out.
    let e = second.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("overloaded"), "{e}");
    assert_eq!(classify(&e), Failure::Secondary);
    assert_eq!(layer.store_breaker_state(), BreakerState::Closed);
    // The first times out in its turn: two store failures in a row.
    let e = first.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(layer.store_breaker_state(), BreakerState::Open);
    assert_eq!(store.loads(), 2);
}

/// A load the breaker refuses fails at once, without waiting for a load
/// slot: here the only slot is held by the half-open breaker's probe.
#[tokio::test(start_paused = true)]
async fn a_refused_load_does_not_wait_for_a_slot() {
    let cluster = FakeCluster::new();
    cluster.set_mode(Mode::Fail(timeout_err()));
    // Every load hangs until its timeout.
    let store = FakeStore::new(Duration::from_secs(3600));
    let layer = FallbackLayer::new(store.service()).with_config(
        FallbackConfig::new()
            .with_store_concurrency(1)
            .with_store_timeout(Duration::from_secs(1))
            .with_store_breaker(StoreBreakerConfig::new(1, Duration::from_secs(2))),
    );
    let svc = stack(&layer, &cluster);
    let e = get(&svc, "a").await.unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(layer.store_breaker_state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(layer.store_breaker_state(), BreakerState::HalfOpen);
    // The probe takes the only slot and hangs.
    let probe = tokio::spawn(get(&svc, "p"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = get(&svc, "q").await.unwrap_err();
    assert!(e.to_string().contains("store circuit open"), "{e}");
    assert!(!probe.is_finished());
    let e = probe.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(layer.store_breaker_state(), BreakerState::Open);
    assert_eq!(store.loads(), 2);
}
