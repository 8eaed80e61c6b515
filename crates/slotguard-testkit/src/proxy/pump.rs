//! The proxy's tasks: the accept loop and, per connection, one pump per
//! direction (a reader that stamps each chunk with its due time, a writer
//! that delivers it then, within the bandwidth limit).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Direction, Shared, UPSTREAM_CONNECT_TIMEOUT};

/// Bytes read per chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks in flight per direction (bounds the memory of a slow pipe).
const QUEUE: usize = 64;

/// How a connection ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Running,
    /// FIN both sides (close after N bytes).
    Close,
    /// RST both sides.
    Reset,
}

pub(super) async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let connect =
                tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream));
            let Ok(Ok(server)) = connect.await else {
                let _ = client.set_zero_linger();
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            shared.open.fetch_add(1, Ordering::SeqCst);
            connection(client, server, peer.ip(), &shared).await;
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn connection(client: TcpStream, server: TcpStream, peer: IpAddr, shared: &Arc<Shared>) {
    let (end_tx, end_rx) = watch::channel(End::Running);
    let end_tx = Arc::new(end_tx);
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    let up = pump(
        client_r,
        server_w,
        Direction::ToServer,
        peer,
        shared,
        &end_tx,
        end_rx.clone(),
    );
    let down = pump(
        server_r,
        client_w,
        Direction::ToClient,
        peer,
        shared,
        &end_tx,
        end_rx,
    );
    tokio::join!(up, down);
}

/// Moves bytes one way until EOF, an error, or the connection's end.
async fn pump(
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    dir: Direction,
    peer: IpAddr,
    shared: &Arc<Shared>,
    end_tx: &Arc<watch::Sender<End>>,
    mut end_rx: watch::Receiver<End>,
) {
    let mut reset_rx = shared.reset.subscribe();
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let mut rng = RandomState::new().build_hasher().finish() | 1;
    let reader = async {
        let mut last_due = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match src.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.truncate(n);
            let (faults, _) = shared.faults(dir);
            if faults.black_hole || shared.blocked(peer) {
                continue;
            }
            let delay = jittered(faults.latency, faults.jitter, &mut rng);
            // Keep the byte order whatever the jitter says.
            let due = (Instant::now() + delay).max(last_due);
            last_due = due;
            if tx.send((due, buf)).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let writer = async {
        // (generation the budget was armed at, bytes left)
        let mut budget: Option<(u64, u64)> = None;
        while let Some((due, mut buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let (faults, generation) = shared.faults(dir);
            if faults.black_hole || shared.blocked(peer) {
                continue;
            }
            match (faults.close_after, budget) {
                (Some(n), None) => budget = Some((generation, n)),
                (Some(n), Some((g, _))) if g != generation => budget = Some((generation, n)),
                (None, _) => budget = None,
                _ => {}
            }
            let mut cut = false;
            if let Some((_, left)) = budget.as_mut() {
                if (buf.len() as u64) >= *left {
                    buf.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                    cut = true;
                }
                *left -= buf.len() as u64;
            }
            if write_limited(&mut dst, &buf, faults.bytes_per_sec)
                .await
                .is_err()
            {
                break;
            }
            if cut {
                let _ = dst.flush().await;
                end_tx.send_replace(End::Close);
                return;
            }
        }
        let _ = dst.shutdown().await;
    };
    let work = async {
        tokio::join!(reader, writer);
    };
    tokio::select! {
        _ = work => {}
        _ = reset_rx.changed() => {
            // RST on both sockets: zero linger, then the halves drop.
            let _ = src.as_ref().set_zero_linger();
            let _ = dst.as_ref().set_zero_linger();
            end_tx.send_replace(End::Reset);
        }
        end = end_rx.wait_for(|e| *e != End::Running) => {
            if end.is_ok_and(|e| *e == End::Reset) {
                let _ = src.as_ref().set_zero_linger();
                let _ = dst.as_ref().set_zero_linger();
            }
        }
    }
}

/// Writes `buf`, at most `rate` bytes per second: pieces of 20 ms worth,
/// each sent once its time has come.
async fn write_limited(
    dst: &mut OwnedWriteHalf,
    buf: &[u8],
    rate: Option<u64>,
) -> std::io::Result<()> {
    let Some(rate) = rate else {
        return dst.write_all(buf).await;
    };
    let piece = usize::try_from(rate / 50).unwrap_or(usize::MAX).max(1);
    for part in buf.chunks(piece) {
        let secs = part.len() as f64 / rate as f64;
        tokio::time::sleep(Duration::from_secs_f64(secs.min(60.0))).await;
        dst.write_all(part).await?;
    }
    Ok(())
}

/// `latency ± jitter`, uniformly, from a xorshift generator.
fn jittered(latency: Duration, jitter: Duration, state: &mut u64) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let unit = (*state % 1_000_001) as f64 / 1_000_000.0; // [0, 1]
    let low = latency.saturating_sub(jitter);
    low + (jitter * 2).mul_f64(unit)
}
