//! Reading the slot map from nodes: `CLUSTER SHARDS` (Redis 7+), falling
//! back to `CLUSTER SLOTS`, plus `CLUSTER INFO` for state and epoch.

use std::fmt;

use futures_util::future::BoxFuture;
use slotguard_core::{
    BoxError, CacheError, ClusterView, NodeAddr, NodeView, ShardView, TopologySource, SLOT_COUNT,
};

use crate::pool::Mode;
use crate::remap::{canonical, identity, AddressRemap};
use crate::resp::Frame;
use crate::service::NodeService;
use slotguard_core::op::reply_error;

/// A [`TopologySource`] that asks nodes through the leaf's per-node clients.
///
/// Each fetch has the leaf's [`admin_timeout`](crate::NodeConfig::admin_timeout):
/// a paused node yields [`CacheError::Timeout`], and
/// [`TopologySource::fetch_first`] moves on to the next node.
#[derive(Clone)]
pub struct NodeTopologySource {
    leaf: NodeService,
    seeds: Vec<NodeAddr>,
}

impl fmt::Debug for NodeTopologySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTopologySource")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl NodeTopologySource {
    /// A source sharing `leaf`'s connections, starting from `seeds`.
    pub fn new(leaf: &NodeService, seeds: Vec<NodeAddr>) -> Self {
        Self {
            leaf: leaf.clone(),
            seeds,
        }
    }
}

impl TopologySource for NodeTopologySource {
    fn fetch_view(&self, node: &NodeAddr) -> BoxFuture<'static, Result<ClusterView, BoxError>> {
        let pool = self.leaf.pool().clone();
        let node = node.clone();
        Box::pin(async move {
            let timeout = pool.config().admin_timeout;
            let tls = pool.config().tls.is_some();
            let remap = pool.config().remap.as_ref();
            let ask = |words: &'static [&'static str]| -> BoxFuture<'_, Result<Frame, CacheError>> {
                Box::pin(pool.admin(&node, Mode::Primary, words, timeout))
            };
            let fetch = fetch_view_with(&node, tls, remap, ask);
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

/// Read one node's view of the cluster with `ask` (which sends one
/// administrative command to `node` and returns its reply, an error reply
/// as [`Frame::Error`]): `CLUSTER SHARDS`, falling back to `CLUSTER SLOTS`
/// on servers without it or when it covers fewer slots, then `CLUSTER INFO`
/// for state and epoch. `tls`: take each node's `tls-port`. Addresses go
/// through `remap`. Public so that another leaf (`slotguard-fred`) reads
/// views exactly as this one does; the caller bounds it with a deadline.
pub async fn fetch_view_with<'a, F>(
    node: &NodeAddr,
    tls: bool,
    remap: Option<&AddressRemap>,
    ask: F,
) -> Result<ClusterView, CacheError>
where
    F: Fn(&'static [&'static str]) -> BoxFuture<'a, Result<Frame, CacheError>>,
{
    let mut view = match ask(&["CLUSTER", "SHARDS"]).await? {
        Frame::Error(e)
            if String::from_utf8_lossy(&e)
                .to_ascii_lowercase()
                .contains("unknown") =>
        {
            match ask(&["CLUSTER", "SLOTS"]).await? {
                Frame::Error(e) => return Err(reply_error(&e, node)),
                v => parse_cluster_slots(v, node, remap)?,
            }
        }
        Frame::Error(e) => return Err(reply_error(&e, node)),
        v => {
            let view = parse_cluster_shards(v, node, tls, remap)?;
            if view.covered_slots() < usize::from(SLOT_COUNT) {
                // Redis 7.0's CLUSTER SHARDS can list a shard without its
                // slots around a failover; CLUSTER SLOTS is built
                // differently: take whichever covers more.
                match ask(&["CLUSTER", "SLOTS"]).await {
                    Ok(v @ Frame::Array(_)) => match parse_cluster_slots(v, node, remap) {
                        Ok(slots) if slots.covered_slots() > view.covered_slots() => slots,
                        _ => view,
                    },
                    _ => view,
                }
            } else {
                view
            }
        }
    };
    if let Ok(info) = ask(&["CLUSTER", "INFO"]).await {
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
    Ok(view)
}

fn bad(what: impl fmt::Display) -> CacheError {
    CacheError::Protocol(format!("unexpected cluster topology reply: {what}"))
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array.
fn fields(v: Frame) -> Result<Vec<(String, Frame)>, CacheError> {
    match v {
        Frame::Map(m) => Ok(m
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k.as_bytes().unwrap_or_default()).into_owned(),
                    v,
                )
            })
            .collect()),
        Frame::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(bad("odd field list"));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k = k.as_string().ok_or_else(|| bad("field name"))?;
                out.push((k, v));
            }
            Ok(out)
        }
        other => Err(bad(format_args!("expected a map, got {}", other.kind()))),
    }
}

fn slot_of(v: &Frame) -> Result<u16, CacheError> {
    match v.as_u64() {
        Some(n) if n < SLOT_COUNT as u64 => Ok(n as u16),
        _ => Err(bad("slot number")),
    }
}

fn port_of(v: &Frame) -> Option<u16> {
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
pub fn parse_cluster_shards(
    reply: Frame,
    from: &NodeAddr,
    tls: bool,
    remap: Option<&AddressRemap>,
) -> Result<ClusterView, CacheError> {
    let Frame::Array(shards) = reply else {
        return Err(bad("expected an array of shards"));
    };
    let ctx = Announced { from, tls, remap };
    let mut out = Vec::new();
    for shard in shards {
        if let Some(view) = parse_shard(shard, &ctx)? {
            out.push(view);
        }
    }
    Ok(ClusterView {
        source: from.clone(),
        shards: out,
        current_epoch: None,
        state_ok: None,
    })
}

/// What turns an announced node into a node identity: the node that sent
/// the reply (for empty hosts), the port kind the client speaks, the remap.
struct Announced<'a> {
    from: &'a NodeAddr,
    tls: bool,
    remap: Option<&'a AddressRemap>,
}

/// One shard of a `CLUSTER SHARDS` reply; `None` for a shard without slots.
fn parse_shard(shard: Frame, ctx: &Announced<'_>) -> Result<Option<ShardView>, CacheError> {
    let mut slots = Vec::new();
    let mut primaries = Vec::new();
    let mut replicas = Vec::new();
    for (k, v) in fields(shard)? {
        match k.as_str() {
            "slots" => slots = parse_slot_ranges(v)?,
            "nodes" => {
                let Frame::Array(nodes) = v else {
                    return Err(bad("nodes"));
                };
                for node in nodes {
                    let (is_primary, view) = parse_shard_node(node, ctx)?;
                    if is_primary {
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
        return Ok(None);
    }
    let pick = primaries.iter().position(|p| p.online).unwrap_or(0);
    if primaries.is_empty() {
        return Err(bad("shard without a primary"));
    }
    let primary = primaries.remove(pick);
    // A second "master" in a shard is a failed one being replaced.
    replicas.extend(primaries);
    Ok(Some(ShardView {
        slots,
        primary,
        replicas,
    }))
}

/// A shard's `slots`: a flat list of `start, end` pairs.
fn parse_slot_ranges(v: Frame) -> Result<Vec<(u16, u16)>, CacheError> {
    let Frame::Array(nums) = v else {
        return Err(bad("slots"));
    };
    if nums.len() % 2 != 0 {
        return Err(bad("odd slot list"));
    }
    let mut slots = Vec::with_capacity(nums.len() / 2);
    for pair in nums.chunks(2) {
        slots.push(slot_range(&pair[0], &pair[1])?);
    }
    Ok(slots)
}

/// A `start, end` slot range, both inclusive.
fn slot_range(lo: &Frame, hi: &Frame) -> Result<(u16, u16), CacheError> {
    let (lo, hi) = (slot_of(lo)?, slot_of(hi)?);
    if lo > hi {
        return Err(bad("slot range"));
    }
    Ok((lo, hi))
}

/// One entry of a shard's `nodes`: whether it says it is the primary, and
/// its view.
fn parse_shard_node(node: Frame, ctx: &Announced<'_>) -> Result<(bool, NodeView), CacheError> {
    let (mut id, mut ip, mut endpoint, mut hostname) = (None, None, None, None);
    let (mut plain_port, mut tls_port) = (None, None);
    let (mut role, mut health) = (String::new(), String::new());
    for (k, v) in fields(node)? {
        match k.as_str() {
            "id" => id = v.as_string(),
            "ip" => ip = v.as_string(),
            "endpoint" => endpoint = v.as_string(),
            "hostname" => hostname = v.as_string(),
            "port" => plain_port = port_of(&v),
            "tls-port" => tls_port = port_of(&v),
            "role" => role = v.as_string().unwrap_or_default(),
            "health" => health = v.as_string().unwrap_or_default(),
            _ => {}
        }
    }
    // A node serving both lists both; a TLS client takes `tls-port`, a
    // plaintext one `port`.
    let port = if ctx.tls {
        tls_port.or(plain_port)
    } else {
        plain_port.or(tls_port)
    };
    let port = port.ok_or_else(|| bad("node port"))?;
    let view = NodeView {
        addr: node_identity([endpoint, ip, hostname], port, ctx)?,
        id,
        // Only `failed` is down. Redis 7.0 says `loading` of any replica
        // whose replication offset its peers have not heard yet (every
        // replica of a young or write-idle cluster), which is perfectly
        // readable; one that really is loading answers `-LOADING`, which
        // failover already skips. Taking `loading` for offline left shards
        // of young clusters with no replica to fail over to.
        online: !health.starts_with("fail"),
    };
    Ok((role == "master", view))
}

/// The identity of a node announced by `hosts` (best first: the endpoint
/// clients are told to use, then its IP and hostname; a remap table may
/// know either) on `port`.
fn node_identity(
    hosts: [Option<String>; 3],
    port: u16,
    ctx: &Announced<'_>,
) -> Result<NodeAddr, CacheError> {
    let mut names = Vec::with_capacity(3);
    for h in hosts
        .into_iter()
        .flatten()
        .filter(|h| !h.is_empty() && h != "?")
    {
        names.push(addr_of(&h, port, ctx.from)?);
    }
    if names.is_empty() {
        names.push(addr_of("", port, ctx.from)?);
    }
    let addr = match ctx.remap {
        Some(r) => r.apply_first(&names),
        None => names.first().map(canonical),
    };
    addr.ok_or_else(|| bad("node address"))
}

/// Parse a `CLUSTER SLOTS` reply from `from` (servers before Redis 7).
pub fn parse_cluster_slots(
    reply: Frame,
    from: &NodeAddr,
    remap: Option<&AddressRemap>,
) -> Result<ClusterView, CacheError> {
    let Frame::Array(ranges) = reply else {
        return Err(bad("expected an array of slot ranges"));
    };
    let mut shards: Vec<ShardView> = Vec::new();
    for range in ranges {
        let Frame::Array(items) = range else {
            return Err(bad("slot range entry"));
        };
        if items.len() < 3 {
            return Err(bad("short slot range entry"));
        }
        let (lo, hi) = slot_range(&items[0], &items[1])?;
        let mut nodes = Vec::new();
        for node in &items[2..] {
            let Frame::Array(parts) = node else {
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
                addr: identity(remap, &addr_of(&host, port, from)?),
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
#[path = "source_tests.rs"]
mod tests;
