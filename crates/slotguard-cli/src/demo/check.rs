//! Telling a stale read from a lost write: a read that returned a value
//! older than the key's last acknowledged write is checked against the
//! key's primary, and after each phase every key is (the sweep).

use std::sync::atomic::Ordering;
use std::time::Duration;

use slotguard::tower::ServiceExt;
use slotguard::{CacheRequest, Consistency, Path};
use tokio::time::Instant;

use super::load::{lock, Load, Shared};
use super::stats::{parse_seq, read_is_suspect, Judgement};
use crate::stack::Stack;

/// The longest the lost-write sweep after a phase may take.
const SWEEP_DEADLINE: Duration = Duration::from_secs(20);

impl Load {
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
                            let mut st = lock(&shared.state[k]);
                            let sent_us = st.floor_sent_us();
                            if st.judge(floor, got) == Judgement::LostWrite {
                                drop(st);
                                lost += 1;
                                let fault_us = shared.fault_at_us.load(Ordering::SeqCst);
                                shared.counters[phase].lost(sent_us, fault_us);
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
        c.lost_found_by_sweep.fetch_add(lost, Ordering::Relaxed);
        (lost, unread)
    }
}

/// The value of key `k` on its primary, or `None` when the primary cannot be
/// asked (a few tries within ~1 s).
pub(super) async fn read_primary(
    shared: &Shared,
    stack: Stack,
    k: usize,
    tries: u64,
) -> Option<u64> {
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

/// A read of key `k` returned a value older than `floor`: ask the primary
/// whether the acknowledged write is still there (stale read) or is gone
/// (lost write), and count it for the current window.
pub(super) async fn check_suspect(shared: &Shared, stack: Stack, k: usize, floor: u64) {
    let phase = shared.last_phase.load(Ordering::SeqCst);
    let Some(c) = shared.counters.get(phase) else {
        return;
    };
    match read_primary(shared, stack, k, 5).await {
        Some(primary) => {
            let (judgement, sent_us) = {
                let mut st = lock(&shared.state[k]);
                let sent_us = st.floor_sent_us();
                (st.judge(floor, primary), sent_us)
            };
            match judgement {
                Judgement::Stale => {
                    c.stale_reads.fetch_add(1, Ordering::Relaxed);
                }
                Judgement::LostWrite => {
                    c.lost(sent_us, shared.fault_at_us.load(Ordering::SeqCst));
                }
                Judgement::AlreadyCounted => {}
            }
        }
        None => {
            // never hide a miss: an old value we could not explain is stale
            c.stale_reads.fetch_add(1, Ordering::Relaxed);
            c.stale_unverified.fetch_add(1, Ordering::Relaxed);
        }
    }
}
