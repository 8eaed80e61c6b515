//! fred replies and errors → slotguard's types.

use bytes::Bytes;
use fred::error::{Error as FredError, ErrorKind};
use fred::types::Value;
use slotguard_core::{parse_error_reply, CacheError, NodeAddr};

/// Map a fred error from `node` to a [`CacheError`].
///
/// Server error replies (`MOVED`, `ASK`, `TRYAGAIN`, ...) arrive as fred
/// errors whose details hold the reply text; client-side failures (I/O,
/// timeouts) are told apart by kind. A write whose connection broke may have
/// been applied: that is [`CacheError::Indeterminate`], not a plain
/// connection error.
pub(crate) fn map_error(err: FredError, node: &NodeAddr, is_write: bool) -> CacheError {
    // fred reports "no connection to send on" as an Unknown-kind error with
    // this text: nothing was sent, so even a write is a plain connection
    // failure, not indeterminate.
    if err.details().starts_with("Failed to route command") {
        return CacheError::Connection {
            node: node.clone(),
            detail: err.details().to_owned(),
        };
    }
    match err.kind() {
        ErrorKind::Timeout => CacheError::Timeout { node: node.clone() },
        ErrorKind::IO | ErrorKind::Canceled if is_write => CacheError::Indeterminate {
            node: node.clone(),
            detail: err.details().to_owned(),
        },
        ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Backpressure => CacheError::Connection {
            node: node.clone(),
            detail: err.details().to_owned(),
        },
        ErrorKind::Config | ErrorKind::Url | ErrorKind::Routing => CacheError::Connection {
            node: node.clone(),
            detail: format!("client configuration: {}", err.details()),
        },
        ErrorKind::Protocol | ErrorKind::Parse => CacheError::Protocol(err.details().to_owned()),
        _ => parse_error_reply(err.details(), node),
    }
}

/// A `GET` reply: nil or a bulk string (fred may hand a UTF-8 bulk string
/// back as `Value::String`; both are bytes to us).
pub(crate) fn get_reply(v: Value) -> Result<Option<Bytes>, CacheError> {
    match v {
        Value::Null => Ok(None),
        Value::Bytes(b) => Ok(Some(b)),
        Value::String(s) => Ok(Some(s.into_inner())),
        other => Err(CacheError::Protocol(format!(
            "unexpected reply to GET: {}",
            other.kind()
        ))),
    }
}

/// A `SET` reply: `+OK`.
pub(crate) fn set_reply(v: Value) -> Result<(), CacheError> {
    if v.is_ok() {
        Ok(())
    } else {
        Err(CacheError::Protocol(format!(
            "unexpected reply to SET: {}",
            v.kind()
        )))
    }
}

/// A `DEL` reply: the number of keys removed.
pub(crate) fn del_reply(v: Value) -> Result<u64, CacheError> {
    match v {
        Value::Integer(n) if n >= 0 => Ok(n as u64),
        other => Err(CacheError::Protocol(format!(
            "unexpected reply to DEL: {}",
            other.kind()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    #[test]
    fn server_replies_are_parsed() {
        let e = FredError::new(ErrorKind::Cluster, "MOVED 3478 127.0.0.1:7001");
        assert!(matches!(
            map_error(e, &node(), false),
            CacheError::Moved { slot: 3478, .. }
        ));
        let e = FredError::new(ErrorKind::Cluster, "MOVED 3478 not-an-address");
        assert!(matches!(
            map_error(e, &node(), false),
            CacheError::Protocol(_)
        ));
        let e = FredError::new(
            ErrorKind::Unknown,
            "LOADING Redis is loading the dataset in memory",
        );
        assert!(matches!(map_error(e, &node(), false), CacheError::Loading));
    }

    #[test]
    fn unroutable_is_a_connection_error() {
        let e = FredError::new(ErrorKind::Unknown, "Failed to route command.");
        assert!(matches!(
            map_error(e, &node(), true),
            CacheError::Connection { .. }
        ));
    }

    #[test]
    fn io_on_write_is_indeterminate() {
        let e = FredError::new(ErrorKind::IO, "broken pipe");
        assert!(matches!(
            map_error(e, &node(), true),
            CacheError::Indeterminate { .. }
        ));
        let e = FredError::new(ErrorKind::IO, "broken pipe");
        assert!(matches!(
            map_error(e, &node(), false),
            CacheError::Connection { .. }
        ));
        let e = FredError::new(ErrorKind::Timeout, "");
        assert!(matches!(
            map_error(e, &node(), true),
            CacheError::Timeout { .. }
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
