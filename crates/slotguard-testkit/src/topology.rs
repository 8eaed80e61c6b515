//! Parsing of `CLUSTER NODES` output.
//!
//! `CLUSTER NODES` (rather than `CLUSTER SHARDS`) is used because it is one
//! flat line per node, carries the failure flags the health checks need, and
//! its format has been stable since Redis 3.

use std::ops::RangeInclusive;

use crate::error::TestkitError;
use crate::slot::SLOT_COUNT;

/// One line of `CLUSTER NODES`, i.e. one node as seen by the node that was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The 40-hex-digit node id.
    pub id: String,
    /// `ip:port` of the client port (empty ip while the node is unknown).
    pub addr: String,
    /// The cluster-bus port, when advertised.
    pub bus_port: Option<u16>,
    /// Flags such as `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`.
    pub flags: Vec<String>,
    /// The id of the node this one replicates, if it is a replica.
    pub master_id: Option<String>,
    /// The node's config epoch.
    pub config_epoch: u64,
    /// Whether the asking node's bus link to this node is up.
    pub connected: bool,
    /// Slot ranges this node serves (migrating/importing markers are left out).
    pub slots: Vec<RangeInclusive<u16>>,
}

impl ClusterNode {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Whether this line describes the node that was asked.
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }

    /// Whether the node is a primary.
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    /// Whether the node is a replica.
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Whether the asking node suspects (`fail?`) or has agreed (`fail`) that this node is down.
    pub fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    /// Whether the node is still being introduced (`handshake`) or has no address yet (`noaddr`).
    pub fn is_joining(&self) -> bool {
        self.has_flag("handshake") || self.has_flag("noaddr")
    }

    /// Whether this node serves `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }

    /// The client port from [`addr`](Self::addr).
    pub fn port(&self) -> Option<u16> {
        self.addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    }
}

fn bad(line: &str, what: &str) -> TestkitError {
    TestkitError::Protocol(format!("bad CLUSTER NODES line ({what}): {line:?}"))
}

fn parse_slot(s: &str, line: &str) -> Result<u16, TestkitError> {
    s.parse::<u16>()
        .ok()
        .filter(|n| *n < SLOT_COUNT)
        .ok_or_else(|| bad(line, "slot"))
}

/// Parses the whole `CLUSTER NODES` text.
pub(crate) fn parse_cluster_nodes(text: &str) -> Result<Vec<ClusterNode>, TestkitError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<ClusterNode, TestkitError> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() < 8 {
        return Err(bad(line, "too few fields"));
    }
    // `ip:port@cport[,hostname]`
    let (addr, bus) = match parts[1].split_once('@') {
        Some((addr, rest)) => (addr, rest.split(',').next()),
        None => (parts[1], None),
    };
    let master_id = match parts[3] {
        "-" => None,
        id => Some(id.to_owned()),
    };
    let mut slots = Vec::new();
    for item in &parts[8..] {
        // `[slot->-id]` / `[slot-<-id]` describe migrations, not ownership.
        if item.starts_with('[') {
            continue;
        }
        let range = match item.split_once('-') {
            Some((a, b)) => parse_slot(a, line)?..=parse_slot(b, line)?,
            None => {
                let s = parse_slot(item, line)?;
                s..=s
            }
        };
        slots.push(range);
    }
    Ok(ClusterNode {
        id: parts[0].to_owned(),
        addr: addr.to_owned(),
        bus_port: bus.and_then(|b| b.parse().ok()),
        flags: parts[2].split(',').map(str::to_owned).collect(),
        master_id,
        config_epoch: parts[6].parse().map_err(|_| bad(line, "config epoch"))?,
        connected: parts[7] == "connected",
        slots,
    })
}

/// Slot ownership in one view: sorted, merged `(first, last, owner id)` ranges.
pub(crate) type Ownership = Vec<(u16, u16, String)>;

/// Computes the [`Ownership`] of one `CLUSTER NODES` view.
pub(crate) fn ownership(view: &[ClusterNode]) -> Ownership {
    let mut ranges: Vec<(u16, u16, String)> = view
        .iter()
        .filter(|n| n.is_master())
        .flat_map(|n| {
            n.slots
                .iter()
                .map(move |r| (*r.start(), *r.end(), n.id.clone()))
        })
        .collect();
    ranges.sort();
    // Different nodes may print the same ownership split differently (e.g.
    // `0-10 11-20` vs `0-20` after a migration), so merge before comparing.
    let mut merged: Vec<(u16, u16, String)> = Vec::with_capacity(ranges.len());
    for (start, end, id) in ranges {
        match merged.last_mut() {
            Some(last) if last.2 == id && u32::from(last.1) + 1 == u32::from(start) => {
                last.1 = end;
            }
            _ => merged.push((start, end, id)),
        }
    }
    merged
}

/// Whether `slots` covers every slot of `wanted`.
pub(crate) fn covers(slots: &[RangeInclusive<u16>], wanted: &[RangeInclusive<u16>]) -> bool {
    wanted
        .iter()
        .all(|w| w.clone().all(|s| slots.iter().any(|r| r.contains(&s))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SAMPLE: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,host master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail? - 0 1426238318243 3 disconnected 10923-16383
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5459 5460 [5461->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
";

    #[test]
    fn parses_sample() {
        let nodes = parse_cluster_nodes(SAMPLE).unwrap();
        assert_eq!(nodes.len(), 4);
        assert!(nodes[0].is_replica());
        assert_eq!(
            nodes[0].master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert_eq!(nodes[1].bus_port, Some(31002));
        assert_eq!(nodes[1].port(), Some(30002));
        assert!(nodes[2].is_failing() && !nodes[2].connected);
        assert!(nodes[3].is_myself());
        assert_eq!(nodes[3].slots, vec![0..=5459, 5460..=5460]);
        let own = ownership(&nodes);
        assert_eq!(own.len(), 3);
        assert_eq!((own[0].0, own[0].1), (0, 5460));
        assert!(covers(&nodes[3].slots, &[10..=20, 5460..=5460]));
        assert!(!covers(&nodes[3].slots, &[5461..=5461]));
    }
}
