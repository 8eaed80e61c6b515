//! A server's error reply → [`CacheError`]: the one mapping both leaves use
//! (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `BUSY`,
//! `READONLY`, anything else as [`CacheError::Server`]).

use super::CacheError;
use crate::addr::NodeAddr;

/// Parse a Redis error reply (the text after `-`) into a [`CacheError`].
///
/// `node` is the node that sent it: a `MOVED`/`ASK` with an empty host
/// (`MOVED 12 :7001`, which Redis 7 sends when it does not know its endpoint)
/// means that node's host. A redirect whose slot or address does not parse
/// is a [`CacheError::Protocol`] error, never a panic.
///
/// ```
/// use slotguard_core::{parse_error_reply, CacheError, NodeAddr};
/// let from: NodeAddr = "127.0.0.1:7000".parse().unwrap();
/// match parse_error_reply("MOVED 3999 127.0.0.1:7001", &from) {
///     CacheError::Moved { slot, addr } => {
///         assert_eq!(slot, 3999);
///         assert_eq!(addr.port(), 7001);
///     }
///     other => panic!("{other}"),
/// }
/// ```
pub fn parse_error_reply(text: &str, node: &NodeAddr) -> CacheError {
    let text = text.trim_end_matches(['\r', '\n']);
    let mut parts = text.split_ascii_whitespace();
    let code = parts.next().unwrap_or("");
    match code {
        "MOVED" | "ASK" => {
            let redirect = (|| {
                let slot: u16 = parts.next()?.parse().ok()?;
                if slot >= crate::slot::SLOT_COUNT {
                    return None;
                }
                let mut addr: NodeAddr = parts.next()?.parse().ok()?;
                if parts.next().is_some() {
                    return None;
                }
                if addr.host().is_empty() {
                    addr = NodeAddr::new(node.host(), addr.port());
                }
                Some((slot, addr))
            })();
            match (code, redirect) {
                ("MOVED", Some((slot, addr))) => CacheError::Moved { slot, addr },
                (_, Some((slot, addr))) => CacheError::Ask { slot, addr },
                (_, None) => CacheError::Protocol(format!(
                    "malformed redirect from {node}: {}",
                    truncate(text)
                )),
            }
        }
        "TRYAGAIN" => CacheError::TryAgain,
        "CLUSTERDOWN" | "MASTERDOWN" => CacheError::ClusterDown,
        "LOADING" => CacheError::Loading,
        "BUSY" => CacheError::Busy,
        "READONLY" => CacheError::ReadOnly,
        _ => CacheError::Server(truncate(text).to_owned()),
    }
}

/// Error texts come from the network: keep what we copy into errors bounded.
fn truncate(s: &str) -> &str {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// [`parse_error_reply`] for an error reply's raw bytes (as they came off
/// the wire; invalid UTF-8 is replaced, never a panic).
pub fn reply_error(text: &[u8], node: &NodeAddr) -> CacheError {
    parse_error_reply(&String::from_utf8_lossy(text), node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from() -> NodeAddr {
        "10.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn parses_redirects() {
        match parse_error_reply("MOVED 3999 127.0.0.1:6381", &from()) {
            CacheError::Moved { slot: 3999, addr } => {
                assert_eq!(addr.to_string(), "127.0.0.1:6381")
            }
            e => panic!("{e:?}"),
        }
        match parse_error_reply("ASK 12 ::1:6381", &from()) {
            CacheError::Ask { slot: 12, addr } => {
                assert_eq!(addr.host(), "::1");
                assert_eq!(addr.port(), 6381);
            }
            e => panic!("{e:?}"),
        }
        match parse_error_reply("ASK 12 [2001:db8::2]:6381", &from()) {
            CacheError::Ask { slot: 12, addr } => assert_eq!(addr.host(), "2001:db8::2"),
            e => panic!("{e:?}"),
        }
        match parse_error_reply("MOVED 1 :7002", &from()) {
            CacheError::Moved { slot: 1, addr } => assert_eq!(addr.to_string(), "10.0.0.1:7002"),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn garbage_redirects_are_typed_errors() {
        for text in [
            "MOVED",
            "MOVED 1",
            "MOVED x 1.2.3.4:5",
            "MOVED 16384 1.2.3.4:5",
            "MOVED 99999999999 1.2.3.4:5",
            "MOVED 1 1.2.3.4",
            "MOVED 1 1.2.3.4:99999",
            "MOVED 1 1.2.3.4:5 extra",
            "ASK 1 [::1:5",
            "ASK 1 \u{0}:5",
            "MOVED -1 1.2.3.4:5",
        ] {
            let e = parse_error_reply(text, &from());
            assert!(matches!(e, CacheError::Protocol(_)), "{text:?} gave {e:?}");
        }
        let long = format!("MOVED 1 {}", "a".repeat(100_000));
        assert!(parse_error_reply(&long, &from()).to_string().len() < 400);
    }

    #[test]
    fn other_codes() {
        let n = from();
        assert!(matches!(
            parse_error_reply("TRYAGAIN Multiple keys", &n),
            CacheError::TryAgain
        ));
        assert!(matches!(
            parse_error_reply("CLUSTERDOWN Hash slot not served", &n),
            CacheError::ClusterDown
        ));
        assert!(matches!(
            parse_error_reply("LOADING Redis is loading", &n),
            CacheError::Loading
        ));
        assert!(matches!(
            parse_error_reply("BUSY Redis is busy", &n),
            CacheError::Busy
        ));
        assert!(matches!(
            parse_error_reply("READONLY You can't write", &n),
            CacheError::ReadOnly
        ));
        assert!(matches!(
            parse_error_reply("WRONGTYPE Operation", &n),
            CacheError::Server(_)
        ));
    }
}
