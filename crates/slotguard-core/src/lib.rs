//! Core types of [slotguard]: the request and response every layer speaks,
//! errors and their classification, key → slot hashing, and the shared
//! cluster [`Topology`], and the [`ClusterController`] that owns it and
//! every background task of a stack.
//!
//! Who owns what, who reports what, the request path and the task tree:
//! `docs/architecture.md` in the repository.
//!
//! [slotguard]: https://docs.rs/slotguard
#![forbid(unsafe_code)]

mod addr;
pub mod controller;
mod error;
pub mod invalidation;
pub mod leaf;
pub mod observe;
pub mod op;
mod request;
mod response;
mod secondary;
mod setters;
pub mod slot;
pub mod topology;

pub use addr::NodeAddr;
pub use controller::ClusterController;
pub use error::{
    as_cache_error, classify, classify_dyn, parse_error_reply, reply_error, Blame, BoxError,
    BreakerScope, CacheError, Failure,
};
pub use leaf::{Leaf, LeafControl};
pub use observe::{Observation, Observer, Record};
pub use request::{Attempts, CacheRequest, Consistency, Op, Role, Route};
pub use response::{CacheResponse, Path, Served};
pub use secondary::{LoadCause, SecondaryRequest};
pub use slot::{key_slot, SLOT_COUNT};
pub use topology::{
    ClusterView, MapRef, NodeHealth, NodeInfo, NodeView, PatchOutcome, Shard, ShardView, SlotMap,
    Topology, TopologySource,
};
