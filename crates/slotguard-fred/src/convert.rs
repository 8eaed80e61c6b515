//! fred replies and errors → slotguard's types.

use bytes::Bytes;
use fred::error::{Error as FredError, ErrorKind};
use fred::types::Value;
use slotguard_core::op::Reply;
use slotguard_core::{parse_error_reply, CacheError, NodeAddr};
use slotguard_node::Frame;

/// Map a fred error from `node` to a [`CacheError`].
///
/// Server error replies (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, ...)
/// arrive as fred errors whose details hold the reply text and go through
/// [`parse_error_reply`], as the default leaf's do. Client-side failures are
/// told apart by kind; a write whose connection broke after it was sent may
/// have applied: [`CacheError::Indeterminate`].
pub(crate) fn map_error(err: &FredError, node: &NodeAddr, is_write: bool) -> CacheError {
    let detail = err.details().to_owned();
    // fred's text for "no connection to send on": nothing was sent, so even
    // a write is a plain connection failure.
    if detail.starts_with("Failed to route command") {
        return CacheError::Connection {
            node: node.clone(),
            detail,
        };
    }
    match err.kind() {
        ErrorKind::Timeout if is_write => CacheError::Indeterminate {
            node: node.clone(),
            detail: "no reply within the deadline".into(),
        },
        ErrorKind::Timeout => CacheError::Timeout { node: node.clone() },
        ErrorKind::Auth => CacheError::Auth {
            node: node.clone(),
            detail,
        },
        ErrorKind::Tls => CacheError::Tls {
            node: node.clone(),
            detail,
        },
        ErrorKind::Backpressure => CacheError::Overloaded { node: node.clone() },
        ErrorKind::IO | ErrorKind::Canceled if is_write => CacheError::Indeterminate {
            node: node.clone(),
            detail,
        },
        ErrorKind::IO | ErrorKind::Canceled => CacheError::Connection {
            node: node.clone(),
            detail,
        },
        ErrorKind::Config | ErrorKind::Url | ErrorKind::Routing => CacheError::Connection {
            node: node.clone(),
            detail: format!("client configuration: {detail}"),
        },
        ErrorKind::Protocol | ErrorKind::Parse => CacheError::Protocol(detail),
        _ => parse_error_reply(&detail, node),
    }
}

/// Whether a fred error is a reply the server sent (as opposed to a
/// failure of the client or the connection).
pub(crate) fn is_server_reply(err: &FredError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Cluster | ErrorKind::Unknown | ErrorKind::InvalidCommand | ErrorKind::Auth
    ) && !err.details().starts_with("Failed to route command")
}

/// A fred value as a cache command's reply, for
/// [`OpKind::answer`](slotguard_core::op::OpKind::answer). fred hands simple
/// and bulk strings back alike (`Value::String` for UTF-8, `Value::Bytes`
/// otherwise), so a string is [`Reply::String`]: `GET` and `SET` both take
/// it. Error replies arrive as fred errors ([`map_error`]), not values.
pub(crate) fn to_reply(v: Value) -> Reply {
    match v {
        Value::Null => Reply::Nil,
        Value::Bytes(b) => Reply::Bulk(b),
        Value::String(s) => Reply::String(s.into_inner()),
        Value::Integer(n) => Reply::Integer(n),
        Value::Boolean(_) => Reply::Other("boolean"),
        Value::Double(_) => Reply::Other("double"),
        Value::Queued => Reply::Other("queued"),
        Value::Array(_) => Reply::Other("array"),
        Value::Map(_) => Reply::Other("map"),
    }
}

/// A fred value as the default leaf's [`Frame`], so that both leaves parse
/// topology replies with one parser. fred decodes RESP3 maps into a hash
/// map: order is lost, which the parsers (keyed fields) do not need.
pub(crate) fn to_frame(v: Value) -> Frame {
    match v {
        Value::Null => Frame::Null,
        Value::Boolean(b) => Frame::Boolean(b),
        Value::Integer(i) => Frame::Integer(i),
        Value::Double(d) => Frame::Double(d),
        Value::String(s) => Frame::Bulk(s.into_inner()),
        Value::Bytes(b) => Frame::Bulk(b),
        Value::Queued => Frame::Simple(Bytes::from_static(b"QUEUED")),
        Value::Array(items) => Frame::Array(items.into_iter().map(to_frame).collect()),
        Value::Map(map) => Frame::Map(
            map.inner()
                .into_iter()
                .map(|(k, v)| (Frame::Bulk(k.into_bytes()), to_frame(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use slotguard_core::op::OpKind;
    use slotguard_core::Path;

    use super::*;

    fn node() -> NodeAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    // The operation table's answers, as this leaf takes a value.
    fn answer(kind: OpKind, v: Value) -> Result<slotguard_core::CacheResponse, CacheError> {
        kind.answer(to_reply(v), &node(), Path::Primary)
    }

    fn get_reply(v: Value) -> Result<Option<Bytes>, CacheError> {
        answer(OpKind::Get, v).map(|r| r.value)
    }

    fn set_reply(v: Value) -> Result<(), CacheError> {
        answer(OpKind::Set, v).map(|_| ())
    }

    fn del_reply(v: Value) -> Result<u64, CacheError> {
        answer(OpKind::Delete, v).map(|r| r.deleted)
    }

    #[test]
    fn server_replies_are_parsed() {
        let e = FredError::new(ErrorKind::Cluster, "MOVED 3478 127.0.0.1:7001");
        assert!(matches!(
            map_error(&e, &node(), false),
            CacheError::Moved { slot: 3478, .. }
        ));
        let e = FredError::new(ErrorKind::Cluster, "ASK 3478 127.0.0.1:7001");
        assert!(matches!(
            map_error(&e, &node(), false),
            CacheError::Ask { slot: 3478, .. }
        ));
        let e = FredError::new(ErrorKind::Unknown, "CLUSTERDOWN The cluster is down");
        assert!(matches!(
            map_error(&e, &node(), false),
            CacheError::ClusterDown
        ));
        let e = FredError::new(ErrorKind::Unknown, "LOADING Redis is loading");
        assert!(matches!(map_error(&e, &node(), false), CacheError::Loading));
    }

    #[test]
    fn client_failures_are_typed() {
        let e = FredError::new(ErrorKind::Unknown, "Failed to route command.");
        assert!(matches!(
            map_error(&e, &node(), true),
            CacheError::Connection { .. }
        ));
        let e = FredError::new(ErrorKind::IO, "broken pipe");
        assert!(matches!(
            map_error(&e, &node(), true),
            CacheError::Indeterminate { .. }
        ));
        assert!(matches!(
            map_error(&e, &node(), false),
            CacheError::Connection { .. }
        ));
        let e = FredError::new(ErrorKind::Auth, "WRONGPASS");
        assert!(matches!(
            map_error(&e, &node(), false),
            CacheError::Auth { .. }
        ));
        let e = FredError::new(ErrorKind::Backpressure, "");
        assert!(matches!(
            map_error(&e, &node(), false),
            CacheError::Overloaded { .. }
        ));
    }

    #[test]
    fn hostile_replies_are_typed() {
        assert!(get_reply(Value::Integer(1)).is_err());
        assert!(get_reply(Value::Array(vec![])).is_err());
        assert!(set_reply(Value::Null).is_err());
        assert!(del_reply(Value::Integer(-1)).is_err());
        assert_eq!(get_reply(Value::Null).unwrap(), None);
    }
}
