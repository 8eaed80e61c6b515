//! Which node of a shard may answer a read, best first.

use slotguard_core::{Consistency, NodeAddr, NodeInfo, Shard};

use super::policy::FailoverPolicy;

/// Too many failures in a row: skip the node while others are eligible.
const SUSPECT_AFTER: u32 = 3;

/// Whether `replica` may answer a read of `consistency`, and how good a
/// choice it is (lower is better): linked replicas first, then by recent
/// failures and latency.
fn replica_rank(
    replica: &NodeInfo,
    consistency: Consistency,
    policy: &FailoverPolicy,
) -> Option<(u8, u32, u64)> {
    let h = &replica.health;
    if !h.in_majority() || h.breaker_open() {
        return None;
    }
    let tier = match consistency {
        Consistency::Primary => return None,
        Consistency::ReplicaOk => {
            if h.link_up() {
                0
            } else if h.last_io() <= policy.max_unlinked_staleness {
                1
            } else {
                return None;
            }
        }
        // Staleness is what the replica may lag by: time since it last
        // heard from its primary.
        Consistency::StaleOk(budget) => {
            if h.last_io() <= budget {
                u8::from(!h.link_up())
            } else {
                return None;
            }
        }
    };
    let suspect = h.consecutive_failures().min(SUSPECT_AFTER);
    Some((tier, suspect, h.ewma_latency().as_micros() as u64))
}

/// Eligible replicas of `shard` for a read, best first, leaving out `tried`
/// (the ranking [`best_replica`] picks from).
#[cfg(test)]
pub(crate) fn replicas<'a>(
    shard: &'a Shard,
    consistency: Consistency,
    policy: &FailoverPolicy,
    tried: &[NodeAddr],
) -> Vec<&'a NodeInfo> {
    let mut ranked: Vec<_> = shard
        .replicas
        .iter()
        .filter(|r| !tried.contains(&r.addr))
        .filter_map(|r| replica_rank(r, consistency, policy).map(|rank| (rank, r)))
        .collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, r)| r).collect()
}

/// The best eligible replica of `shard` for a read, leaving out `tried`
/// (what [`replicas`] would list first, without building the list).
pub(crate) fn best_replica<'a>(
    shard: &'a Shard,
    consistency: Consistency,
    policy: &FailoverPolicy,
    tried: &[NodeAddr],
) -> Option<&'a NodeInfo> {
    shard
        .replicas
        .iter()
        .filter(|r| !tried.contains(&r.addr))
        .filter_map(|r| replica_rank(r, consistency, policy).map(|rank| (rank, r)))
        // `min_by_key` keeps the first of equals, as the stable sort does.
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, r)| r)
}

/// Whether the primary should be skipped up front for a read that may use a
/// replica: its breaker is open or it is outside the majority view.
pub(crate) fn primary_unusable(primary: &NodeInfo) -> bool {
    primary.health.breaker_open() || !primary.health.in_majority()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use slotguard_core::{ClusterView, NodeView, Role, ShardView, Topology};

    use super::*;
    use crate::test_support::{breaker_open, install, link, outvote, probed};

    thread_local! {
        // The health cells of this test's nodes (primary 1, replicas 2..=6),
        // written by the controller from reports, as in a running stack.
        static CELLS: Topology = {
            let nv = |p: u16| NodeView {
                addr: NodeAddr::new("127.0.0.1", p),
                id: None,
                online: true,
            };
            let t = Topology::new();
            install(&t, &ClusterView {
                source: nv(1).addr,
                shards: vec![ShardView {
                    slots: vec![(0, 16383)],
                    primary: nv(1),
                    replicas: (2..=6).map(nv).collect(),
                }],
                current_epoch: None,
                state_ok: Some(true),
            });
            t
        };
    }

    fn cells() -> Topology {
        CELLS.with(Topology::clone)
    }

    fn node(port: u16) -> NodeInfo {
        let addr = NodeAddr::new("127.0.0.1", port);
        NodeInfo {
            health: cells().health(&addr),
            addr,
            id: None,
            role: Role::Replica,
        }
    }

    fn shard(replicas: Vec<NodeInfo>) -> Shard {
        let mut primary = node(1);
        primary.role = Role::Primary;
        Shard {
            primary,
            replicas,
            slots: vec![(0, 16383)],
        }
    }

    /// `replicas`, checking that `best_replica` picks its first.
    fn ranked<'a>(
        s: &'a Shard,
        c: Consistency,
        p: &FailoverPolicy,
        tried: &[NodeAddr],
    ) -> Vec<&'a NodeInfo> {
        let all = replicas(s, c, p, tried);
        let best = best_replica(s, c, p, tried);
        assert_eq!(best.map(|n| &n.addr), all.first().map(|n| &n.addr));
        all
    }

    fn ports(v: Vec<&NodeInfo>) -> Vec<u16> {
        v.into_iter().map(|n| n.addr.port()).collect()
    }

    #[test]
    fn linked_replica_beats_unlinked_for_replica_ok() {
        let (a, b) = (node(2), node(3));
        link(&cells(), &a.addr, false, Duration::from_secs(1));
        link(&cells(), &b.addr, true, Duration::from_secs(0));
        let s = shard(vec![a, b]);
        let p = FailoverPolicy::default();
        assert_eq!(
            ports(ranked(&s, Consistency::ReplicaOk, &p, &[])),
            vec![3, 2]
        );
        // once the linked one was tried, the unlinked one is the fallback
        let tried = [NodeAddr::new("127.0.0.1", 3)];
        assert_eq!(
            ports(ranked(&s, Consistency::ReplicaOk, &p, &tried)),
            vec![2]
        );
        // too stale to be a fallback
        link(
            &cells(),
            &s.replicas[0].addr,
            false,
            Duration::from_secs(60),
        );
        assert_eq!(
            ports(ranked(&s, Consistency::ReplicaOk, &p, &tried)),
            Vec::<u16>::new()
        );
        assert!(ranked(&s, Consistency::Primary, &p, &[]).is_empty());
    }

    #[test]
    fn stale_ok_respects_the_budget() {
        let a = node(2);
        link(&cells(), &a.addr, false, Duration::from_secs(4));
        let s = shard(vec![a]);
        let p = FailoverPolicy::default();
        assert_eq!(
            ports(ranked(
                &s,
                Consistency::StaleOk(Duration::from_secs(5)),
                &p,
                &[]
            )),
            vec![2]
        );
        assert!(ranked(&s, Consistency::StaleOk(Duration::from_secs(3)), &p, &[]).is_empty());
    }

    #[test]
    fn open_breakers_minorities_and_failures_count() {
        let (a, b, c) = (node(2), node(3), node(4));
        breaker_open(&cells(), &a.addr, true);
        outvote(&cells(), &b.addr);
        let (d, e) = (node(5), node(6));
        probed(&cells(), &d.addr, None);
        probed(&cells(), &d.addr, None);
        probed(&cells(), &e.addr, Some(Duration::from_millis(5)));
        let s = shard(vec![a, b, c, d, e]);
        let p = FailoverPolicy::default();
        // c and e have no failures (c has no latency yet, e 5 ms); d failed twice
        assert_eq!(
            ports(ranked(&s, Consistency::ReplicaOk, &p, &[])),
            vec![4, 6, 5]
        );
    }
}
