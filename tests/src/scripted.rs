//! Reads against the testkit's scripted node, shared by the integrity
//! scenarios and their per-leaf conformance cases: keys `key-{i}` hold
//! [`value_of`]`(i)`.

use std::time::Duration;

use bytes::Bytes;
use slotguard_core::{BoxError, CacheRequest, Leaf, NodeAddr, Role};
use slotguard_testkit::ScriptedNode;
use tower::ServiceExt;

use crate::eventually;

/// The value the scripted node holds under `key-{i}`.
pub fn value_of(i: usize) -> Vec<u8> {
    format!("value-of-key-{i}").into_bytes()
}

/// A scripted node holding `keys` keys `key-{i}` (and `bad`, which a
/// test scripts to answer wrongly), and its address.
pub fn node_with_keys(keys: usize) -> (ScriptedNode, NodeAddr) {
    let node = ScriptedNode::start().unwrap();
    for i in 0..keys {
        node.set(format!("key-{i}"), value_of(i));
    }
    node.set("bad", "the-bad-key's-own-value");
    let addr = node.addr().to_string().parse().unwrap();
    (node, addr)
}

/// Read `key` from the primary at `addr`; the value.
pub async fn get<L: Leaf>(leaf: &L, addr: &NodeAddr, key: &str) -> Result<Option<Bytes>, BoxError> {
    let req = CacheRequest::get(key.to_owned()).to_node(addr.clone(), Role::Primary);
    // Hang guard only: every call has the leaf's own deadline.
    tokio::time::timeout(Duration::from_secs(10), leaf.clone().oneshot(req))
        .await
        .expect("a call never hangs")
        .map(|r| r.value)
}

/// Waits until `key-1` is read from `addr` with its own value again.
pub async fn recovers<L: Leaf>(leaf: &L, addr: &NodeAddr) {
    eventually(
        "the node is used again",
        Duration::from_secs(10),
        || async {
            let v = get(leaf, addr, "key-1").await.ok()?;
            (v.as_deref() == Some(&value_of(1)[..])).then_some(())
        },
    )
    .await;
}
