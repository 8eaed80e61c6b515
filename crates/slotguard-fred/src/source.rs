//! Reading the slot map from nodes: `CLUSTER SHARDS` (Redis 7+), falling
//! back to `CLUSTER SLOTS`, plus `CLUSTER INFO` for state and epoch.

use std::fmt;

use fred::interfaces::ClientLike;
use fred::types::{ClusterHash, CustomCommand, Value};
use futures_util::future::BoxFuture;
use slotguard_core::{
    BoxError, CacheError, ClusterView, NodeAddr, NodeView, ShardView, TopologySource, SLOT_COUNT,
};

use crate::convert::map_error;
use crate::service::FredService;

/// A [`TopologySource`] that asks nodes through the leaf's per-node clients.
///
/// Each fetch has the leaf's [`admin_timeout`](crate::FredConfig::admin_timeout):
/// a paused node yields [`CacheError::Timeout`], and
/// [`TopologySource::fetch_first`] moves on to the next node.
#[derive(Clone)]
pub struct FredTopologySource {
    leaf: FredService,
    seeds: Vec<NodeAddr>,
}

impl fmt::Debug for FredTopologySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FredTopologySource")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl FredTopologySource {
    /// A source sharing `leaf`'s connections, starting from `seeds`.
    pub fn new(leaf: &FredService, seeds: Vec<NodeAddr>) -> Self {
        Self {
            leaf: leaf.clone(),
            seeds,
        }
    }
}

fn cluster(sub: &'static str) -> (CustomCommand, Vec<Value>) {
    (
        CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
        vec![Value::from_static_str(sub)],
    )
}

impl TopologySource for FredTopologySource {
    fn fetch_view(&self, node: &NodeAddr) -> BoxFuture<'static, Result<ClusterView, BoxError>> {
        let pool = self.leaf.pool().clone();
        let node = node.clone();
        Box::pin(async move {
            let timeout = pool.config().admin_timeout;
            let client = pool.client(&node).map_err(|e| CacheError::Connection {
                node: node.clone(),
                detail: e.details().to_owned(),
            })?;
            if client.is_lost() {
                return Err(CacheError::Connection {
                    node: node.clone(),
                    detail: "not connected (reconnecting)".into(),
                }
                .into());
            }
            let fetch = async {
                let c = &client.client;
                let (cmd, args) = cluster("SHARDS");
                let mut view = match c.custom::<Value, Value>(cmd, args).await {
                    Ok(v) => {
                        let view = parse_cluster_shards(v, &node)?;
                        if view.covered_slots() < usize::from(SLOT_COUNT) {
                            // Redis 7.0's CLUSTER SHARDS can list a shard
                            // without its slots around a failover; CLUSTER
                            // SLOTS is built differently: take whichever
                            // covers more.
                            let (cmd, args) = cluster("SLOTS");
                            match c.custom::<Value, Value>(cmd, args).await {
                                Ok(v) => match parse_cluster_slots(v, &node) {
                                    Ok(slots) if slots.covered_slots() > view.covered_slots() => {
                                        slots
                                    }
                                    _ => view,
                                },
                                Err(_) => view,
                            }
                        } else {
                            view
                        }
                    }
                    Err(e) if e.details().to_ascii_lowercase().contains("unknown") => {
                        let (cmd, args) = cluster("SLOTS");
                        let v = c
                            .custom::<Value, Value>(cmd, args)
                            .await
                            .map_err(|e| map_error(e, &node, false))?;
                        parse_cluster_slots(v, &node)?
                    }
                    Err(e) => return Err(map_error(e, &node, false)),
                };
                let (cmd, args) = cluster("INFO");
                if let Ok(info) = c.custom::<Value, Value>(cmd, args).await {
                    if let Some(text) = info.as_str() {
                        for line in text.lines() {
                            if let Some(v) = line.strip_prefix("cluster_state:") {
                                view.state_ok = Some(v.trim() == "ok");
                            }
                            if let Some(v) = line.strip_prefix("cluster_current_epoch:") {
                                view.current_epoch = v.trim().parse().ok();
                            }
                        }
                    }
                }
                client.mark_connected();
                Ok::<_, CacheError>(view)
            };
            match tokio::time::timeout(timeout, fetch).await {
                Ok(r) => r.map_err(BoxError::from),
                Err(_) => Err(CacheError::Timeout { node }.into()),
            }
        })
    }

    fn seeds(&self) -> Vec<NodeAddr> {
        self.seeds.clone()
    }
}

fn bad(what: impl fmt::Display) -> CacheError {
    CacheError::Protocol(format!("unexpected cluster topology reply: {what}"))
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array.
fn fields(v: Value) -> Result<Vec<(String, Value)>, CacheError> {
    match v {
        Value::Map(m) => Ok(m
            .inner()
            .into_iter()
            .map(|(k, v)| (k.as_str_lossy().into_owned(), v))
            .collect()),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(bad("odd field list"));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k = k.as_str().ok_or_else(|| bad("field name"))?.into_owned();
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(bad(format_args!("expected a map, got {}", other.kind()))),
    }
}

fn slot_of(v: &Value) -> Result<u16, CacheError> {
    match v.as_u64() {
        Some(n) if n < SLOT_COUNT as u64 => Ok(n as u16),
        _ => Err(bad("slot number")),
    }
}

fn port_of(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p > 0)
}

fn addr_of(host: &str, port: u16, from: &NodeAddr) -> Result<NodeAddr, CacheError> {
    // An empty or "?" endpoint means "the host you reached me on".
    let host = if host.is_empty() || host == "?" {
        from.host()
    } else {
        host
    };
    let addr = NodeAddr::new(host, port);
    // Reuse the address parser's checks on the host.
    addr.to_string()
        .parse::<NodeAddr>()
        .map_err(|_| bad("node address"))
}

/// Parse a `CLUSTER SHARDS` reply from `from`.
///
/// Shards without slots are left out. The primary is the `master` node that
/// is online (or the first `master`); a shard with no `master` is an error.
pub fn parse_cluster_shards(reply: Value, from: &NodeAddr) -> Result<ClusterView, CacheError> {
    let Value::Array(shards) = reply else {
        return Err(bad("expected an array of shards"));
    };
    let mut out = Vec::new();
    for shard in shards {
        let mut slots = Vec::new();
        let mut primaries = Vec::new();
        let mut replicas = Vec::new();
        for (k, v) in fields(shard)? {
            match k.as_str() {
                "slots" => {
                    let Value::Array(nums) = v else {
                        return Err(bad("slots"));
                    };
                    if nums.len() % 2 != 0 {
                        return Err(bad("odd slot list"));
                    }
                    for pair in nums.chunks(2) {
                        let (lo, hi) = (slot_of(&pair[0])?, slot_of(&pair[1])?);
                        if lo > hi {
                            return Err(bad("slot range"));
                        }
                        slots.push((lo, hi));
                    }
                }
                "nodes" => {
                    let Value::Array(nodes) = v else {
                        return Err(bad("nodes"));
                    };
                    for node in nodes {
                        let (mut id, mut ip, mut endpoint, mut port) = (None, None, None, None);
                        let (mut role, mut health) = (String::new(), String::new());
                        for (k, v) in fields(node)? {
                            match k.as_str() {
                                "id" => id = v.as_string(),
                                "ip" => ip = v.as_string(),
                                "endpoint" => endpoint = v.as_string(),
                                "port" => port = port_of(&v),
                                "tls-port" if port.is_none() => port = port_of(&v),
                                "role" => role = v.as_string().unwrap_or_default(),
                                "health" => health = v.as_string().unwrap_or_default(),
                                _ => {}
                            }
                        }
                        let port = port.ok_or_else(|| bad("node port"))?;
                        let host = endpoint
                            .filter(|e| !e.is_empty() && e != "?")
                            .or(ip)
                            .unwrap_or_default();
                        let view = NodeView {
                            addr: addr_of(&host, port, from)?,
                            id,
                            online: health.is_empty() || health == "online",
                        };
                        if role == "master" {
                            primaries.push(view);
                        } else {
                            replicas.push(view);
                        }
                    }
                }
                _ => {}
            }
        }
        if slots.is_empty() {
            continue;
        }
        let pick = primaries.iter().position(|p| p.online).unwrap_or(0);
        if primaries.is_empty() {
            return Err(bad("shard without a primary"));
        }
        let primary = primaries.remove(pick);
        // A second "master" in a shard is a failed one being replaced.
        replicas.extend(primaries);
        out.push(ShardView {
            slots,
            primary,
            replicas,
        });
    }
    Ok(ClusterView {
        source: from.clone(),
        shards: out,
        current_epoch: None,
        state_ok: None,
    })
}

/// Parse a `CLUSTER SLOTS` reply from `from` (servers before Redis 7).
pub fn parse_cluster_slots(reply: Value, from: &NodeAddr) -> Result<ClusterView, CacheError> {
    let Value::Array(ranges) = reply else {
        return Err(bad("expected an array of slot ranges"));
    };
    let mut shards: Vec<ShardView> = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else {
            return Err(bad("slot range entry"));
        };
        if items.len() < 3 {
            return Err(bad("short slot range entry"));
        }
        let (lo, hi) = (slot_of(&items[0])?, slot_of(&items[1])?);
        if lo > hi {
            return Err(bad("slot range"));
        }
        let mut nodes = Vec::new();
        for node in &items[2..] {
            let Value::Array(parts) = node else {
                return Err(bad("node entry"));
            };
            let host = parts
                .first()
                .and_then(|v| v.as_string())
                .unwrap_or_default();
            let port = parts
                .get(1)
                .and_then(port_of)
                .ok_or_else(|| bad("node port"))?;
            nodes.push(NodeView {
                addr: addr_of(&host, port, from)?,
                id: parts.get(2).and_then(|v| v.as_string()),
                online: true,
            });
        }
        let mut nodes = nodes.into_iter();
        let primary = nodes.next().ok_or_else(|| bad("range without nodes"))?;
        if let Some(s) = shards.iter_mut().find(|s| s.primary.addr == primary.addr) {
            s.slots.push((lo, hi));
        } else {
            shards.push(ShardView {
                slots: vec![(lo, hi)],
                primary,
                replicas: nodes.collect(),
            });
        }
    }
    Ok(ClusterView {
        source: from.clone(),
        shards,
        current_epoch: None,
        state_ok: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }
    fn i(x: i64) -> Value {
        Value::Integer(x)
    }
    fn node(port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
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
        let reply = Value::Array(vec![
            Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(0), i(5460)]),
                s("nodes"),
                Value::Array(vec![
                    node(7000, "master", "online"),
                    node(7003, "replica", "online"),
                ]),
            ]),
            // an empty primary: left out
            Value::Array(vec![
                s("slots"),
                Value::Array(vec![]),
                s("nodes"),
                Value::Array(vec![node(7009, "master", "online")]),
            ]),
            // a failed primary next to its promoted replica
            Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(5461), i(16383)]),
                s("nodes"),
                Value::Array(vec![
                    node(7001, "master", "failed"),
                    node(7004, "master", "online"),
                ]),
            ]),
        ]);
        let v = parse_cluster_shards(reply, &from()).unwrap();
        assert_eq!(v.shards.len(), 2);
        assert_eq!(v.shards[0].primary.addr.port(), 7000);
        assert_eq!(v.shards[0].replicas[0].addr.port(), 7003);
        assert_eq!(v.shards[1].primary.addr.port(), 7004);
        assert_eq!(v.shards[1].replicas[0].addr.port(), 7001);
    }

    #[test]
    fn hostile_shards_replies_are_typed_errors() {
        for reply in [
            i(1),
            Value::Array(vec![i(1)]),
            Value::Array(vec![Value::Array(vec![s("slots")])]),
            Value::Array(vec![Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(0)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(0), i(99999)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(9), i(1)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(0), i(1)]),
                s("nodes"),
                Value::Array(vec![node(0, "master", "online")]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                s("slots"),
                Value::Array(vec![i(0), i(1)]),
                s("nodes"),
                Value::Array(vec![node(7000, "replica", "online")]),
            ])]),
        ] {
            assert!(
                parse_cluster_shards(reply.clone(), &from()).is_err(),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn slots_reply() {
        let n = |p: i64| Value::Array(vec![s("127.0.0.1"), i(p), s("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![i(0), i(100), n(7000), n(7003)]),
            Value::Array(vec![i(101), i(16383), n(7001)]),
            Value::Array(vec![i(200), i(300), n(7000)]),
        ]);
        let v = parse_cluster_slots(reply, &from()).unwrap();
        assert_eq!(v.shards.len(), 2);
        assert_eq!(v.shards[0].slots, vec![(0, 100), (200, 300)]);
        assert!(
            parse_cluster_slots(Value::Array(vec![Value::Array(vec![i(0)])]), &from()).is_err()
        );
        // an empty endpoint means the host we asked
        let reply = Value::Array(vec![Value::Array(vec![
            i(0),
            i(1),
            Value::Array(vec![s(""), i(7005)]),
        ])]);
        let v = parse_cluster_slots(reply, &from()).unwrap();
        assert_eq!(v.shards[0].primary.addr.to_string(), "127.0.0.1:7005");
    }
}
