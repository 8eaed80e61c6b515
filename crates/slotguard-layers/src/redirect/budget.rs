//! A lock-free retry budget.
//!
//! Why not tower's [`TpsBudget`](tower::retry::budget::TpsBudget): it takes
//! a mutex on every deposit and withdrawal (to roll its window) and adds to
//! one shared counter, so with a deposit per request every request takes
//! the same lock, and tasks on different cores queue behind each other.
//! This budget keeps the same rules with atomics only, and spreads deposits
//! over per-thread stripes so that cores do not fight over one counter.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::Budget;

/// Buckets per TTL; the window is this many full buckets plus the current
/// one (as tower's budget: a deposit counts for between `ttl` and `ttl` +
/// one bucket).
const BUCKETS: u64 = 10;
const RING: usize = BUCKETS as usize + 1;
/// Deposit stripes; each thread sticks to one.
const STRIPES: usize = 8;

/// A budget for retries: successes deposit, retries withdraw.
///
/// The same rules as tower's `TpsBudget`:
///
/// - every [`deposit`](Budget::deposit) (a request that succeeded) earns
///   `retry_percent` of a retry, for `ttl`;
/// - every [`withdraw`](Budget::withdraw) (a retry) spends one, and is
///   refused when the balance over the last `ttl` cannot pay for it;
/// - a reserve of `min_per_sec` retries per second (× `ttl`) is always
///   there, so a client that has just started, or sends little, can retry.
///
/// Deposits and withdrawals are atomic adds on the caller's stripe of the
/// current one-tenth-of-`ttl` bucket; no lock is taken. A withdrawal sums
/// every stripe, so concurrent withdrawals may overdraw by the few that
/// race (tower's budget allows the same).
pub struct RetryBudget {
    stripes: Box<[Stripe]>,
    origin: Instant,
    bucket_nanos: u64,
    reserve: i64,
    deposit_amount: i64,
    withdraw_amount: i64,
}

/// One thread's share of the window, on its own cache lines.
#[repr(align(128))]
struct Stripe {
    // Each slot packs the bucket's index since `origin` (high 32 bits) and
    // its balance (low 32 bits, signed), so rolling a slot over to a new
    // bucket and adding to it is one compare-and-swap: no deposit can land
    // in a slot between its reset and its reuse.
    slots: [AtomicU64; RING],
}

impl Stripe {
    fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicU64::new(pack(0, 0))),
        }
    }
}

fn pack(index: u32, balance: i32) -> u64 {
    (u64::from(index) << 32) | u64::from(balance as u32)
}

fn unpack(word: u64) -> (u32, i32) {
    ((word >> 32) as u32, word as u32 as i32)
}

impl RetryBudget {
    /// A budget allowing `retry_percent` retries per successful request
    /// (`0.5`: one retry per two successes; up to `1000.0`), deposits
    /// counting for `ttl` (1 s to 60 s), plus `min_per_sec` retries per
    /// second whatever the traffic. Out-of-range values are clamped.
    pub fn new(ttl: Duration, min_per_sec: u32, retry_percent: f32) -> Self {
        let ttl = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let retry_percent = if retry_percent.is_nan() {
            0.0
        } else {
            retry_percent.clamp(0.0, 1000.0)
        };
        // Integer amounts, as tower's budget: fractions of a retry per
        // deposit become a larger price per withdrawal.
        let (deposit_amount, withdraw_amount) = if retry_percent == 0.0 {
            (0, 1)
        } else if retry_percent <= 1.0 {
            (1, (1.0 / retry_percent) as i64)
        } else {
            (1000, (1000.0 / retry_percent) as i64)
        };
        let reserve = i64::from(min_per_sec)
            .saturating_mul(ttl.as_secs() as i64)
            .saturating_mul(withdraw_amount);
        let bucket_nanos = (ttl.as_nanos() / u128::from(BUCKETS)).max(1) as u64;
        Self {
            stripes: (0..STRIPES).map(|_| Stripe::new()).collect(),
            origin: Instant::now(),
            bucket_nanos,
            reserve,
            deposit_amount,
            withdraw_amount,
        }
    }

    fn index(&self, now: Instant) -> u32 {
        // u64 nanoseconds last 584 years (and a u64 division is much
        // cheaper than a u128 one); u32 buckets of at least 100 ms, 13.
        let since = now.saturating_duration_since(self.origin).as_nanos();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        u32::try_from(since / self.bucket_nanos).unwrap_or(u32::MAX)
    }

    /// Add `amount` to this thread's stripe of the current bucket.
    fn add(&self, amount: i64, index: u32) {
        let slot = &self.stripes[stripe()].slots[index as usize % RING];
        let mut word = slot.load(Ordering::Relaxed);
        loop {
            let (at, balance) = unpack(word);
            let next = match at.cmp(&index) {
                std::cmp::Ordering::Equal => pack(
                    index,
                    (i64::from(balance) + amount).clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                ),
                // An old bucket: start it over for this one.
                std::cmp::Ordering::Less => {
                    pack(index, amount.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
                }
                // The slot moved on to a later bucket while this caller
                // read the clock: its add is as good as expired.
                std::cmp::Ordering::Greater => return,
            };
            match slot.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(current) => word = current,
            }
        }
    }

    /// Reserve plus every live bucket of every stripe.
    fn balance(&self, index: u32) -> i64 {
        let live = |at: u32| at <= index && index - at <= BUCKETS as u32;
        let windowed: i64 = self
            .stripes
            .iter()
            .flat_map(|s| s.slots.iter())
            .map(|slot| unpack(slot.load(Ordering::Relaxed)))
            .filter(|&(at, _)| live(at))
            .map(|(_, balance)| i64::from(balance))
            .sum();
        self.reserve.saturating_add(windowed)
    }
}

impl Default for RetryBudget {
    /// 100 retries/s floor plus 50 % of successful requests, over 10 s.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 100, 0.5)
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        if self.deposit_amount != 0 {
            self.add(self.deposit_amount, self.index(Instant::now()));
        }
    }

    fn withdraw(&self) -> bool {
        let index = self.index(Instant::now());
        if self.balance(index) < self.withdraw_amount {
            return false;
        }
        self.add(-self.withdraw_amount, index);
        true
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.index(Instant::now());
        f.debug_struct("RetryBudget")
            .field("balance", &self.balance(index))
            .field("withdraw_amount", &self.withdraw_amount)
            .finish_non_exhaustive()
    }
}

/// This thread's stripe: threads are dealt stripes in turn on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
            }
            s.get()
        })
        // Thread-local storage already torn down (a deposit from a
        // destructor at thread exit): any stripe is correct.
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn drain(budget: &RetryBudget) -> usize {
        (0..100_000).take_while(|_| budget.withdraw()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_is_a_floor_per_second() {
        let budget = RetryBudget::new(Duration::from_secs(1), 10, 0.0);
        assert_eq!(drain(&budget), 10, "min_per_sec × ttl");
        // deposits earn nothing at 0 %
        budget.deposit();
        assert!(!budget.withdraw());
        // withdrawals expire with their bucket: the floor comes back
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(drain(&budget), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_earn_retries_at_the_percent() {
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 0.5);
        assert!(!budget.withdraw(), "no deposit, no reserve");
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 2, "one retry per two successes");

        let generous = RetryBudget::new(Duration::from_secs(1), 0, 2.0);
        generous.deposit();
        assert_eq!(drain(&generous), 2, "two retries per success");
    }

    fn available(budget: &RetryBudget) -> i64 {
        budget.balance(budget.index(Instant::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_count_for_the_ttl_plus_the_current_bucket() {
        let ms = |n| tokio::time::advance(Duration::from_millis(n));
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0);
        for _ in 0..3 {
            budget.deposit();
        }
        ms(9_900).await;
        budget.deposit();
        assert_eq!(available(&budget), 4);
        // t = 11.05 s: the first second's bucket is over 10 buckets old
        ms(1_150).await;
        assert_eq!(available(&budget), 1);
        ms(8_900).await;
        assert_eq!(available(&budget), 1, "t = 19.95 s: the 9 s bucket lives");
        ms(100).await;
        assert_eq!(available(&budget), 0);
        // retries spend what is there, and are refused after
        budget.deposit();
        assert_eq!(drain(&budget), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_quiet_spell_leaves_no_stale_balance() {
        let budget = RetryBudget::new(Duration::from_secs(1), 0, 1.0);
        for _ in 0..5 {
            budget.deposit();
        }
        // exactly one ring turn later, the same slots are reused: the old
        // balances must not count
        tokio::time::advance(Duration::from_millis(100 * RING as u64)).await;
        budget.deposit();
        assert_eq!(drain(&budget), 1);
    }

    #[test]
    fn out_of_range_settings_are_clamped() {
        let budget = RetryBudget::new(Duration::ZERO, 3, f32::NAN);
        assert_eq!(drain(&budget), 3, "ttl clamped to 1 s, NaN to 0 %");
        let budget = RetryBudget::new(Duration::from_secs(3600), 1, 0.0);
        assert_eq!(drain(&budget), 60, "ttl clamped to 60 s");
    }

    #[test]
    fn deposits_from_many_threads_all_count() {
        let budget = Arc::new(RetryBudget::new(Duration::from_secs(60), 0, 1.0));
        std::thread::scope(|s| {
            for _ in 0..12 {
                let budget = budget.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        budget.deposit();
                    }
                });
            }
        });
        assert_eq!(drain(&budget), 12_000);
    }
}
