//! A proxied cluster against real redis-server processes: clients see the
//! proxies, the testkit does not, and a partition cuts the bus only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::{ClusterSpec, Direction, Faults, LocalCluster};

const DEADLINE: Duration = Duration::from_secs(30);

fn proxied() -> LocalCluster {
    LocalCluster::start(ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    })
    .unwrap()
}

/// PING through the address clients use, with a read timeout.
fn ping_via(addr: &str, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    Ok(buf.to_vec())
}

#[test]
fn clients_see_the_proxies_and_admin_commands_bypass_their_faults() {
    let cluster = proxied();
    for n in cluster.nodes() {
        assert_ne!(n.client_port, n.port);
        assert_eq!(n.addr, format!("127.0.0.1:{}", n.client_port));
        assert_eq!(cluster.index_of(&n.addr), Some(n.index));
        assert_eq!(cluster.proxy(n.index).unwrap().upstream().port(), n.port);
    }
    // The cluster announces the proxies: CLUSTER NODES lists their ports.
    let view = cluster.cluster_nodes(1).unwrap();
    let proxy0 = cluster.proxy(0).unwrap().listen_addr().port();
    assert!(view.iter().any(|n| n.port() == Some(proxy0)), "{view:?}");
    // MOVED names the proxy too.
    let key = cluster.key_for_slot_of(0, 1).unwrap().remove(0);
    let moved = cluster.command_str(1, &["GET", &key]).unwrap();
    let msg = moved.error_message().unwrap_or_default().to_owned();
    assert!(msg.ends_with(&format!(":{proxy0}")), "{msg}");
    // A black hole on node 0's proxy: clients get nothing, the testkit
    // still talks to the node.
    cluster
        .proxy(0)
        .unwrap()
        .set(Direction::ToClient, Faults::default().with_black_hole());
    assert!(ping_via(&cluster.addr(0), Duration::from_millis(300)).is_err());
    assert_eq!(cluster.role(0).unwrap(), "master");
    cluster.proxy(0).unwrap().clear();
    assert_eq!(
        ping_via(&cluster.addr(0), Duration::from_secs(5)).unwrap(),
        b"+PONG\r\n"
    );
    // Replicas replicate through the proxies and are linked.
    cluster.wait_until_ok(DEADLINE).unwrap();
}

#[test]
fn a_partitioned_primary_is_replaced_while_clients_still_reach_it() {
    let mut cluster = proxied();
    let replica = cluster.replicas_of(0).unwrap()[0];
    cluster.partition(0).unwrap();
    let promoted = cluster.wait_for_failover(0, DEADLINE).unwrap();
    assert_eq!(promoted, replica);
    // Clients still reach the cut-off node, which now refuses writes.
    assert_eq!(
        ping_via(&cluster.addr(0), Duration::from_secs(5)).unwrap(),
        b"+PONG\r\n"
    );
    let info = cluster.cluster_info(0).unwrap();
    assert_eq!(info["cluster_state"], "fail", "{info:?}");
    cluster.heal(0).unwrap();
    cluster.wait_until_ok(DEADLINE).unwrap();
    assert_eq!(cluster.role(0).unwrap(), "slave");
    // Restarting keeps the proxies in front.
    cluster.kill(0).unwrap();
    cluster.restart(0).unwrap();
    cluster.wait_until_ok(DEADLINE).unwrap();
}

#[test]
fn a_panicking_test_leaves_no_process_no_proxy_and_no_partition() {
    let mut seen: Vec<(u32, u16, u16, u16)> = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = proxied();
        cluster.partition(0).unwrap();
        for n in cluster.nodes() {
            let bus = cluster.bus_proxy(n.index).unwrap().listen_addr().port();
            seen.push((n.pid.unwrap(), n.port, n.client_port, bus));
        }
        panic!("a test failing mid-partition");
    }));
    assert!(outcome.is_err());
    assert_eq!(seen.len(), 6);
    for (pid, port, client_port, bus) in seen {
        // Reaped, not just killed: no /proc entry, not even a zombie.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "redis-server {pid} outlived its cluster"
        );
        for p in [port, client_port, bus] {
            assert!(
                TcpStream::connect(("127.0.0.1", p)).is_err(),
                "port {p} still accepts connections"
            );
        }
    }
}
