#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::*;

/// An echo server on a free port; its thread ends with the process.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn dial(proxy: &FaultProxy) -> TcpStream {
    let s = TcpStream::connect(proxy.listen_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}

#[test]
fn a_clear_proxy_is_a_pipe() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");
    assert_eq!(proxy.accepted(), 1);
}

#[test]
fn latency_delays_each_reply_by_at_least_latency_minus_jitter() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut s = dial(&proxy);
    proxy.set(
        Direction::ToClient,
        Faults::default().with_latency(Duration::from_millis(120), Duration::from_millis(20)),
    );
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(roundtrip(&mut s, b"ping").unwrap(), b"ping");
        // A lower bound only: the proxy cannot deliver early.
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
    proxy.clear();
    assert_eq!(roundtrip(&mut s, b"ok").unwrap(), b"ok");
}

#[test]
fn a_black_hole_accepts_and_never_answers() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    proxy.set(Direction::ToClient, Faults::default().with_black_hole());
    let mut s = dial(&proxy);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = roundtrip(&mut s, b"lost").unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:?}"
    );
    // Its end resets the connection rather than resume with a gap.
    proxy.clear();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e:?}"),
        Ok(n) => panic!("{n} swallowed bytes came back"),
    }
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"fresh").unwrap(), b"fresh");
}

#[test]
fn reset_and_refuse_send_rst() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"a").unwrap(), b"a");
    proxy.reset_connections();
    // The RST may land before or after the write: either side fails.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut failed = false;
    while Instant::now() < deadline {
        match roundtrip(&mut s, b"b") {
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::BrokenPipe
                            | ErrorKind::UnexpectedEof
                    ),
                    "{e:?}"
                );
                failed = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(failed, "the connection survived a reset");
    proxy.set_refuse(true);
    let mut s = dial(&proxy);
    let err = roundtrip(&mut s, b"c").unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
        ),
        "{err:?}"
    );
    proxy.set_refuse(false);
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"d").unwrap(), b"d");
}

#[test]
fn close_after_cuts_a_reply_at_the_byte() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut s = dial(&proxy);
    proxy.set(Direction::ToClient, Faults::default().with_close_after(7));
    s.write_all(b"0123456789").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"0123456");
    // New connections get a fresh budget while the fault is on...
    let mut s = dial(&proxy);
    s.write_all(b"abcdefghij").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abcdefg");
    // ...and none once it is off.
    proxy.clear();
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"abcdefghij").unwrap(), b"abcdefghij");
}

#[test]
fn bandwidth_limits_the_rate() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    proxy.set(
        Direction::ToClient,
        Faults::default().with_bandwidth(20_000),
    );
    let mut s = dial(&proxy);
    let started = Instant::now();
    let msg = vec![7u8; 8_000];
    assert_eq!(roundtrip(&mut s, &msg).unwrap(), msg);
    // 8 kB at 20 kB/s cannot arrive in less than ~0.4 s (a lower bound).
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn isolation_and_cut_peers_black_hole_and_heal() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let me: IpAddr = "127.0.0.1".parse().unwrap();
    proxy.cut_peer(me, true);
    let mut s = dial(&proxy);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(roundtrip(&mut s, b"x").is_err());
    proxy.cut_peer(me, false);
    // Cutting another source address leaves ours alone.
    proxy.cut_peer("127.0.0.9".parse().unwrap(), true);
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"y").unwrap(), b"y");
    proxy.set_isolated(true);
    let mut s = dial(&proxy);
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(roundtrip(&mut s, b"z").is_err());
    proxy.set_isolated(false);
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"w").unwrap(), b"w");
}

#[test]
fn dropping_the_proxy_closes_its_connections() {
    let proxy = FaultProxy::start(echo_server()).unwrap();
    let mut s = dial(&proxy);
    assert_eq!(roundtrip(&mut s, b"a").unwrap(), b"a");
    drop(proxy);
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
}
