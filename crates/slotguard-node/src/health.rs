//! Health probes: each replica's replication link, read with
//! `INFO replication`, feeding the shared [`Topology`]'s health cells.

use std::fmt;
use std::time::Duration;

use futures_util::future::join_all;
use slotguard_core::controller::{LinkStatus, Probed};
use slotguard_core::{LeafControl, NodeAddr, Role, Topology};
use tokio::task::JoinHandle;

use crate::service::NodeService;

/// What `INFO replication` says about a replica's link to its primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationInfo {
    /// `master_link_status:up`.
    pub link_up: bool,
    /// Time since the replica last heard from its primary:
    /// `master_last_io_seconds_ago` while the link is up,
    /// `master_link_down_since_seconds` while it is down.
    pub since_last_io: Duration,
}

/// Parse the text of `INFO replication` from a replica. `None` for a
/// primary or an unparseable reply.
pub fn parse_replication_info(text: &str) -> Option<ReplicationInfo> {
    let mut role = None;
    let mut link_up = None;
    let mut last_io: Option<i64> = None;
    let mut down_since: Option<i64> = None;
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        match k {
            "role" => role = Some(v == "slave" || v == "replica"),
            "master_link_status" => link_up = Some(v == "up"),
            "master_last_io_seconds_ago" => last_io = v.parse().ok(),
            "master_link_down_since_seconds" => down_since = v.parse().ok(),
            _ => {}
        }
    }
    if role != Some(true) {
        return None;
    }
    let link_up = link_up?;
    let secs = if link_up {
        last_io
    } else {
        down_since.or(last_io)
    };
    // -1 means "never": treat as very stale.
    let secs = match secs {
        Some(s) if s >= 0 => s as u64,
        _ => u64::from(u32::MAX),
    };
    Some(ReplicationInfo {
        link_up,
        since_last_io: Duration::from_secs(secs),
    })
}

/// Probes every replica of the current map every `interval` and records
/// the result in the topology's health cells (`link_up`, `last_io`).
/// A replica that does not answer within the leaf's admin timeout gets a
/// recorded failure. Works over any leaf of the contract
/// ([`LeafControl::replication_info`]); `NodeService` by default.
#[derive(Clone)]
pub struct HealthProber<L = NodeService> {
    leaf: L,
    topology: Topology,
    interval: Duration,
}

impl<L> fmt::Debug for HealthProber<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthProber")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Stops the prober when dropped.
#[derive(Debug)]
pub struct ProberHandle(Option<JoinHandle<Option<()>>>);

impl Drop for ProberHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl<L: LeafControl + Clone> HealthProber<L> {
    /// A prober using `leaf`'s connections, every 500 ms by default.
    pub fn new(leaf: &L, topology: Topology) -> Self {
        Self {
            leaf: leaf.clone(),
            topology,
            interval: Duration::from_millis(500),
        }
    }

    /// Probe every `interval`.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Probe every replica once, concurrently.
    pub async fn probe_once(&self) {
        let map = self.topology.load();
        let replicas: Vec<NodeAddr> = map
            .nodes()
            .filter(|n| n.role == Role::Replica)
            .map(|n| n.addr.clone())
            .collect();
        join_all(replicas.into_iter().map(|addr| self.probe(addr))).await;
    }

    async fn probe(&self, addr: NodeAddr) {
        let started = tokio::time::Instant::now();
        let answer = self.leaf.replication_info(&addr).await;
        let latency = answer.as_ref().ok().map(|_| started.elapsed());
        self.topology.report(Probed::new(&addr, latency));
        if let Some(info) = answer.ok().as_deref().and_then(parse_replication_info) {
            self.topology
                .report(LinkStatus::new(&addr, info.link_up, info.since_last_io));
        }
    }

    /// The prober's worker: probe, wait `interval`, forever. For the owner
    /// to run on its [`ClusterController`](slotguard_core::ClusterController)
    /// (the way tower's `Buffer::pair` hands out its worker).
    pub async fn run(self) {
        loop {
            self.probe_once().await;
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Run the prober on the topology's controller until the handle is
    /// dropped or the controller shuts down (after shutdown, or outside a
    /// runtime, it does not start).
    pub fn spawn(self) -> ProberHandle {
        let controller = self.topology.controller();
        ProberHandle(controller.spawn(self.run()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replica_info() {
        let up = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:3\r\n";
        assert_eq!(
            parse_replication_info(up),
            Some(ReplicationInfo {
                link_up: true,
                since_last_io: Duration::from_secs(3)
            })
        );
        let down = "role:slave\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_link_down_since_seconds:7\r\n";
        assert_eq!(
            parse_replication_info(down),
            Some(ReplicationInfo {
                link_up: false,
                since_last_io: Duration::from_secs(7)
            })
        );
        assert_eq!(
            parse_replication_info("role:master\r\nconnected_slaves:1\r\n"),
            None
        );
        assert_eq!(parse_replication_info("garbage"), None);
        let never = "role:slave\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n";
        assert!(
            parse_replication_info(never).unwrap().since_last_io > Duration::from_secs(1_000_000)
        );
    }
}
