//! The slotguard stack the demo and the benchmarks drive.
//!
//! One function builds it, so the layers under test are chosen in one place:
//! the [`SlotGuard`] handle's recommended stack (DESIGN.md §3) with every
//! default, over an SQLite store (`slotguard-store`) in a temporary
//! directory, plus the replication health prober.

use slotguard::{BoxError, CacheService, LeafKind, NodeAddr, SlotGuard, Topology};
use slotguard_store::SqliteStore;

/// The stack as one cloneable service (the boxing costs nothing measurable
/// next to a network round trip).
pub(crate) type Stack = CacheService;

/// The layers [`build`] stacks, outermost first (printed with the results).
pub(crate) const DESCRIPTION: &str = "coalesce → fallback (near-cache + SQLite store) → invalidation_log → slot_refresh → redirect → replica_failover → circuit_breaker → leaf";

/// What the demo needs besides the service itself.
#[derive(Debug, Clone)]
pub(crate) struct Handles {
    guard: SlotGuard,
    /// The authoritative store: the load writes every value to it before the
    /// cache (write-through), so the store always has the newest value.
    pub(crate) store: SqliteStore,
}

impl Handles {
    /// The slot map the stack routes by.
    pub(crate) fn topology(&self) -> &Topology {
        self.guard.topology()
    }

    /// Refresh the slot map now (after a fault, so the next phase starts
    /// from the cluster's real layout).
    pub(crate) async fn refresh_now(&self) -> Result<(), BoxError> {
        self.guard.refresh_now().await.map_err(Into::into)
    }
}

/// Build the stack over the cluster reachable through `seeds`, on the
/// `leaf` kind, with the slot map loaded and the store at `store`.
pub(crate) async fn build(
    seeds: Vec<NodeAddr>,
    store: SqliteStore,
    leaf: LeafKind,
) -> Result<(Stack, Handles), BoxError> {
    // The defaults, as a user gets them: the demo shows the product, not a
    // tuning of it.
    let guard = SlotGuard::builder(seeds)
        .leaf_kind(leaf)
        .store(store.clone())
        .connect()
        .await?;
    Ok((guard.service(), Handles { guard, store }))
}
