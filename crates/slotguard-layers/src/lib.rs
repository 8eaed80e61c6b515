//! The tower layers of [slotguard], one module each.
//!
//! Every layer is generic over any `Service<CacheRequest>` and reads the
//! shared [`Topology`](slotguard_core::Topology); none depends on a leaf, so
//! each is unit-tested with `tower-test` mocks and paused time.
//!
//! # Recommended order
//!
//! `ServiceBuilder` lists layers outermost first:
//!
//! ```text
//! (telemetry → coalesce →) slot_refresh → redirect → (replica_failover → circuit_breaker →) leaf
//! ```
//!
//! - `telemetry` outermost: it sees each request once, with what every
//!   layer below did to it (see [`telemetry`]).
//! - `coalesce` next (above Fallback when there is one): a herd of
//!   identical reads makes one call through everything below it.
//! - `slot_refresh` outside `redirect`: the first attempt is stamped from
//!   the current map, and every `MOVED` the redirect layer sees patches that
//!   same map, so the next request for the slot goes straight to its owner.
//! - `redirect` inside, right above the node-level layers: a redirect hop is
//!   a new node-level attempt (with its own breaker and failover decisions),
//!   and redirects never re-enter the outer layers (no double counting in
//!   coalescing or telemetry).
//!
//! [slotguard]: https://docs.rs/slotguard
#![forbid(unsafe_code)]

pub mod attempt;
mod builder;
pub mod circuit_breaker;
pub mod coalesce;
pub mod fallback;
pub mod invalidation;
pub mod redirect;
pub mod replica_failover;
pub mod slot_refresh;
pub mod telemetry;

pub use builder::ServiceBuilderExt;

#[cfg(test)]
mod test_support;
