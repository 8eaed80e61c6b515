//! Tests of [`ScriptedNode`] over real loopback sockets.
//!
//! Waits are polls with a generous deadline; the only fixed wait is the read
//! timeout that shows a silenced connection sends nothing, which can only
//! fail if bytes do arrive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::resp::{encode, Conn};
use crate::topology::parse_cluster_nodes;
use crate::{Action, Reply, ScriptedNode};

const DEADLINE: Duration = Duration::from_secs(10);

fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A RESP client whose reads fail after [`DEADLINE`] instead of hanging.
fn client(node: &ScriptedNode) -> Conn {
    Conn::connect(node.addr(), DEADLINE, DEADLINE).unwrap()
}

fn cmd(conn: &mut Conn, args: &[&str]) -> Reply {
    conn.roundtrip(&encode(args)).unwrap()
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

/// A raw socket for byte-exact checks.
fn raw(node: &ScriptedNode) -> TcpStream {
    let s = TcpStream::connect(node.addr()).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

fn send(s: &mut TcpStream, args: &[&str]) {
    s.write_all(&encode(args)).unwrap();
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Everything until the server closes; a reset counts as a close.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected the server to close, got {e} after {got:?}"),
    }
    got
}

#[test]
fn node_is_send_and_sync() {
    fn check<T: Send + Sync + std::fmt::Debug>() {}
    check::<ScriptedNode>();
    check::<Action>();
}

#[test]
fn default_store_get_set_del() {
    let node = ScriptedNode::start().unwrap();
    node.set("pre", "loaded");
    let mut c = client(&node);
    assert_eq!(cmd(&mut c, &["GET", "pre"]), bulk("loaded"));
    assert_eq!(cmd(&mut c, &["GET", "missing"]), Reply::Bulk(None));
    assert!(cmd(&mut c, &["SET", "k", "v"]).is_ok());
    assert_eq!(node.get("k").as_deref(), Some(&b"v"[..]));
    assert_eq!(cmd(&mut c, &["get", "k"]), bulk("v"));
    assert_eq!(cmd(&mut c, &["DEL", "k", "pre", "missing"]), Reply::Int(2));
    assert_eq!(cmd(&mut c, &["GET", "k"]), Reply::Bulk(None));

    assert!(cmd(&mut c, &["SET", "long", "v", "EX", "3600"]).is_ok());
    assert_eq!(cmd(&mut c, &["GET", "long"]), bulk("v"));
    assert!(cmd(&mut c, &["SET", "short", "v", "px", "1"]).is_ok());
    eventually("a 1 ms PX to expire", || node.get("short").is_none());
    assert_eq!(cmd(&mut c, &["DEL", "short"]), Reply::Int(0));

    for (args, err) in [
        (&["SET", "k", "v", "NX"][..], "ERR syntax error"),
        (&["SET", "k", "v", "PX", "x"], "ERR value is not an integer"),
        (&["SET", "k", "v", "PX", "0"], "ERR invalid expire time"),
        (&["GET"], "ERR wrong number of arguments for 'get'"),
        (&["DEL"], "ERR wrong number of arguments for 'del'"),
    ] {
        let r = cmd(&mut c, args);
        assert!(
            r.error_message().unwrap().starts_with(err),
            "{args:?}: {r:?}"
        );
    }
}

#[test]
fn connection_commands_and_ping_echo() {
    let node = ScriptedNode::start().unwrap();
    let mut c = client(&node);
    assert_eq!(cmd(&mut c, &["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(cmd(&mut c, &["PING", "hello"]), bulk("hello"));
    assert_eq!(cmd(&mut c, &["ECHO", "a b"]), bulk("a b"));
    for ok in [
        &["READONLY"][..],
        &["READWRITE"],
        &["ASKING"],
        &["AUTH", "pw"],
        &["CLIENT", "SETNAME", "x"],
        &["SELECT", "0"],
    ] {
        assert!(cmd(&mut c, ok).is_ok(), "{ok:?}");
    }
    let hello = cmd(&mut c, &["HELLO", "3"]);
    assert!(hello
        .error_message()
        .unwrap()
        .starts_with("ERR unknown command 'HELLO'"));
    assert!(cmd(&mut c, &["FLUSHALL"]).is_error());

    // Inline commands, as typed into telnet.
    let mut s = raw(&node);
    s.write_all(b"PING\r\nPING hi\r\nping\n").unwrap();
    assert_eq!(read_n(&mut s, 7 + 8 + 7), b"+PONG\r\n$2\r\nhi\r\n+PONG\r\n");
    // QUIT answers, then closes.
    s.write_all(b"QUIT\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), b"+OK\r\n");
}

fn field<'a>(map: &'a [Reply], name: &str) -> &'a Reply {
    let i = map
        .chunks(2)
        .position(|kv| kv[0].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no field {name} in {map:?}"));
    &map[2 * i + 1]
}

#[test]
fn cluster_and_info_describe_one_node_owning_every_slot() {
    let node = ScriptedNode::start().unwrap();
    let port = i64::from(node.addr().port());
    let id = node.node_id().to_owned();
    assert_eq!(id.len(), 40);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut c = client(&node);

    let shards = cmd(&mut c, &["CLUSTER", "SHARDS"]);
    let shards = shards.as_array().unwrap();
    assert_eq!(shards.len(), 1);
    let shard = shards[0].as_array().unwrap();
    assert_eq!(
        field(shard, "slots"),
        &Reply::Array(Some(vec![Reply::Int(0), Reply::Int(16383)]))
    );
    let nodes = field(shard, "nodes").as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    let me = nodes[0].as_array().unwrap();
    assert_eq!(field(me, "id").as_str(), Some(id.as_str()));
    assert_eq!(field(me, "port"), &Reply::Int(port));
    assert_eq!(field(me, "ip").as_str(), Some("127.0.0.1"));
    assert_eq!(field(me, "endpoint").as_str(), Some("127.0.0.1"));
    assert_eq!(field(me, "role").as_str(), Some("master"));
    assert_eq!(field(me, "health").as_str(), Some("online"));

    assert_eq!(
        cmd(&mut c, &["cluster", "slots"]),
        Reply::Array(Some(vec![Reply::Array(Some(vec![
            Reply::Int(0),
            Reply::Int(16383),
            Reply::Array(Some(vec![bulk("127.0.0.1"), Reply::Int(port), bulk(&id)])),
        ]))]))
    );

    let info = cmd(&mut c, &["CLUSTER", "INFO"]);
    let info = info.as_str().unwrap();
    for line in [
        "cluster_state:ok",
        "cluster_slots_assigned:16384",
        "cluster_current_epoch:1",
        "cluster_known_nodes:1",
    ] {
        assert!(info.lines().any(|l| l == line), "{line} not in {info}");
    }

    let text = cmd(&mut c, &["CLUSTER", "NODES"]);
    let view = parse_cluster_nodes(text.as_str().unwrap()).unwrap();
    assert_eq!(view.len(), 1);
    assert!(view[0].is_myself() && view[0].is_master());
    assert_eq!(view[0].id, id);
    assert_eq!(view[0].port(), Some(node.addr().port()));
    assert_eq!(view[0].slots, vec![0..=16383]);
    assert_eq!(cmd(&mut c, &["CLUSTER", "MYID"]), bulk(&id));
    assert!(cmd(&mut c, &["CLUSTER", "FROB"]).is_error());

    for args in [
        &["INFO"][..],
        &["INFO", "replication"],
        &["info", "REPLICATION"],
    ] {
        let text = cmd(&mut c, args);
        let text = text.as_str().unwrap();
        assert!(text.contains("# Replication\r\n"), "{text}");
        assert!(text.lines().any(|l| l == "role:master"), "{text}");
    }
    assert_eq!(node.command_count("cluster"), 6);
}

#[test]
fn reply_writes_raw_bytes_and_the_connection_goes_on() {
    let node = ScriptedNode::start().unwrap();
    node.script("k", Action::garbage());
    node.script("deep", Action::nested(3));
    node.script("moved", Action::error("MOVED 42 10.255.255.1:7000"));
    let mut s = raw(&node);
    send(&mut s, &["GET", "k"]);
    assert_eq!(read_n(&mut s, 10), b"?\x00\xffhello\r\n");
    // The script covers every command on the key, not just GET.
    send(&mut s, &["SET", "k", "v"]);
    assert_eq!(read_n(&mut s, 10), b"?\x00\xffhello\r\n");
    assert_eq!(node.get("k"), None);
    send(&mut s, &["DEL", "deep"]);
    assert_eq!(read_n(&mut s, 16), b"*1\r\n*1\r\n*1\r\n:1\r\n");
    send(&mut s, &["GET", "moved"]);
    assert_eq!(read_n(&mut s, 29), b"-MOVED 42 10.255.255.1:7000\r\n");
    send(&mut s, &["PING"]);
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");

    // clear / clear_all bring the default replies back.
    node.clear("k");
    send(&mut s, &["GET", "k"]);
    assert_eq!(read_n(&mut s, 5), b"$-1\r\n");
    node.clear_all();
    send(&mut s, &["GET", "deep"]);
    assert_eq!(read_n(&mut s, 5), b"$-1\r\n");
}

#[test]
fn nested_is_exactly_as_deep_as_asked() {
    let Action::Reply(bytes) = Action::nested(100_000) else {
        panic!("nested must be a Reply");
    };
    assert_eq!(bytes.len(), 400_004);
    assert_eq!(bytes.capacity(), 400_004);
    let node = ScriptedNode::start().unwrap();
    node.script("deep", Action::nested(100_000));
    let mut s = raw(&node);
    send(&mut s, &["GET", "deep"]);
    assert_eq!(read_n(&mut s, bytes.len()), bytes);
    // The testkit's own client refuses it instead of overflowing its stack.
    let mut c = client(&node);
    assert!(c.roundtrip(&encode(&["GET", "deep"])).is_err());
}

#[test]
fn skip_sends_nothing_for_that_command_only() {
    let node = ScriptedNode::start().unwrap();
    node.script("skipped", Action::Skip);
    node.set("next", "value");
    let mut c = client(&node);
    c.send(&encode(&["GET", "skipped"])).unwrap();
    c.send(&encode(&["GET", "next"])).unwrap();
    assert_eq!(c.read_reply().unwrap(), bulk("value"));
    assert_eq!(cmd(&mut c, &["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(node.command_count("GET"), 2);
}

#[test]
fn silence_keeps_the_connection_open_and_mute() {
    let node = ScriptedNode::start().unwrap();
    node.script("mute", Action::Silence);
    let mut s = raw(&node);
    send(&mut s, &["PING"]);
    send(&mut s, &["GET", "mute"]);
    // The reply to the command before the silence still arrives.
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
    send(&mut s, &["PING"]);
    eventually("the second PING to be read", || {
        node.command_count("PING") == 2
    });
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1];
    let err = s
        .read(&mut buf)
        .expect_err("a silenced connection answered");
    assert!(matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ));

    // Other connections are not affected; the silenced one stays silenced.
    node.clear("mute");
    let mut other = client(&node);
    assert_eq!(cmd(&mut other, &["GET", "mute"]), Reply::Bulk(None));
    assert_eq!(node.open_connections(), 2);
    drop(s);
    eventually("the silenced connection to count as closed", || {
        node.open_connections() == 1
    });
}

#[test]
fn reply_then_silence_writes_only_the_header() {
    let node = ScriptedNode::start().unwrap();
    node.script("bulk", Action::huge_bulk_header());
    node.script("array", Action::huge_array(1_000_000_000));
    let mut s = raw(&node);
    send(&mut s, &["GET", "bulk"]);
    assert_eq!(read_n(&mut s, 13), b"$2147483647\r\n");
    let mut s2 = raw(&node);
    send(&mut s2, &["GET", "array"]);
    assert_eq!(read_n(&mut s2, 13), b"*1000000000\r\n");
    assert_eq!(node.open_connections(), 2);
    // The testkit's client does not allocate what the header claims: it just
    // waits for the body and times out.
    let mut c = Conn::connect(node.addr(), DEADLINE, Duration::from_millis(200)).unwrap();
    assert!(c.roundtrip(&encode(&["GET", "bulk"])).is_err());
}

#[test]
fn reply_then_close_and_close() {
    let node = ScriptedNode::start().unwrap();
    node.script("cut", Action::cut_bulk());
    node.script("partial", Action::ReplyThenClose(b"+partial".to_vec()));
    node.script("gone", Action::Close);

    let mut s = raw(&node);
    send(&mut s, &["GET", "cut"]);
    assert_eq!(read_to_close(&mut s), b"$100\r\n0123456789");
    let mut s = raw(&node);
    send(&mut s, &["SET", "partial", "v"]);
    assert_eq!(read_to_close(&mut s), b"+partial");
    let mut s = raw(&node);
    // Replies to earlier commands of the same write still go out.
    s.write_all(&[encode(&["PING"]), encode(&["DEL", "gone"])].concat())
        .unwrap();
    assert_eq!(read_to_close(&mut s), b"+PONG\r\n");

    let mut c = client(&node);
    assert!(c.roundtrip(&encode(&["GET", "cut"])).is_err());
    eventually("closed connections to be counted", || {
        node.open_connections() == 0
    });
    assert_eq!(node.connections_accepted(), 4);
}

#[test]
fn delay_answers_normally_and_does_not_block_drop() {
    let node = ScriptedNode::start().unwrap();
    node.set("slow", "v");
    node.script("slow", Action::Delay(Duration::from_millis(20)));
    let mut c = client(&node);
    assert_eq!(cmd(&mut c, &["GET", "slow"]), bulk("v"));

    node.script("slow", Action::Delay(Duration::from_secs(3600)));
    let mut s = raw(&node);
    send(&mut s, &["GET", "slow"]);
    eventually("the delayed GET to be read", || {
        node.command_count("GET") == 2
    });
    let liveness = node.liveness();
    drop(node);
    assert!(liveness.all_gone());
    assert_eq!(read_to_close(&mut s), b"");
}

#[test]
fn protocol_errors_are_answered_then_closed() {
    let node = ScriptedNode::start().unwrap();
    for (input, reply) in [
        (
            &b"*abc\r\n"[..],
            &b"-ERR Protocol error: invalid multibulk length\r\n"[..],
        ),
        (
            b"*1\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*1\r\n$99999999999\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
    ] {
        let mut s = raw(&node);
        s.write_all(input).unwrap();
        assert_eq!(read_to_close(&mut s), reply);
    }
    // A half-sent command is just waited for.
    let mut s = raw(&node);
    s.write_all(b"*1\r\n$4\r\nPI").unwrap();
    eventually("the partial command to be accepted", || {
        node.connections_accepted() == 4
    });
    s.write_all(b"NG\r\n").unwrap();
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
}

#[test]
fn counters() {
    let node = ScriptedNode::start().unwrap();
    assert_eq!(
        (
            node.connections_accepted(),
            node.open_connections(),
            node.commands_received()
        ),
        (0, 0, 0)
    );
    let mut a = client(&node);
    let mut b = client(&node);
    cmd(&mut a, &["READONLY"]);
    cmd(&mut b, &["readonly"]);
    cmd(&mut b, &["PING"]);
    cmd(&mut b, &["GET", "k"]);
    assert_eq!(node.connections_accepted(), 2);
    assert_eq!(node.open_connections(), 2);
    assert_eq!(node.commands_received(), 4);
    assert_eq!(node.command_count("READONLY"), 2);
    assert_eq!(node.command_count("ReadOnly"), 2);
    assert_eq!(node.command_count("ping"), 1);
    assert_eq!(node.command_count("SET"), 0);
    drop(a);
    eventually("a closed client to be counted", || {
        node.open_connections() == 1
    });
    assert_eq!(node.connections_accepted(), 2);
    let dbg = format!("{node:?}");
    assert!(dbg.contains("commands_received: 4"), "{dbg}");
}

#[test]
fn drop_stops_every_thread_and_closes_every_socket() {
    let node = ScriptedNode::start().unwrap();
    let addr = node.addr();
    node.script("mute", Action::Silence);
    let mut idle = raw(&node);
    let mut mute = raw(&node);
    send(&mut mute, &["GET", "mute"]);
    let mut half = raw(&node);
    half.write_all(b"*2\r\n$3\r\nGET\r\n").unwrap();
    eventually("three connections and the silenced GET", || {
        node.open_connections() == 3 && node.command_count("GET") == 1
    });
    let liveness = node.liveness();
    drop(node);
    assert!(liveness.all_gone(), "a node thread outlived drop");
    for s in [&mut idle, &mut mute, &mut half] {
        assert_eq!(read_to_close(s), b"");
    }
    assert!(TcpStream::connect(addr).is_err(), "the port still accepts");
}

#[test]
fn drop_during_a_panic_cleans_up_too() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let node = ScriptedNode::start().unwrap();
        let mut c = raw(&node);
        send(&mut c, &["PING"]);
        seen = Some((node.addr(), node.liveness()));
        panic!("test failure while the node runs");
    }));
    assert!(result.is_err());
    let (addr, liveness) = seen.unwrap();
    assert!(liveness.all_gone());
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn debug_of_an_action_is_short() {
    let text = format!("{:?}", Action::nested(100_000));
    assert!(text.starts_with("Reply(400004 bytes: \"*1\\r\\n"), "{text}");
    assert!(text.len() < 100, "{text}");
    assert_eq!(format!("{:?}", Action::Skip), "Skip");
}
