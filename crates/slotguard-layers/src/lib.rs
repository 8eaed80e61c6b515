//! The tower layers of [slotguard], one module each.
//!
//! Every layer is generic over any `Service<CacheRequest>` and reads the
//! shared [`Topology`](slotguard_core::Topology); none depends on a leaf, so
//! each is unit-tested with `tower-test` mocks and paused time.
//!
//! # Recommended order
//!
//! Stated once, in code: [`RECOMMENDED_ORDER`] (outermost first, the
//! `ServiceBuilder` order), built by [`RecommendedStack::builder`]; why each
//! layer sits where it does: [`order`].
//!
//! ```
//! use slotguard_layers::{describe_order, RECOMMENDED_ORDER};
//! assert_eq!(
//!     describe_order(&RECOMMENDED_ORDER),
//!     "telemetry → coalesce → fallback → invalidation_log → slot_refresh → redirect → \
//!      replica_failover → circuit_breaker → leaf"
//! );
//! ```
//!
//! [slotguard]: https://docs.rs/slotguard
#![forbid(unsafe_code)]

pub mod attempt;
mod builder;
pub mod circuit_breaker;
pub mod coalesce;
pub mod fallback;
pub mod invalidation;
pub mod order;
pub mod redirect;
pub mod replica_failover;
pub mod slot_refresh;
pub mod telemetry;

pub use builder::ServiceBuilderExt;
pub use order::{
    describe_order, recommended_order_without, LayerName, RecommendedLayers, RecommendedLayersWith,
    RecommendedLayersWithoutFallback, RecommendedStack, RECOMMENDED_ORDER,
};

#[cfg(test)]
mod test_support;
