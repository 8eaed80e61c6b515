//! The leaf's lifecycle task: connections of nodes that left the slot map
//! are closed after [`NodeConfig::node_grace`](crate::NodeConfig::node_grace).
//!
//! Why a grace period and not at once: views disagree for a moment around a
//! failover or a migration (a node missing from one view, back in the next),
//! and closing a live node's connections then would cost a reconnect for
//! nothing. Why at all: a departed node's connection would otherwise stay
//! open (or be redialled by whatever still names it) for the life of the
//! process.

use std::sync::Weak;
use std::time::Duration;

use slotguard_core::Topology;

use crate::pool::NodePool;

/// Check the map this often: a quarter of the grace period, within
/// [10 ms, 1 s], so a node is closed at most ~25 % after its grace ends.
fn tick(grace: Duration) -> Duration {
    (grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Runs until the pool is dropped or the controller shuts down (it runs
/// on the topology's controller, which cancels it).
pub(crate) async fn run(pool: Weak<NodePool>, topology: Topology, grace: Duration) {
    let every = tick(grace);
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let map = topology.load();
        // Before the first map nothing has left: seeds stay.
        if map.generation() == 0 {
            continue;
        }
        pool.sweep(&|addr| map.contains(addr), grace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_bounded() {
        assert_eq!(tick(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(tick(Duration::from_millis(200)), Duration::from_millis(50));
        assert_eq!(tick(Duration::ZERO), Duration::from_millis(10));
    }
}
