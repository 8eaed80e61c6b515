//! Reports carried out on a topology: what the policy decided is what the
//! cells say afterwards.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::error::CacheError;
use crate::observe::BreakerPhase;
use crate::topology::{NodeView, ShardView};
use crate::{NodeAddr, PatchOutcome};

fn addr(port: u16) -> NodeAddr {
    NodeAddr::new("127.0.0.1", port)
}

/// Node `source`'s view: slots 0..=8191 on `a`, the rest on `b`.
fn two(source: u16, a: u16, b: u16, epoch: u64) -> ClusterView {
    let nv = |port| NodeView {
        addr: addr(port),
        id: None,
        online: true,
    };
    let shard = |lo, hi, port| ShardView {
        slots: vec![(lo, hi)],
        primary: nv(port),
        replicas: vec![],
    };
    ClusterView {
        source: addr(source),
        shards: vec![shard(0, 8191, a), shard(8192, 16383, b)],
        current_epoch: Some(epoch),
        state_ok: Some(true),
    }
}

fn loaded() -> Topology {
    let t = Topology::new();
    t.report(ViewLoaded {
        view: &two(1, 1, 2, 1),
    });
    t
}

fn unreachable(t: &Topology, port: u16) {
    let outcome = Err(CacheError::Connection {
        node: addr(port),
        detail: "reset".into(),
    });
    t.report(CallEnded {
        node: &addr(port),
        started: Instant::now(),
        outcome: &outcome,
    });
}

#[test]
fn faults_fence_writes_and_schedule_one_refresh() {
    let t = loaded();
    for _ in 0..3 {
        unreachable(&t, 1);
    }
    let health = t.health(&addr(1));
    assert!(health.writes_fenced());
    assert_eq!(health.consecutive_failures(), 3);
    assert_eq!(t.refresh_requests(), 3);
    assert_eq!(t.refreshes_scheduled(), 1);
}

#[test]
fn a_moved_storm_before_the_refresher_runs_schedules_one_refresh() {
    let t = loaded();
    for slot in 0..1000 {
        assert_eq!(
            t.report(SlotMoved { slot, to: &addr(2) }),
            PatchOutcome::Patched
        );
    }
    assert_eq!(t.refresh_requests(), 1000);
    assert_eq!(t.refreshes_scheduled(), 1);
    // Taken by the refresher: the next ask schedules the next one.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(t.refresh_requested());
    t.report(StaleMap::Asked);
    assert_eq!(t.refreshes_scheduled(), 2);
}

#[test]
fn a_round_that_hears_the_fenced_primary_lifts_its_fence() {
    let t = loaded();
    unreachable(&t, 1);
    let requested = Instant::now() + Duration::from_millis(1);
    let views = [two(1, 1, 2, 1), two(2, 1, 2, 1)];
    let applied = t.report(RoundFetched {
        requested,
        views: &views,
    });
    assert_eq!(applied.unwrap().lifted, vec![addr(1)]);
    assert!(!t.health(&addr(1)).writes_fenced());
}

#[test]
fn a_round_requested_before_the_fault_lifts_nothing() {
    let t = loaded();
    let requested = Instant::now();
    std::thread::sleep(Duration::from_millis(1));
    unreachable(&t, 1);
    let views = [two(1, 1, 2, 1), two(2, 1, 2, 1)];
    let applied = t.report(RoundFetched {
        requested,
        views: &views,
    });
    assert!(applied.unwrap().lifted.is_empty());
    assert!(t.health(&addr(1)).writes_fenced());
}

#[test]
fn a_minority_view_lifts_nothing() {
    let t = loaded();
    unreachable(&t, 1);
    let requested = Instant::now() + Duration::from_millis(1);
    // The majority reports node 1 failed: outside the majority, fenced.
    let mut failed = two(2, 1, 2, 1);
    failed.shards[0].primary.online = false;
    let views = [two(1, 1, 2, 1), failed.clone(), failed];
    let applied = t.report(RoundFetched {
        requested,
        views: &views,
    });
    assert!(applied.unwrap().lifted.is_empty());
    assert!(!t.health(&addr(1)).in_majority());
    assert!(t.health(&addr(1)).writes_fenced());
    // No usable view: nothing decided.
    assert!(t
        .report(RoundFetched {
            requested,
            views: &[],
        })
        .is_none());
}

#[test]
fn a_breaker_opening_fences_and_refreshes() {
    let t = loaded();
    let until = Instant::now() + Duration::from_secs(60);
    t.report(BreakerChanged {
        node: &addr(2),
        phase: BreakerPhase::HalfOpen,
        open_until: None,
        transition: true,
    });
    assert!(!t.health(&addr(2)).writes_fenced());
    assert_eq!(t.refreshes_scheduled(), 0);
    t.report(BreakerChanged {
        node: &addr(2),
        phase: BreakerPhase::Open,
        open_until: Some(until),
        transition: true,
    });
    let health = t.health(&addr(2));
    assert!(health.breaker_open());
    assert!(health.writes_fenced());
    assert_eq!(t.refreshes_scheduled(), 1);
}
