//! The fred-backed leaf of [slotguard]: [`FredService`] sends each request to
//! one Redis Cluster node through that node's own centralized fred client,
//! and [`FredTopologySource`] reads the slot map (`CLUSTER SHARDS`, falling
//! back to `CLUSTER SLOTS`).
//!
//! Why per-node clients and not fred's cluster client: fred's cluster client
//! follows `MOVED`/`ASK` itself (it cannot be turned off per command) and one
//! failing node stalls every shard. With one centralized client per node,
//! replies come back raw and failures stay on their node; the slotguard
//! layers own routing.
//!
//! [slotguard]: https://docs.rs/slotguard
#![forbid(unsafe_code)]

mod config;
mod convert;
mod health;
mod pool;
mod service;
mod source;

pub use config::FredConfig;
pub use health::{parse_replication_info, HealthProber, ProberHandle, ReplicationInfo};
pub use service::{FredService, ResponseFuture};
pub use source::{parse_cluster_shards, parse_cluster_slots, FredTopologySource};
