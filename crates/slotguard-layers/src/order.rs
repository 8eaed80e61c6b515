//! The recommended layer order, stated once: [`RECOMMENDED_ORDER`] names it,
//! [`RecommendedStack::builder`] builds it, and the handle, the docs and
//! the CLI take both from here.
//!
//! Why this order (outermost first):
//! - `telemetry` outermost: it sees each request once, with what every
//!   layer below did to it.
//! - `coalesce` outside `fallback`: a herd of identical misses makes one
//!   cluster call and, behind it, one store load.
//! - `fallback` outside the cluster path: it sees every cluster failure,
//!   including a fast `CircuitOpen`, and answers from its near-cache or the
//!   store.
//! - `invalidation_log` right above routing: it replays deletes a promotion
//!   lost and turns answers it cannot trust into misses, which the fallback
//!   above then loads from the store.
//! - `slot_refresh` outside `redirect`: a `MOVED` retry is stamped from the
//!   map the redirect just patched.
//! - `redirect` right above the node-level layers: a hop is a new
//!   node-level attempt (its own breaker and failover decisions) and never
//!   re-enters the outer layers.
//! - `replica_failover` outside `circuit_breaker`: an open breaker on a
//!   primary is a fast failure that sends the read to a replica.
//!
//! ```
//! use slotguard_layers::{describe_order, RECOMMENDED_ORDER};
//!
//! assert_eq!(
//!     describe_order(&RECOMMENDED_ORDER),
//!     "telemetry → coalesce → fallback → invalidation_log → slot_refresh → redirect → \
//!      replica_failover → circuit_breaker → leaf"
//! );
//! ```

use std::fmt;

use tower::layer::util::{Identity, Stack};
use tower::util::Either;
use tower::ServiceBuilder;

use crate::circuit_breaker::CircuitBreakerLayer;
use crate::coalesce::CoalesceLayer;
use crate::fallback::FallbackLayer;
use crate::invalidation::InvalidationLogLayer;
use crate::redirect::RedirectLayer;
use crate::replica_failover::ReplicaFailoverLayer;
use crate::slot_refresh::SlotRefreshLayer;
use crate::telemetry::TelemetryLayer;

/// One of slotguard's layers, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerName {
    /// [`TelemetryLayer`].
    Telemetry,
    /// [`CoalesceLayer`].
    Coalesce,
    /// [`FallbackLayer`] (with a store).
    Fallback,
    /// [`InvalidationLogLayer`].
    InvalidationLog,
    /// [`SlotRefreshLayer`].
    SlotRefresh,
    /// [`RedirectLayer`].
    Redirect,
    /// [`ReplicaFailoverLayer`].
    ReplicaFailover,
    /// [`CircuitBreakerLayer`].
    CircuitBreaker,
}

impl LayerName {
    /// The layer's name, as its module and its
    /// [`ServiceBuilderExt`](crate::ServiceBuilderExt) method are named.
    pub fn name(self) -> &'static str {
        match self {
            LayerName::Telemetry => "telemetry",
            LayerName::Coalesce => "coalesce",
            LayerName::Fallback => "fallback",
            LayerName::InvalidationLog => "invalidation_log",
            LayerName::SlotRefresh => "slot_refresh",
            LayerName::Redirect => "redirect",
            LayerName::ReplicaFailover => "replica_failover",
            LayerName::CircuitBreaker => "circuit_breaker",
        }
    }
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The recommended order, outermost first (`ServiceBuilder` order); the
/// leaf comes after the last. Without a store, leave out
/// [`LayerName::Fallback`]. Why this order: [the module docs](self).
pub const RECOMMENDED_ORDER: [LayerName; 8] = [
    LayerName::Telemetry,
    LayerName::Coalesce,
    LayerName::Fallback,
    LayerName::InvalidationLog,
    LayerName::SlotRefresh,
    LayerName::Redirect,
    LayerName::ReplicaFailover,
    LayerName::CircuitBreaker,
];

/// `layers` as one line, outermost first, ending at the leaf:
/// `telemetry → coalesce → … → leaf`.
pub fn describe_order(layers: &[LayerName]) -> String {
    let mut out = String::new();
    for layer in layers {
        out.push_str(layer.name());
        out.push_str(" → ");
    }
    out.push_str("leaf");
    out
}

/// [`RECOMMENDED_ORDER`] without the layers a stack leaves out (e.g.
/// `fallback` without a store).
pub fn recommended_order_without(left_out: &[LayerName]) -> Vec<LayerName> {
    RECOMMENDED_ORDER
        .iter()
        .copied()
        .filter(|l| !left_out.contains(l))
        .collect()
}

/// The layers of the recommended stack, each already configured.
/// [`builder`](Self::builder) stacks them in [`RECOMMENDED_ORDER`], the
/// one place that order is built.
#[non_exhaustive]
pub struct RecommendedStack<St> {
    /// Outermost.
    pub telemetry: TelemetryLayer,
    /// Shares identical in-flight reads.
    pub coalesce: CoalesceLayer,
    /// Near-cache and store, when there is a store.
    pub fallback: Option<FallbackLayer<St>>,
    /// Replays deletes after a failover.
    pub invalidation_log: InvalidationLogLayer,
    /// Stamps the slot's owner.
    pub slot_refresh: SlotRefreshLayer,
    /// Follows `MOVED`/`ASK`/`TRYAGAIN`.
    pub redirect: RedirectLayer,
    /// Reads from replicas when the primary fails.
    pub replica_failover: ReplicaFailoverLayer,
    /// Fails fast on sick nodes; innermost, right above the leaf.
    pub circuit_breaker: CircuitBreakerLayer,
}

impl<St> fmt::Debug for RecommendedStack<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecommendedStack")
            .field("order", &describe_order(&self.order()))
            .finish_non_exhaustive()
    }
}

/// The recommended layers with `F` in the fallback's place: the one
/// nesting of [`RECOMMENDED_ORDER`] (innermost first, as tower's `Stack`
/// spells it).
pub type RecommendedLayersWith<F> = Stack<
    CircuitBreakerLayer,
    Stack<
        ReplicaFailoverLayer,
        Stack<
            RedirectLayer,
            Stack<
                SlotRefreshLayer,
                Stack<
                    InvalidationLogLayer,
                    Stack<F, Stack<CoalesceLayer, Stack<TelemetryLayer, Identity>>>,
                >,
            >,
        >,
    >,
>;

/// The layer stack [`RecommendedStack::builder`] makes.
pub type RecommendedLayers<St> = RecommendedLayersWith<Either<FallbackLayer<St>, Identity>>;

/// The layer stack [`RecommendedStack::builder_without_fallback`] makes.
pub type RecommendedLayersWithoutFallback = RecommendedLayersWith<Identity>;

impl<St> RecommendedStack<St> {
    /// Every layer, configured; `fallback` is `None` without a store.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        telemetry: TelemetryLayer,
        coalesce: CoalesceLayer,
        fallback: Option<FallbackLayer<St>>,
        invalidation_log: InvalidationLogLayer,
        slot_refresh: SlotRefreshLayer,
        redirect: RedirectLayer,
        replica_failover: ReplicaFailoverLayer,
        circuit_breaker: CircuitBreakerLayer,
    ) -> Self {
        Self {
            telemetry,
            coalesce,
            fallback,
            invalidation_log,
            slot_refresh,
            redirect,
            replica_failover,
            circuit_breaker,
        }
    }

    /// The layers this stack has, outermost first.
    pub fn order(&self) -> Vec<LayerName> {
        match self.fallback {
            Some(_) => RECOMMENDED_ORDER.to_vec(),
            None => recommended_order_without(&[LayerName::Fallback]),
        }
    }

    /// A `ServiceBuilder` with the layers in [`RECOMMENDED_ORDER`]; finish
    /// it with `.service(leaf)`. Without a store (`fallback: None`) the
    /// fallback's place holds an `Identity`, but every response future is
    /// still sized for the fallback's: prefer
    /// [`builder_without_fallback`](Self::builder_without_fallback) when
    /// there is no store.
    pub fn builder(mut self) -> ServiceBuilder<RecommendedLayers<St>> {
        let fallback = match self.fallback.take() {
            Some(layer) => Either::Left(layer),
            None => Either::Right(Identity::new()),
        };
        self.stack(fallback)
    }

    /// The same order with the fallback's place empty (a stack with no
    /// store; a `fallback` set here is left out). Its response futures are
    /// the cluster path's alone: with [`builder`](Self::builder)'s
    /// `Either`, each request's future (boxed by a `BoxCloneSyncService`,
    /// and by the coalesce layer for a flight's leader) is sized for the
    /// fallback's too: 1,056 bytes against 936 for the `SlotGuard` handle's,
    /// past glibc's small-size cache, for 2–4 % more instructions per
    /// request (callgrind, docs/benchmarks.md).
    pub fn builder_without_fallback(self) -> ServiceBuilder<RecommendedLayersWithoutFallback> {
        self.stack(Identity::new())
    }

    /// The one place the order is built (the same as [`RECOMMENDED_ORDER`];
    /// a test checks the type), with `fallback` in the fallback's place
    /// (`self.fallback` is not used).
    fn stack<F>(self, fallback: F) -> ServiceBuilder<RecommendedLayersWith<F>> {
        ServiceBuilder::new()
            .layer(self.telemetry)
            .layer(self.coalesce)
            .layer(fallback)
            .layer(self.invalidation_log)
            .layer(self.slot_refresh)
            .layer(self.redirect)
            .layer(self.replica_failover)
            .layer(self.circuit_breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The type each name stands for, as `type_name` spells it.
    fn type_of(layer: LayerName) -> &'static str {
        match layer {
            LayerName::Telemetry => "TelemetryLayer",
            LayerName::Coalesce => "CoalesceLayer",
            LayerName::Fallback => "FallbackLayer",
            LayerName::InvalidationLog => "InvalidationLogLayer",
            LayerName::SlotRefresh => "SlotRefreshLayer",
            LayerName::Redirect => "RedirectLayer",
            LayerName::ReplicaFailover => "ReplicaFailoverLayer",
            LayerName::CircuitBreaker => "CircuitBreakerLayer",
        }
    }

    /// `ty` names `order`'s layers in that order, outermost first.
    /// `Stack<Inner-most, Stack<…, Outer-most>>`: the type names the layers
    /// innermost first, so the order reads backwards.
    fn assert_stacked(ty: &str, order: &[LayerName]) {
        let at: Vec<usize> = order
            .iter()
            .map(|l| {
                ty.find(&format!("::{}", type_of(*l)))
                    .unwrap_or_else(|| panic!("{l} missing from {ty}"))
            })
            .collect();
        assert!(at.windows(2).all(|w| w[0] > w[1]), "{ty}");
    }

    #[test]
    fn the_builder_stacks_the_recommended_order() {
        assert_stacked(
            std::any::type_name::<RecommendedLayers<()>>(),
            &RECOMMENDED_ORDER,
        );
        // Without a store: the same order, nothing in the fallback's place.
        let ty = std::any::type_name::<RecommendedLayersWithoutFallback>();
        assert!(!ty.contains("FallbackLayer"), "{ty}");
        assert_stacked(ty, &recommended_order_without(&[LayerName::Fallback]));
    }

    #[test]
    fn described_without_fallback() {
        assert_eq!(
            describe_order(&recommended_order_without(&[LayerName::Fallback])),
            "telemetry → coalesce → invalidation_log → slot_refresh → redirect → \
             replica_failover → circuit_breaker → leaf"
        );
    }
}
