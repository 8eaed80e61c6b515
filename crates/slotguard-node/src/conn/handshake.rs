//! What a connection says before its first command: `HELLO 3` (with `AUTH`
//! when there are credentials), then `READONLY` on a replica-mode connection.
//!
//! Why `HELLO 3` and not RESP2 `AUTH`: one round trip authenticates and
//! switches the connection to RESP3, which client tracking (invalidation
//! pushes for a near-cache) needs; every reply the leaf reads parses in both
//! protocols (`CLUSTER SHARDS` becomes a map, `INFO` a verbatim string). A
//! server without `HELLO` (before Redis 6, or a proxy) gets `AUTH` and stays
//! on RESP2.
//!
//! Why the handshake completes before the connection takes commands: a
//! wrong password must be one typed error on the calls waiting for this
//! connection, not an error reply to each of them, and `READONLY` must be in
//! force before any replica read. It costs one round trip per connect.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ConnConfig;
use crate::resp::{encode_command, Arg, Decoder, Frame};

/// Why a connection could not be set up.
#[derive(Debug)]
pub(super) enum HandshakeError {
    /// The node refused the credentials (or asked for some).
    Auth(String),
    /// The TLS handshake failed (certificate, name, protocol).
    Tls(String),
    /// The connection broke or the node answered nonsense.
    Other(String),
}

/// Error texts come from the network: keep what is copied into errors short.
fn text(b: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(b).into_owned();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn is_auth_error(e: &[u8]) -> bool {
    [
        "WRONGPASS",
        "NOAUTH",
        "NOPERM",
        "ERR invalid password",
        "ERR AUTH",
    ]
    .iter()
    .any(|p| e.starts_with(p.as_bytes()))
}

/// A server that does not know `HELLO` or `RESP3`.
fn is_no_hello(e: &[u8]) -> bool {
    e.starts_with(b"NOPROTO") || text(e).to_ascii_lowercase().contains("unknown command")
}

/// Run the handshake on a fresh `stream`. Bytes read past the last reply
/// stay in `rbuf` for the connection. The caller bounds it with the connect
/// deadline. `Ok(true)` when the connection speaks RESP3.
pub(super) async fn handshake<S>(
    stream: &mut S,
    config: &ConnConfig,
    rbuf: &mut BytesMut,
) -> Result<bool, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = Io {
        stream,
        rbuf,
        decoder: Decoder::new(config.limits),
    };
    let creds = config.credentials.as_ref();
    let mut wbuf = BytesMut::with_capacity(256);
    let secret = creds.map(|c| {
        (
            Bytes::from(c.user_or_default().to_owned()),
            Bytes::from(c.password.expose().to_owned()),
        )
    });
    let mut hello = vec![Arg::Word("HELLO"), Arg::Word("3")];
    if let Some((user, password)) = &secret {
        hello.extend([Arg::Word("AUTH"), Arg::Bytes(user), Arg::Bytes(password)]);
    }
    encode_command(&mut wbuf, hello.iter().copied());
    if config.readonly {
        encode_command(&mut wbuf, [Arg::Word("READONLY")]);
    }
    io.write(&wbuf).await?;

    let mut readonly_done = !config.readonly;
    match io.read().await? {
        Frame::Error(e) if is_no_hello(&e) => {
            if config.readonly {
                // Sent before AUTH: on a server that wants a password it was
                // refused; sent again below.
                readonly_done = io.read().await?.is_ok();
            }
            legacy_auth(&mut io, config, readonly_done).await?;
            return Ok(false);
        }
        Frame::Error(e) if is_auth_error(&e) => return Err(HandshakeError::Auth(text(&e))),
        Frame::Error(e) => {
            return Err(HandshakeError::Other(format!(
                "HELLO refused: {}",
                text(&e)
            )))
        }
        Frame::Map(_) | Frame::Array(_) => {}
        other => {
            return Err(HandshakeError::Other(format!(
                "unexpected reply to HELLO: {}",
                other.kind()
            )))
        }
    }
    if !readonly_done {
        expect_ok(io.read().await?, "READONLY")?;
    }
    Ok(true)
}

/// RESP2: `AUTH [user] password`, then `READONLY` unless it already went
/// through.
async fn legacy_auth<S>(
    io: &mut Io<'_, S>,
    config: &ConnConfig,
    readonly_done: bool,
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut wbuf = BytesMut::with_capacity(128);
    let creds = config.credentials.as_ref();
    if let Some(c) = creds {
        let user = c.username.clone().map(Bytes::from);
        let password = Bytes::from(c.password.expose().to_owned());
        let mut auth = vec![Arg::Word("AUTH")];
        auth.extend(user.as_ref().map(Arg::Bytes));
        auth.push(Arg::Bytes(&password));
        encode_command(&mut wbuf, auth.iter().copied());
    }
    if !readonly_done {
        encode_command(&mut wbuf, [Arg::Word("READONLY")]);
    }
    if wbuf.is_empty() {
        return Ok(());
    }
    io.write(&wbuf).await?;
    if creds.is_some() {
        match io.read().await? {
            f if f.is_ok() => {}
            Frame::Error(e) => return Err(HandshakeError::Auth(text(&e))),
            other => {
                return Err(HandshakeError::Other(format!(
                    "unexpected reply to AUTH: {}",
                    other.kind()
                )))
            }
        }
    }
    if !readonly_done {
        expect_ok(io.read().await?, "READONLY")?;
    }
    Ok(())
}

fn expect_ok(frame: Frame, cmd: &str) -> Result<(), HandshakeError> {
    match frame {
        f if f.is_ok() => Ok(()),
        Frame::Error(e) if is_auth_error(&e) => Err(HandshakeError::Auth(text(&e))),
        Frame::Error(e) => Err(HandshakeError::Other(format!(
            "{cmd} refused: {}",
            text(&e)
        ))),
        other => Err(HandshakeError::Other(format!(
            "unexpected reply to {cmd}: {}",
            other.kind()
        ))),
    }
}

struct Io<'a, S> {
    stream: &'a mut S,
    rbuf: &'a mut BytesMut,
    decoder: Decoder,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<'_, S> {
    async fn write(&mut self, buf: &[u8]) -> Result<(), HandshakeError> {
        self.stream.write_all(buf).await.map_err(io_error)?;
        self.stream.flush().await.map_err(io_error)
    }

    /// The next reply (push messages skipped), read with the connection's
    /// bounds.
    async fn read(&mut self) -> Result<Frame, HandshakeError> {
        loop {
            match self.decoder.decode(self.rbuf) {
                Ok(Some(Frame::Push(_))) => continue,
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => return Err(HandshakeError::Other(e.to_string())),
            }
            self.rbuf.reserve(4096);
            match self.stream.read_buf(self.rbuf).await {
                Ok(0) => {
                    return Err(HandshakeError::Other(
                        "connection closed by the node during the handshake".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

fn io_error(e: io::Error) -> HandshakeError {
    // Over TLS 1.3 a server that refuses the client's certificate (or its
    // absence) says so after the client's side of the TLS handshake is
    // done: the alert arrives on the first read, here.
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(tls) => HandshakeError::Tls(tls.to_string()),
        None => HandshakeError::Other(format!("handshake failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::Credentials;
    use crate::resp::Limits;
    use std::time::Duration;

    fn config(creds: Option<Credentials>, readonly: bool) -> ConnConfig {
        ConnConfig {
            connect_timeout: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(1),
            limits: Limits::default(),
            readonly,
            max_in_flight: 10,
            credentials: creds,
            tls: None,
            tracking: None,
        }
    }

    /// Runs the handshake against a peer that answers `replies` (all at
    /// once) and returns what the client wrote.
    async fn run(cfg: ConnConfig, replies: &'static [u8]) -> (Result<(), HandshakeError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            server.write_all(replies).await.ok();
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_millis(200), server.read_to_end(&mut got))
                .await;
            got
        });
        let mut rbuf = BytesMut::new();
        let out = handshake(&mut client, &cfg, &mut rbuf).await.map(|_| ());
        drop(client);
        (out, peer.await.unwrap_or_default())
    }

    #[tokio::test]
    async fn hello_with_auth_then_readonly() {
        let creds = Credentials::user("cache", "pw");
        let (out, wrote) = run(config(Some(creds), true), b"%1\r\n+proto\r\n:3\r\n+OK\r\n").await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(
            wrote,
            b"*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$5\r\ncache\r\n$2\r\npw\r\n*1\r\n$8\r\nREADONLY\r\n"
        );
    }

    #[tokio::test]
    async fn wrong_password_is_an_auth_error_without_the_password() {
        let creds = Credentials::password("hunter2");
        let (out, _) = run(
            config(Some(creds), false),
            b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        )
        .await;
        match out {
            Err(HandshakeError::Auth(t)) => {
                assert!(t.starts_with("WRONGPASS"));
                assert!(!t.contains("hunter2"));
            }
            other => panic!("{other:?}"),
        }
        let (out, _) = run(
            config(None, false),
            b"-NOAUTH HELLO must be called with the client already authenticated\r\n",
        )
        .await;
        assert!(matches!(out, Err(HandshakeError::Auth(_))), "{out:?}");
    }

    #[tokio::test]
    async fn a_server_without_hello_gets_auth() {
        let creds = Credentials::password("pw");
        let (out, wrote) = run(
            config(Some(creds), true),
            b"-ERR unknown command 'HELLO'\r\n-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n",
        )
        .await;
        assert!(out.is_ok(), "{out:?}");
        let wrote = String::from_utf8_lossy(&wrote).into_owned();
        assert!(
            wrote.ends_with("*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*1\r\n$8\r\nREADONLY\r\n"),
            "{wrote}"
        );
        let (out, _) = run(
            config(Some(Credentials::password("bad")), false),
            b"-ERR unknown command 'HELLO'\r\n-ERR invalid password\r\n",
        )
        .await;
        assert!(matches!(out, Err(HandshakeError::Auth(_))), "{out:?}");
        // No credentials, RESP2 only (the scripted node): READONLY once.
        let (out, wrote) = run(
            config(None, true),
            b"-ERR unknown command 'HELLO'\r\n+OK\r\n",
        )
        .await;
        assert!(out.is_ok(), "{out:?}");
        assert_eq!(wrote.windows(8).filter(|w| w == b"READONLY").count(), 1);
    }

    #[tokio::test]
    async fn a_closed_or_garbled_peer_is_an_error() {
        let (out, _) = run(config(None, false), b"").await;
        assert!(matches!(out, Err(HandshakeError::Other(_))), "{out:?}");
        let (out, _) = run(config(None, false), b":1\r\n").await;
        assert!(matches!(out, Err(HandshakeError::Other(_))), "{out:?}");
        let (out, _) = run(config(None, true), b"%0\r\n-ERR nope\r\n").await;
        assert!(matches!(out, Err(HandshakeError::Other(_))), "{out:?}");
    }
}
