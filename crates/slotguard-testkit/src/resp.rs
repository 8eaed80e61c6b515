//! A tiny synchronous RESP2 client.
//!
//! The testkit must not depend on tokio or on the client library under test,
//! so it speaks the protocol itself over a blocking [`TcpStream`]. Every socket
//! has read/write timeouts so that a paused (SIGSTOPped) node turns into an
//! error instead of a hung test.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Deepest nesting of arrays we accept; Redis never nests CLUSTER replies this
/// deep, so anything deeper is garbage and must not blow the stack.
const MAX_DEPTH: usize = 32;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` style status reply.
    Simple(String),
    /// `-ERR ...` error reply (returned as a value by [`LocalCluster::command`](crate::LocalCluster::command)).
    Error(String),
    /// `:42` integer reply.
    Int(i64),
    /// `$n` bulk string; `None` is the nil bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` is the nil array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status reply or of a UTF-8 bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) => Some(s),
            Reply::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The bytes of a bulk string or status reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(s) => Some(s.as_bytes()),
            Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// An integer reply, or a status/bulk reply that parses as an integer
    /// (Redis returns numbers as bulk strings in several places, e.g. GET).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            other => other.as_str().and_then(|s| s.trim().parse().ok()),
        }
    }

    /// The elements of a non-nil array.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The message of an error reply.
    pub fn error_message(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a nil bulk string or nil array.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Bulk(None) | Reply::Array(None))
    }

    /// Whether this is the `+OK` status reply.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub(crate) fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One connection to one node.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    /// Connects with `connect_timeout` and applies `io_timeout` to reads and writes.
    pub(crate) fn connect(
        addr: SocketAddr,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        // Commands are one small write each; Nagle would only add latency.
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
        })
    }

    /// Writes an already encoded command.
    pub(crate) fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(payload)?;
        stream.flush()
    }

    /// Reads one complete reply.
    pub(crate) fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.stream, 0)
    }

    /// Sends a command and reads its reply.
    pub(crate) fn roundtrip(&mut self, payload: &[u8]) -> io::Result<Reply> {
        self.send(payload)?;
        self.read_reply()
    }

    /// Changes the read timeout (used by fire-and-forget commands that block the server).
    pub(crate) fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.get_ref().set_read_timeout(Some(timeout))
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one `\r\n`-terminated line without the terminator.
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by server",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(invalid("reply line not terminated by CRLF"));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_len(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| {
            invalid(format!(
                "bad length/integer {:?}",
                String::from_utf8_lossy(bytes)
            ))
        })
}

pub(crate) fn read_reply<R: BufRead>(r: &mut R, depth: usize) -> io::Result<Reply> {
    if depth > MAX_DEPTH {
        return Err(invalid("reply nested too deeply"));
    }
    let line = read_line(r)?;
    let (kind, rest) = match line.split_first() {
        Some((k, rest)) => (*k, rest),
        None => return Err(invalid("empty reply line")),
    };
    match kind {
        b'+' => Ok(Reply::Simple(String::from_utf8_lossy(rest).into_owned())),
        b'-' => Ok(Reply::Error(String::from_utf8_lossy(rest).into_owned())),
        b':' => Ok(Reply::Int(parse_len(rest)?)),
        b'$' => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| invalid("bulk length overflow"))?;
            let want = len
                .checked_add(2)
                .ok_or_else(|| invalid("bulk length overflow"))?;
            // The length comes from the wire (a scripted node may claim 2 GiB
            // or 2^63 bytes): grow the buffer as bytes arrive instead of
            // allocating the claim up front.
            let mut buf = Vec::with_capacity(want.min(64 * 1024));
            (&mut *r).take(want as u64).read_to_end(&mut buf)?;
            if buf.len() < want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a bulk string",
                ));
            }
            if !buf.ends_with(b"\r\n") {
                return Err(invalid("bulk string not terminated by CRLF"));
            }
            buf.truncate(len);
            Ok(Reply::Bulk(Some(buf)))
        }
        b'*' => {
            let len = parse_len(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            let len = usize::try_from(len).map_err(|_| invalid("array length overflow"))?;
            // Cap the pre-allocation: the length comes from the wire.
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(read_reply(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => Err(invalid(format!("unknown reply type byte {other:#04x}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parse(bytes: &[u8]) -> io::Result<Reply> {
        read_reply(&mut BufReader::new(bytes), 0)
    }

    #[test]
    fn encodes_bulk_array() {
        assert_eq!(
            encode(&["GET", "k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
        );
    }

    #[test]
    fn parses_all_types() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Simple("OK".into()));
        assert_eq!(parse(b"-ERR x\r\n").unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(parse(b":-5\r\n").unwrap(), Reply::Int(-5));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Array(None));
        let r = parse(b"*2\r\n$3\r\na\r\n\r\n*1\r\n:1\r\n").unwrap();
        assert_eq!(
            r,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Array(Some(vec![Reply::Int(1)])),
            ]))
        );
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b"$3\r\nab").is_err());
        // A claimed length far beyond memory is an error, not an allocation.
        assert!(parse(b"$9223372036854775800\r\nab").is_err());
        assert!(parse(b"$18446744073709551615\r\n").is_err());
    }
}
