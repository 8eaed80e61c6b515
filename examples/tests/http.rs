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
fn the_axum_example_serves_the_cache_over_http() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_axum_app"))
        .arg("127.0.0.1:0")
        .env_remove("SLOTGUARD_SEEDS")
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

    let (status, _, _) = http(&addr, "PUT", "/cache/user:42?ttl=60", b"ada");
    assert_eq!(status, 204);
    let (status, head, body) = http(&addr, "GET", "/cache/user:42", b"");
    assert_eq!(status, 200);
    assert_eq!(body, b"ada");
    assert!(
        head.to_ascii_lowercase().contains("x-served-by: primary"),
        "{head}"
    );
    let (status, _, _) = http(&addr, "DELETE", "/cache/user:42", b"");
    assert_eq!(status, 204);
    let (status, _, _) = http(&addr, "GET", "/cache/user:42", b"");
    assert_eq!(status, 404);
    // oversize key: a typed 400, not a 5xx
    let long = format!("/cache/{}", "k".repeat(20_000));
    let (status, _, _) = http(&addr, "GET", &long, b"");
    assert_eq!(status, 400);
    let (status, _, body) = http(&addr, "GET", "/health", b"");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["slots_covered"], 16384);
    drop(app);
}
