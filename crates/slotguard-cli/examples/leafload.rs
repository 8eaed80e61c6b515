#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slotguard::layers::slot_refresh::SlotRefreshLayer;
use slotguard::{CacheRequest, FredConfig, FredService, FredTopologySource, Topology};
use tower::{Layer, ServiceExt};

fn main() {
    let conc: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(64);
    let secs: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(5);
    let cluster = slotguard_testkit::LocalCluster::start(Default::default()).unwrap();
    let cluster_seeds: Vec<String> = cluster.seeds().iter().map(|s| s.to_string()).collect();
    let seeds: Vec<_> = cluster.seeds().iter().map(|s| s.parse().unwrap()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let topology = Topology::new();
        let leaf = FredService::new(FredConfig::default()).with_topology(topology.clone());
        let source = FredTopologySource::new(&leaf, seeds);
        let refresh = SlotRefreshLayer::new(topology.clone(), source)
            .load()
            .await
            .unwrap();
        let svc = refresh.layer(leaf);
        let fred_mode = std::env::var("FRED").is_ok();
        use fred::prelude::*;
        let fc = Builder::from_config(Config {
            server: ServerConfig::new_clustered(
                cluster_seeds
                    .iter()
                    .map(|s: &String| {
                        let (h, p) = s.rsplit_once(':').unwrap();
                        (h.to_string(), p.parse::<u16>().unwrap())
                    })
                    .collect(),
            ),
            ..Config::default()
        })
        .build()
        .unwrap();
        fc.init().await.unwrap();
        for i in 0..10_000 {
            svc.clone()
                .oneshot(CacheRequest::set(format!("k{i}"), vec![b'x'; 100], None))
                .await
                .unwrap();
        }
        eprintln!("pid {}", std::process::id());
        let ops = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for t in 0..conc {
            let svc = svc.clone();
            let fc = fc.clone();
            let ops = ops.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = t * 7919;
                while Instant::now() < end {
                    i = (i * 31 + 17) % 10_000;
                    if fred_mode {
                        let _: Option<bytes::Bytes> = fc.get(format!("k{i}")).await.unwrap();
                    } else {
                        svc.clone()
                            .oneshot(CacheRequest::get(format!("k{i}")))
                            .await
                            .unwrap();
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "conc {conc}: {:.0} ops/s",
            ops.load(Ordering::Relaxed) as f64 / secs as f64
        );
    });
}
