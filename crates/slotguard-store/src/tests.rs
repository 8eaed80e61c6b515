#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use slotguard_core::{classify, BoxError, Failure, SecondaryRequest};
use tower::{Service, ServiceExt};

use super::*;

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
    (dir, store)
}

#[tokio::test]
async fn put_get_delete_round_trip_and_survive_reopen() {
    let (dir, store) = store();
    assert_eq!(store.get("a").await.unwrap(), None);
    store.put("a", "1").await.unwrap();
    store.put("a", "2").await.unwrap();
    store
        .put(&b"bin\x00\xff"[..], &b"\x00\x01"[..])
        .await
        .unwrap();
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some(&b"2"[..]));
    let v = store
        .clone()
        .oneshot(SecondaryRequest::load("a"))
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some(&b"2"[..]));
    drop(store);
    // A real file: a new store on the same path sees the data.
    let again = SqliteStore::open(dir.path().join("s.db")).unwrap();
    assert_eq!(
        again.get(&b"bin\x00\xff"[..]).await.unwrap().as_deref(),
        Some(&b"\x00\x01"[..])
    );
    assert!(again.delete("a").await.unwrap());
    assert!(!again.delete("a").await.unwrap());
    assert_eq!(again.get("a").await.unwrap(), None);
}

#[tokio::test]
async fn a_past_deadline_is_a_typed_timeout() {
    let (_dir, mut store) = store();
    let req = SecondaryRequest::load("a").with_deadline(Instant::now());
    let err = store.ready().await.unwrap().call(req).await.unwrap_err();
    assert!(matches!(err, StoreError::Timeout), "{err:?}");
}

#[tokio::test]
async fn a_full_queue_fails_fast() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(
        dir.path().join("s.db"),
        StoreConfig::default().with_queue(1),
    )
    .unwrap();
    // Many calls created at once against a queue of one: some are refused
    // at once, none hangs, and the queued ones answer.
    let futs: Vec<_> = (0..64).map(|i| store.get(format!("k{i}"))).collect();
    let outs = futures_util::future::join_all(futs).await;
    assert!(outs
        .iter()
        .any(|o| matches!(o, Err(StoreError::Overloaded))));
    assert!(outs.iter().any(|o| matches!(o, Ok(None))));
}

#[test]
fn errors_are_secondary_display_is_lowercase() {
    let e: BoxError = Box::new(StoreError::Timeout);
    // A store error is not a cache error: the fallback layer wraps it.
    assert_eq!(classify(&e), Failure::Other);
    assert_eq!(
        StoreError::Overloaded.to_string(),
        "store is overloaded: request queue full"
    );
    let _ = Duration::ZERO;
}

#[test]
fn a_bad_path_is_a_typed_error() {
    let err = SqliteStore::open("/proc/definitely/not/here.db").unwrap_err();
    assert!(
        matches!(err, StoreError::Io(_) | StoreError::Sqlite(_)),
        "{err:?}"
    );
}
