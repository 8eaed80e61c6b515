//! **slotguard** keeps a Redis Cluster cache answering while the cluster
//! degrades. It is a stack of [`tower`] layers around a leaf
//! [`Service`](tower::Service) with its own connection to every node: each layer is its own `Layer`, so an axum or
//! tonic application composes them with `ServiceBuilder` in the order it
//! wants, and can put tower's own layers (timeout, load-shed, concurrency
//! limit, buffer) between them.
//!
//! | crate | what |
//! |---|---|
//! | [`core`] | [`CacheRequest`], [`CacheResponse`], [`CacheError`] + [`classify`], key slots, [`Topology`] |
//! | [`layers`] | [`slot_refresh`](layers::slot_refresh), [`redirect`](layers::redirect), [`ServiceBuilderExt`] |
//! | [`node`] | [`NodeService`] (its own batched, bounded connection per node), [`NodeTopologySource`] |
//! | `fred` (feature `fred`) | `FredLeaf`: a fred-backed leaf meeting the same [`Leaf`] contract |
//!
//! Who owns what (the [`ClusterController`](core::ClusterController)), who
//! reports what, the request path and the task tree: `docs/architecture.md`
//! in the repository.
//!
//! # One handle
//!
//! [`SlotGuard`] builds the recommended stack with every default, loads the
//! slot map and runs its background tasks; `get`/`set`/`delete` return typed
//! [`CacheError`]s and [`SlotGuard::service`] hands out the same stack as a
//! tower service. Compose the layers yourself, as below, for another order
//! or for tower's own layers between them.
//!
//! # Recommended order
//!
//! ```no_run
//! use slotguard::{CacheRequest, NodeConfig, NodeService, NodeTopologySource, ServiceBuilderExt, Topology};
//! use slotguard::layers::redirect::RedirectLayer;
//! use slotguard::layers::slot_refresh::SlotRefreshLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), slotguard::BoxError> {
//! let topology = Topology::new();
//! let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
//! let source = NodeTopologySource::new(&leaf, vec!["127.0.0.1:7000".parse()?]);
//! let cache = ServiceBuilder::new()
//!     // outermost: stamp each request from the slot map, keep the map fresh
//!     .slot_refresh(SlotRefreshLayer::new(topology.clone(), source).load().await?)
//!     // follow MOVED/ASK/TRYAGAIN; MOVED patches the same map
//!     .redirect(RedirectLayer::new(topology))
//!     .service(leaf);
//! let resp = cache.oneshot(CacheRequest::get("user:42")).await?;
//! println!("{:?} from {:?}", resp.value, resp.served.path);
//! # Ok(()) }
//! ```
//!
//! Why this order: `slot_refresh` outside `redirect`, so a `MOVED` retry
//! goes to the owner recorded in the patched map and the next request for
//! that slot is stamped right the first time; `redirect` right above the
//! node-level layers, so each hop is one node-level attempt. The whole
//! recommended order, which [`SlotGuard`] builds, is stated once in code:
//! [`layers::RECOMMENDED_ORDER`] (why each layer sits where it does:
//! [`layers::order`]).
#![forbid(unsafe_code)]

mod handle;
mod leaf_kind;

pub use handle::{
    CacheService, SlotGuard, SlotGuardBuilder, Stats, StoreService, DEFAULT_REQUEST_TIMEOUT,
};
pub use leaf_kind::{LeafKind, ENV_LEAF};

/// The tower version slotguard's layers are built on.
pub use tower;

pub use slotguard_core as core;
pub use slotguard_layers as layers;
pub use slotguard_node as node;

/// The fred-backed leaf (feature `fred`).
#[cfg(feature = "fred")]
pub use slotguard_fred as fred;

pub use slotguard_core::{
    classify, BoxError, CacheError, CacheRequest, CacheResponse, Consistency, Failure, Leaf,
    LeafControl, NodeAddr, Op, Path, Role, Route, Served, Topology, TopologySource,
};
pub use slotguard_layers::ServiceBuilderExt;
pub use slotguard_node::{NodeConfig, NodeService, NodeTopologySource};

// The README's example is compiled as a doctest, so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
