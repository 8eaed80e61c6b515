//! The leaf's lifecycle task: clients of nodes gone from the slot map for
//! [`NODE_GRACE`] are closed (their reconnect loops would otherwise run for
//! the life of the process). A grace period, because views disagree for a
//! moment around a failover or a migration.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use slotguard_core::{NodeAddr, Topology};
use tokio::time::Instant;

use crate::pool::Pool;

/// How long a node may be missing from the map before its clients close.
pub const NODE_GRACE: Duration = Duration::from_secs(30);

/// Runs until the pool is dropped or the controller shuts down.
pub(crate) async fn run(pool: Weak<Pool>, topology: Topology) {
    let mut departed: HashMap<NodeAddr, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(pool) = pool.upgrade() else { return };
        let map = topology.load();
        // Before the first map nothing has left: seeds stay.
        if map.generation() == 0 {
            continue;
        }
        let now = Instant::now();
        departed.retain(|a, _| !map.contains(a));
        for addr in pool.addrs() {
            if !map.contains(&addr) {
                departed.entry(addr).or_insert(now);
            }
        }
        let expired: Vec<NodeAddr> = departed
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= NODE_GRACE)
            .map(|(a, _)| a.clone())
            .collect();
        if !expired.is_empty() {
            pool.retain(&|a| !expired.contains(a));
            departed.retain(|a, _| !expired.contains(a));
        }
    }
}
