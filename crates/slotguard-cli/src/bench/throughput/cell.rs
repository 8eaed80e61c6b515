//! One cell: one client under one load at one concurrency for a fixed time.
//!
//! C tokio tasks run a closed loop (pick a random key, issue, await, record
//! the latency) through a warm-up that is not recorded and then the
//! measured window. An operation counts in the window it *completes* in.
//! Keys are drawn uniformly, or from a Zipf law for the `zipf` load.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand_distr::{Distribution, Zipf};
use tokio::task::JoinHandle;

use super::clients::BenchClient;
use super::summary::{percentile_ns, LoadKind, Sample};
use crate::load::Rng;

/// The exponent of the `zipf` load's key law (YCSB's hot-key default).
pub(crate) const ZIPF_EXPONENT: f64 = 0.99;

/// The keys and the value every SET writes.
#[derive(Debug)]
pub(crate) struct Data {
    pub(crate) keys: Vec<Bytes>,
    pub(crate) value: Bytes,
    /// Rank law over the keys for the `zipf` load (rank 1 = key 0).
    zipf: Option<Zipf<f64>>,
}

impl Data {
    /// `n` keys with no hash tag, so their slots spread over every shard.
    pub(crate) fn new(n: usize, value_size: usize) -> Self {
        Data {
            keys: (0..n)
                .map(|i| Bytes::from(format!("sg:tput:{i}")))
                .collect(),
            value: Bytes::from(vec![b'x'; value_size]),
            zipf: Zipf::new(n as f64, ZIPF_EXPONENT).ok(),
        }
    }

    /// A key index for `load`: Zipf-distributed for `zipf`, else uniform.
    fn pick(&self, load: LoadKind, rng: &mut Rng) -> usize {
        let n = self.keys.len() as u64;
        match (load, &self.zipf) {
            (LoadKind::Zipf, Some(z)) => {
                // ranks are 1..=n as floats
                let rank = z.sample(rng) as usize;
                rank.clamp(1, self.keys.len()) - 1
            }
            _ => rng.below(n) as usize,
        }
    }
}

/// The bench's own generator drives rand_distr's samplers.
impl rand::TryRng for Rng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next_u64() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// Share of the mixed load's operations that are SETs, in percent.
pub(crate) const MIX_WRITE_PCT: u64 = 10;

/// How long tasks may take to finish their last operation once the window
/// closed; a task still busy then is counted as one error and dropped (its
/// client hangs: fred's cluster client has no command timeout).
const FINISH_GRACE: Duration = Duration::from_secs(10);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// What one cell is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CellSpec {
    pub(crate) load: LoadKind,
    pub(crate) concurrency: usize,
    pub(crate) warmup: Duration,
    pub(crate) window: Duration,
    /// Seeds the tasks' key choice: the same for every client of a cell in
    /// a round, so they all see the same key sequence.
    pub(crate) seed: u64,
}

/// What one task measured.
#[derive(Debug, Default)]
struct TaskOut {
    lat_ns: Vec<u64>,
    errors: u64,
}

/// The measured counts of one cell, before they become a [`Sample`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CellResult {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) window: Duration,
    /// Successful operations' latencies, sorted.
    pub(crate) lat_ns: Vec<u64>,
    /// Write-family syscalls of this process during the window.
    pub(crate) write_syscalls: Option<u64>,
    /// CPU time of this process during the window (every thread).
    pub(crate) cpu: Option<Duration>,
    /// Reads answered by the client's near-cache during the window (`None`:
    /// it has none).
    pub(crate) near_cache: Option<u64>,
}

impl CellResult {
    /// The figures of this cell.
    pub(crate) fn sample(&self) -> Sample {
        let secs = self.window.as_secs_f64().max(1e-9);
        let all_ops = self.ok + self.errors;
        let per_op = |n: u64| (all_ops > 0).then(|| n as f64 / all_ops as f64);
        let us = |q: f64| percentile_ns(&self.lat_ns, q) as f64 / 1000.0;
        Sample {
            ops_per_sec: self.ok as f64 / secs,
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            errors: self.errors,
            write_syscalls_per_op: self.write_syscalls.and_then(per_op),
            cpu_us_per_op: self
                .cpu
                .and_then(|cpu| (self.ok > 0).then(|| cpu.as_secs_f64() * 1e6 / self.ok as f64)),
            near_cache_share: self.near_cache.and_then(per_op),
        }
    }
}

/// Run `spec` against `client`.
pub(crate) async fn run<C: BenchClient>(
    client: &C,
    data: &Arc<Data>,
    spec: CellSpec,
) -> CellResult {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let tasks: Vec<JoinHandle<TaskOut>> = (0..spec.concurrency)
        .map(|t| {
            let client = client.clone();
            let data = data.clone();
            let phase = phase.clone();
            let seed = spec.seed ^ ((t as u64) << 32);
            tokio::spawn(closed_loop(client, data, phase, spec.load, seed))
        })
        .collect();

    tokio::time::sleep(spec.warmup).await;
    let io_before = write_syscalls();
    let cpu_before = process_cpu();
    let near_before = client.near_cache_answers();
    let start = Instant::now();
    phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(spec.window).await;
    phase.store(STOP, Ordering::Relaxed);
    let window = start.elapsed();
    let io_after = write_syscalls();
    let cpu_after = process_cpu();
    let near_after = client.near_cache_answers();

    let deadline = tokio::time::Instant::now() + FINISH_GRACE;
    let mut lat_ns = Vec::new();
    let mut errors = 0;
    for mut task in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(out)) => {
                lat_ns.extend_from_slice(&out.lat_ns);
                errors += out.errors;
            }
            // panicked, or still waiting for its last answer
            Ok(Err(_)) | Err(_) => {
                task.abort();
                errors += 1;
            }
        }
    }
    lat_ns.sort_unstable();
    CellResult {
        ok: lat_ns.len() as u64,
        errors,
        window,
        lat_ns,
        write_syscalls: io_before.zip(io_after).map(|(a, b)| b.saturating_sub(a)),
        cpu: cpu_before.zip(cpu_after).map(|(a, b)| b.saturating_sub(a)),
        near_cache: near_before
            .zip(near_after)
            .map(|(a, b)| b.saturating_sub(a)),
    }
}

async fn closed_loop<C: BenchClient>(
    mut client: C,
    data: Arc<Data>,
    phase: Arc<AtomicU8>,
    load: LoadKind,
    seed: u64,
) -> TaskOut {
    let mut rng = Rng::new(seed);
    let mut out = TaskOut {
        // enough for most windows without regrowing while measuring
        lat_ns: Vec::with_capacity(16 * 1024),
        errors: 0,
    };
    while phase.load(Ordering::Relaxed) != STOP {
        let key = data.keys[data.pick(load, &mut rng)].clone();
        let write = match load {
            LoadKind::Get => false,
            LoadKind::Set => true,
            LoadKind::Mix | LoadKind::Zipf => rng.below(100) < MIX_WRITE_PCT,
        };
        let started = Instant::now();
        let ok = if write {
            client.set(key, data.value.clone()).await.is_ok()
        } else {
            matches!(client.get(key).await, Ok(true))
        };
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if phase.load(Ordering::Relaxed) == MEASURE {
            if ok {
                out.lat_ns.push(ns);
            } else {
                out.errors += 1;
            }
        }
    }
    out
}

/// This process's `syscw` from `/proc/self/io`, where Linux provides it:
/// every thread's `write`/`writev` calls, on sockets and on tokio's wake-up
/// eventfd alike. (`syscr` is no use here: socket reads are `recvfrom`,
/// which it does not count.)
fn write_syscalls() -> Option<u64> {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| parse_syscw(&s))
}

/// `syscw` of a `/proc/<pid>/io` text.
pub(crate) fn parse_syscw(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time this process's live threads have run, summed over
/// `/proc/self/task/*/schedstat` (nanoseconds on the CPU, exact, unlike
/// `/proc/self/stat`'s 10 ms ticks). A thread that exits inside a window
/// takes its time with it; the bench's threads (tokio's workers, the
/// store's) live for the whole run. `None` off Linux, or on a kernel
/// without per-task `schedstat`.
fn process_cpu() -> Option<Duration> {
    let mut ns = 0u64;
    let mut read = false;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(path) {
            ns += parse_schedstat(&text)?;
            read = true;
        }
    }
    read.then(|| Duration::from_nanos(ns))
}

/// Nanoseconds on the CPU, the first field of a `schedstat` text.
pub(crate) fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_io_counts() {
        let text = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\nread_bytes: 0\n";
        assert_eq!(parse_syscw(text), Some(4));
        assert_eq!(parse_syscw("rchar: 1\n"), None);
    }

    #[test]
    fn schedstat_and_this_process_cpu() {
        assert_eq!(parse_schedstat("741643 0 1\n"), Some(741_643));
        assert_eq!(parse_schedstat(""), None);
        // Where the kernel keeps it, spin until this process's CPU time
        // moves: it is read, and grows. Other tests' threads may end
        // meanwhile and take their time out of the sum (a read right after
        // a growth can be lower again), so the growth seen in the loop is
        // the proof, polled up to a deadline rather than read twice.
        let Some(first) = process_cpu() else { return };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        loop {
            if process_cpu().is_some_and(|now| now > first) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "this process's CPU time did not grow in 30 s of spinning"
            );
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn a_cell_becomes_a_sample() {
        let r = CellResult {
            ok: 4,
            errors: 1,
            window: Duration::from_secs(2),
            lat_ns: vec![1_000, 2_000, 3_000, 4_000],
            write_syscalls: Some(5),
            cpu: Some(Duration::from_micros(12)),
            near_cache: Some(2),
        };
        let s = r.sample();
        assert_eq!(s.ops_per_sec, 2.0, "errors are not throughput");
        assert_eq!(s.p50_us, 2.0);
        assert_eq!(s.p999_us, 4.0);
        assert_eq!(s.errors, 1);
        assert_eq!(s.write_syscalls_per_op, Some(1.0));
        assert_eq!(s.cpu_us_per_op, Some(3.0), "per successful operation");
        assert_eq!(s.near_cache_share, Some(0.4), "of every operation");
    }

    #[test]
    fn zipf_keys_are_hot() {
        let d = Data::new(10_000, 1);
        let mut rng = Rng::new(3);
        let mut hits = vec![0u32; d.keys.len()];
        for _ in 0..100_000 {
            hits[d.pick(LoadKind::Zipf, &mut rng)] += 1;
        }
        // Zipf(0.99) over 10k keys: rank 1 takes ~10 %, the top 100 ~50 %
        let top: u32 = hits[..100].iter().sum();
        assert!(hits[0] > 5_000 && hits[0] < 15_000, "rank 1: {}", hits[0]);
        assert!(top > 40_000 && top < 65_000, "top 100: {top}");
        assert!(hits[0] > hits[10] && hits[10] > hits[1000]);
        let mut uni = vec![0u32; d.keys.len()];
        for _ in 0..100_000 {
            uni[d.pick(LoadKind::Mix, &mut rng)] += 1;
        }
        assert!(uni[0] < 100, "uniform load is not hot: {}", uni[0]);
    }

    #[test]
    fn keys_spread_over_slots() {
        let d = Data::new(1000, 7);
        assert_eq!(d.value.len(), 7);
        let slots: std::collections::HashSet<u16> = d
            .keys
            .iter()
            .map(|k| slotguard::core::key_slot(k) / 5462)
            .collect();
        assert_eq!(slots.len(), 3, "every third of the slot space has keys");
    }
}
