//! The smallest useful slotguard stack: slot refresh + redirect over the
//! default leaf (`slotguard-node`).
//!
//! ```text
//! cargo run -p slotguard-examples --bin basic                 # starts its own local cluster
//! SLOTGUARD_SEEDS=127.0.0.1:7000 cargo run -p slotguard-examples --bin basic
//! ```

mod cluster;

use std::time::Duration;

use slotguard::layers::redirect::RedirectLayer;
use slotguard::layers::slot_refresh::SlotRefreshLayer;
use slotguard::{
    BoxError, CacheRequest, NodeConfig, NodeService, NodeTopologySource, ServiceBuilderExt,
    Topology,
};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Use the given cluster, or start a throwaway one on loopback.
    let (_cluster, seeds) = cluster::seeds_or_local_cluster()?;

    let topology = Topology::new();
    let leaf = NodeService::new(NodeConfig::default()).with_topology(topology.clone());
    let source = NodeTopologySource::new(&leaf, seeds);
    let cache = ServiceBuilder::new()
        .slot_refresh(
            SlotRefreshLayer::new(topology.clone(), source)
                .load()
                .await?,
        )
        .redirect(RedirectLayer::new(topology.clone()))
        .service(leaf);

    for i in 0..5 {
        let key = format!("example:{i}");
        let set = CacheRequest::set(
            key.clone(),
            format!("value {i}"),
            Some(Duration::from_secs(60)),
        );
        cache.clone().oneshot(set).await?;
        let resp = cache
            .clone()
            .oneshot(CacheRequest::get(key.clone()))
            .await?;
        println!(
            "{key} = {:?} (served by {} {:?})",
            resp.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            resp.served.node.map(|n| n.to_string()).unwrap_or_default(),
            resp.served.path,
        );
    }
    println!(
        "slot map generation {}, {} slots covered",
        topology.load().generation(),
        topology.load().covered_slots()
    );
    Ok(())
}
