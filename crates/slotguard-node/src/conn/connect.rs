//! Connecting a [`Conn`](super::Conn)'s task: TCP, TLS, the handshake and
//! client tracking within one deadline, then the driver
//! ([`drive`](super::driver::drive)); a connection that never comes up
//! fails its queued commands, unsent.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use slotguard_core::NodeAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::driver::{drive, READ_CHUNK};
use super::handshake::{handshake, HandshakeError};
use super::tracking;
use super::{ConnConfig, ConnError, Refused, Request, Shared};

pub(super) async fn run(
    addr: NodeAddr,
    config: ConnConfig,
    mut rx: mpsc::UnboundedReceiver<Request>,
    shared: Arc<Shared>,
) {
    // One deadline for the whole setup: TCP connect, TLS, HELLO/AUTH,
    // READONLY.
    let deadline = Instant::now() + config.connect_timeout;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let timed_out = || HandshakeError::Other("connect timed out".to_owned());
    let tcp = match tokio::time::timeout_at(deadline, dial(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refuse(&mut rx, &shared, e),
        Err(_) => return refuse(&mut rx, &shared, timed_out()),
    };
    match &config.tls {
        None => {
            let setup = setup(tcp, &config, &mut rbuf);
            match tokio::time::timeout_at(deadline, setup).await {
                Ok(Ok((s, tracked))) => drive(addr, s, rbuf, rx, shared, &config, tracked).await,
                Ok(Err(e)) => refuse(&mut rx, &shared, e),
                Err(_) => refuse(&mut rx, &shared, timed_out()),
            }
        }
        Some(tls) => {
            let setup = async {
                let name = tls.name_for(&addr).map_err(HandshakeError::Tls)?;
                let stream = tls
                    .connector()
                    .connect(name, tcp)
                    .await
                    .map_err(tls_error)?;
                setup(stream, &config, &mut rbuf).await
            };
            match tokio::time::timeout_at(deadline, setup).await {
                Ok(Ok((s, tracked))) => drive(addr, s, rbuf, rx, shared, &config, tracked).await,
                Ok(Err(e)) => refuse(&mut rx, &shared, e),
                Err(_) => refuse(&mut rx, &shared, timed_out()),
            }
        }
    }
}

async fn dial(addr: &NodeAddr) -> Result<TcpStream, HandshakeError> {
    let stream = TcpStream::connect((addr.host(), addr.port()))
        .await
        .map_err(|e| HandshakeError::Other(format!("connect failed: {e}")))?;
    // Without TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms to a small
    // write that follows another before its reply.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The handshake, then client tracking when asked for and the connection
/// speaks RESP3. `true` in the second place: tracking is on.
async fn setup<S>(
    mut stream: S,
    config: &ConnConfig,
    rbuf: &mut BytesMut,
) -> Result<(S, bool), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let resp3 = handshake(&mut stream, config, rbuf).await?;
    let tracked = match &config.tracking {
        Some(_) if resp3 => tracking::enable(&mut stream, config, rbuf).await?,
        _ => false,
    };
    Ok((stream, tracked))
}

/// rustls reports certificate and protocol failures as `InvalidData` with
/// its own error inside: those are [`HandshakeError::Tls`]; a connection
/// lost during the TLS handshake is not.
fn tls_error(e: io::Error) -> HandshakeError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => HandshakeError::Tls(tls.to_string()),
        // Closed in the middle of a handshake: the port does not speak TLS.
        None if e.kind() == io::ErrorKind::UnexpectedEof => HandshakeError::Tls(
            "the node closed the connection during the tls handshake (not a tls port?)".into(),
        ),
        None => HandshakeError::Other(format!("tls handshake failed: {e}")),
    }
}

/// The connection never came up: every queued command fails, unsent.
fn refuse(rx: &mut mpsc::UnboundedReceiver<Request>, shared: &Shared, err: HandshakeError) {
    let (refused, reason) = match err {
        HandshakeError::Auth(r) => (Some(Refused::Auth), r),
        HandshakeError::Tls(r) => (Some(Refused::Tls), r),
        HandshakeError::Other(r) => (None, r),
    };
    let reason: Arc<str> = reason.into();
    if let Some(kind) = refused {
        let _ = shared.refused.set((kind, reason.clone()));
    }
    shared.broke_busy.store(true, Ordering::Release);
    shared.close();
    rx.close();
    while let Ok(req) = rx.try_recv() {
        shared.done(1);
        let _ = req.tx.send(Err(ConnError {
            written: false,
            protocol: false,
            refused,
            reason: reason.clone(),
        }));
    }
}
