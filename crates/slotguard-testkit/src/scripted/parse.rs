//! Incremental parser for the commands a client sends: RESP2 arrays of bulk
//! strings, and inline commands (`PING\r\n`) as typed into `telnet`.
//!
//! Every length comes from the wire, so nothing is pre-allocated from it and
//! every limit is checked before bytes are buffered for it: a hostile or
//! broken client gets a protocol error, never a panic or an allocation the
//! size of its claim.

/// Most arguments one command may have (Redis allows more; tests never need it).
const MAX_ARGS: usize = 1024 * 1024;
/// Largest bulk argument accepted.
const MAX_BULK: usize = 64 * 1024 * 1024;
/// Longest inline command or `*`/`$` header line (Redis's `PROTO_INLINE_MAX_SIZE`).
const MAX_LINE: usize = 64 * 1024;

/// A command: its name and arguments, as sent.
pub(crate) type Command = Vec<Vec<u8>>;

/// The `*n` array being read, kept between reads so a large command that
/// arrives in many segments is not re-parsed from its start each time.
#[derive(Debug)]
struct Pending {
    remaining: usize,
    args: Command,
}

/// Buffers bytes and yields complete commands.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    pos: usize,
    pending: Option<Pending>,
}

impl Parser {
    pub(crate) fn new() -> Parser {
        Parser::default()
    }

    /// Appends bytes read from the socket.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        // Drop what has been consumed before growing the buffer, so it holds at
        // most one partial command plus the newest read.
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete command, `Ok(None)` when more bytes are needed, or the
    /// text of a protocol error (after which the stream cannot be resynchronised).
    pub(crate) fn next_command(&mut self) -> Result<Option<Command>, String> {
        loop {
            if self.pending.is_none() {
                let Some(&first) = self.buf.get(self.pos) else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.inline()? {
                        Some(cmd) if cmd.is_empty() => continue,
                        other => return Ok(other),
                    }
                }
                let Some(line) = self.line()? else {
                    return Ok(None);
                };
                let count = parse_int(&line[1..])
                    .filter(|n| *n <= MAX_ARGS as i64)
                    .ok_or_else(|| "invalid multibulk length".to_owned())?;
                if count <= 0 {
                    // Redis ignores `*0` and `*-1` from clients.
                    continue;
                }
                let count = usize::try_from(count).map_err(|_| "invalid multibulk length")?;
                self.pending = Some(Pending {
                    remaining: count,
                    args: Vec::with_capacity(count.min(16)),
                });
            }
            return self.bulks();
        }
    }

    /// Reads the bulk strings of the pending array; returns the command once
    /// all of them are there.
    fn bulks(&mut self) -> Result<Option<Command>, String> {
        while self.pending.as_ref().is_some_and(|p| p.remaining > 0) {
            let start = self.pos;
            let Some(line) = self.line()? else {
                return Ok(None);
            };
            if line.first() != Some(&b'$') {
                let got = line.first().map_or('?', |b| char::from(*b));
                return Err(format!("expected '$', got '{}'", got.escape_default()));
            }
            let len = parse_int(&line[1..])
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n <= MAX_BULK)
                .ok_or_else(|| "invalid bulk length".to_owned())?;
            let body = self.pos;
            let Some(end) = body.checked_add(len).and_then(|e| e.checked_add(2)) else {
                return Err("invalid bulk length".to_owned());
            };
            if self.buf.len() < end {
                // Re-read the `$n` header once the body is complete.
                self.pos = start;
                return Ok(None);
            }
            if &self.buf[end - 2..end] != b"\r\n" {
                return Err("bulk string not terminated by CRLF".to_owned());
            }
            let arg = self.buf[body..end - 2].to_vec();
            self.pos = end;
            if let Some(p) = self.pending.as_mut() {
                p.args.push(arg);
                p.remaining -= 1;
            }
        }
        Ok(self.pending.take().map(|p| p.args))
    }

    /// A `\r\n`-terminated header line starting at `pos` (without the
    /// terminator), consuming it.
    fn line(&mut self) -> Result<Option<Vec<u8>>, String> {
        let rest = &self.buf[self.pos..];
        match find(rest, b"\r\n") {
            Some(i) if i <= MAX_LINE => {
                let line = rest[..i].to_vec();
                self.pos += i + 2;
                Ok(Some(line))
            }
            Some(_) => Err("too big header line".to_owned()),
            None if rest.len() > MAX_LINE => Err("too big header line".to_owned()),
            None => Ok(None),
        }
    }

    /// An inline command: one `\n`-terminated line split on whitespace.
    fn inline(&mut self) -> Result<Option<Command>, String> {
        let rest = &self.buf[self.pos..];
        let Some(i) = rest.iter().position(|b| *b == b'\n') else {
            if rest.len() > MAX_LINE {
                return Err("too big inline request".to_owned());
            }
            return Ok(None);
        };
        if i > MAX_LINE {
            return Err("too big inline request".to_owned());
        }
        let args = rest[..i]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        self.pos += i + 1;
        Ok(Some(args))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A decimal integer as Redis writes it; `None` for anything else.
pub(crate) fn parse_int(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn all(bytes: &[u8]) -> Result<Vec<Command>, String> {
        let mut p = Parser::new();
        p.feed(bytes);
        let mut out = Vec::new();
        while let Some(c) = p.next_command()? {
            out.push(c);
        }
        Ok(out)
    }

    fn words(ws: &[&str]) -> Command {
        ws.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn parses_arrays_and_inline() {
        let got =
            all(b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\nPING  hi\r\n\r\n*0\r\nECHO x\n").unwrap();
        assert_eq!(
            got,
            vec![
                words(&["GET", "a\r\nb"]),
                words(&["PING", "hi"]),
                words(&["ECHO", "x"])
            ]
        );
    }

    #[test]
    fn waits_for_every_split_point() {
        let cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        for cut in 0..cmd.len() {
            let mut p = Parser::new();
            p.feed(&cmd[..cut]);
            assert_eq!(p.next_command().unwrap(), None, "cut at {cut}");
            p.feed(&cmd[cut..]);
            assert_eq!(
                p.next_command().unwrap(),
                Some(words(&["SET", "k", "value"]))
            );
            assert_eq!(p.next_command().unwrap(), None);
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            &b"*x\r\n"[..],
            b"*1\r\n:1\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*99999999999999999999\r\n",
            b"*1\r\n$99999999999\r\n",
        ] {
            assert!(all(bad).is_err(), "{bad:?}");
        }
        let mut p = Parser::new();
        p.feed(&vec![b'a'; MAX_LINE + 1]);
        assert!(p.next_command().is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic xorshift stream biased towards RESP's own bytes, so
        // the parser gets deep into its states rather than failing at once.
        let alphabet = b"*$:+-\r\n0123456789-abc \x00\xff";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            let mut p = Parser::new();
            for _ in 0..8 {
                let mut chunk = Vec::new();
                for _ in 0..(x % 24) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.push(alphabet[(x % alphabet.len() as u64) as usize]);
                }
                p.feed(&chunk);
                while let Ok(Some(_)) = p.next_command() {}
            }
        }
    }
}
