//! An iterative, bounded RESP2/RESP3 decoder.
//!
//! State lives in an explicit stack of partly read aggregates, so nesting
//! costs heap (bounded by [`Limits::max_depth`]), never call stack; a reply
//! split over many reads is resumed where it stopped, never re-parsed from
//! its start. Announced lengths are checked against the limits *before*
//! anything is buffered or allocated: a `$2147483647` header or `*1000000000`
//! fails at once, with no memory reserved for it.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::Frame;

/// Caps on what one reply may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Deepest nesting of aggregates (arrays, maps, sets, pushes).
    pub(crate) max_depth: usize,
    /// Most elements announced by all aggregates of one reply together.
    pub(crate) max_elements: usize,
    /// Longest bulk string.
    pub(crate) max_bulk: usize,
    /// Longest simple line (`+`, `-`, `:` ...).
    pub(crate) max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_elements: 1 << 20,
            max_bulk: 512 * 1024 * 1024,
            max_line: 64 * 1024,
        }
    }
}

/// Why a byte stream is not (acceptable) RESP. After any of these the
/// stream's position is lost: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Nesting deeper than the limit.
    TooDeep(usize),
    /// More aggregate elements than the limit.
    TooManyElements(u64),
    /// A bulk string longer than the limit.
    BulkTooLarge(u64),
    /// A line longer than the limit without its CRLF.
    LineTooLong(usize),
    /// Bytes that are not RESP.
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooDeep(max) => write!(f, "reply nested deeper than {max} levels"),
            DecodeError::TooManyElements(n) => {
                write!(f, "reply announces {n} elements, over the limit")
            }
            DecodeError::BulkTooLarge(n) => {
                write!(f, "reply announces a bulk of {n} bytes, over the limit")
            }
            DecodeError::LineTooLong(n) => write!(f, "reply line longer than {n} bytes"),
            DecodeError::Invalid(what) => write!(f, "invalid reply: {what}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Array,
    Map,
    Push,
    /// RESP3 attributes: metadata before a reply, dropped.
    Attribute,
}

#[derive(Debug)]
struct Partial {
    kind: AggKind,
    remaining: usize,
    items: Vec<Frame>,
}

impl Partial {
    fn finish(self) -> Frame {
        match self.kind {
            AggKind::Array | AggKind::Attribute => Frame::Array(self.items),
            AggKind::Push => Frame::Push(self.items),
            AggKind::Map => {
                let mut pairs = Vec::with_capacity(self.items.len() / 2);
                let mut it = self.items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Frame::Map(pairs)
            }
        }
    }
}

/// What one token at the front of the buffer is.
enum Token {
    Leaf(Frame),
    Aggregate(AggKind, usize),
}

/// Resumable decoder for one connection's byte stream.
#[derive(Debug)]
pub(crate) struct Decoder {
    limits: Limits,
    stack: Vec<Partial>,
    /// Elements announced so far by the reply being decoded.
    elements: u64,
    /// Bytes the next token needs in the buffer, when known (a bulk whose
    /// body has not arrived): lets the reader reserve once.
    need: usize,
}

/// Most elements reserved up front for one aggregate: the announced count is
/// only a claim until the elements arrive.
const PREALLOC: usize = 64;

impl Decoder {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            stack: Vec::new(),
            elements: 0,
            need: 0,
        }
    }

    /// Bytes the buffer must hold before the next call can make progress
    /// (0 when unknown).
    pub(crate) fn need(&self) -> usize {
        self.need
    }

    /// The next complete top-level frame, consuming its bytes from `buf`;
    /// `Ok(None)` when more bytes are needed (what was consumed so far is
    /// kept in the decoder's state).
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        loop {
            let Some(token) = self.token(buf)? else {
                return Ok(None);
            };
            let mut frame = match token {
                Token::Leaf(frame) => frame,
                Token::Aggregate(kind, n) => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(DecodeError::TooDeep(self.limits.max_depth));
                    }
                    let items = if kind == AggKind::Map || kind == AggKind::Attribute {
                        n.checked_mul(2)
                            .ok_or(DecodeError::TooManyElements(n as u64))?
                    } else {
                        n
                    };
                    self.elements = self.elements.saturating_add(items as u64);
                    if self.elements > self.limits.max_elements as u64 {
                        return Err(DecodeError::TooManyElements(self.elements));
                    }
                    if items > 0 {
                        self.stack.push(Partial {
                            kind,
                            remaining: items,
                            items: Vec::with_capacity(items.min(PREALLOC)),
                        });
                        continue;
                    }
                    let empty = Partial {
                        kind,
                        remaining: 0,
                        items: Vec::new(),
                    };
                    if kind == AggKind::Attribute {
                        continue;
                    }
                    empty.finish()
                }
            };
            // Attach the frame to its parents, completing each that is full.
            loop {
                let Some(top) = self.stack.last_mut() else {
                    self.elements = 0;
                    return Ok(Some(frame));
                };
                top.items.push(frame);
                top.remaining -= 1;
                if top.remaining > 0 {
                    break;
                }
                let Some(done) = self.stack.pop() else {
                    return Err(DecodeError::Invalid("decoder stack"));
                };
                if done.kind == AggKind::Attribute {
                    // Metadata about the next value: dropped, and it does not
                    // count as an element of its parent.
                    break;
                }
                frame = done.finish();
            }
        }
    }

    /// Parse the token at the front of `buf`, or `None` if incomplete.
    fn token(&mut self, buf: &mut BytesMut) -> Result<Option<Token>, DecodeError> {
        self.need = 0;
        let Some(&tag) = buf.first() else {
            return Ok(None);
        };
        if !b"+-(:_#,$!=*~%>|".contains(&tag) {
            // Known at once: no need to wait for a line end that may never come.
            return Err(DecodeError::Invalid("unknown type byte"));
        }
        let Some(line_end) = find_crlf(buf, self.limits.max_line)? else {
            return Ok(None);
        };
        // `line` is the header without its type byte and CRLF.
        let line = &buf[1..line_end];
        let header_len = line_end + 2;
        let token = match tag {
            b'+' | b'-' | b'(' => {
                let bytes = buf.split_to(header_len).freeze().slice(1..line_end);
                Token::Leaf(match tag {
                    b'+' => Frame::Simple(bytes),
                    b'-' => Frame::Error(bytes),
                    _ => Frame::BigNumber(bytes),
                })
            }
            b':' | b'_' | b'#' | b',' => {
                let frame = scalar(tag, line)?;
                buf.advance(header_len);
                Token::Leaf(frame)
            }
            b'$' | b'!' | b'=' => return self.blob(buf, tag, line_end),
            b'*' | b'~' | b'%' | b'>' | b'|' => {
                let n = parse_int(line)?;
                buf.advance(header_len);
                if n == -1 && tag == b'*' {
                    return Ok(Some(Token::Leaf(Frame::Null)));
                }
                self.aggregate(tag, n)?
            }
            _ => return Err(DecodeError::Invalid("unknown type byte")),
        };
        Ok(Some(token))
    }

    /// A bulk string, blob error or verbatim string (`$`, `!`, `=`) whose
    /// header ends at `line_end`: `None` until its body is in.
    fn blob(
        &mut self,
        buf: &mut BytesMut,
        tag: u8,
        line_end: usize,
    ) -> Result<Option<Token>, DecodeError> {
        let header_len = line_end + 2;
        let n = parse_int(&buf[1..line_end])?;
        if n == -1 && tag == b'$' {
            buf.advance(header_len);
            return Ok(Some(Token::Leaf(Frame::Null)));
        }
        let len = usize::try_from(n).map_err(|_| DecodeError::Invalid("bulk length"))?;
        if len > self.limits.max_bulk {
            return Err(DecodeError::BulkTooLarge(len as u64));
        }
        let total = header_len + len + 2;
        if buf.len() < total {
            self.need = total;
            return Ok(None);
        }
        if &buf[total - 2..total] != b"\r\n" {
            return Err(DecodeError::Invalid("bulk not ended by CRLF"));
        }
        buf.advance(header_len);
        let body = buf.split_to(len).freeze();
        buf.advance(2);
        Ok(Some(Token::Leaf(match tag {
            b'$' => Frame::Bulk(body),
            b'!' => Frame::Error(body),
            _ => Frame::Bulk(verbatim(body)?),
        })))
    }

    /// The header of an aggregate of `n` elements (`*`, `~`, `%`, `>`, `|`).
    fn aggregate(&self, tag: u8, n: i64) -> Result<Token, DecodeError> {
        let n = u64::try_from(n).map_err(|_| DecodeError::Invalid("aggregate length"))?;
        if n > self.limits.max_elements as u64 {
            return Err(DecodeError::TooManyElements(n));
        }
        let kind = match tag {
            b'*' | b'~' => AggKind::Array,
            b'%' => AggKind::Map,
            b'>' => AggKind::Push,
            _ => AggKind::Attribute,
        };
        Ok(Token::Aggregate(kind, n as usize))
    }
}

/// A one-line value: integer (`:`), null (`_`), boolean (`#`), double (`,`).
fn scalar(tag: u8, line: &[u8]) -> Result<Frame, DecodeError> {
    Ok(match tag {
        b':' => Frame::Integer(parse_int(line)?),
        b'_' if line.is_empty() => Frame::Null,
        b'_' => return Err(DecodeError::Invalid("null with content")),
        b'#' => match line {
            b"t" => Frame::Boolean(true),
            b"f" => Frame::Boolean(false),
            _ => return Err(DecodeError::Invalid("boolean")),
        },
        _ => {
            let text = std::str::from_utf8(line).map_err(|_| DecodeError::Invalid("double"))?;
            Frame::Double(match text {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => other.parse().map_err(|_| DecodeError::Invalid("double"))?,
            })
        }
    })
}

/// Index of the CR of the first CRLF, `None` if not there yet.
fn find_crlf(buf: &[u8], max_line: usize) -> Result<Option<usize>, DecodeError> {
    let window = &buf[..buf.len().min(max_line + 2)];
    match memchr::memchr(b'\n', window) {
        Some(0) => Err(DecodeError::Invalid("empty line")),
        Some(i) if window[i - 1] == b'\r' && i >= 2 => Ok(Some(i - 1)),
        Some(_) => Err(DecodeError::Invalid("line not ended by CRLF")),
        None if buf.len() > max_line + 2 => Err(DecodeError::LineTooLong(max_line)),
        None => Ok(None),
    }
}

fn parse_int(line: &[u8]) -> Result<i64, DecodeError> {
    let (neg, digits) = match line.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, line),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(DecodeError::Invalid("integer"));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(DecodeError::Invalid("integer"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or(DecodeError::Invalid("integer overflow"))?;
    }
    Ok(if neg { -n } else { n })
}

/// A verbatim string's body without its 3-letter format and colon.
fn verbatim(body: Bytes) -> Result<Bytes, DecodeError> {
    if body.len() < 4 || body[3] != b':' {
        return Err(DecodeError::Invalid("verbatim string"));
    }
    Ok(body.slice(4..))
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
