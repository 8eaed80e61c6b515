//! The slotguard stack the demo and the benchmarks drive.
//!
//! One function builds it, so the layers under test are chosen in one place:
//! the [`SlotGuard`] handle's recommended stack (DESIGN.md §3) with every
//! default, over an SQLite store (`slotguard-store`) in a temporary
//! directory, plus the replication health prober.

use std::sync::LazyLock;

use slotguard::{BoxError, CacheService, LeafKind, NodeAddr, SlotGuard, Topology};
use slotguard_store::SqliteStore;

/// The stack as one cloneable service (the boxing costs nothing measurable
/// next to a network round trip).
pub(crate) type Stack = CacheService;

/// The layers [`build`] stacks, outermost first (printed with the results):
/// the handle's recommended order, from the one statement of it.
pub(crate) static DESCRIPTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} (fallback: near-cache + SQLite store)",
        slotguard::layers::describe_order(&slotguard::layers::RECOMMENDED_ORDER)
    )
});

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

    /// Whether the stack converged by itself on the cluster's layout: it
    /// is settled ([`SlotGuard::is_settled`]) and its map names exactly
    /// `primaries` as the primaries. Reads state only: the demo waits on
    /// this between phases instead of forcing a refresh.
    pub(crate) fn converged_on(&self, primaries: &[NodeAddr]) -> bool {
        if !self.guard.is_settled() {
            return false;
        }
        let map = self.guard.topology().map();
        let mut ours: Vec<&NodeAddr> = map.shards().iter().map(|s| &s.primary.addr).collect();
        let mut theirs: Vec<&NodeAddr> = primaries.iter().collect();
        ours.sort_unstable_by_key(|a| a.to_string());
        theirs.sort_unstable_by_key(|a| a.to_string());
        ours == theirs
    }

    /// What hedged replica reads did so far (hedges sent, won, refused).
    pub(crate) fn hedge_stats(&self) -> slotguard::layers::replica_failover::HedgeStats {
        self.guard.hedge_stats()
    }
}

/// Build the stack over the cluster reachable through `seeds`, on the
/// `leaf` kind, with the slot map loaded and the store at `store`;
/// `hedge: false` turns hedged replica reads off (to measure what they
/// change).
pub(crate) async fn build(
    seeds: Vec<NodeAddr>,
    store: SqliteStore,
    leaf: LeafKind,
    hedge: bool,
) -> Result<(Stack, Handles), BoxError> {
    // The defaults, as a user gets them: the demo shows the product, not a
    // tuning of it.
    let mut builder = SlotGuard::builder(seeds)
        .leaf_kind(leaf)
        .store(store.clone());
    if !hedge {
        builder = builder
            .failover(slotguard::layers::replica_failover::FailoverPolicy::new().with_hedge(None));
    }
    let guard = builder.connect().await?;
    Ok((guard.service(), Handles { guard, store }))
}

/// What `bench failover --client redis-rs` drives instead of the stack:
/// redis-rs's async cluster client (its multiplexed `ClusterConnection`,
/// default settings) behind the same service type, each call bounded by the
/// request's deadline as a caller would bound it. Answers say
/// `Path::Primary` (redis-rs reads from primaries only, by default).
pub(crate) const REDIS_RS_DESCRIPTION: &str =
    "redis-rs async cluster client (ClusterClient::new(seeds).get_async_connection(), defaults), each call within the request deadline";

/// The redis-rs client over `seeds` as a [`Stack`].
pub(crate) async fn redis_rs(seeds: &[NodeAddr]) -> Result<Stack, BoxError> {
    let urls: Vec<String> = seeds
        .iter()
        .map(|s| format!("redis://{}:{}/", s.host(), s.port()))
        .collect();
    let conn = redis::cluster::ClusterClient::new(urls)?
        .get_async_connection()
        .await?;
    Ok(Stack::new(slotguard::tower::service_fn(
        move |req: slotguard::CacheRequest| {
            let mut conn = conn.clone();
            async move {
                // The operation table's command, as every leaf sends it.
                let op = req.op.command(req.key());
                let mut cmd = redis::cmd(op.name());
                for arg in op.args() {
                    match arg {
                        slotguard::core::op::Arg::Word(w) => cmd.arg(w),
                        slotguard::core::op::Arg::Bytes(b) => cmd.arg(&b[..]),
                        slotguard::core::op::Arg::Int(n) => cmd.arg(n),
                    };
                }
                let call = cmd.query_async::<redis::Value>(&mut conn);
                let value = match req.deadline {
                    Some(d) => tokio::time::timeout_at(d, call)
                        .await
                        .map_err(|_| "redis-rs: timed out")??,
                    None => call.await?,
                };
                let value = match value {
                    redis::Value::BulkString(v) => Some(bytes::Bytes::from(v)),
                    _ => None,
                };
                Ok(slotguard::CacheResponse {
                    value,
                    deleted: 0,
                    served: slotguard::Served {
                        path: slotguard::Path::Primary,
                        node: None,
                        age: None,
                    },
                })
            }
        },
    )))
}
