//! What a breaker makes of a call's outcome.

use slotguard_core::{
    as_cache_error, classify, Blame, BoxError, BreakerScope, CacheError, Failure,
};

/// What a breaker makes of one call's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The guarded node (or cluster) answered.
    Success,
    /// A failure of what the breaker guards.
    Failure,
    /// No evidence either way: counted like a dropped call.
    Neutral,
}

/// Judge an outcome for a breaker of `scope`.
///
/// A refusal by an inner breaker is no failure: it says nothing the inner
/// breaker has not already counted. A cluster-wide state (`CLUSTERDOWN`,
/// [`Blame::Cluster`]) is no node's fault and no proof of its health: a
/// per-node breaker counts nothing (else every node's breaker opens around
/// a promotion and all shards fail fast for a cool-down after the cluster
/// is back); a global breaker, which guards the cluster, counts a failure.
pub(crate) fn judge(scope: &BreakerScope, err: Option<&BoxError>) -> Outcome {
    let Some(err) = err else {
        return Outcome::Success;
    };
    // A request whose own deadline had passed before anything was sent
    // says nothing about the node: counting it let a caller with spent
    // deadlines open a healthy primary's breaker.
    if matches!(as_cache_error(err), Some(CacheError::DeadlineExceeded)) {
        return Outcome::Neutral;
    }
    let failure = classify(err);
    match failure.blame() {
        Blame::Node if failure != Failure::CircuitOpen => Outcome::Failure,
        Blame::Cluster => match scope {
            BreakerScope::Node(_) => Outcome::Neutral,
            _ => Outcome::Failure,
        },
        _ => Outcome::Success,
    }
}
