//! One connection: read, parse, answer (or misbehave as scripted), until the
//! client closes, a script closes, or the node shuts down.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::commands::{self, After};
use super::parse::{Command, Parser};
use super::{Action, Shared};

/// Read/write timeout of connection sockets: how long a connection thread
/// may take to notice that the node is shutting down.
const POLL: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Silenced: commands are parsed and counted, never answered.
    Silent,
    /// Silenced and the input stopped parsing: bytes are only discarded.
    Discard,
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Silence,
    Close,
}

struct Conn<'a> {
    shared: &'a Shared,
    stream: TcpStream,
    parser: Parser,
    out: Vec<u8>,
    mode: Mode,
}

/// Serves one accepted connection until it ends.
pub(super) fn serve(shared: &Shared, stream: TcpStream) {
    // Replies are small and often pipelined by the client; Nagle would only delay them.
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(POLL)).is_err() || stream.set_write_timeout(Some(POLL)).is_err()
    {
        return;
    }
    let mut conn = Conn {
        shared,
        stream,
        parser: Parser::new(),
        out: Vec::new(),
        mode: Mode::Normal,
    };
    conn.run();
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Conn<'_> {
    fn run(&mut self) {
        let mut buf = vec![0u8; 16 * 1024];
        while !self.shared.stopping() {
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if is_timeout(&e) => continue,
                Err(_) => return,
            };
            if self.batch(&buf[..n]) == Flow::Close {
                self.close();
                return;
            }
        }
    }

    /// Handles the commands completed by one read, then writes their replies.
    fn batch(&mut self, bytes: &[u8]) -> Flow {
        if self.mode == Mode::Discard {
            return Flow::Continue;
        }
        self.parser.feed(bytes);
        loop {
            let cmd = match self.parser.next_command() {
                Ok(Some(cmd)) => cmd,
                Ok(None) => break,
                Err(_) if self.mode == Mode::Silent => {
                    // Nobody will read an error; drop the buffered input too.
                    self.mode = Mode::Discard;
                    self.parser = Parser::new();
                    return Flow::Continue;
                }
                Err(msg) => {
                    self.out
                        .extend_from_slice(format!("-ERR Protocol error: {msg}\r\n").as_bytes());
                    let _ = self.flush();
                    return Flow::Close;
                }
            };
            let name = commands::name(&cmd);
            self.shared.count(&name);
            if self.mode != Mode::Normal {
                continue;
            }
            match self.command(&name, &cmd) {
                Flow::Continue => {}
                Flow::Silence => self.mode = Mode::Silent,
                Flow::Close => return Flow::Close,
            }
        }
        self.flush_then(Flow::Continue)
    }

    fn command(&mut self, name: &str, cmd: &Command) -> Flow {
        if name == "HELLO" && self.shared.speaks_resp3() {
            self.out
                .extend_from_slice(b"%2\r\n+server\r\n+scripted\r\n+proto\r\n:3\r\n");
            return Flow::Continue;
        }
        let Some(action) = self.shared.script_for(name, cmd) else {
            return self.default(cmd);
        };
        match &*action {
            Action::Reply(bytes) => {
                self.out.extend_from_slice(bytes);
                Flow::Continue
            }
            Action::Skip => Flow::Continue,
            Action::Silence => self.flush_then(Flow::Silence),
            Action::ReplyThenSilence(bytes) => {
                self.out.extend_from_slice(bytes);
                self.flush_then(Flow::Silence)
            }
            Action::ReplyThenClose(bytes) => {
                self.out.extend_from_slice(bytes);
                self.flush_then(Flow::Close)
            }
            Action::Close => self.flush_then(Flow::Close),
            Action::Delay(delay) => {
                // Earlier replies of the batch are not held back by this one.
                if self.flush().is_err() || !self.pause(*delay) {
                    return Flow::Close;
                }
                self.default(cmd)
            }
        }
    }

    fn default(&mut self, cmd: &Command) -> Flow {
        match commands::reply(&self.shared.me, &self.shared.store, cmd, &mut self.out) {
            After::Continue => Flow::Continue,
            After::Close => self.flush_then(Flow::Close),
        }
    }

    /// Sleeps for `delay` in short steps; false if the node started shutting down.
    fn pause(&self, delay: Duration) -> bool {
        // A delay too long to represent as an Instant lasts until shutdown.
        let deadline = Instant::now().checked_add(delay);
        loop {
            if self.shared.stopping() {
                return false;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => POLL,
            };
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(POLL));
        }
    }

    fn flush_then(&mut self, then: Flow) -> Flow {
        match self.flush() {
            Ok(()) => then,
            Err(_) => Flow::Close,
        }
    }

    /// Writes the pending replies. A client that reads slowly is waited for;
    /// only its going away or the node's shutdown ends the wait.
    fn flush(&mut self) -> io::Result<()> {
        let mut written = 0;
        while written < self.out.len() {
            match self.stream.write(&self.out[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if is_timeout(&e) && !self.shared.stopping() => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        Ok(())
    }

    fn close(&mut self) {
        // Closing a socket with unread input makes Linux send RST, which can
        // destroy the bytes just written before the client reads them; drain
        // what has arrived and send FIN instead.
        if self.stream.set_nonblocking(true).is_ok() {
            let mut buf = [0u8; 4096];
            let mut drained = 0usize;
            while drained < (1 << 20) {
                match self.stream.read(&mut buf) {
                    Ok(n) if n > 0 => drained += n,
                    _ => break,
                }
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
