//! The axum example, run as a user would: start the binary, talk HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the example (and so its local cluster) also when a test panics.
struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        // Ctrl-C first: the example shuts down and drops its cluster (servers
        // stopped, temp dir removed); SIGKILL only if it does not exit.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..250 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; returns (status, headers, body).
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[split + 4..].to_vec())
}

#[test]
fn the_axum_example_serves_items_over_http() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum_app"))
        .env("SLOTGUARD_HTTP", "127.0.0.1:0")
        .env_remove("SLOTGUARD_SEEDS")
        .env_remove("SLOTGUARD_DB")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let app = App(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("listen line")
        .to_owned();

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
