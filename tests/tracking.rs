//! RESP3 client tracking on the leaf's node connections: `invalidate`
//! pushes reach the invalidation bus; every (re)connect re-enables tracking
//! and says the node's keys may have changed unseen.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use slotguard_core::invalidation::{Invalidation, InvalidationBus, InvalidationReceiver, Received};
use slotguard_core::{BoxError, CacheRequest, NodeAddr, Role};
use slotguard_node::{NodeConfig, NodeService};
use slotguard_testkit::{Action, ScriptedNode};
use slotguard_tests::{eventually, Harness};
use tower::ServiceExt;

async fn get(leaf: &NodeService, addr: &NodeAddr, key: &str) -> Result<Option<Bytes>, BoxError> {
    let req = CacheRequest::get(key.to_owned())
        .to_node(addr.clone(), Role::Primary)
        .with_timeout(Duration::from_secs(2));
    Ok(leaf.clone().oneshot(req).await?.value)
}

/// The next event within a deadline.
async fn next(rx: &mut InvalidationReceiver) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an invalidation event in time")
        .expect("the bus is open")
}

fn scripted() -> (ScriptedNode, NodeAddr, InvalidationBus, NodeService) {
    let node = ScriptedNode::start().unwrap();
    node.speak_resp3(true);
    node.set("a", "1");
    let addr: NodeAddr = node.addr().to_string().parse().unwrap();
    let bus = InvalidationBus::new(64);
    let leaf = NodeService::new(NodeConfig::default().with_invalidations(bus.clone()));
    (node, addr, bus, leaf)
}

#[tokio::test]
async fn invalidate_pushes_reach_the_bus_and_replies_stay_in_order() {
    let (node, addr, bus, leaf) = scripted();
    let mut rx = bus.subscribe();
    assert_eq!(
        get(&leaf, &addr, "a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    // the connect: tracking was enabled, the node's keys flushed, and the
    // connection says it tracks
    assert_eq!(node.command_count("CLIENT"), 1);
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Node { node: addr.clone() })
    );
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Tracking { node: addr.clone() })
    );
    // a push right before a reply: published, and the reply still goes to
    // its own command
    node.script(
        "p",
        Action::Reply(
            b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nv\r\n".to_vec(),
        ),
    );
    assert_eq!(
        get(&leaf, &addr, "p").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    match next(&mut rx).await {
        Received::Event(Invalidation::Keys { node, keys }) => {
            assert_eq!(node, addr);
            assert_eq!(
                keys,
                vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]
            );
        }
        other => panic!("{other:?}"),
    }
    // a null key list (FLUSHALL): the whole node
    node.script(
        "f",
        Action::Reply(b">2\r\n$10\r\ninvalidate\r\n_\r\n$-1\r\n".to_vec()),
    );
    assert_eq!(get(&leaf, &addr, "f").await.unwrap(), None);
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Node { node: addr.clone() })
    );
    // another kind of push is not an invalidation
    node.script(
        "m",
        Action::Reply(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n$1\r\nw\r\n".to_vec()),
    );
    assert_eq!(
        get(&leaf, &addr, "m").await.unwrap().as_deref(),
        Some(&b"w"[..])
    );
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn tracking_is_enabled_again_on_every_reconnect() {
    let (node, addr, bus, leaf) = scripted();
    let mut rx = bus.subscribe();
    get(&leaf, &addr, "a").await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Node { node: addr.clone() })
    );
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Tracking { node: addr.clone() })
    );
    node.script("x", Action::Close);
    get(&leaf, &addr, "x").await.unwrap_err();
    node.clear("x");
    // the lost connection says so ...
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Node { node: addr.clone() })
    );
    // ... and the next one enables tracking again, and says so too
    eventually(
        "the node is used again",
        Duration::from_secs(10),
        || async { get(&leaf, &addr, "a").await.ok().flatten().map(|_| ()) },
    )
    .await;
    assert_eq!(node.command_count("CLIENT"), 2);
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Node { node: addr.clone() })
    );
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Tracking { node: addr.clone() })
    );
}

#[tokio::test]
async fn a_resp2_node_gets_no_tracking_but_still_flushes_on_connect() {
    let (node, addr, bus, leaf) = scripted();
    node.speak_resp3(false);
    let mut rx = bus.subscribe();
    assert_eq!(
        get(&leaf, &addr, "a").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(node.command_count("CLIENT"), 0);
    assert_eq!(
        next(&mut rx).await,
        Received::Event(Invalidation::Node { node: addr.clone() })
    );
    // no `Tracking`: nothing read through it is trusted as tracked
    assert!(rx.try_recv().is_none());
}

#[tokio::test]
async fn without_a_bus_nothing_is_tracked() {
    let (node, addr, _bus, _) = scripted();
    let leaf = NodeService::new(NodeConfig::default());
    get(&leaf, &addr, "a").await.unwrap();
    assert_eq!(node.command_count("CLIENT"), 0);
}

/// A real server: a write from another client invalidates a key this
/// client read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_another_client_invalidates_a_key_this_client_read() {
    let bus = InvalidationBus::new(1024);
    let h = Harness::start_with(
        slotguard_testkit::ClusterSpec::default(),
        NodeConfig::default().with_invalidations(bus.clone()),
    )
    .await;
    let mut rx = bus.subscribe();
    let key = "tracked:{1}";
    let req = h.to_primary(CacheRequest::set(key, "v1", None));
    let primary = req.node().unwrap().clone();
    h.leaf.clone().oneshot(req).await.unwrap();
    // this client reads it: the server now tracks it for this connection
    let resp = h
        .leaf
        .clone()
        .oneshot(h.to_primary(CacheRequest::get(key)))
        .await
        .unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"v1"[..]));
    // another client writes it (the testkit's own connection)
    let index = h.cluster.index_of(&primary.to_string()).unwrap();
    h.cluster.command_str(index, &["SET", key, "v2"]).unwrap();
    let got = eventually(
        "the invalidation for the key",
        Duration::from_secs(10),
        || {
            let mut found = None;
            while let Some(event) = rx.try_recv() {
                if let Received::Event(Invalidation::Keys { node, keys }) = event {
                    if keys.iter().any(|k| k.as_ref() == key.as_bytes()) {
                        found = Some(node);
                    }
                }
            }
            std::future::ready(found)
        },
    )
    .await;
    assert_eq!(got, primary);
}

/// Issue 9, acceptance 5 (second half): a write from another client evicts
/// this client's near-cache entry, through the tracking invalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_from_another_client_evicts_the_near_cache_entry() {
    use slotguard_core::{Path, SecondaryRequest};
    use slotguard_layers::fallback::{FallbackConfig, FallbackLayer, NearCacheConfig};
    use slotguard_layers::slot_refresh::RefreshConfig;
    use tower::Layer;

    let bus = InvalidationBus::new(1024);
    let h = Harness::start_with(
        slotguard_testkit::ClusterSpec::default(),
        NodeConfig::default().with_invalidations(bus.clone()),
    )
    .await;
    // Near-cache entries answer healthy reads for 30 s: only an
    // invalidation makes the next read go to the cluster sooner.
    let near = NearCacheConfig::default()
        .with_admission(1, Duration::from_secs(10))
        .with_fresh_for(Duration::from_secs(30))
        // the fresh_for path, not client-side caching (tests/client_side_caching.rs)
        .with_tracked_for(Duration::ZERO);
    let store =
        tower::service_fn(|_req: SecondaryRequest| async { Ok::<Option<Bytes>, BoxError>(None) });
    let fallback = FallbackLayer::new(store)
        .with_config(FallbackConfig::default().with_near_cache(Some(near)))
        .with_invalidations(&bus);
    let refresh = h.refresh_layer(RefreshConfig::default());
    let stack = fallback.layer(h.full_stack(&refresh));
    fallback.start();
    let key = "near:{7}";
    stack
        .clone()
        .oneshot(CacheRequest::set(key, "v1", None))
        .await
        .unwrap();
    let read = || {
        let stack = stack.clone();
        async move {
            stack
                .oneshot(CacheRequest::get(key).with_timeout(Duration::from_secs(2)))
                .await
                .unwrap()
        }
    };
    eventually("a near-cache hit", Duration::from_secs(10), || async {
        let resp = read().await;
        assert_eq!(resp.value.as_deref(), Some(&b"v1"[..]));
        (resp.served.path == Path::NearCache).then_some(())
    })
    .await;
    // another client writes the key
    let primary = h
        .to_primary(CacheRequest::get(key))
        .node()
        .unwrap()
        .to_string();
    let index = h.cluster.index_of(&primary).unwrap();
    h.cluster.command_str(index, &["SET", key, "v2"]).unwrap();
    let resp = eventually("the new value", Duration::from_secs(10), || async {
        let resp = read().await;
        (resp.value.as_deref() == Some(&b"v2"[..])).then_some(resp)
    })
    .await;
    assert_ne!(resp.served.path, Path::NearCache);
}
