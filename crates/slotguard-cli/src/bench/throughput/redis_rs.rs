//! redis-rs's async cluster client as a `bench throughput` peer: the `redis`
//! crate's `ClusterClient` and its multiplexed `ClusterConnection`, built
//! exactly as its documentation shows, every setting at its default.

use bytes::Bytes;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Value;
use slotguard::{BoxError, NodeAddr};

use super::clients::BenchClient;

/// One multiplexed cluster connection; clones share it, as redis-rs
/// recommends for concurrent use.
#[derive(Clone)]
pub(crate) struct RedisRsCluster(ClusterConnection);

impl std::fmt::Debug for RedisRsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRsCluster").finish_non_exhaustive()
    }
}

impl BenchClient for RedisRsCluster {
    async fn get(&mut self, key: Bytes) -> Result<bool, BoxError> {
        // `Value` rather than a typed result: no conversion cost that the
        // other clients do not pay either.
        let v: Value = redis::cmd("GET")
            .arg(&key[..])
            .query_async(&mut self.0)
            .await?;
        Ok(!matches!(v, Value::Nil))
    }

    async fn set(&mut self, key: Bytes, value: Bytes) -> Result<(), BoxError> {
        let _: Value = redis::cmd("SET")
            .arg(&key[..])
            .arg(&value[..])
            .query_async(&mut self.0)
            .await?;
        Ok(())
    }
}

/// redis-rs's cluster client over `seeds`, connected.
pub(crate) async fn connect(seeds: &[NodeAddr]) -> Result<RedisRsCluster, BoxError> {
    let urls: Vec<String> = seeds
        .iter()
        .map(|s| format!("redis://{}:{}/", s.host(), s.port()))
        .collect();
    let client = ClusterClient::new(urls)?;
    Ok(RedisRsCluster(client.get_async_connection().await?))
}
