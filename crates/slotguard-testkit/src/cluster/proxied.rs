//! Proxied clusters: a [`FaultProxy`] in front of every node's client port
//! and one in front of its bus port, and minority partitions made with them.
//!
//! Clients learn the client proxies' addresses from the cluster itself
//! (`cluster-announce-port`, so `MOVED`, `CLUSTER SHARDS`/`SLOTS` and
//! replicas' replication links all go through them); peers reach each
//! other's bus through the bus proxies (`cluster-announce-bus-port`). Each
//! node connects out from its own loopback address (`bind-source-addr
//! 127.0.0.x`, all of 127.0.0.0/8 is local on Linux), so a bus proxy can
//! tell which peer a connection comes from. A partition is then pure
//! user-space state that dies with the process: no firewall rule, nothing
//! to clean up after a crash. The testkit's own admin commands use the real
//! ports and never see a proxy fault.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::LocalCluster;
use crate::error::TestkitError;
use crate::proxy::FaultProxy;

/// The proxies of one node.
#[derive(Debug)]
pub(super) struct Proxies {
    pub(super) client: FaultProxy,
    pub(super) bus: FaultProxy,
    /// The address the node's outgoing connections come from.
    pub(super) source_ip: Ipv4Addr,
}

impl Proxies {
    pub(super) fn start(index: usize, port: u16, bus_port: u16) -> Result<Proxies, TestkitError> {
        let io = |what: &str, source| TestkitError::Io {
            context: format!("starting the {what} proxy of node {index}"),
            source,
        };
        let local = |p: u16| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        let client = FaultProxy::start(local(port)).map_err(|e| io("client", e))?;
        let bus = FaultProxy::start(local(bus_port)).map_err(|e| io("bus", e))?;
        // 127.0.0.1 stays the testkit's and the proxies' own source address.
        let host = u8::try_from(index + 2).map_err(|_| {
            TestkitError::InvalidSpec("a proxied cluster has at most 250 nodes".into())
        })?;
        Ok(Proxies {
            client,
            bus,
            source_ip: Ipv4Addr::new(127, 0, 0, host),
        })
    }

    pub(super) fn client_port(&self) -> u16 {
        self.client.listen_addr().port()
    }

    pub(super) fn bus_port(&self) -> u16 {
        self.bus.listen_addr().port()
    }

    /// The `redis.conf` lines that make the node announce its proxies.
    pub(super) fn config(&self) -> String {
        format!(
            "cluster-announce-ip 127.0.0.1\n\
             cluster-announce-port {}\n\
             cluster-announce-bus-port {}\n\
             bind-source-addr {}\n",
            self.client_port(),
            self.bus_port(),
            self.source_ip
        )
    }
}

impl LocalCluster {
    fn proxies(&self, index: usize) -> Result<&Proxies, TestkitError> {
        self.node(index)?.proxies.as_ref().ok_or_else(|| {
            TestkitError::InvalidSpec("the cluster was not started with `proxied: true`".into())
        })
    }

    /// The fault proxy in front of node `index`'s client port (what clients
    /// and replicas dial). Needs [`ClusterSpec::proxied`](super::ClusterSpec::proxied).
    pub fn proxy(&self, index: usize) -> Result<&FaultProxy, TestkitError> {
        Ok(&self.proxies(index)?.client)
    }

    /// The loopback address node `index`'s outgoing connections come from
    /// (its replication link, its bus connections), as the proxies of
    /// other nodes see it: what [`FaultProxy::cut_peer`] takes.
    pub fn source_ip(&self, index: usize) -> Result<IpAddr, TestkitError> {
        Ok(IpAddr::V4(self.proxies(index)?.source_ip))
    }

    /// The fault proxy in front of node `index`'s cluster-bus port.
    pub fn bus_proxy(&self, index: usize) -> Result<&FaultProxy, TestkitError> {
        Ok(&self.proxies(index)?.bus)
    }

    /// Cuts node `index` off the cluster bus, both ways, while clients (and
    /// replication links) still reach it: a minority partition of one node.
    /// Open bus connections are reset and new ones black-holed, so peers
    /// detect it by their node timeout as in a real partition.
    pub fn partition(&self, index: usize) -> Result<(), TestkitError> {
        self.set_partitioned(index, true)
    }

    /// Ends [`partition`](Self::partition) of node `index`.
    pub fn heal(&self, index: usize) -> Result<(), TestkitError> {
        self.set_partitioned(index, false)
    }

    fn set_partitioned(&self, index: usize, on: bool) -> Result<(), TestkitError> {
        let cut = self.proxies(index)?;
        let ip = IpAddr::V4(cut.source_ip);
        for other in 0..self.nodes.len() {
            if other != index {
                self.proxies(other)?.bus.cut_peer(ip, on);
            }
        }
        cut.bus.set_isolated(on);
        Ok(())
    }
}
