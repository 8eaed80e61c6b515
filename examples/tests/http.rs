//! The axum example, run as a user would: start the binary, talk HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{http, App};

#[test]
fn the_axum_example_serves_items_over_http() {
    let (app, addr) = App::start(None);

    let (status, _, _) = http(&addr, "GET", "/items/42", b"");
    assert_eq!(status, 404, "no item yet");
    // Any JSON, returned byte for byte (spacing and key order kept).
    let first = br#"{ "name": "ada", "tags": ["a", 1, null] }"#;
    let (status, _, _) = http(&addr, "PUT", "/items/42", first);
    assert_eq!(status, 204);
    let (status, head, body) = http(&addr, "GET", "/items/42", b"");
    assert_eq!(status, 200);
    assert_eq!(body, first);
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: application/json"), "{head}");
    // The first read was a miss: loaded from SQLite (and written back).
    assert!(head.contains("x-served-by: secondary"), "{head}");
    // Read again until the write-back is visible: the cluster answers.
    let mut from_cluster = false;
    for _ in 0..100 {
        let (status, head, body) = http(&addr, "GET", "/items/42", b"");
        assert_eq!((status, body.as_slice()), (200, &first[..]));
        if head.to_ascii_lowercase().contains("x-served-by: primary") {
            from_cluster = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(from_cluster, "the write-back reached the cluster");
    // A new body replaces the cached one at once.
    let second = br#"[1,2,3]"#;
    let (status, _, _) = http(&addr, "PUT", "/items/42", second);
    assert_eq!(status, 204);
    let (status, _, body) = http(&addr, "GET", "/items/42", b"");
    assert_eq!((status, body.as_slice()), (200, &second[..]));
    // Not JSON: 400, nothing stored.
    let (status, _, _) = http(&addr, "PUT", "/items/43", b"not json");
    assert_eq!(status, 400);
    let (status, _, _) = http(&addr, "GET", "/items/43", b"");
    assert_eq!(status, 404);
    // An oversize key: a typed 400, not a 5xx.
    let long = format!("/items/{}", "k".repeat(20_000));
    let (status, _, _) = http(&addr, "GET", &long, b"");
    assert_eq!(status, 400);
    let (status, _, body) = http(&addr, "GET", "/healthz", b"");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["slots_covered"], 16384);
    drop(app);
}
