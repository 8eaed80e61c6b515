//! Settings of the replica-failover layer.

use std::time::Duration;

use super::hedge::HedgePolicy;

/// Where healthy reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReadFrom {
    /// The primary; replicas only when it fails (the default).
    #[default]
    PrimaryPreferred,
    /// A healthy replica when one is eligible, else the primary.
    ReplicaPreferred,
    /// Whichever eligible node has the lowest latency (EWMA).
    LowestLatency,
}

/// How reads fail over to replicas.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailoverPolicy {
    /// Most replica attempts per read. Default 2.
    pub max_failovers: u8,
    /// Backoff before the second and later failover attempts (the first goes
    /// at once): `base × 2ⁿ` with full jitter. Default 50 ms.
    pub backoff_base: Duration,
    /// Deadline of the *primary* attempt of a read that may fail over, so a
    /// stalled primary leaves time for a replica within the request's own
    /// deadline. `None`: the request deadline only. Default 100 ms.
    pub primary_attempt_timeout: Option<Duration>,
    /// `ReplicaOk` reads use replicas whose replication link is down only
    /// when no linked replica is eligible, and only while they heard from
    /// their primary at most this long ago (a killed primary's replica holds
    /// everything up to the kill). Default 5 s.
    pub max_unlinked_staleness: Duration,
    /// Where healthy reads go. Default [`ReadFrom::PrimaryPreferred`].
    pub read_from: ReadFrom,
    /// Hedged reads: a read that may use a replica and whose primary has
    /// not answered within its hedge delay is also sent to the best
    /// eligible replica. `None` turns hedging off. Default
    /// [`HedgePolicy::default`].
    pub hedge: Option<HedgePolicy>,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            max_failovers: 2,
            backoff_base: Duration::from_millis(50),
            primary_attempt_timeout: Some(Duration::from_millis(100)),
            max_unlinked_staleness: Duration::from_secs(5),
            read_from: ReadFrom::PrimaryPreferred,
            hedge: Some(HedgePolicy::default()),
        }
    }
}

impl FailoverPolicy {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    slotguard_core::setters! {
        with_max_failovers => max_failovers: u8,
        with_backoff_base => backoff_base: Duration,
    }

    /// Set [`primary_attempt_timeout`](Self::primary_attempt_timeout).
    pub fn with_primary_attempt_timeout(
        mut self,
        primary_attempt_timeout: Option<Duration>,
    ) -> Self {
        self.primary_attempt_timeout = primary_attempt_timeout;
        self
    }

    slotguard_core::setters! {
        with_max_unlinked_staleness => max_unlinked_staleness: Duration,
        with_read_from => read_from: ReadFrom,
        with_hedge => hedge: Option<HedgePolicy>,
    }
}
