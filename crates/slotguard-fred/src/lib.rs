//! A fred-backed leaf for [slotguard]: [`FredLeaf`] sends each request to
//! the Redis Cluster node stamped on it over one centralized
//! [fred](https://docs.rs/fred) 10 `Client` per node, and
//! [`FredTopologySource`] reads the slot map through the same clients. It
//! meets the same leaf contract ([`slotguard_core::leaf`]) as the default
//! leaf, `slotguard-node`'s `NodeService`, and the same conformance suite
//! (`tests/conformance.rs`) runs over both.
//!
//! Why per-node *centralized* clients and not fred's cluster client: the
//! cluster client follows `MOVED`/`ASK` itself and one failing node stalls
//! every shard; slotguard's layers own routing, so the leaf needs raw
//! replies from one node at a time.
//!
//! # What it does
//!
//! - RESP3, rustls with the ring provider ([`slotguard_node::TlsConfig`]),
//!   ACL credentials ([`slotguard_node::Credentials`]), the same
//!   `SLOTGUARD_*` variables ([`FredLeafConfig::from_env`]).
//! - fred's `UnresponsiveConfig` and `TCP_USER_TIMEOUT` on every connection.
//! - `ASKING` + command as one pipeline for `asking` routes.
//! - A replica-mode client per replica: `READONLY` after every (re)connect,
//!   from fred's reconnect event (fred does not re-send it for a
//!   centralized client); until the hook has confirmed it on the current
//!   connection, replica reads send `READONLY` in their own pipeline.
//! - RESP3 client tracking (fred's `i-tracking`), re-enabled after every
//!   reconnect, publishing to the [`InvalidationBus`] given in the config,
//!   with a `Node` invalidation on every connect and connection error.
//! - A reply marker: each call's pipeline ends with `PING <token>`; a token
//!   that does not come back in its place means replies are no longer
//!   reaching their own callers, and the client is discarded.
//! - A stall watchdog measured from the oldest unanswered call: commands
//!   outstanding and no reply for the stall timeout, and the client is
//!   replaced.
//! - At most `max_in_flight` calls outstanding per client: past it,
//!   `Overloaded` at once.
//! - Not done: a `SET`'s read-back ([`CacheRequest::read_back`](slotguard_core::CacheRequest::read_back)).
//!   The `SET` is answered without a value, so under client-side caching
//!   the next read of a key this client wrote goes to its primary.
//!
//! # What fred does not let it do (fred 10.1, redis-protocol 6.0)
//!
//! - **Bounded decoding.** redis-protocol's decoder recurses once per
//!   nesting level with no depth, element-count or bulk-length limit: a
//!   reply nested deep enough overflows the stack and aborts the process.
//!   A wrapper cannot see the bytes before fred decodes them.
//! - **Reply integrity before the fact.** fred matches replies to commands
//!   by position only; an Array reply shaped like a pub/sub message is
//!   taken as one. The marker detects a shifted reply *after* it was
//!   handed out within one pipeline: a read answered with the marker of
//!   another pipeline's `PING` is refused, but a shift that pairs two
//!   ordinary replies of *other* callers without the plain client path is
//!   only detected on the next marked call.
//! - **READONLY without a window.** fred announces a reconnect before it
//!   replays queued commands; a replica read sent in that instant without
//!   `READONLY` gets `MOVED` to the primary, which the redirect layer
//!   follows.
//! - **Batching.** fred writes whenever its queue is empty: ~1 write per
//!   command from many callers to one node (see `docs/leaf-connections.md`).
//!
//! [slotguard]: https://docs.rs/slotguard
//! [`InvalidationBus`]: slotguard_core::invalidation::InvalidationBus
#![forbid(unsafe_code)]

mod config;
mod contract;
mod convert;
mod events;
mod future;
mod lifecycle;
mod pool;
mod service;
mod source;

pub use config::FredLeafConfig;
pub use future::ResponseFuture;
pub use lifecycle::NODE_GRACE;
pub use service::FredLeaf;
pub use source::FredTopologySource;
