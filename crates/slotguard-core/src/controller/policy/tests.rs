//! The policy's rules, without I/O: reports in, decisions out.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::topology::{NodeView, ShardView};

fn addr(port: u16) -> NodeAddr {
    NodeAddr::new("127.0.0.1", port)
}

fn nv(port: u16) -> NodeView {
    NodeView {
        addr: addr(port),
        id: None,
        online: true,
    }
}

/// Node `source`'s view: slots 0..=8191 on `a`, the rest on `b`.
fn two(source: u16, a: u16, b: u16, epoch: u64) -> ClusterView {
    ClusterView {
        source: addr(source),
        shards: vec![
            ShardView {
                slots: vec![(0, 8191)],
                primary: nv(a),
                replicas: vec![],
            },
            ShardView {
                slots: vec![(8192, 16383)],
                primary: nv(b),
                replicas: vec![],
            },
        ],
        current_epoch: Some(epoch),
        state_ok: Some(true),
    }
}

fn one(source: u16, owner: u16, epoch: u64, ok: bool) -> ClusterView {
    ClusterView {
        source: addr(source),
        shards: vec![ShardView {
            slots: vec![(0, 16383)],
            primary: nv(owner),
            replicas: vec![],
        }],
        current_epoch: Some(epoch),
        state_ok: Some(ok),
    }
}

/// Replays reports that want a refresh against the pending flag, as the
/// controller does; returns how many refreshes were scheduled.
fn scheduled(wants: impl IntoIterator<Item = bool>, pending: &mut bool) -> usize {
    let mut n = 0;
    for want in wants {
        if want && schedule_refresh(*pending) {
            *pending = true;
            n += 1;
        }
    }
    n
}

#[test]
fn fault_fences_and_schedules_one_refresh() {
    let conn: Result<CacheResponse, CacheError> = Err(CacheError::Connection {
        node: addr(1),
        detail: "reset".into(),
    });
    assert_eq!(
        call(&conn),
        CallVerdict::Fault {
            failure: Failure::Connection,
            fence: true
        }
    );
    // Three such faults before the refresher runs: one refresh.
    let mut pending = false;
    let wants = (0..3).map(|_| matches!(call(&conn), CallVerdict::Fault { fence: true, .. }));
    assert_eq!(scheduled(wants, &mut pending), 1);
    // A read's timeout counts, but fences nothing.
    let timeout = Err(CacheError::Timeout { node: addr(1) });
    assert_eq!(
        call(&timeout),
        CallVerdict::Fault {
            failure: Failure::Timeout,
            fence: false
        }
    );
    for f in [
        Failure::Indeterminate,
        Failure::Protocol,
        Failure::ClusterDown,
    ] {
        assert!(fences_writes(f), "{f:?}");
    }
    // A reply that is no fault proves the node up; the cluster's state
    // says nothing about it.
    let moved = Err(CacheError::Moved {
        slot: 1,
        addr: addr(2),
    });
    assert_eq!(call(&moved), CallVerdict::Up);
    assert_eq!(call(&Err(CacheError::ClusterDown)), CallVerdict::Nothing);
}

#[test]
fn a_round_whose_view_confirms_the_fenced_primary_lifts_it() {
    let views = [two(1, 1, 2, 3), two(2, 1, 2, 3), two(3, 1, 2, 3)];
    let plan = round(&views).unwrap();
    assert!(!plan.again);
    assert!(plan.in_majority(&addr(1)));
    let fault = Instant::now();
    let requested = fault + Duration::from_millis(1);
    assert!(plan.lifts(&addr(1), true, Some(fault), requested));
    // Only faults before the round's request: one during it stays.
    assert!(!plan.lifts(&addr(1), true, Some(requested), fault));
    // A shard without slots confirms nothing.
    assert!(!plan.lifts(&addr(1), false, Some(fault), requested));
    // Nothing to lift without a fence.
    assert!(!plan.lifts(&addr(1), true, None, requested));
}

#[test]
fn a_view_from_a_minority_lifts_nothing() {
    let fault = Instant::now();
    let requested = fault + Duration::from_millis(1);
    // Node 1 answers as primary of its slots, but the majority (newer
    // epoch) follows node 4 there: node 1 is stale, outside the majority.
    let views = [two(1, 1, 2, 2), two(2, 4, 2, 3), two(3, 4, 2, 3)];
    let plan = round(&views).unwrap();
    assert_eq!(plan.chosen.shards[0].primary.addr, addr(4));
    assert!(!plan.in_majority(&addr(1)));
    assert!(!plan.lifts(&addr(1), true, Some(fault), requested));
    // The majority has node 1 as primary but reports it failed.
    let mut failed = two(2, 1, 2, 3);
    failed.shards[0].primary.online = false;
    let views = [two(1, 1, 2, 3), failed.clone(), failed];
    let plan = round(&views).unwrap();
    assert!(!plan.in_majority(&addr(1)));
    assert!(!plan.lifts(&addr(1), true, Some(fault), requested));
    // Node 1 did not answer: the others' word proves nothing about it.
    let views = [two(2, 1, 2, 3), two(3, 1, 2, 3)];
    let plan = round(&views).unwrap();
    assert!(plan.in_majority(&addr(1)));
    assert!(!plan.lifts(&addr(1), true, Some(fault), requested));
}

#[test]
fn a_view_ahead_of_the_chosen_one_asks_for_another_round() {
    // Same epoch, node 3 already knows of a promotion: not stale, ahead.
    let views = [two(1, 1, 2, 3), two(2, 1, 2, 3), two(3, 5, 2, 3)];
    let plan = round(&views).unwrap();
    assert!(plan.again);
    assert!(plan.in_majority(&addr(3)));
    assert!(round(&[]).is_none());
}

#[test]
fn a_moved_storm_schedules_one_refresh() {
    let mut pending = false;
    // 1000 MOVED for different slots, each patched, before the refresher
    // runs: one refresh.
    let wants = (0..1000).map(|_| moved_refreshes(PatchOutcome::Patched));
    assert_eq!(scheduled(wants, &mut pending), 1);
    // Unknown targets too, within the same pending refresh.
    let wants = (0..10).map(|_| moved_refreshes(PatchOutcome::UnknownNode));
    assert_eq!(scheduled(wants, &mut pending), 0);
    // The refresher took it: the next MOVED schedules the next one.
    pending = false;
    assert_eq!(scheduled([true], &mut pending), 1);
    // A map that already knew asks for nothing.
    assert!(!moved_refreshes(PatchOutcome::Unchanged));
}

#[test]
fn a_breaker_opening_fences_and_refreshes() {
    assert_eq!(
        breaker(BreakerPhase::Open, true),
        BreakerVerdict {
            fence: true,
            refresh: true,
            observe: true
        }
    );
    for phase in [BreakerPhase::HalfOpen, BreakerPhase::Closed] {
        let v = breaker(phase, true);
        assert!(!v.fence && !v.refresh && v.observe, "{phase:?}");
    }
    // Re-publishing an open breaker's state decides nothing new.
    let v = breaker(BreakerPhase::Open, false);
    assert!(!v.fence && !v.refresh && !v.observe);
}

#[test]
fn stale_map_symptoms() {
    assert!(stale_map_refreshes(StaleMap::UncoveredSlot { slot: 1 }));
    assert!(stale_map_refreshes(StaleMap::FencedWrite { slot: 1 }));
    assert!(stale_map_refreshes(StaleMap::Asked));
    assert!(stale_map_refreshes(StaleMap::RequestFailed {
        failure: Failure::ClusterDown
    }));
    assert!(!stale_map_refreshes(StaleMap::RequestFailed {
        failure: Failure::Timeout
    }));
    assert!(probe_up(Some(Duration::ZERO)));
    assert!(!probe_up(None));
}

#[test]
fn the_highest_epoch_wins_then_the_majority() {
    // a promotion known to one node so far
    let views = vec![one(1, 1, 9, true), one(2, 2, 3, true), one(3, 2, 3, true)];
    assert_eq!(
        choose_view(&views).unwrap().shards[0].primary.addr.port(),
        1
    );
    // same epoch: the majority
    let views = vec![one(1, 1, 3, true), one(2, 2, 3, true), one(3, 2, 3, true)];
    assert_eq!(
        choose_view(&views).unwrap().shards[0].primary.addr.port(),
        2
    );
}

#[test]
fn a_view_with_uncovered_slots_loses() {
    let mut partial = one(1, 1, 9, true);
    partial.shards[0].slots = vec![(0, 100)];
    let views = vec![partial, one(2, 2, 3, true)];
    assert_eq!(
        choose_view(&views).unwrap().shards[0].primary.addr.port(),
        2
    );
}

#[test]
fn failing_nodes_do_not_vote() {
    let views = vec![one(1, 1, 3, false), one(2, 1, 3, false), one(3, 2, 3, true)];
    assert_eq!(
        choose_view(&views).unwrap().shards[0].primary.addr.port(),
        2
    );
    // ...unless nobody else answered
    let views = vec![one(1, 1, 3, false)];
    assert_eq!(
        choose_view(&views).unwrap().shards[0].primary.addr.port(),
        1
    );
    assert!(choose_view(&[]).is_none());
}

#[test]
fn only_claiming_foreign_slots_makes_a_node_stale() {
    let chosen = two(1, 1, 2, 1);
    // node 3 still thinks it owns the first half (a replaced primary)
    let stale = two(3, 3, 2, 1);
    assert!(claims_more(&stale, &chosen, &addr(3)));
    // node 2 disagrees about node 1's slots only (a migration spreading)
    let mut other = two(2, 4, 2, 1);
    other.shards[0].slots = vec![(0, 100)];
    assert!(!claims_more(&other, &chosen, &addr(2)));
    // node 2 claims a slot of node 1's first (an importing node learns
    // of its new slot before the others): still a primary for the majority
    let mut importing = two(2, 1, 2, 1);
    importing.shards[0].slots = vec![(0, 8190)];
    importing.shards[1].slots = vec![(8191, 16383)];
    assert!(!claims_more(&importing, &chosen, &addr(2)));
}

#[test]
fn ties_go_to_the_highest_epoch() {
    let views = vec![one(1, 1, 3, true), one(2, 2, 4, true)];
    assert_eq!(
        choose_view(&views).unwrap().shards[0].primary.addr.port(),
        2
    );
}
