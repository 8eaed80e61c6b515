//! A node's replies are input: hostile or broken ones cost typed errors and a
//! fresh connection, never the process, never a hang, never another
//! request's value. Against the testkit's scripted node, with concurrent
//! traffic on the same connection during every fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::future::join_all;
use slotguard_core::{CacheError, CacheRequest, NodeAddr, Role};
use slotguard_layers::slot_refresh::SlotRefreshLayer;
use slotguard_node::{NodeConfig, NodeService, NodeTopologySource};
use slotguard_testkit::{Action, ScriptedNode};
use slotguard_tests::scripted::{self, get, value_of};
use slotguard_tests::{cache_err, eventually, rss};
use tower::{Layer, ServiceExt};

const KEYS: usize = 64;

fn node_with_keys() -> (ScriptedNode, NodeAddr) {
    scripted::node_with_keys(KEYS)
}

/// Normal GETs of every key, many in flight at once with the bad one:
/// each gets its own value or a typed error, never another key's value.
async fn traffic_with(leaf: &NodeService, addr: &NodeAddr) -> (CacheError, usize) {
    let normal = (0..KEYS).map(|i| async move {
        let got = get(leaf, addr, &format!("key-{i}")).await;
        match got {
            Ok(v) => {
                assert_eq!(
                    v.as_deref(),
                    Some(&value_of(i)[..]),
                    "key-{i} got a value not its own"
                );
                1
            }
            Err(e) => {
                // typed, whatever it is
                let _ = cache_err(&e);
                0
            }
        }
    });
    let bad = async { get(leaf, addr, "bad").await };
    let (bad, ok) = tokio::join!(bad, join_all(normal));
    let bad = match bad {
        Ok(v) => panic!("the scripted reply was accepted as a value: {v:?}"),
        Err(e) => cache_err(&e),
    };
    (bad, ok.into_iter().sum())
}

/// Once the node answers normally, requests to it succeed again.
async fn recovers(leaf: &NodeService, addr: &NodeAddr) {
    scripted::recovers(leaf, addr).await;
    for i in 0..KEYS {
        let v = get(leaf, addr, &format!("key-{i}")).await.unwrap();
        assert_eq!(v.as_deref(), Some(&value_of(i)[..]));
    }
}

async fn scenario(action: Action, expect: fn(&CacheError) -> bool) {
    let (node, addr) = node_with_keys();
    let leaf = NodeService::new(NodeConfig::default());
    // Warm: the connection exists, so the fault hits a live connection.
    recovers(&leaf, &addr).await;
    let before = node.connections_accepted();
    let mem = rss();

    node.script("bad", action.clone());
    let (bad, _ok) = traffic_with(&leaf, &addr).await;
    assert!(expect(&bad), "{action:?}: unexpected error {bad:?}");
    assert!(
        rss() < mem + 64 * 1024 * 1024,
        "{action:?}: memory grew by {} bytes",
        rss() - mem
    );

    node.clear("bad");
    recovers(&leaf, &addr).await;
    assert!(
        node.connections_accepted() > before,
        "{action:?}: the broken connection was replaced"
    );
    // The bad key's own value comes back on the new connection.
    let v = get(&leaf, &addr, "bad").await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"the-bad-key's-own-value"[..]));
}

fn protocol(e: &CacheError) -> bool {
    matches!(e, CacheError::Protocol(_))
}

fn lost(e: &CacheError) -> bool {
    matches!(
        e,
        CacheError::Protocol(_) | CacheError::Connection { .. } | CacheError::Timeout { .. }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_nested_100000_deep_is_a_typed_error() {
    scenario(Action::nested(100_000), protocol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2gib_bulk_header_then_silence_is_refused_at_once() {
    scenario(Action::huge_bulk_header(), protocol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billion_announced_elements_are_refused() {
    scenario(Action::huge_array(1_000_000_000), protocol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_are_a_typed_error() {
    scenario(Action::garbage(), protocol).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_mid_bulk_is_a_typed_error() {
    scenario(Action::cut_bulk(), lost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_of_the_wrong_type_is_a_typed_error() {
    scenario(Action::Reply(b":42\r\n".to_vec()), protocol).await;
}

/// The defect measured in fred: one missing reply, and every later reply
/// went to the request before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_reply_never_hands_a_value_to_another_request() {
    scenario(Action::Skip, lost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_replaced() {
    scenario(Action::Silence, lost).await;
}

/// A skipped reply whose request was abandoned (its caller timed out first):
/// later requests on the same connection still get only their own values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_request_keeps_later_replies_in_place() {
    let (node, addr) = node_with_keys();
    let leaf = NodeService::new(NodeConfig::default());
    recovers(&leaf, &addr).await;
    // A slow reply: its caller gives up, the reply arrives later and must
    // be dropped, not handed to the next request.
    node.script("bad", Action::Delay(Duration::from_millis(300)));
    let req = CacheRequest::get("bad")
        .to_node(addr.clone(), Role::Primary)
        .with_timeout(Duration::from_millis(20));
    let err = leaf.clone().oneshot(req).await.unwrap_err();
    assert!(
        matches!(cache_err(&err), CacheError::Timeout { .. }),
        "{err}"
    );
    node.clear("bad");
    for i in 0..KEYS {
        match get(&leaf, &addr, &format!("key-{i}")).await {
            Ok(v) => assert_eq!(v.as_deref(), Some(&value_of(i)[..])),
            Err(e) => {
                let _ = cache_err(&e);
            }
        }
    }
    recovers(&leaf, &addr).await;
}

/// The routing stack reads its map from the scripted node (CLUSTER SHARDS)
/// and survives a hostile topology reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_routes_through_the_scripted_node() {
    let (node, addr) = node_with_keys();
    let topology = slotguard_core::Topology::new();
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let source = NodeTopologySource::new(&leaf, vec![addr.clone()]);
    let refresh = SlotRefreshLayer::new(topology.clone(), source)
        .load()
        .await
        .unwrap();
    let stack = refresh.layer(leaf.clone());
    for i in 0..KEYS {
        let resp = stack
            .clone()
            .oneshot(CacheRequest::get(format!("key-{i}")))
            .await
            .unwrap();
        assert_eq!(resp.value.as_deref(), Some(&value_of(i)[..]));
    }
    assert!(node.command_count("CLUSTER") >= 1);
}

/// `READONLY` goes once per replica connection, not with every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_is_sent_once_per_replica_connection() {
    let (node, addr) = node_with_keys();
    let leaf = NodeService::new(NodeConfig::default());
    for i in 0..KEYS {
        let req = CacheRequest::get(format!("key-{i}")).to_node(addr.clone(), Role::Replica);
        let resp = leaf.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.value.as_deref(), Some(&value_of(i)[..]));
    }
    assert_eq!(node.command_count("READONLY"), 1);
    assert_eq!(node.command_count("GET"), KEYS);
    // A new connection sends it again, before any read on it.
    node.script("bad", Action::Close);
    let req = CacheRequest::get("bad").to_node(addr.clone(), Role::Replica);
    assert!(leaf.clone().oneshot(req).await.is_err());
    node.clear("bad");
    eventually("replica reads again", Duration::from_secs(10), || async {
        let req = CacheRequest::get("key-1").to_node(addr.clone(), Role::Replica);
        leaf.clone().oneshot(req).await.ok()
    })
    .await;
    assert_eq!(node.command_count("READONLY"), 2);
}

/// Back-pressure: past `max_in_flight` commands outstanding on a node, a
/// call fails at once with `Overloaded`, nothing queued; the others finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_connection_refuses_past_its_bound() {
    let (node, addr) = node_with_keys();
    let leaf = NodeService::new(NodeConfig::default().with_max_in_flight(4));
    recovers(&leaf, &addr).await;
    node.script("bad", Action::Delay(Duration::from_millis(30)));
    // `call` sends at once: these four are in flight before anyone polls.
    let call = |key: &str| {
        let mut leaf = leaf.clone();
        tower::Service::call(
            &mut leaf,
            CacheRequest::get(key.to_owned()).to_node(addr.clone(), Role::Primary),
        )
    };
    let slow: Vec<_> = (0..4).map(|_| call("bad")).collect();
    assert_eq!(leaf.in_flight(&addr), 4);
    let refused = call("key-1").await.unwrap_err();
    assert!(
        matches!(cache_err(&refused), CacheError::Overloaded { .. }),
        "{refused}"
    );
    for s in slow {
        // Its own value, or a timeout on a slow machine: never another's.
        match s.await {
            Ok(r) => assert_eq!(r.value.as_deref(), Some(&b"the-bad-key's-own-value"[..])),
            Err(e) => assert!(matches!(cache_err(&e), CacheError::Timeout { .. }), "{e}"),
        }
    }
    node.clear("bad");
    recovers(&leaf, &addr).await;
}
