//! Response future of [`ReplicaFailover`](super::ReplicaFailover).

/// Response future of [`ReplicaFailover`](super::ReplicaFailover).
///
/// The first attempt is polled in place (no allocation on the healthy
/// path); only a failover moves the rest of the request into one boxed loop.
pub type ResponseFuture<S, F, T> = crate::attempt::Attempt<F, T, super::Recovery<S>>;
