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
use slotguard::{classify, BoxError, CacheRequest, CacheResponse, Failure, NodeAddr};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::check::check_suspect;
use super::record::{failure_code, path_code, Outcome, HUNG};
pub(crate) use super::record::{Record, Rng, ERROR_KINDS, NO_NODE, PATHS, PATH_REPLICA};
use super::stats::{encode_value, parse_seq, read_is_suspect, KeyState};
use crate::stack::Stack;
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
    /// Hedged replica reads on (the default).
    pub(crate) hedge: bool,
    /// Drive redis-rs's cluster client instead of the slotguard stack
    /// (`bench failover --client redis-rs`).
    pub(crate) redis_rs: bool,
    /// The leaf under the stack.
    pub(crate) leaf: slotguard::LeafKind,
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
    /// Lost writes sent before the window's fault began (or with no fault).
    pub(crate) lost_before_fault: AtomicU64,
    /// Lost writes sent after the window's fault began.
    pub(crate) lost_after_fault: AtomicU64,
}

impl PhaseCounters {
    /// Count one lost write, sent at `sent_us` (µs since the load began),
    /// against a fault that began at `fault_us` (`u64::MAX`: none).
    pub(super) fn lost(&self, sent_us: u64, fault_us: u64) {
        self.lost_writes.fetch_add(1, Ordering::Relaxed);
        if sent_us >= fault_us {
            self.lost_after_fault.fetch_add(1, Ordering::Relaxed);
        } else {
            self.lost_before_fault.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    phase: u8,
    start: Instant,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the workers share.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) config: LoadConfig,
    pub(super) store: SqliteStore,
    pub(super) keys: Vec<Bytes>,
    pub(super) slots: Vec<u16>,
    pub(super) state: Vec<Mutex<KeyState>>,
    pub(super) seq: AtomicU64,
    pub(super) stop: AtomicBool,
    window: RwLock<Option<Window>>,
    /// The last window opened: where stale reads and lost writes are counted.
    pub(super) last_phase: AtomicUsize,
    pub(super) counters: Vec<PhaseCounters>,
    pub(super) nodes: HashMap<NodeAddr, u8>,
    /// When the load was created: the clock of acknowledgements and faults.
    pub(super) epoch: Instant,
    /// When the open window's fault began, µs since `epoch` (`u64::MAX`: no fault yet).
    pub(super) fault_at_us: AtomicU64,
}

impl Shared {
    /// Microseconds since the load was created.
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }

    /// The seq of a write of key `k` about to begin, registered in flight.
    /// Taken under the key's lock: a worker preempted between taking a seq
    /// and registering it would begin after a newer write of the key was
    /// acknowledged, and its value, legitimately the last, would look lost.
    fn next_write(&self, k: usize) -> u64 {
        let mut st = lock(&self.state[k]);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        st.begin_write(seq, self.now_us());
        seq
    }
}

/// A running load. Created with [`Load::prepare`], driven by [`Load::start`],
/// ended by [`Load::stop`].
#[derive(Debug)]
pub(crate) struct Load {
    pub(super) shared: Arc<Shared>,
    pub(super) stack: Stack,
    workers: Vec<JoinHandle<Vec<Record>>>,
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
            epoch: Instant::now(),
            fault_at_us: AtomicU64::new(u64::MAX),
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
                        let seq = shared.next_write(k);
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
        self.shared.fault_at_us.store(u64::MAX, Ordering::SeqCst);
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

    /// The open window's fault begins now: lost writes sent from now on
    /// count as lost after the fault.
    pub(crate) fn mark_fault(&self) {
        self.shared
            .fault_at_us
            .store(self.shared.now_us(), Ordering::SeqCst);
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
    pub(crate) lost_before_fault: u64,
    pub(crate) lost_after_fault: u64,
}

impl PhaseCounters {
    /// The event counters now.
    pub(crate) fn tally(&self) -> Tally {
        Tally {
            stale_reads: self.stale_reads.load(Ordering::Relaxed),
            stale_unverified: self.stale_unverified.load(Ordering::Relaxed),
            lost_writes: self.lost_writes.load(Ordering::Relaxed),
            lost_found_by_sweep: self.lost_found_by_sweep.load(Ordering::Relaxed),
            lost_before_fault: self.lost_before_fault.load(Ordering::Relaxed),
            lost_after_fault: self.lost_after_fault.load(Ordering::Relaxed),
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
        // The operation's own time: a suspect read's check against the
        // primary (below) is the checker's work, not the read's.
        let (outcome, lat) = if write {
            let seq = shared.next_write(k);
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
            let lat = started.elapsed();
            let mut st = lock(&shared.state[k]);
            if out.ok {
                st.ack(seq);
            } else {
                st.fail(seq);
            }
            (out, lat)
        } else {
            let floor = lock(&shared.state[k]).floor();
            let req = CacheRequest::get(key).with_timeout(timeout);
            let (resp, out) = call(&shared, stack.clone(), req).await;
            let lat = started.elapsed();
            let got = resp.map(|r| parse_seq(r.value.as_deref()));
            if got.is_some_and(|g| read_is_suspect(floor, g)) {
                check_suspect(&shared, stack.clone(), k, floor).await;
            }
            (out, lat)
        };
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
