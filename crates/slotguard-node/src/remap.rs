//! Address remapping: the addresses nodes announce (`CLUSTER SHARDS`
//! `endpoint`/`ip`/`hostname`, `CLUSTER SLOTS`, `MOVED`/`ASK`) turned into
//! the ones this client can dial, before they become node identities.
//!
//! Why in the leaf, for every source alike: the slot map, the redirect
//! layer and the per-node breakers key everything by address. A node behind
//! NAT (Kubernetes, a managed service, a proxy) that is known by its
//! dialable address in the map but by its announced one in a `MOVED` would
//! be two nodes: two connections, two breakers, and a redirect loop.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use slotguard_core::NodeAddr;

/// Maps an announced address to a dialable one; `None` keeps it.
pub type RemapFn = dyn Fn(&NodeAddr) -> Option<NodeAddr> + Send + Sync;

/// Announced node addresses → dialable ones, applied to topology views and
/// to `MOVED`/`ASK` targets alike.
///
/// IPv6 hosts are compared in their canonical form (`::1`, not
/// `0:0:0:0:0:0:0:1`), whichever form a node printed.
///
/// ```
/// use slotguard_node::{AddressRemap, NodeConfig};
/// let remap = AddressRemap::table([
///     ("10.0.0.5:6379".parse().unwrap(), "127.0.0.1:16379".parse().unwrap()),
/// ]);
/// assert_eq!(remap.apply(&"10.0.0.5:6379".parse().unwrap()).to_string(), "127.0.0.1:16379");
/// assert_eq!(remap.apply(&"10.0.0.6:6379".parse().unwrap()).to_string(), "10.0.0.6:6379");
/// let config = NodeConfig::default().with_remap(remap);
/// ```
#[derive(Clone)]
pub struct AddressRemap {
    f: Arc<RemapFn>,
    entries: Option<usize>,
}

impl AddressRemap {
    /// A table of announced → dialable addresses; others are kept.
    pub fn table(pairs: impl IntoIterator<Item = (NodeAddr, NodeAddr)>) -> Self {
        let map: HashMap<NodeAddr, NodeAddr> = pairs
            .into_iter()
            .map(|(from, to)| (canonical(&from), to))
            .collect();
        let entries = Some(map.len());
        Self {
            f: Arc::new(move |a| map.get(a).cloned()),
            entries,
        }
    }

    /// Any function of the announced address (it gets the canonical form).
    pub fn from_fn(f: impl Fn(&NodeAddr) -> Option<NodeAddr> + Send + Sync + 'static) -> Self {
        Self {
            f: Arc::new(f),
            entries: None,
        }
    }

    /// The dialable address of `announced`.
    pub fn apply(&self, announced: &NodeAddr) -> NodeAddr {
        let c = canonical(announced);
        (self.f)(&c).unwrap_or(c)
    }

    /// The first of `candidates` (the names one node is announced by, best
    /// first) that the remap knows, remapped; else the first, canonical.
    pub(crate) fn apply_first(&self, candidates: &[NodeAddr]) -> Option<NodeAddr> {
        candidates
            .iter()
            .find_map(|a| (self.f)(&canonical(a)))
            .or_else(|| candidates.first().map(canonical))
    }
}

impl fmt::Debug for AddressRemap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entries {
            Some(n) => write!(f, "AddressRemap(table of {n})"),
            None => f.write_str("AddressRemap(fn)"),
        }
    }
}

/// `addr` with an IP host in its canonical text form, so that one node is
/// one identity whichever way it was printed.
pub(crate) fn canonical(addr: &NodeAddr) -> NodeAddr {
    match addr.host().parse::<IpAddr>() {
        Ok(ip) => {
            let text = ip.to_string();
            if text == addr.host() {
                addr.clone()
            } else {
                NodeAddr::new(text, addr.port())
            }
        }
        Err(_) => addr.clone(),
    }
}

/// [`AddressRemap::apply`] when there is a remap, else just canonical.
pub fn identity(remap: Option<&AddressRemap>, addr: &NodeAddr) -> NodeAddr {
    match remap {
        Some(r) => r.apply(addr),
        None => canonical(addr),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn a(s: &str) -> NodeAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_in_every_printed_form_is_one_identity() {
        let remap = AddressRemap::table([(a("[::1]:7000"), a("127.0.0.1:17000"))]);
        for form in [
            "[::1]:7000",
            "[0:0:0:0:0:0:0:1]:7000",
            "::1:7000",
            "[0000::0001]:7000",
        ] {
            assert_eq!(remap.apply(&a(form)), a("127.0.0.1:17000"), "{form}");
        }
        assert_eq!(canonical(&a("[2001:DB8::0:1]:1")).host(), "2001:db8::1");
        assert_eq!(canonical(&a("127.0.0.1:1")), a("127.0.0.1:1"));
    }

    #[test]
    fn candidates_are_tried_in_order_and_hostnames_never_resolved() {
        let remap = AddressRemap::table([(a("10.1.2.3:6379"), a("127.0.0.1:16379"))]);
        // endpoint (a hostname nobody maps), then ip.
        let got = remap.apply_first(&[
            a("redis-0.redis.svc.cluster.local:6379"),
            a("10.1.2.3:6379"),
        ]);
        assert_eq!(got, Some(a("127.0.0.1:16379")));
        let got = remap.apply_first(&[a("redis-1.redis.svc.cluster.local:6379")]);
        assert_eq!(got, Some(a("redis-1.redis.svc.cluster.local:6379")));
        let by_fn = AddressRemap::from_fn(|x| {
            x.host()
                .strip_suffix(".internal")
                .map(|_| NodeAddr::new("127.0.0.1", x.port() + 10_000))
        });
        assert_eq!(by_fn.apply(&a("n1.internal:7000")), a("127.0.0.1:17000"));
        assert_eq!(
            format!("{by_fn:?} {remap:?}"),
            "AddressRemap(fn) AddressRemap(table of 1)"
        );
    }
}
