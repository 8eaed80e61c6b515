//! Pure measurement logic: percentiles, per-second rates, and the per-key
//! bookkeeping that tells a stale read from a lost write. No I/O here, so
//! every rule is unit-tested with synthetic data.

/// The `q`-quantile (0.0..=1.0) of `sorted` latencies in microseconds, in
/// milliseconds, by nearest rank. 0 for no samples.
pub(crate) fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let n = sorted_us.len();
    // nearest rank: the smallest value with at least q*n samples at or below it
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    let idx = rank.clamp(1, n) - 1;
    f64::from(sorted_us[idx]) / 1000.0
}

/// How many of `times_us` (event times in µs since the window start) fall in
/// each of the first `whole_secs` whole seconds. Events after the last whole
/// second (a partial second) are not counted.
pub(crate) fn per_second_counts(
    times_us: impl IntoIterator<Item = u32>,
    whole_secs: usize,
) -> Vec<u64> {
    let mut counts = vec![0u64; whole_secs];
    for t in times_us {
        let sec = (t / 1_000_000) as usize;
        if let Some(c) = counts.get_mut(sec) {
            *c += 1;
        }
    }
    counts
}

/// The p99 latency (ms) of the events `(t_us, lat_us)` in each of the
/// first `whole_secs` whole seconds (0 for a second without events).
pub(crate) fn per_second_p99_ms(
    events: impl IntoIterator<Item = (u32, u32)>,
    whole_secs: usize,
) -> Vec<f64> {
    let mut by_sec: Vec<Vec<u32>> = vec![Vec::new(); whole_secs];
    for (t, lat) in events {
        if let Some(v) = by_sec.get_mut((t / 1_000_000) as usize) {
            v.push(lat);
        }
    }
    by_sec
        .into_iter()
        .map(|mut v| {
            v.sort_unstable();
            percentile_ms(&v, 0.99)
        })
        .collect()
}

/// Mean of per-second counts (0 when there is no whole second).
pub(crate) fn mean_rate(counts: &[u64]) -> f64 {
    if counts.is_empty() {
        0.0
    } else {
        counts.iter().sum::<u64>() as f64 / counts.len() as f64
    }
}

/// The lowest per-second count as a percentage of `baseline_per_sec`.
/// `None` when there is no whole second or no baseline to compare with.
pub(crate) fn worst_second_pct(counts: &[u64], baseline_per_sec: f64) -> Option<f64> {
    let worst = *counts.iter().min()?;
    if baseline_per_sec <= 0.0 {
        return None;
    }
    Some(worst as f64 / baseline_per_sec * 100.0)
}

/// `part` of `whole` in percent; 100 when `whole` is 0 (nothing to miss).
pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

/// The value the demo stores for write number `seq`.
pub(crate) fn encode_value(seq: u64) -> String {
    format!("v{seq}")
}

/// The write sequence a stored value carries; 0 for a missing or foreign
/// value (so it compares as older than any write).
pub(crate) fn parse_seq(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| v.strip_prefix(b"v"))
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// What the demo knows about one key's writes.
///
/// `floor` is the oldest value a read that starts now may legally return:
/// the last acknowledged write, lowered to any write that overlapped it (in
/// flight at the same time, whatever its seq and whichever was acknowledged
/// first: two overlapping writes may reach the node in either order, and
/// their answers may be handled in either order too) and to any write still
/// in flight that was sent before it. Writes that failed or timed out may or
/// may not have applied; they never raise the floor, and a read that returns
/// one (its seq is at or above the floor) is fine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyState {
    floor: u64,
    /// When the write that set the floor was sent (µs on the load's
    /// clock), to tell a write lost because it was taken just before a
    /// fault (asynchronous replication) from one sent after it began.
    floor_sent_us: u64,
    /// Writes in flight: (seq, sent at, the oldest seq of a write that
    /// overlapped it so far).
    inflight: Vec<(u64, u64, u64)>,
}

impl KeyState {
    /// The oldest acceptable seq for a read starting now.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// When the write that set the floor was sent.
    pub(crate) fn floor_sent_us(&self) -> u64 {
        self.floor_sent_us
    }

    /// A write with `seq` is about to be sent, at `now_us`. Call it with
    /// `seq` taken under the same lock (`next_write`), so a key's writes
    /// begin in seq order.
    pub(crate) fn begin_write(&mut self, seq: u64, now_us: u64) {
        let mut overlapped = u64::MAX;
        for w in &mut self.inflight {
            w.2 = w.2.min(seq);
            overlapped = overlapped.min(w.0);
        }
        self.inflight.push((seq, now_us, overlapped));
    }

    /// The write `seq` was acknowledged.
    pub(crate) fn ack(&mut self, seq: u64) {
        let (sent_us, overlapped) = self
            .inflight
            .iter()
            .find(|w| w.0 == seq)
            .map_or((0, u64::MAX), |w| (w.1, w.2));
        self.inflight.retain(|w| w.0 != seq);
        let oldest_inflight = self.inflight.iter().map(|w| w.0).min();
        let floor = self
            .floor
            .max(seq.min(overlapped).min(oldest_inflight.unwrap_or(u64::MAX)));
        if floor != self.floor {
            self.floor = floor;
            self.floor_sent_us = sent_us;
        }
    }

    /// The write `seq` failed or its outcome is unknown.
    pub(crate) fn fail(&mut self, seq: u64) {
        self.inflight.retain(|w| w.0 != seq);
    }

    /// A read that started when the floor was `floor_at_start` returned
    /// `got`; the primary, asked afterwards, holds `primary`. Decides what
    /// that read was, and on a lost write adopts the primary's value as the
    /// key's new truth so the loss is counted once.
    pub(crate) fn judge(&mut self, floor_at_start: u64, primary: u64) -> Judgement {
        if primary >= floor_at_start {
            // the acknowledged write is there: the first answer was old
            Judgement::Stale
        } else if self.floor == floor_at_start {
            // the primary itself lost the acknowledged write (asynchronous
            // replication across a promotion)
            self.floor = primary;
            Judgement::LostWrite
        } else {
            // another read already counted this loss, or a newer write
            // replaced the value since
            Judgement::AlreadyCounted
        }
    }
}

/// Whether a read returning `got` must be checked against the primary.
pub(crate) fn read_is_suspect(floor_at_start: u64, got: u64) -> bool {
    got < floor_at_start
}

/// The outcome of checking a suspect read against the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// The primary has the acknowledged value; the read returned an older one.
    Stale,
    /// The primary itself no longer has the acknowledged value.
    LostWrite,
    /// The loss was already counted (or the key moved on meanwhile).
    AlreadyCounted,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&v, 0.0), 1.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(percentile_ms(&[1500], 0.99), 1.5);
        // 3 samples: p50 is the 2nd
        assert_eq!(percentile_ms(&[1000, 2000, 3000], 0.5), 2.0);
    }

    #[test]
    fn per_second_counts_drop_the_partial_second() {
        let times = [0, 999_999, 1_000_000, 2_500_000, 2_999_999, 3_100_000];
        assert_eq!(per_second_counts(times, 3), vec![2, 1, 2]);
        assert_eq!(per_second_counts(times, 0), Vec::<u64>::new());
    }

    #[test]
    fn p99_per_second() {
        let mut events: Vec<(u32, u32)> = (0..100).map(|i| (i * 1000, 1000)).collect();
        events.push((500_000, 90_000));
        events.push((1_500_000, 7_000));
        assert_eq!(per_second_p99_ms(events, 3), vec![1.0, 7.0, 0.0]);
    }

    #[test]
    fn the_floor_remembers_when_its_write_was_sent() {
        let mut k = KeyState::default();
        k.begin_write(1, 100);
        k.ack(1);
        assert_eq!(k.floor_sent_us(), 100);
        // an older ack arriving late leaves the floor and its time alone
        k.begin_write(2, 150);
        k.begin_write(3, 200);
        k.ack(3);
        assert_eq!((k.floor(), k.floor_sent_us()), (2, 200));
        k.ack(2);
        assert_eq!((k.floor(), k.floor_sent_us()), (2, 200));
    }

    #[test]
    fn worst_second_against_the_baseline() {
        let healthy = [1000, 1000, 1000, 1200];
        let base = mean_rate(&healthy);
        assert_eq!(base, 1050.0);
        let pct = worst_second_pct(&healthy, base).unwrap();
        assert!((pct - 95.238).abs() < 0.01, "{pct}");
        // a frozen second in the middle of a fault phase
        let fault = [1000, 10, 900];
        assert!((worst_second_pct(&fault, base).unwrap() - 0.952).abs() < 0.01);
        assert_eq!(worst_second_pct(&[], base), None);
        assert_eq!(worst_second_pct(&fault, 0.0), None);
    }

    #[test]
    fn pct_of_nothing_is_everything() {
        assert_eq!(pct(0, 0), 100.0);
        assert_eq!(pct(1, 4), 25.0);
    }

    #[test]
    fn values_round_trip() {
        assert_eq!(parse_seq(Some(encode_value(42).as_bytes())), 42);
        assert_eq!(parse_seq(None), 0);
        assert_eq!(parse_seq(Some(b"garbage")), 0);
        assert_eq!(parse_seq(Some(b"v")), 0);
    }

    #[test]
    fn floor_follows_acks() {
        let mut k = KeyState::default();
        k.begin_write(5, 0);
        assert_eq!(k.floor(), 0, "an unacknowledged write sets no floor");
        k.ack(5);
        assert_eq!(k.floor(), 5);
        // a failed write never raises the floor, and reading it is fine
        k.begin_write(7, 0);
        k.fail(7);
        assert_eq!(k.floor(), 5);
        assert!(!read_is_suspect(k.floor(), 7));
        assert!(!read_is_suspect(k.floor(), 5));
        assert!(read_is_suspect(k.floor(), 4));
        // an older ack arriving late never lowers the floor
        k.begin_write(9, 0);
        k.ack(9);
        k.ack(8);
        assert_eq!(k.floor(), 9);
    }

    #[test]
    fn concurrent_writes_keep_the_floor_at_the_oldest_in_flight() {
        let mut k = KeyState::default();
        k.begin_write(10, 0);
        k.begin_write(11, 0);
        // 11 acknowledged while 10 may still land after it
        k.ack(11);
        assert_eq!(k.floor(), 10);
        assert!(!read_is_suspect(k.floor(), 10));
        k.ack(10);
        assert_eq!(k.floor(), 10);
        // 10 failing instead leaves the floor where 11's ack put it
        let mut k = KeyState::default();
        k.begin_write(10, 0);
        k.begin_write(11, 0);
        k.ack(11);
        k.fail(10);
        assert_eq!(k.floor(), 10);
        k.begin_write(12, 0);
        k.ack(12);
        assert_eq!(k.floor(), 12);
    }

    #[test]
    fn overlapping_writes_may_land_in_either_order_whichever_is_acknowledged_first() {
        // 10 and 11 in flight together; 10's answer is handled first, yet
        // its SET may have reached the node after 11's: either value may
        // be the key's last.
        let mut k = KeyState::default();
        k.begin_write(10, 0);
        k.begin_write(11, 0);
        k.ack(10);
        k.ack(11);
        assert_eq!(k.floor(), 10);
        assert!(!read_is_suspect(k.floor(), 10));
        // a write begun after both were acknowledged overlaps neither
        k.begin_write(12, 0);
        k.ack(12);
        assert_eq!(k.floor(), 12);
        assert!(read_is_suspect(k.floor(), 11));
    }

    #[test]
    fn an_old_read_is_stale_when_the_primary_has_the_ack() {
        let mut k = KeyState::default();
        k.begin_write(20, 0);
        k.ack(20);
        let floor = k.floor();
        assert!(read_is_suspect(floor, 15));
        assert_eq!(k.judge(floor, 20), Judgement::Stale);
        assert_eq!(k.floor(), 20);
        // a primary holding a newer (e.g. timed-out) write is still "has it"
        assert_eq!(k.judge(floor, 23), Judgement::Stale);
    }

    #[test]
    fn an_old_primary_value_is_a_lost_write_counted_once() {
        let mut k = KeyState::default();
        k.begin_write(20, 0);
        k.ack(20);
        let floor = k.floor();
        // the promoted replica never got write 20
        assert_eq!(k.judge(floor, 15), Judgement::LostWrite);
        assert_eq!(k.floor(), 15, "the primary's value is the new truth");
        // a second reader that saw the same old value does not count it again
        assert_eq!(k.judge(floor, 15), Judgement::AlreadyCounted);
        // and later reads of 15 are not suspect any more
        assert!(!read_is_suspect(k.floor(), 15));
        // a key that vanished entirely (value None → 0) is a lost write too
        let mut k = KeyState::default();
        k.begin_write(3, 0);
        k.ack(3);
        let floor = k.floor();
        assert_eq!(k.judge(floor, parse_seq(None)), Judgement::LostWrite);
    }
}
