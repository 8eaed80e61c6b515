//! Every operation's command, reply check and answer, in one table.
//!
//! Both leaves (and any client a benchmark drives) turn an [`Op`] into the
//! command it sends through [`Op::command`], check that a reply can belong
//! to it with [`OpKind::fits`], and turn the reply into a response or an
//! error with [`OpKind::answer`]. The matches over [`Op`] below are
//! exhaustive: a new operation does not compile until it has a command and
//! an answer here, so no leaf can send one as something else.
//!
//! ```
//! use bytes::Bytes;
//! use slotguard_core::op::{Arg, Reply};
//! use slotguard_core::{NodeAddr, Op, Path};
//! use std::time::Duration;
//!
//! let op = Op::Set { value: Bytes::from_static(b"v"), ttl: Some(Duration::from_secs(2)) };
//! let cmd = op.command(&Bytes::from_static(b"k"));
//! assert_eq!(cmd.name(), "SET");
//! let key = Bytes::from_static(b"k");
//! let value = Bytes::from_static(b"v");
//! let args: Vec<Arg<'_>> = cmd.args().collect();
//! assert_eq!(args, [Arg::Bytes(&key), Arg::Bytes(&value), Arg::Word("PX"), Arg::Int(2000)]);
//!
//! let node: NodeAddr = "127.0.0.1:7000".parse().unwrap();
//! let resp = op.kind().answer(Reply::Simple(Bytes::from_static(b"OK")), &node, Path::Primary);
//! assert!(resp.is_ok());
//! ```

use std::fmt;

use bytes::Bytes;

use crate::addr::NodeAddr;
pub use crate::error::reply_error;
use crate::error::CacheError;
use crate::request::Op;
use crate::response::{CacheResponse, Path};

/// An operation without its payload: what its command is called, what its
/// reply may look like and what its answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// `GET`.
    Get,
    /// `SET`.
    Set,
    /// `DEL`.
    Delete,
}

/// Every operation, for tables and tests.
pub const ALL_OPS: [OpKind; 3] = [OpKind::Get, OpKind::Set, OpKind::Delete];

impl OpKind {
    /// A short lowercase name for spans and metrics.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Set => "set",
            OpKind::Delete => "delete",
        }
    }

    /// The command's name on the wire.
    pub fn command_name(self) -> &'static str {
        match self {
            OpKind::Get => "GET",
            OpKind::Set => "SET",
            OpKind::Delete => "DEL",
        }
    }

    /// Reads may be served by replicas, near-caches and the secondary store;
    /// writes never are.
    pub fn is_read(self) -> bool {
        self == OpKind::Get
    }

    /// Whether a reply of this shape can be this command's reply. Anything
    /// else means the reply stream no longer lines up with the commands
    /// (the default leaf then replaces the connection). An error reply fits
    /// every command.
    pub fn fits(self, shape: ReplyShape) -> bool {
        matches!(
            (self, shape),
            (_, ReplyShape::Error)
                | (
                    OpKind::Get,
                    ReplyShape::Bulk | ReplyShape::String | ReplyShape::Nil
                )
                | (
                    OpKind::Set,
                    ReplyShape::Simple | ReplyShape::String | ReplyShape::Nil
                )
                | (OpKind::Delete, ReplyShape::Integer)
        )
    }

    /// The answer to this command from `node`, answering as `path`: the
    /// response, or the error the reply means (error replies through
    /// [`parse_error_reply`](crate::parse_error_reply); a reply of the wrong shape is
    /// [`CacheError::Protocol`]).
    pub fn answer(
        self,
        reply: Reply,
        node: &NodeAddr,
        path: Path,
    ) -> Result<CacheResponse, CacheError> {
        let mut resp = CacheResponse::from_node(None, node.clone(), path);
        match (self, reply) {
            (_, Reply::Error(text)) => return Err(reply_error(&text, node)),
            (OpKind::Get, Reply::Nil) => {}
            (OpKind::Get, Reply::Bulk(b) | Reply::String(b)) => resp.value = Some(b),
            (OpKind::Set, Reply::Simple(s) | Reply::String(s)) if s.as_ref() == b"OK" => {}
            (OpKind::Delete, Reply::Integer(n)) if n >= 0 => resp.deleted = n.unsigned_abs(),
            (kind, other) => {
                return Err(CacheError::Protocol(format!(
                    "unexpected reply to {}: {}",
                    kind.command_name(),
                    other.shape()
                )))
            }
        }
        Ok(resp)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Op {
    /// This operation without its payload.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Get => OpKind::Get,
            Op::Set { .. } => OpKind::Set,
            Op::Delete => OpKind::Delete,
        }
    }

    /// The command that performs this operation on `key`.
    pub fn command(&self, key: &Bytes) -> Command {
        let mut cmd = Command {
            kind: self.kind(),
            key: key.clone(),
            value: None,
            px: None,
        };
        if let Op::Set { value, ttl } = self {
            cmd.value = Some(value.clone());
            // Redis takes milliseconds as a positive signed 64-bit number: a
            // sub-millisecond ttl still expires, an absurd one is capped.
            cmd.px = ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX).max(1));
        }
        cmd
    }
}

/// A command for one operation on one key: its name and arguments, shared
/// with the request (the key and value are not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    kind: OpKind,
    key: Bytes,
    value: Option<Bytes>,
    px: Option<i64>,
}

impl Command {
    /// The operation, whose [`OpKind::fits`] and [`OpKind::answer`] take
    /// the reply.
    pub fn kind(&self) -> OpKind {
        self.kind
    }

    /// The command's name on the wire (`GET`, `SET`, `DEL`).
    pub fn name(&self) -> &'static str {
        self.kind.command_name()
    }

    /// The key.
    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The arguments after the name, in order.
    pub fn args(&self) -> impl Iterator<Item = Arg<'_>> + Clone {
        let px = self
            .px
            .into_iter()
            .flat_map(|ms| [Arg::Word("PX"), Arg::Int(ms)]);
        std::iter::once(Arg::Bytes(&self.key))
            .chain(self.value.iter().map(Arg::Bytes))
            .chain(px)
    }
}

/// One argument of a [`Command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    /// A fixed word (`PX`).
    Word(&'static str),
    /// A key or value.
    Bytes(&'a Bytes),
    /// An integer, sent in decimal.
    Int(i64),
}

/// A reply to a [`Command`], as a leaf decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// Nil (`$-1`, `*-1`, RESP3 `_`).
    Nil,
    /// A simple string (`+OK`).
    Simple(Bytes),
    /// A bulk string.
    Bulk(Bytes),
    /// A string whose wire type the client did not keep (fred hands both
    /// simple and bulk strings back as one type).
    String(Bytes),
    /// An integer.
    Integer(i64),
    /// An error reply's text.
    Error(Bytes),
    /// Any other shape (array, map, ...): never a cache command's reply.
    Other(&'static str),
}

impl Reply {
    /// The reply's shape, for [`OpKind::fits`].
    pub fn shape(&self) -> ReplyShape {
        match self {
            Reply::Nil => ReplyShape::Nil,
            Reply::Simple(_) => ReplyShape::Simple,
            Reply::Bulk(_) => ReplyShape::Bulk,
            Reply::String(_) => ReplyShape::String,
            Reply::Integer(_) => ReplyShape::Integer,
            Reply::Error(_) => ReplyShape::Error,
            Reply::Other(name) => ReplyShape::Other(name),
        }
    }
}

/// What a reply is, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReplyShape {
    /// Nil.
    Nil,
    /// A simple string.
    Simple,
    /// A bulk string.
    Bulk,
    /// A string of unknown wire type.
    String,
    /// An integer.
    Integer,
    /// An error reply.
    Error,
    /// Anything else, by name (`array`, `map`, ...).
    Other(&'static str),
}

impl fmt::Display for ReplyShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplyShape::Nil => "null",
            ReplyShape::Simple => "simple string",
            ReplyShape::Bulk => "bulk string",
            ReplyShape::String => "string",
            ReplyShape::Integer => "integer",
            ReplyShape::Error => "error",
            ReplyShape::Other(name) => name,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node() -> NodeAddr {
        "127.0.0.1:7000".parse().unwrap()
    }

    fn op(kind: OpKind) -> Op {
        match kind {
            OpKind::Get => Op::Get,
            OpKind::Set => Op::Set {
                value: Bytes::from_static(b"v"),
                ttl: None,
            },
            OpKind::Delete => Op::Delete,
        }
    }

    /// The reply a healthy node sends to each command, and what it means.
    fn happy_reply(kind: OpKind) -> (Reply, Option<Bytes>, u64) {
        match kind {
            OpKind::Get => (Reply::Bulk(Bytes::from_static(b"v")), Some("v".into()), 0),
            OpKind::Set => (Reply::Simple(Bytes::from_static(b"OK")), None, 0),
            OpKind::Delete => (Reply::Integer(1), None, 1),
        }
    }

    #[test]
    fn every_op_round_trips_through_its_command_and_answer() {
        let key = Bytes::from_static(b"k");
        for kind in ALL_OPS {
            let op = op(kind);
            assert_eq!(op.kind(), kind);
            assert_eq!(op.name(), kind.name());
            assert_eq!(op.is_read(), kind.is_read());
            let cmd = op.command(&key);
            assert_eq!(cmd.kind(), kind);
            assert_eq!(cmd.key(), &key);
            assert_eq!(cmd.args().next(), Some(Arg::Bytes(&key)));
            let (reply, value, deleted) = happy_reply(kind);
            assert!(kind.fits(reply.shape()), "{kind}");
            let resp = cmd.kind().answer(reply, &node(), Path::Replica).unwrap();
            assert_eq!(resp.value, value, "{kind}");
            assert_eq!(resp.deleted, deleted, "{kind}");
            assert_eq!(resp.served.path, Path::Replica);
            assert_eq!(resp.served.node, Some(node()));
            // Every command takes an error reply, and it means the same.
            let moved = Reply::Error(Bytes::from_static(b"MOVED 1 127.0.0.1:7001"));
            assert!(kind.fits(moved.shape()));
            assert!(matches!(
                kind.answer(moved, &node(), Path::Primary),
                Err(CacheError::Moved { slot: 1, .. })
            ));
            // No command takes an array.
            assert!(!kind.fits(ReplyShape::Other("array")));
            assert!(matches!(
                kind.answer(Reply::Other("array"), &node(), Path::Primary),
                Err(CacheError::Protocol(_))
            ));
        }
    }

    #[test]
    fn all_ops_lists_every_kind_once() {
        // Exhaustive: a new kind does not compile until it has a place here;
        // give it the next number and ALL_OPS must list it for this to pass.
        const LAST: usize = 2;
        let place = |k: OpKind| match k {
            OpKind::Get => 0,
            OpKind::Set => 1,
            OpKind::Delete => 2,
        };
        let places: Vec<usize> = ALL_OPS.iter().map(|k| place(*k)).collect();
        assert_eq!(places, (0..=LAST).collect::<Vec<_>>());
    }

    #[test]
    fn commands_name_their_arguments() {
        let key = Bytes::from_static(b"k");
        let v = Bytes::from_static(b"v");
        let words = |op: Op| {
            let cmd = op.command(&key);
            let mut out = vec![cmd.name().to_owned()];
            out.extend(cmd.args().map(|a| match a {
                Arg::Word(w) => w.to_owned(),
                Arg::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                Arg::Int(n) => n.to_string(),
            }));
            out.join(" ")
        };
        assert_eq!(words(Op::Get), "GET k");
        assert_eq!(words(Op::Delete), "DEL k");
        let set = |ttl| Op::Set {
            value: v.clone(),
            ttl,
        };
        assert_eq!(words(set(None)), "SET k v");
        assert_eq!(
            words(set(Some(Duration::from_millis(1500)))),
            "SET k v PX 1500"
        );
        assert_eq!(words(set(Some(Duration::from_micros(10)))), "SET k v PX 1");
        assert_eq!(
            words(set(Some(Duration::MAX))),
            format!("SET k v PX {}", i64::MAX)
        );
    }

    #[test]
    fn replies_of_the_wrong_shape_are_protocol_errors() {
        let n = node();
        let get = |r| OpKind::Get.answer(r, &n, Path::Primary);
        assert_eq!(get(Reply::Nil).unwrap().value, None);
        assert_eq!(
            get(Reply::String("v".into())).unwrap().value,
            Some("v".into())
        );
        assert!(get(Reply::Integer(1)).is_err());
        assert!(get(Reply::Simple("OK".into())).is_err());
        let set = |r| OpKind::Set.answer(r, &n, Path::Primary);
        assert!(set(Reply::String("OK".into())).is_ok());
        assert!(set(Reply::Nil).is_err());
        assert!(set(Reply::Simple("QUEUED".into())).is_err());
        let del = |r| OpKind::Delete.answer(r, &n, Path::Primary);
        assert!(matches!(
            del(Reply::Integer(-1)),
            Err(CacheError::Protocol(_))
        ));
        assert!(del(Reply::Bulk("1".into())).is_err());
        assert!(!OpKind::Delete.fits(ReplyShape::Bulk));
        assert!(!OpKind::Get.fits(ReplyShape::Integer));
        assert!(!OpKind::Get.fits(ReplyShape::Simple));
        assert!(OpKind::Set.fits(ReplyShape::Nil));
    }

    #[test]
    fn error_replies_map_in_one_place() {
        let n = node();
        type Check = fn(&CacheError) -> bool;
        let cases: [(&[u8], Check); 8] = [
            (b"MOVED 3999 127.0.0.1:7001", |e| {
                matches!(e, CacheError::Moved { slot: 3999, .. })
            }),
            (b"ASK 12 127.0.0.1:7001", |e| {
                matches!(e, CacheError::Ask { slot: 12, .. })
            }),
            (b"TRYAGAIN Multiple keys", |e| {
                matches!(e, CacheError::TryAgain)
            }),
            (b"CLUSTERDOWN Hash slot not served", |e| {
                matches!(e, CacheError::ClusterDown)
            }),
            (b"LOADING Redis is loading", |e| {
                matches!(e, CacheError::Loading)
            }),
            (b"READONLY You can't write", |e| {
                matches!(e, CacheError::ReadOnly)
            }),
            (b"WRONGTYPE Operation against a key", |e| {
                matches!(e, CacheError::Server(_))
            }),
            (b"MOVED x \xff", |e| matches!(e, CacheError::Protocol(_))),
        ];
        for (text, ok) in cases {
            let e = reply_error(text, &n);
            assert!(ok(&e), "{:?} gave {e:?}", String::from_utf8_lossy(text));
            for kind in ALL_OPS {
                let via_answer = kind
                    .answer(
                        Reply::Error(Bytes::copy_from_slice(text)),
                        &n,
                        Path::Primary,
                    )
                    .unwrap_err();
                assert_eq!(via_answer.to_string(), e.to_string());
            }
        }
    }
}
