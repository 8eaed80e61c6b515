//! Connection failures → slotguard's types. Replies are the operation
//! table's ([`slotguard_core::op`]).

use slotguard_core::{CacheError, NodeAddr};

use crate::conn::{ConnError, Refused, SendError};
use crate::pool::Unavailable;

/// A connection failure for a command to `node`. A write that was sent
/// and then lost its connection may have applied: that is
/// [`CacheError::Indeterminate`], never a plain connection error.
pub(crate) fn conn_error(err: ConnError, node: &NodeAddr, is_write: bool) -> CacheError {
    if let Some(kind) = err.refused {
        return refused(kind, &err.reason, node);
    }
    if err.protocol {
        if is_write {
            return CacheError::Indeterminate {
                node: node.clone(),
                detail: format!("protocol error: {}", err.reason),
            };
        }
        return CacheError::Protocol(format!("{node}: {}", err.reason));
    }
    if err.written && is_write {
        return CacheError::Indeterminate {
            node: node.clone(),
            detail: err.reason.to_string(),
        };
    }
    CacheError::Connection {
        node: node.clone(),
        detail: err.reason.to_string(),
    }
}

/// A refused handshake: nothing was sent.
pub(crate) fn refused(kind: Refused, reason: &str, node: &NodeAddr) -> CacheError {
    match kind {
        Refused::Auth => CacheError::Auth {
            node: node.clone(),
            detail: reason.to_owned(),
        },
        Refused::Tls => CacheError::Tls {
            node: node.clone(),
            detail: reason.to_owned(),
        },
    }
}

pub(crate) fn send_error(err: SendError, node: &NodeAddr) -> CacheError {
    match err {
        SendError::Closed => CacheError::Connection {
            node: node.clone(),
            detail: "connection closed".into(),
        },
        SendError::Overloaded => CacheError::Overloaded { node: node.clone() },
        SendError::Refused(kind, reason) => refused(kind, &reason, node),
    }
}

pub(crate) fn unavailable(err: Unavailable, node: &NodeAddr) -> CacheError {
    match err {
        Unavailable::Refused(kind, reason) => refused(kind, &reason, node),
        Unavailable::ShutDown => CacheError::Connection {
            node: node.clone(),
            detail: "the leaf was shut down".into(),
        },
        Unavailable::Reconnecting => CacheError::Connection {
            node: node.clone(),
            detail: "not connected (reconnecting)".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use slotguard_core::op::OpKind;
    use slotguard_core::Path;

    use super::*;
    use crate::resp::Frame;

    fn node() -> NodeAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    // The operation table's answers, as this leaf takes a frame.
    fn answer(kind: OpKind, f: Frame) -> Result<slotguard_core::CacheResponse, CacheError> {
        kind.answer(f.into_reply(), &node(), Path::Primary)
    }

    fn get_reply(f: Frame, _: &NodeAddr) -> Result<Option<Bytes>, CacheError> {
        answer(OpKind::Get, f).map(|r| r.value)
    }

    fn set_reply(f: Frame, _: &NodeAddr) -> Result<(), CacheError> {
        answer(OpKind::Set, f).map(|_| ())
    }

    fn del_reply(f: Frame, _: &NodeAddr) -> Result<u64, CacheError> {
        answer(OpKind::Delete, f).map(|r| r.deleted)
    }

    #[test]
    fn server_replies_are_parsed() {
        let e = get_reply(Frame::Error("MOVED 3478 127.0.0.1:7001".into()), &node());
        assert!(matches!(e, Err(CacheError::Moved { slot: 3478, .. })));
        let e = get_reply(Frame::Error("MOVED 3478 not-an-address".into()), &node());
        assert!(matches!(e, Err(CacheError::Protocol(_))));
        let e = set_reply(Frame::Error("LOADING Redis is loading".into()), &node());
        assert!(matches!(e, Err(CacheError::Loading)));
    }

    #[test]
    fn lost_writes_are_indeterminate() {
        let err = |written, protocol| ConnError {
            written,
            protocol,
            refused: None,
            reason: "broken pipe".into(),
        };
        assert!(matches!(
            conn_error(err(true, false), &node(), true),
            CacheError::Indeterminate { .. }
        ));
        assert!(matches!(
            conn_error(err(true, false), &node(), false),
            CacheError::Connection { .. }
        ));
        assert!(matches!(
            conn_error(err(false, false), &node(), true),
            CacheError::Connection { .. }
        ));
        assert!(matches!(
            conn_error(err(true, true), &node(), false),
            CacheError::Protocol(_)
        ));
        assert!(matches!(
            send_error(SendError::Overloaded, &node()),
            CacheError::Overloaded { .. }
        ));
    }

    #[test]
    fn hostile_replies_are_typed() {
        assert!(get_reply(Frame::Integer(1), &node()).is_err());
        assert!(get_reply(Frame::Array(vec![]), &node()).is_err());
        assert!(set_reply(Frame::Null, &node()).is_err());
        assert!(del_reply(Frame::Integer(-1), &node()).is_err());
        assert_eq!(get_reply(Frame::Null, &node()).unwrap(), None);
    }
}
