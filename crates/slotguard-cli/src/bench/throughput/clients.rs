//! The clients `bench throughput` compares, behind one small trait so
//! the closed loop ([`super::cell`]) is the same code for all of them.
//!
//! Each is built exactly as a user would build it, with default settings:
//! tuning one of them would make the comparison say nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fred::prelude::{Builder, Client, ClientLike, Config, KeysInterface, ServerConfig};
use fred::types::InfoKind;
use slotguard::layers::slot_refresh::{SlotRefresh, SlotRefreshLayer};
use slotguard::tower::{Service, ServiceBuilder, ServiceExt};
use slotguard::{
    BoxError, CacheRequest, CacheResponse, CacheService, NodeAddr, NodeConfig, NodeService,
    NodeTopologySource, Path, ServiceBuilderExt, SlotGuard, Topology,
};
use slotguard_store::SqliteStore;

use super::cell::Data;

/// One operation of the closed loop. `Ok(false)` is a GET that found no
/// value: every key was written before the run, so that counts as an error
/// (a client answering nil quickly must not look fast).
pub(crate) trait BenchClient: Clone + Send + Sync + 'static {
    /// `GET key`; whether a value came back.
    fn get(&mut self, key: Bytes) -> impl Future<Output = Result<bool, BoxError>> + Send;
    /// Reads this kind of client answered from its near-cache so far, over
    /// every instance (`None`: it has none).
    fn near_cache_answers(&self) -> Option<u64> {
        None
    }
    /// `SET key value`.
    fn set(
        &mut self,
        key: Bytes,
        value: Bytes,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// fred's own cluster client (`ServerConfig::new_clustered`, everything else
/// fred's default).
#[derive(Debug, Clone)]
pub(crate) struct FredCluster(pub(crate) Client);

impl BenchClient for FredCluster {
    async fn get(&mut self, key: Bytes) -> Result<bool, BoxError> {
        let v: Option<Bytes> = self.0.get(key).await?;
        Ok(v.is_some())
    }

    async fn set(&mut self, key: Bytes, value: Bytes) -> Result<(), BoxError> {
        self.0
            .set::<(), _, _>(key, value, None, None, false)
            .await?;
        Ok(())
    }
}

/// A slotguard tower stack; each loop task owns a clone and drives it with
/// `ready().await` then `call`, as a tower caller does.
#[derive(Debug, Clone)]
pub(crate) struct Tower<S>(pub(crate) S);

impl<S> BenchClient for Tower<S>
where
    S: Service<CacheRequest, Response = CacheResponse, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    async fn get(&mut self, key: Bytes) -> Result<bool, BoxError> {
        let resp = self
            .0
            .ready()
            .await?
            .call(CacheRequest::get(key))
            .await
            .inspect_err(|e| note_failure("a read", e))?;
        if matches!(resp.served.path, Path::NearCache | Path::ClientCache) {
            NEAR_CACHE_ANSWERS.fetch_add(1, Ordering::Relaxed);
        }
        Ok(resp.value.is_some())
    }

    fn near_cache_answers(&self) -> Option<u64> {
        Some(NEAR_CACHE_ANSWERS.load(Ordering::Relaxed))
    }

    async fn set(&mut self, key: Bytes, value: Bytes) -> Result<(), BoxError> {
        self.0
            .ready()
            .await?
            .call(CacheRequest::set(key, value, None))
            .await
            .inspect_err(|e| note_failure("a write", e))?;
        Ok(())
    }
}

/// Reads a slotguard stack answered from its near-cache. One counter for
/// every stack: only one client runs at a time, and a cell reads it before
/// and after its window.
static NEAR_CACHE_ANSWERS: AtomicU64 = AtomicU64::new(0);

/// The first few errors of a slotguard client, on stderr with their class:
/// an error count alone does not say what failed.
fn note_failure(what: &str, e: &BoxError) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SHOWN: AtomicUsize = AtomicUsize::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!(
            "slotguard bench: {what} failed ({:?}): {e}",
            slotguard::classify(e)
        );
    }
}

/// fred's cluster client over `seeds`, connected.
pub(crate) async fn fred_cluster(seeds: &[NodeAddr]) -> Result<FredCluster, BoxError> {
    let hosts = seeds
        .iter()
        .map(|s| (s.host().to_owned(), s.port()))
        .collect();
    let config = Config {
        server: ServerConfig::new_clustered(hosts),
        ..Config::default()
    };
    let client = Builder::from_config(config).build()?;
    // The connection task lives as long as the client; its handle is not
    // needed (quit ends it).
    let _task = client.init().await?;
    Ok(FredCluster(client))
}

/// The `leaf` client's service.
pub(crate) type LeafService = SlotRefresh<NodeService>;

/// The leaf with routing only: `SlotRefreshLayer` over `NodeService`, both
/// with their defaults. The leaf records call health in the topology, as
/// every documented build does: that cost belongs to the leaf.
pub(crate) async fn leaf(seeds: &[NodeAddr]) -> Result<Tower<LeafService>, BoxError> {
    let topology = Topology::new();
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let source = NodeTopologySource::new(&leaf, seeds.to_vec());
    let svc = ServiceBuilder::new()
        .slot_refresh(SlotRefreshLayer::new(topology, source).load().await?)
        .service(leaf);
    Ok(Tower(svc))
}

/// The full recommended stack as a user gets it: [`SlotGuard`] with every
/// default (the layers of `slotguard::layers::RECOMMENDED_ORDER`, the
/// health prober running)
/// and, with `store`, over an SQLite store in a temporary directory (the
/// fallback layer with its near-cache and client tracking on top). Keep the
/// returned guard alive while measuring.
pub(crate) async fn stack(
    seeds: &[NodeAddr],
    store: Option<&Data>,
) -> Result<(Tower<CacheService>, (SlotGuard, tempfile::TempDir)), BoxError> {
    stack_with(seeds, store, None).await
}

/// [`stack`] with client-side caching of entries up to `csc` old
/// (`None`: the handle's default; `Some(Duration::ZERO)`: off).
///
/// The store holds every key of `store`, as the source of truth behind a
/// cache does: a read the store answers (a hedge of a read after a write,
/// a miss) finds a value, as it would in an application. An empty store
/// would answer such reads with nothing, which the loop counts as an
/// error.
pub(crate) async fn stack_with(
    seeds: &[NodeAddr],
    store: Option<&Data>,
    csc: Option<std::time::Duration>,
) -> Result<(Tower<CacheService>, (SlotGuard, tempfile::TempDir)), BoxError> {
    let dir = tempfile::Builder::new()
        .prefix("slotguard-bench-store")
        .tempdir()?;
    let mut builder = SlotGuard::builder(seeds.to_vec());
    if let Some(data) = store {
        let sqlite = SqliteStore::open(dir.path().join("store.db"))?;
        for key in &data.keys {
            sqlite.put(key.clone(), data.value.clone()).await?;
        }
        builder = builder.store(sqlite);
    }
    if let Some(max_age) = csc {
        builder = builder.client_side_caching(max_age);
    }
    let guard = builder.connect().await?;
    Ok((Tower(guard.service()), (guard, dir)))
}

/// The recommended stack without a store over the fred-backed leaf
/// (`LeafKind::Fred`), every other setting at its default. Keep the returned
/// guard alive while measuring.
pub(crate) async fn stack_fred_leaf(
    seeds: &[NodeAddr],
) -> Result<(Tower<CacheService>, SlotGuard), BoxError> {
    let guard = SlotGuard::builder(seeds.to_vec())
        .leaf_kind(slotguard::LeafKind::Fred)
        .connect()
        .await?;
    Ok((Tower(guard.service()), guard))
}

/// `redis_version` of the node at `addr` (for the report header).
pub(crate) async fn redis_version(addr: &NodeAddr) -> Result<String, BoxError> {
    let config = Config {
        server: ServerConfig::new_centralized(addr.host(), addr.port()),
        ..Config::default()
    };
    let client = Builder::from_config(config).build()?;
    let _task = client.init().await?;
    let info: String = client.info(Some(InfoKind::Server)).await?;
    let _ = client.quit().await;
    Ok(parse_redis_version(&info).unwrap_or_else(|| "unknown".to_owned()))
}

/// The `redis_version:` line of an `INFO server` reply.
pub(crate) fn parse_redis_version(info: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\n";
        assert_eq!(parse_redis_version(info).as_deref(), Some("7.0.15"));
        assert_eq!(parse_redis_version("# Server\r\n"), None);
    }
}
