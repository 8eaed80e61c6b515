//! RESP: the frames a node sends, a bounded iterative decoder, and the
//! command encoder.
//!
//! slotguard decodes replies itself instead of through fred's decoder, which
//! recurses once per nesting level: a reply ~1,150 arrays deep (under 5 KB)
//! overflowed a tokio worker's stack and aborted the process. This decoder
//! keeps its state on the heap, in an explicit stack, and caps nesting depth,
//! element counts and bulk lengths, so a hostile or broken node costs a typed
//! error and a fresh connection, never the process (docs/leaf-connections.md).

mod decode;
mod encode;

pub(crate) use decode::{Decoder, Limits};
pub(crate) use encode::{encode_command, Arg};

use bytes::Bytes;
use slotguard_core::op::{Reply, ReplyShape};

/// One RESP2 or RESP3 value, as a node sent it (public for
/// [`NodeService::admin`](crate::NodeService::admin) replies).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    /// `+OK`.
    Simple(Bytes),
    /// `-ERR ...` or a RESP3 blob error.
    Error(Bytes),
    /// `:42`.
    Integer(i64),
    /// `$n` bulk string, or a RESP3 verbatim string (its `txt:` prefix dropped).
    Bulk(Bytes),
    /// `$-1`, `*-1`, RESP3 `_`.
    Null,
    /// `*n` array or RESP3 `~n` set.
    Array(Vec<Frame>),
    /// RESP3 `%n` map.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `>n` push message (out of band: never a command's reply).
    Push(Vec<Frame>),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,1.5`.
    Double(f64),
    /// RESP3 `(123...`, kept as its digits.
    BigNumber(Bytes),
}

impl Frame {
    /// A short name of the frame's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Simple(_) => "simple string",
            Frame::Error(_) => "error",
            Frame::Integer(_) => "integer",
            Frame::Bulk(_) => "bulk string",
            Frame::Null => "null",
            Frame::Array(_) => "array",
            Frame::Map(_) => "map",
            Frame::Push(_) => "push",
            Frame::Boolean(_) => "boolean",
            Frame::Double(_) => "double",
            Frame::BigNumber(_) => "big number",
        }
    }

    /// The bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Simple(b) | Frame::Bulk(b) | Frame::BigNumber(b) => Some(b),
            _ => None,
        }
    }

    /// The text of a simple or bulk string that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// [`Frame::as_str`], owned.
    pub fn as_string(&self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }

    /// A non-negative integer, or a string holding one (RESP2 replies carry
    /// numbers both ways).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Frame::Integer(n) => u64::try_from(*n).ok(),
            other => other.as_str().and_then(|s| s.trim().parse().ok()),
        }
    }

    /// `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Frame::Simple(b) if b.as_ref() == b"OK")
    }

    /// The frame as a cache command's reply, for
    /// [`OpKind::answer`](slotguard_core::op::OpKind::answer).
    pub fn into_reply(self) -> Reply {
        match self {
            Frame::Null => Reply::Nil,
            Frame::Simple(b) => Reply::Simple(b),
            Frame::Bulk(b) => Reply::Bulk(b),
            Frame::Integer(n) => Reply::Integer(n),
            Frame::Error(e) => Reply::Error(e),
            other => Reply::Other(other.kind()),
        }
    }

    /// The frame's shape, for [`OpKind::fits`](slotguard_core::op::OpKind::fits).
    pub fn shape(&self) -> ReplyShape {
        match self {
            Frame::Null => ReplyShape::Nil,
            Frame::Simple(_) => ReplyShape::Simple,
            Frame::Bulk(_) => ReplyShape::Bulk,
            Frame::Integer(_) => ReplyShape::Integer,
            Frame::Error(_) => ReplyShape::Error,
            other => ReplyShape::Other(other.kind()),
        }
    }
}
