//! The closed-loop load: workers that each pick a random key of any shard
//! per operation (as an application's request handlers do), 90 % GET and
//! 10 % SET by default, every request with a deadline.
//!
//! Every write stores `v<seq>` in the authoritative store first, then in the
//! cache through the stack (write-through: the store always holds the
//! newest value, so an answer from it is never stale). `seq` is global and
//! monotonic, and each
//! key's [`KeyState`] says which values a read may legally return; a read
//! that returns an older value is checked against the primary to tell a
//! stale read from a write lost in a promotion (see [`KeyState::judge`]).
//!
//! Measurement windows (phases) open and close while the workers keep
//! running; an operation belongs to the window it *completes* in. Stale
//! reads and lost writes found between windows count for the window before.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use slotguard::core::key_slot;
use slotguard::tower::ServiceExt;
use slotguard::{
    classify, BoxError, CacheRequest, CacheResponse, Consistency, Failure, NodeAddr, Path,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stack::Stack;
use crate::stats::{encode_value, parse_seq, read_is_suspect, Judgement, KeyState};
use slotguard_store::SqliteStore;

/// What the load looks like.
#[derive(Debug, Clone)]
pub(crate) struct LoadConfig {
    /// Concurrent closed-loop workers.
    pub(crate) workers: usize,
    /// Distinct keys, spread over every shard.
    pub(crate) keys: usize,
    /// Deadline of each request.
    pub(crate) timeout: Duration,
    /// Share of operations that are writes, in percent.
    pub(crate) write_pct: u32,
    /// The leaf under the stack.
    pub(crate) leaf: slotguard::LeafKind,
}

/// The longest the lost-write sweep after a phase may take.
const SWEEP_DEADLINE: Duration = Duration::from_secs(20);

/// Names of the error kinds a [`Record`] may carry, by code.
pub(crate) const ERROR_KINDS: &[&str] = &[
    "moved",
    "ask",
    "try_again",
    "cluster_down",
    "loading",
    "busy",
    "read_only",
    "timeout",
    "connection",
    "circuit_open",
    "overloaded",
    "shard_unavailable",
    "too_many_redirects",
    "indeterminate",
    "invalid_input",
    "secondary",
    "server",
    "other",
    // the stack did not answer within twice the request's deadline
    "hung",
];
const OTHER: u8 = 17;
const HUNG: u8 = 18;

fn failure_code(f: Failure) -> u8 {
    match f {
        Failure::Moved => 0,
        Failure::Ask => 1,
        Failure::TryAgain => 2,
        Failure::ClusterDown => 3,
        Failure::Loading => 4,
        Failure::Busy => 5,
        Failure::ReadOnly => 6,
        Failure::Timeout => 7,
        Failure::Connection => 8,
        Failure::CircuitOpen => 9,
        Failure::Overloaded => 10,
        Failure::ShardUnavailable => 11,
        Failure::TooManyRedirects => 12,
        Failure::Indeterminate => 13,
        Failure::InvalidInput => 14,
        Failure::Secondary => 15,
        Failure::Server => 16,
        _ => OTHER,
    }
}

/// Names of the answer paths a [`Record`] may carry, by code.
pub(crate) const PATHS: &[&str] = &["primary", "replica", "near_cache", "secondary", "other"];

fn path_code(p: Path) -> u8 {
    match p {
        Path::Primary => 0,
        Path::Replica => 1,
        Path::NearCache => 2,
        Path::Secondary => 3,
        _ => 4,
    }
}

/// Path code of a replica answer.
pub(crate) const PATH_REPLICA: u8 = 1;
/// Node code when the answering node is unknown.
pub(crate) const NO_NODE: u8 = u8::MAX;

/// One completed operation inside a measurement window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    /// The window (phase index).
    pub(crate) phase: u8,
    /// Completion time, µs since the window opened.
    pub(crate) t_us: u32,
    /// Latency in µs.
    pub(crate) lat_us: u32,
    /// Index of the key.
    pub(crate) key: u32,
    /// Index of the answering node (cluster index), or [`NO_NODE`].
    pub(crate) node: u8,
    /// A SET (else a GET).
    pub(crate) write: bool,
    /// Succeeded.
    pub(crate) ok: bool,
    /// On success the path code ([`PATHS`]), on failure the error code ([`ERROR_KINDS`]).
    pub(crate) code: u8,
}

/// Live counters of one window, read by the progress display; stale reads
/// and lost writes are only counted here.
#[derive(Debug, Default)]
pub(crate) struct PhaseCounters {
    pub(crate) ops: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) stale_reads: AtomicU64,
    /// Suspect reads the primary could not be asked about (counted as stale too).
    pub(crate) stale_unverified: AtomicU64,
    pub(crate) lost_writes: AtomicU64,
    /// Lost writes found by the sweep after the window rather than by a worker's read.
    pub(crate) lost_found_by_sweep: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    phase: u8,
    start: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the workers share.
#[derive(Debug)]
struct Shared {
    config: LoadConfig,
    store: SqliteStore,
    keys: Vec<Bytes>,
    slots: Vec<u16>,
    state: Vec<Mutex<KeyState>>,
    seq: AtomicU64,
    stop: AtomicBool,
    window: RwLock<Option<Window>>,
    /// The last window opened: where stale reads and lost writes are counted.
    last_phase: AtomicUsize,
    counters: Vec<PhaseCounters>,
    nodes: HashMap<NodeAddr, u8>,
}

/// A running load. Created with [`Load::prepare`], driven by [`Load::start`],
/// ended by [`Load::stop`].
#[derive(Debug)]
pub(crate) struct Load {
    shared: Arc<Shared>,
    stack: Stack,
    workers: Vec<JoinHandle<Vec<Record>>>,
}

/// A small, fast PRNG (xorshift64*): the load needs spread, not security.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never 0
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// How an operation ended, before it is recorded.
struct Outcome {
    ok: bool,
    code: u8,
    node: u8,
}

impl Load {
    /// Create the keys, write every one of them once (so every read has a
    /// value to check), and get ready to run `phases` windows. `nodes` maps
    /// node addresses to the indices used in records.
    pub(crate) async fn prepare(
        stack: Stack,
        store: SqliteStore,
        config: LoadConfig,
        nodes: HashMap<NodeAddr, u8>,
        phases: usize,
    ) -> Result<Load, BoxError> {
        let keys: Vec<Bytes> = (0..config.keys)
            .map(|i| Bytes::from(format!("sg:demo:{i}")))
            .collect();
        let slots = keys.iter().map(|k| key_slot(k)).collect();
        let state = (0..config.keys)
            .map(|_| Mutex::new(KeyState::default()))
            .collect();
        let shared = Arc::new(Shared {
            keys,
            slots,
            state,
            seq: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            window: RwLock::new(None),
            last_phase: AtomicUsize::new(0),
            counters: (0..phases).map(|_| PhaseCounters::default()).collect(),
            nodes,
            config,
            store,
        });
        let load = Load {
            shared,
            stack,
            workers: Vec::new(),
        };
        load.populate().await?;
        Ok(load)
    }

    async fn populate(&self) -> Result<(), BoxError> {
        let tasks = self.shared.config.workers.clamp(1, 64);
        let mut handles = Vec::new();
        for t in 0..tasks {
            let shared = self.shared.clone();
            let stack = self.stack.clone();
            handles.push(tokio::spawn(async move {
                let mut k = t;
                while k < shared.keys.len() {
                    let mut tries = 0;
                    loop {
                        let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
                        lock(&shared.state[k]).begin_write(seq);
                        let value = encode_value(seq);
                        let stored = shared.store.put(shared.keys[k].clone(), value.clone());
                        if let Err(e) = stored.await {
                            return Err(format!("could not write the store: {e}"));
                        }
                        let req = CacheRequest::set(shared.keys[k].clone(), value, None)
                            .with_timeout(Duration::from_secs(1));
                        match stack.clone().oneshot(req).await {
                            Ok(_) => {
                                lock(&shared.state[k]).ack(seq);
                                break;
                            }
                            Err(e) => {
                                lock(&shared.state[k]).fail(seq);
                                tries += 1;
                                if tries >= 20 {
                                    return Err(format!(
                                        "could not write key {:?}: {e}",
                                        shared.keys[k]
                                    ));
                                }
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    k += tasks;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.await??;
        }
        Ok(())
    }

    /// Start the workers (on the current runtime).
    pub(crate) fn start(&mut self) {
        for w in 0..self.shared.config.workers {
            let shared = self.shared.clone();
            let stack = self.stack.clone();
            self.workers
                .push(tokio::spawn(async move { worker(shared, stack, w).await }));
        }
    }

    /// Open window `phase`; returns its start.
    pub(crate) fn open_window(&self, phase: usize) -> Instant {
        let start = Instant::now();
        self.shared.last_phase.store(phase, Ordering::SeqCst);
        *self
            .shared
            .window
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Window {
            phase: u8::try_from(phase).unwrap_or(u8::MAX),
            start,
        });
        start
    }

    /// Close the open window; returns how long it was open.
    pub(crate) fn close_window(&self) -> Duration {
        let mut w = self
            .shared
            .window
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let d = w.map(|w| w.start.elapsed()).unwrap_or_default();
        *w = None;
        d
    }

    /// The live counters of window `phase`.
    pub(crate) fn counters(&self, phase: usize) -> &PhaseCounters {
        &self.shared.counters[phase]
    }

    /// A clone of the counters' owner, for a progress task.
    pub(crate) fn counters_handle(&self) -> CountersHandle {
        CountersHandle(self.shared.clone())
    }

    /// The hash slot of every key, by key index.
    pub(crate) fn key_slots(&self) -> Vec<u16> {
        self.shared.slots.clone()
    }

    /// Every window's event counters now.
    pub(crate) fn tallies(&self) -> Vec<Tally> {
        self.shared
            .counters
            .iter()
            .map(PhaseCounters::tally)
            .collect()
    }

    /// Read every key from its primary and count keys whose primary lost an
    /// acknowledged write that no worker's read has found yet; they count as
    /// lost writes of window `phase`. Returns (lost, keys that could not be read).
    pub(crate) async fn sweep(&self, phase: usize) -> (u64, u64) {
        let tasks = 16;
        // A sick cluster must not hold the run for minutes: whatever is not
        // read by then counts as unchecked (and the phase says so).
        let deadline = Instant::now() + SWEEP_DEADLINE;
        let mut handles = Vec::new();
        for t in 0..tasks {
            let shared = self.shared.clone();
            let stack = self.stack.clone();
            handles.push(tokio::spawn(async move {
                let (mut lost, mut unread) = (0u64, 0u64);
                let mut k = t;
                while k < shared.keys.len() {
                    if Instant::now() >= deadline {
                        unread += 1;
                        k += tasks;
                        continue;
                    }
                    let floor = lock(&shared.state[k]).floor();
                    match read_primary(&shared, stack.clone(), k, 3).await {
                        Some(got) if read_is_suspect(floor, got) => {
                            if lock(&shared.state[k]).judge(floor, got) == Judgement::LostWrite {
                                lost += 1;
                            }
                        }
                        Some(_) => {}
                        None => unread += 1,
                    }
                    k += tasks;
                }
                (lost, unread)
            }));
        }
        let (mut lost, mut unread) = (0, 0);
        for h in handles {
            match h.await {
                Ok((l, u)) => {
                    lost += l;
                    unread += u;
                }
                Err(_) => unread += 1,
            }
        }
        let c = &self.shared.counters[phase];
        c.lost_writes.fetch_add(lost, Ordering::Relaxed);
        c.lost_found_by_sweep.fetch_add(lost, Ordering::Relaxed);
        (lost, unread)
    }

    /// Stop the workers and collect every record.
    pub(crate) async fn stop(self) -> Vec<Record> {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for w in self.workers {
            if let Ok(mut records) = w.await {
                all.append(&mut records);
            }
        }
        all
    }
}

/// A snapshot of one window's event counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) stale_reads: u64,
    pub(crate) stale_unverified: u64,
    pub(crate) lost_writes: u64,
    pub(crate) lost_found_by_sweep: u64,
}

impl PhaseCounters {
    /// The event counters now.
    pub(crate) fn tally(&self) -> Tally {
        Tally {
            stale_reads: self.stale_reads.load(Ordering::Relaxed),
            stale_unverified: self.stale_unverified.load(Ordering::Relaxed),
            lost_writes: self.lost_writes.load(Ordering::Relaxed),
            lost_found_by_sweep: self.lost_found_by_sweep.load(Ordering::Relaxed),
        }
    }
}

/// Shared access to the live counters (for the progress task).
#[derive(Debug, Clone)]
pub(crate) struct CountersHandle(Arc<Shared>);

impl CountersHandle {
    pub(crate) fn get(&self, phase: usize) -> &PhaseCounters {
        &self.0.counters[phase]
    }
}

/// The value of key `k` on its primary, or `None` when the primary cannot be
/// asked (a few tries within ~1 s).
async fn read_primary(shared: &Shared, stack: Stack, k: usize, tries: u64) -> Option<u64> {
    for attempt in 0..tries {
        let req = CacheRequest::get(shared.keys[k].clone())
            .with_consistency(Consistency::Primary)
            // A check, not the measured load: time enough for a busy
            // primary, so a slow answer is not taken for a missing one.
            .with_timeout(Duration::from_millis(500));
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(1), stack.clone().oneshot(req)).await
        {
            // Only the primary's own answer tells a lost write: the fallback
            // would answer from the store, which has every value.
            if resp.served.path == Path::Primary {
                return Some(parse_seq(resp.value.as_deref()));
            }
        }
        if attempt + 1 < tries {
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
        }
    }
    None
}

async fn call(
    shared: &Shared,
    stack: Stack,
    req: CacheRequest,
) -> (Option<CacheResponse>, Outcome) {
    let guard = shared.config.timeout * 2 + Duration::from_millis(100);
    match tokio::time::timeout(guard, stack.oneshot(req)).await {
        Ok(Ok(resp)) => {
            let node = resp
                .served
                .node
                .as_ref()
                .and_then(|n| shared.nodes.get(n).copied())
                .unwrap_or(NO_NODE);
            let out = Outcome {
                ok: true,
                code: path_code(resp.served.path),
                node,
            };
            (Some(resp), out)
        }
        Ok(Err(e)) => (
            None,
            Outcome {
                ok: false,
                code: failure_code(classify(&e)),
                node: NO_NODE,
            },
        ),
        Err(_) => (
            None,
            Outcome {
                ok: false,
                code: HUNG,
                node: NO_NODE,
            },
        ),
    }
}

async fn worker(shared: Arc<Shared>, stack: Stack, id: usize) -> Vec<Record> {
    let mut rng = Rng::new(id as u64 ^ u64::from(std::process::id()) << 32);
    let mut records = Vec::with_capacity(1 << 16);
    let n = shared.keys.len() as u64;
    let timeout = shared.config.timeout;
    while !shared.stop.load(Ordering::Relaxed) {
        // A request that fails without waiting (connection refused, breaker
        // open) never returns Pending: give the scheduler its turn, or the
        // timers and the other tasks on this worker starve.
        tokio::task::coop::consume_budget().await;
        let k = rng.below(n) as usize;
        let write = rng.below(100) < u64::from(shared.config.write_pct);
        let key = shared.keys[k].clone();
        let started = Instant::now();
        let outcome = if write {
            let seq = shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
            lock(&shared.state[k]).begin_write(seq);
            let value = encode_value(seq);
            let out = match shared.store.put(key.clone(), value.clone()).await {
                Ok(()) => {
                    let req = CacheRequest::set(key, value, None).with_timeout(timeout);
                    call(&shared, stack.clone(), req).await.1
                }
                // The store refused: the write did not happen anywhere.
                Err(_) => Outcome {
                    ok: false,
                    code: failure_code(Failure::Secondary),
                    node: NO_NODE,
                },
            };
            let mut st = lock(&shared.state[k]);
            if out.ok {
                st.ack(seq);
            } else {
                st.fail(seq);
            }
            out
        } else {
            let floor = lock(&shared.state[k]).floor();
            let req = CacheRequest::get(key).with_timeout(timeout);
            let (resp, out) = call(&shared, stack.clone(), req).await;
            let got = resp.map(|r| parse_seq(r.value.as_deref()));
            if got.is_some_and(|g| read_is_suspect(floor, g)) {
                check_suspect(&shared, stack.clone(), k, floor).await;
            }
            out
        };
        let lat = started.elapsed();
        let window = *shared.window.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(w) = window {
            let c = &shared.counters[usize::from(w.phase)];
            c.ops.fetch_add(1, Ordering::Relaxed);
            if !outcome.ok {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
            let t = Instant::now().saturating_duration_since(w.start);
            records.push(Record {
                phase: w.phase,
                t_us: u32::try_from(t.as_micros()).unwrap_or(u32::MAX),
                lat_us: u32::try_from(lat.as_micros()).unwrap_or(u32::MAX),
                key: k as u32,
                node: outcome.node,
                write,
                ok: outcome.ok,
                code: outcome.code,
            });
        }
    }
    records
}

/// A read of key `k` returned a value older than `floor`: ask the primary
/// whether the acknowledged write is still there (stale read) or is gone
/// (lost write), and count it for the current window.
async fn check_suspect(shared: &Shared, stack: Stack, k: usize, floor: u64) {
    let phase = shared.last_phase.load(Ordering::SeqCst);
    let Some(c) = shared.counters.get(phase) else {
        return;
    };
    match read_primary(shared, stack, k, 5).await {
        Some(primary) => match lock(&shared.state[k]).judge(floor, primary) {
            Judgement::Stale => {
                c.stale_reads.fetch_add(1, Ordering::Relaxed);
            }
            Judgement::LostWrite => {
                c.lost_writes.fetch_add(1, Ordering::Relaxed);
            }
            Judgement::AlreadyCounted => {}
        },
        None => {
            // never hide a miss: an old value we could not explain is stale
            c.stale_reads.fetch_add(1, Ordering::Relaxed);
            c.stale_unverified.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_spreads_over_the_range() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn every_error_kind_has_a_name() {
        assert_eq!(ERROR_KINDS[usize::from(OTHER)], "other");
        assert_eq!(ERROR_KINDS[usize::from(HUNG)], "hung");
        assert_eq!(
            ERROR_KINDS[usize::from(failure_code(Failure::Timeout))],
            "timeout"
        );
        assert_eq!(PATHS[usize::from(PATH_REPLICA)], "replica");
    }
}
