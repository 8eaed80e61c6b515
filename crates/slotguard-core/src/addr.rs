//! Node addresses as Redis reports them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use crate::error::CacheError;

/// The address of one cluster node: host (IP or name) and client port.
///
/// Cheap to clone. Parses the forms Redis uses in `MOVED`/`ASK` replies and
/// `CLUSTER SHARDS`: `127.0.0.1:7000`, `::1:7000` (IPv6 without brackets, the
/// port is after the last colon), `[::1]:7000` and `redis-0.local:7000`.
///
/// ```
/// use slotguard_core::NodeAddr;
/// let a: NodeAddr = "::1:7001".parse().unwrap();
/// assert_eq!(a.host(), "::1");
/// assert_eq!(a.port(), 7001);
/// assert_eq!(a.to_string(), "[::1]:7001");
/// ```
#[derive(Clone)]
pub struct NodeAddr {
    repr: Repr,
}

/// Host names this long or shorter (every IPv4 address, short IPv6 ones,
/// most host names) are kept inside the address.
const INLINE: usize = 20;

// Why inline: every request carries its node's address, and the layers
// clone it several times per request. A shared `Arc<str>` per node would
// make those clones bump one counter that every core writes, which costs
// more than the copy. Both forms are 24 bytes, as `Arc<str>` + port was.
#[derive(Clone)]
enum Repr {
    Inline {
        port: u16,
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared {
        port: u16,
        host: Arc<str>,
    },
}

impl NodeAddr {
    /// An address from its parts. The host is taken as given (no brackets).
    pub fn new(host: impl Into<Arc<str>>, port: u16) -> Self {
        let host: Arc<str> = host.into();
        let repr = if host.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..host.len()].copy_from_slice(host.as_bytes());
            Repr::Inline {
                port,
                len: host.len() as u8,
                bytes,
            }
        } else {
            Repr::Shared { port, host }
        };
        Self { repr }
    }

    /// The host: an IP address (IPv6 without brackets) or a host name.
    pub fn host(&self) -> &str {
        match &self.repr {
            // The bytes were copied from a `str`, so they are UTF-8.
            Repr::Inline { .. } => std::str::from_utf8(self.host_bytes()).unwrap_or_default(),
            Repr::Shared { host, .. } => host,
        }
    }

    fn host_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline { len, bytes, .. } => &bytes[..usize::from(*len)],
            Repr::Shared { host, .. } => host.as_bytes(),
        }
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        match self.repr {
            Repr::Inline { port, .. } | Repr::Shared { port, .. } => port,
        }
    }
}

// Equality, hashing and order are those of (host, port), whichever form
// holds the host.
impl PartialEq for NodeAddr {
    fn eq(&self, other: &Self) -> bool {
        self.port() == other.port() && self.host_bytes() == other.host_bytes()
    }
}

impl Eq for NodeAddr {}

impl Hash for NodeAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes (bytes, then 0xff), without checking UTF-8 again.
        state.write(self.host_bytes());
        state.write_u8(0xff);
        self.port().hash(state);
    }
}

impl PartialOrd for NodeAddr {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeAddr {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Byte order of UTF-8 is the order of `str`.
        self.host_bytes()
            .cmp(other.host_bytes())
            .then(self.port().cmp(&other.port()))
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, port) = (self.host(), self.port());
        if host.contains(':') {
            write!(f, "[{host}]:{port}")
        } else {
            write!(f, "{host}:{port}")
        }
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for NodeAddr {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CacheError::InvalidInput(format!("invalid node address {s:?}"));
        // `CLUSTER NODES` appends `@busport` (and `,hostname`): ignore them.
        let s_main = s.split(['@', ',']).next().unwrap_or(s);
        let (host, port) = if let Some(rest) = s_main.strip_prefix('[') {
            let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
            (host, port)
        } else {
            s_main.rsplit_once(':').ok_or_else(bad)?
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0
            || host.len() > 255
            || host
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_' | '%')))
        {
            return Err(bad());
        }
        Ok(NodeAddr::new(host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let a: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("127.0.0.1", 7000));
        let a: NodeAddr = "[::1]:7000".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("::1", 7000));
        let a: NodeAddr = "fe80::1:2:6379".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("fe80::1:2", 6379));
        let a: NodeAddr = "redis-0.svc:6379@16379".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("redis-0.svc", 6379));
        // empty host: Redis 7 sends `:port` when the endpoint is unknown
        let a: NodeAddr = ":6380".parse().unwrap();
        assert_eq!((a.host(), a.port()), ("", 6380));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "nohost",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "1.2.3.4:-1",
            "[::1:7000",
            "a b:1",
            "x:1\r\n",
            "\u{fffd}:1",
        ] {
            assert!(s.parse::<NodeAddr>().is_err(), "{s:?} should not parse");
        }
    }

    #[test]
    fn short_and_long_hosts_behave_alike() {
        use std::collections::HashSet;
        let long = "redis-cluster-0.redis-cluster-headless.default.svc";
        let a = NodeAddr::new(long, 6379);
        let b: NodeAddr = format!("{long}:6379").parse().unwrap();
        assert_eq!((a.host(), a.port()), (long, 6379));
        assert_eq!(a, b);
        assert_eq!(a.to_string(), format!("{long}:6379"));
        let short = NodeAddr::new("10.0.0.1", 6379);
        assert_eq!(short.clone(), short);
        assert_ne!(short, NodeAddr::new("10.0.0.1", 6380));
        assert_ne!(short, NodeAddr::new("10.0.0.10", 6379));
        // the longest inline host and one byte more
        let at = NodeAddr::new("a".repeat(INLINE), 1);
        let over = NodeAddr::new("a".repeat(INLINE + 1), 1);
        assert_eq!(at.host().len(), INLINE);
        assert_eq!(over.host().len(), INLINE + 1);
        assert!(at < over, "ordered by host, then port");
        assert!(NodeAddr::new("a", 2) < NodeAddr::new("b", 1));
        assert!(NodeAddr::new("a", 1) < NodeAddr::new("a", 2));
        let set: HashSet<NodeAddr> = [a.clone(), b, short.clone(), at, over]
            .into_iter()
            .collect();
        assert_eq!(set.len(), 4);
        assert!(set.contains(&a) && set.contains(&short));
        assert_eq!(std::mem::size_of::<NodeAddr>(), 24);
    }
}
