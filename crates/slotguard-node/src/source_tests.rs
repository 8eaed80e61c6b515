//! Unit tests of the topology parsers.
use super::*;

fn s(x: &str) -> Frame {
    Frame::Bulk(bytes::Bytes::copy_from_slice(x.as_bytes()))
}
fn i(x: i64) -> Frame {
    Frame::Integer(x)
}
fn node(port: i64, role: &str, health: &str) -> Frame {
    Frame::Array(vec![
        s("id"),
        s("abc"),
        s("port"),
        i(port),
        s("ip"),
        s("127.0.0.1"),
        s("endpoint"),
        s("127.0.0.1"),
        s("role"),
        s(role),
        s("replication-offset"),
        i(1),
        s("health"),
        s(health),
    ])
}
fn from() -> NodeAddr {
    "127.0.0.1:7000".parse().unwrap()
}

#[test]
fn shards_reply() {
    let reply = Frame::Array(vec![
        Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(0), i(5460)]),
            s("nodes"),
            Frame::Array(vec![
                node(7000, "master", "online"),
                node(7003, "replica", "online"),
            ]),
        ]),
        // an empty primary: left out
        Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![]),
            s("nodes"),
            Frame::Array(vec![node(7009, "master", "online")]),
        ]),
        // a failed primary next to its promoted replica
        Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(5461), i(16383)]),
            s("nodes"),
            Frame::Array(vec![
                node(7001, "master", "failed"),
                node(7004, "master", "online"),
            ]),
        ]),
    ]);
    let v = parse_cluster_shards(reply, &from(), false, None).unwrap();
    assert_eq!(v.shards.len(), 2);
    assert_eq!(v.shards[0].primary.addr.port(), 7000);
    assert_eq!(v.shards[0].replicas[0].addr.port(), 7003);
    assert_eq!(v.shards[1].primary.addr.port(), 7004);
    assert_eq!(v.shards[1].replicas[0].addr.port(), 7001);
    assert!(!v.shards[1].replicas[0].online);
    assert!(v.shards[0].replicas[0].online);
}

#[test]
fn a_replica_reported_loading_is_online() {
    // What 7.0 says of a replica whose offset its peers have not heard.
    let reply = Frame::Array(vec![Frame::Array(vec![
        s("slots"),
        Frame::Array(vec![i(0), i(16383)]),
        s("nodes"),
        Frame::Array(vec![
            node(7000, "master", "online"),
            node(7003, "replica", "loading"),
            node(7004, "replica", "failed"),
        ]),
    ])]);
    let v = parse_cluster_shards(reply, &from(), false, None).unwrap();
    assert!(v.shards[0].replicas[0].online);
    assert!(!v.shards[0].replicas[1].online);
}

/// A RESP3 `CLUSTER SHARDS` node (a map), announced by hostname.
fn named(endpoint: &str, ip: &str, hostname: &str, port: i64, role: &str) -> Frame {
    let kv = |k: &str, v: Frame| (s(k), v);
    Frame::Map(vec![
        kv("id", s("abc")),
        kv("port", i(port)),
        kv("ip", s(ip)),
        kv("endpoint", s(endpoint)),
        kv("hostname", s(hostname)),
        kv("role", s(role)),
        kv("health", s("online")),
    ])
}

#[test]
fn hostname_and_ipv6_endpoints_are_remapped_without_dns() {
    let reply = Frame::Array(vec![Frame::Map(vec![
        (s("slots"), Frame::Array(vec![i(0), i(16383)])),
        (
            s("nodes"),
            Frame::Array(vec![
                // endpoint a hostname that exists nowhere; the table knows its IP
                named(
                    "redis-0.redis.svc.cluster.local",
                    "10.0.0.1",
                    "redis-0",
                    6379,
                    "master",
                ),
                // the table knows its hostname endpoint
                named(
                    "redis-1.redis.svc.cluster.local",
                    "10.0.0.2",
                    "",
                    6379,
                    "replica",
                ),
                // IPv6 in expanded form
                named("0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1", "", 7002, "replica"),
                // unknown to the table: kept as announced
                named(
                    "redis-3.redis.svc.cluster.local",
                    "10.0.0.4",
                    "",
                    6379,
                    "replica",
                ),
            ]),
        ),
    ])]);
    let a = |x: &str| x.parse::<NodeAddr>().unwrap();
    let remap = AddressRemap::table([
        (a("10.0.0.1:6379"), a("127.0.0.1:17000")),
        (
            a("redis-1.redis.svc.cluster.local:6379"),
            a("127.0.0.1:17001"),
        ),
        (a("[::1]:7002"), a("127.0.0.1:17002")),
    ]);
    let v = parse_cluster_shards(reply.clone(), &from(), false, Some(&remap)).unwrap();
    let shard = &v.shards[0];
    assert_eq!(shard.primary.addr, a("127.0.0.1:17000"));
    let replicas: Vec<String> = shard.replicas.iter().map(|r| r.addr.to_string()).collect();
    assert_eq!(
        replicas,
        [
            "127.0.0.1:17001",
            "127.0.0.1:17002",
            "redis-3.redis.svc.cluster.local:6379"
        ]
    );
    // Without a remap: the endpoints as announced, IPv6 canonical.
    let v = parse_cluster_shards(reply, &from(), false, None).unwrap();
    assert_eq!(
        v.shards[0].primary.addr.host(),
        "redis-0.redis.svc.cluster.local"
    );
    assert_eq!(v.shards[0].replicas[1].addr.to_string(), "[::1]:7002");
    // CLUSTER SLOTS, IPv6 as Redis prints it there.
    let slots = Frame::Array(vec![Frame::Array(vec![
        i(0),
        i(16383),
        Frame::Array(vec![s("::1"), i(7002), s("id")]),
    ])]);
    let v = parse_cluster_slots(slots, &from(), Some(&remap)).unwrap();
    assert_eq!(v.shards[0].primary.addr, a("127.0.0.1:17002"));
}

#[test]
fn hostile_shards_replies_are_typed_errors() {
    for reply in [
        i(1),
        Frame::Array(vec![i(1)]),
        Frame::Array(vec![Frame::Array(vec![s("slots")])]),
        Frame::Array(vec![Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(0)]),
        ])]),
        Frame::Array(vec![Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(0), i(99999)]),
        ])]),
        Frame::Array(vec![Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(9), i(1)]),
        ])]),
        Frame::Array(vec![Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(0), i(1)]),
            s("nodes"),
            Frame::Array(vec![node(0, "master", "online")]),
        ])]),
        Frame::Array(vec![Frame::Array(vec![
            s("slots"),
            Frame::Array(vec![i(0), i(1)]),
            s("nodes"),
            Frame::Array(vec![node(7000, "replica", "online")]),
        ])]),
    ] {
        assert!(
            parse_cluster_shards(reply.clone(), &from(), false, None).is_err(),
            "{reply:?}"
        );
    }
}

#[test]
fn slots_reply() {
    let n = |p: i64| Frame::Array(vec![s("127.0.0.1"), i(p), s("id")]);
    let reply = Frame::Array(vec![
        Frame::Array(vec![i(0), i(100), n(7000), n(7003)]),
        Frame::Array(vec![i(101), i(16383), n(7001)]),
        Frame::Array(vec![i(200), i(300), n(7000)]),
    ]);
    let v = parse_cluster_slots(reply, &from(), None).unwrap();
    assert_eq!(v.shards.len(), 2);
    assert_eq!(v.shards[0].slots, vec![(0, 100), (200, 300)]);
    assert!(
        parse_cluster_slots(Frame::Array(vec![Frame::Array(vec![i(0)])]), &from(), None).is_err()
    );
    // an empty endpoint means the host we asked
    let reply = Frame::Array(vec![Frame::Array(vec![
        i(0),
        i(1),
        Frame::Array(vec![s(""), i(7005)]),
    ])]);
    let v = parse_cluster_slots(reply, &from(), None).unwrap();
    assert_eq!(v.shards[0].primary.addr.to_string(), "127.0.0.1:7005");
}
