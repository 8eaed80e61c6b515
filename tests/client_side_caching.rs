//! Client-side caching through the `SlotGuard` handle on a real cluster:
//! a second, independent client writes; once its invalidation arrived, no
//! read returns the old value; after our tracking connection to a node is
//! lost, nothing read through it is served until read again.

// Test helpers outside #[test] fns panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use slotguard::{CacheRequest, NodeAddr, NodeConfig, Path, SlotGuard};
use slotguard_core::invalidation::{Invalidation, InvalidationBus, InvalidationReceiver, Received};
use slotguard_store::SqliteStore;
use slotguard_testkit::{ClusterSpec, LocalCluster};
use slotguard_tests::{eventually, seeds};

struct Setup {
    cluster: LocalCluster,
    guard: SlotGuard,
    bus: InvalidationBus,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    // Our own bus, to see what the leaf publishes (the handle uses it).
    let bus = InvalidationBus::new(4096);
    let guard = SlotGuard::builder(seeds(&cluster))
        .store(store)
        .leaf(NodeConfig::default().with_invalidations(bus.clone()))
        .client_side_caching(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    Setup {
        cluster,
        guard,
        bus,
        _dir: dir,
    }
}

async fn read(guard: &SlotGuard, key: &str) -> (Path, Option<Bytes>) {
    let resp = guard.call(CacheRequest::get(key.to_owned())).await.unwrap();
    (resp.served.path, resp.value)
}

/// Read `key` until the near-cache answers it with `value`.
async fn cached(guard: &SlotGuard, key: &str, value: &str) {
    eventually(
        "the near-cache answers the key",
        Duration::from_secs(10),
        || async {
            let (path, v) = read(guard, key).await;
            if std::env::var("CSC_DEBUG").is_ok() {
                eprintln!("{path:?} {v:?}");
            }
            (path == Path::ClientCache && v.as_deref() == Some(value.as_bytes())).then_some(())
        },
    )
    .await;
}

/// Wait until `primary`'s invalidation of `key` reaches `rx`.
async fn invalidated(rx: &mut InvalidationReceiver, primary: &NodeAddr, key: &str) {
    eventually("the invalidation", Duration::from_secs(10), || {
        let mut got = None;
        while let Some(e) = rx.try_recv() {
            if let Received::Event(Invalidation::Keys { node, keys }) = e {
                if node == *primary && keys.iter().any(|k| k.as_ref() == key.as_bytes()) {
                    got = Some(());
                }
            }
        }
        std::future::ready(got)
    })
    .await;
}

/// The index of `key`'s primary in the cluster.
fn primary_of(s: &Setup, key: &str) -> (usize, NodeAddr) {
    let map = s.guard.topology().load();
    let addr = map
        .primary_for_slot(slotguard::core::key_slot(key.as_bytes()))
        .unwrap()
        .addr
        .clone();
    (s.cluster.index_of(&addr.to_string()).unwrap(), addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_write_is_never_read_stale_once_its_invalidation_arrived() {
    let s = setup().await;
    let key = "csc:{a}";
    s.guard.set(key, "v0", None).await.unwrap();
    let (index, primary) = primary_of(&s, key);
    let mut rx = s.bus.subscribe();
    let mut windows = Vec::new();
    for round in 1..=20u32 {
        let old = format!("v{}", round - 1);
        let new = format!("v{round}");
        cached(&s.guard, key, &old).await;
        while rx.try_recv().is_some() {}
        // the second, independent client: the testkit's own connection
        let written = Instant::now();
        s.cluster
            .command_str(index, &["SET", key, new.as_str()])
            .unwrap();
        // its invalidation arrives on our tracking connection
        invalidated(&mut rx, &primary, key).await;
        windows.push(written.elapsed());
        // the near-cache applies it (another subscriber of the same bus):
        // from the first read that sees the new value on, never the old
        eventually("the new value", Duration::from_secs(10), || async {
            let (_, v) = read(&s.guard, key).await;
            (v.as_deref() == Some(new.as_bytes())).then_some(())
        })
        .await;
        for _ in 0..50 {
            let (path, v) = read(&s.guard, key).await;
            assert_eq!(
                v.as_deref(),
                Some(new.as_bytes()),
                "a stale read ({path:?}) in round {round}"
            );
        }
    }
    windows.sort();
    eprintln!(
        "write by another client → invalidation received: min {:?}, median {:?}, max {:?} over {} writes",
        windows[0],
        windows[windows.len() / 2],
        windows[windows.len() - 1],
        windows.len()
    );
    s.guard.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_read_over_a_lost_tracking_connection_is_served_until_reread() {
    let s = setup().await;
    let key = "csc:{b}";
    s.guard.set(key, "v1", None).await.unwrap();
    let (index, primary) = primary_of(&s, key);
    cached(&s.guard, key, "v1").await;
    let mut rx = s.bus.subscribe();
    // Our connections to the key's primary are killed; the other client
    // then writes at once: that invalidation can reach no one.
    s.cluster
        .command_str(
            index,
            &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        )
        .unwrap();
    s.cluster.command_str(index, &["SET", key, "v2"]).unwrap();
    eventually(
        "the lost connection's Node event",
        Duration::from_secs(10),
        || {
            let mut got = None;
            while let Some(e) = rx.try_recv() {
                if e == Received::Event(Invalidation::Node {
                    node: primary.clone(),
                }) {
                    got = Some(());
                }
            }
            std::future::ready(got)
        },
    )
    .await;
    // No read returns the old value any more (the near-cache subscriber
    // applies the same event; poll past it), and the key is cached again
    // only once re-read through the new tracking connection.
    let first = eventually("a read after the loss", Duration::from_secs(10), || async {
        let (path, v) = read(&s.guard, key).await;
        (path != Path::ClientCache || v.as_deref() != Some(&b"v1"[..])).then_some((path, v))
    })
    .await;
    assert_eq!(first.1.as_deref(), Some(&b"v2"[..]), "{first:?}");
    for _ in 0..200 {
        let (path, v) = read(&s.guard, key).await;
        assert_eq!(
            v.as_deref(),
            Some(&b"v2"[..]),
            "old value served ({path:?})"
        );
    }
    cached(&s.guard, key, "v2").await;
    s.guard.shutdown().await;
}

/// Our own write reads its key back in the same round trip: the next read
/// is answered by the near-cache with the value written, and the read-back
/// tracks the key again, so another client's later write still reaches us
/// as an invalidation (without the read-back, our `SET` would have ended
/// the key's tracking and that write would go unseen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_write_is_kept_and_another_clients_later_write_still_invalidates_it() {
    let s = setup().await;
    let key = "csc:{c}";
    s.guard.set(key, "v0", None).await.unwrap();
    let (index, primary) = primary_of(&s, key);
    cached(&s.guard, key, "v0").await;
    let mut rx = s.bus.subscribe();
    for round in 1..=10u32 {
        let ours = format!("ours{round}");
        s.guard.set(key, ours.clone(), None).await.unwrap();
        assert_eq!(
            read(&s.guard, key).await,
            (Path::ClientCache, Some(Bytes::from(ours.clone()))),
            "round {round}: the value read back answers"
        );
        while rx.try_recv().is_some() {}
        let theirs = format!("theirs{round}");
        s.cluster
            .command_str(index, &["SET", key, theirs.as_str()])
            .unwrap();
        invalidated(&mut rx, &primary, key).await;
        eventually("their value", Duration::from_secs(10), || async {
            let (_, v) = read(&s.guard, key).await;
            (v.as_deref() == Some(theirs.as_bytes())).then_some(())
        })
        .await;
        for _ in 0..20 {
            let (path, v) = read(&s.guard, key).await;
            assert_eq!(
                v.as_deref(),
                Some(theirs.as_bytes()),
                "a stale read ({path:?}) in round {round}"
            );
        }
    }
    s.guard.shutdown().await;
}
