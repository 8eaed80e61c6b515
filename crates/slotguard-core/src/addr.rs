//! Node addresses as Redis reports them.

use std::fmt;
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
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    host: Arc<str>,
    port: u16,
}

impl NodeAddr {
    /// An address from its parts. The host is taken as given (no brackets).
    pub fn new(host: impl Into<Arc<str>>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// The host: an IP address (IPv6 without brackets) or a host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
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
}
