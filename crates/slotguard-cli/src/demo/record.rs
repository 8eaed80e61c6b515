//! One completed operation as the load records it, the codes it carries,
//! and the load's random numbers.

use slotguard::{Failure, Path};

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
pub(crate) const OTHER: u8 = 17;
pub(crate) const HUNG: u8 = 18;

pub(crate) fn failure_code(f: Failure) -> u8 {
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
pub(crate) const PATHS: &[&str] = &[
    "primary",
    "replica",
    "near_cache",
    "secondary",
    "client_cache",
    "other",
];

pub(crate) fn path_code(p: Path) -> u8 {
    match p {
        Path::Primary => 0,
        Path::Replica => 1,
        Path::NearCache => 2,
        Path::Secondary => 3,
        Path::ClientCache => 4,
        _ => 5,
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

/// How an operation ended, before it is recorded.
pub(crate) struct Outcome {
    pub(crate) ok: bool,
    pub(crate) code: u8,
    pub(crate) node: u8,
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
