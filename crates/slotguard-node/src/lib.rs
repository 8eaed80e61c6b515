//! The leaf of [slotguard]: [`NodeService`] sends each request to one Redis
//! Cluster node over that node's own connection, and [`NodeTopologySource`]
//! reads the slot map (`CLUSTER SHARDS`, falling back to `CLUSTER SLOTS`).
//!
//! Why per-node connections and not a cluster client: fred's cluster client
//! follows `MOVED`/`ASK` itself (it cannot be turned off per command) and one
//! failing node stalls every shard. With one connection per node, replies
//! come back raw and failures stay on their node; the slotguard layers own
//! routing.
//!
//! Why slotguard's own connection and not fred's centralized client (the
//! first version of this crate, once named `slotguard-fred`): measured in
//! `docs/leaf-connections.md`, it did not batch commands from many callers
//! into shared writes (~1.2 `writev` per command, 0.35–0.6× the throughput of
//! fred's own cluster client), its reply decoder recurses (a reply nested
//! ~1,150 deep aborted the process), a stalled connection was never
//! replaced, and after one missing reply it handed later replies to the
//! wrong requests. The connection here is one task per node connection with
//! a bounded, iterative RESP decoder; see [`NodeService`] for what it
//! guarantees.
//!
//! [slotguard]: https://docs.rs/slotguard
#![forbid(unsafe_code)]

mod config;
mod conn;
mod contract;
mod convert;
mod credentials;
mod env;
mod health;
mod lifecycle;
mod pool;
mod remap;
mod resp;
mod service;
mod source;
mod tls;

pub use config::NodeConfig;
pub use credentials::{Credentials, Secret};
pub use env::{
    seeds_from_env, seeds_from_lookup, ENV_PASSWORD, ENV_SEEDS, ENV_TLS_CA, ENV_TLS_SERVER_NAME,
    ENV_USERNAME,
};
pub use health::{parse_replication_info, HealthProber, ProberHandle, ReplicationInfo};
pub use remap::{identity as remapped_identity, AddressRemap, RemapFn};
pub use resp::Frame;
pub use service::{NodeService, ResponseFuture};
pub use source::{fetch_view_with, parse_cluster_shards, parse_cluster_slots, NodeTopologySource};
pub use tls::{ServerNameFn, TlsConfig};
