//! Which leaf a [`SlotGuard`](crate::SlotGuard) sits on, and how the
//! environment chooses it.

use slotguard_core::CacheError;

/// Which leaf a [`SlotGuard`](crate::SlotGuard) sits on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeafKind {
    /// The default leaf, `slotguard-node`: its own batched, bounded
    /// connection per node.
    #[default]
    Node,
    /// The fred-backed leaf, `slotguard-fred`: one centralized fred client
    /// per node (feature `fred`). Where it differs from the default leaf:
    /// `docs/leaf-connections.md`.
    #[cfg(feature = "fred")]
    Fred,
}

/// The variable [`LeafKind::from_env`] reads: `node` (or unset) or `fred`.
pub const ENV_LEAF: &str = "SLOTGUARD_LEAF";

impl LeafKind {
    /// `SLOTGUARD_LEAF`: `node`, `fred`, or unset/empty for the default.
    /// `fred` without the `fred` feature, or any other value, is
    /// [`CacheError::InvalidInput`].
    pub fn from_env() -> Result<Self, CacheError> {
        Self::parse(std::env::var(ENV_LEAF).ok().as_deref().unwrap_or(""))
    }

    /// `node`, `fred` or empty (the default).
    pub fn parse(name: &str) -> Result<Self, CacheError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "node" => Ok(LeafKind::Node),
            #[cfg(feature = "fred")]
            "fred" => Ok(LeafKind::Fred),
            other => Err(CacheError::InvalidInput(format!(
                "unknown leaf {other:?} (expected node{})",
                if cfg!(feature = "fred") {
                    " or fred"
                } else {
                    "; fred needs the `fred` feature"
                }
            ))),
        }
    }
}
