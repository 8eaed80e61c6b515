//! The map's primitives (install, patch, health cells), below the
//! controller that calls them.

use super::*;

fn nv(port: u16) -> NodeView {
    NodeView {
        addr: NodeAddr::new("127.0.0.1", port),
        id: None,
        online: true,
    }
}

fn view() -> ClusterView {
    ClusterView {
        source: NodeAddr::new("127.0.0.1", 1),
        shards: vec![
            ShardView {
                slots: vec![(0, 8191)],
                primary: nv(1),
                replicas: vec![nv(11)],
            },
            ShardView {
                slots: vec![(8192, 16383)],
                primary: nv(2),
                replicas: vec![nv(12)],
            },
        ],
        current_epoch: None,
        state_ok: Some(true),
    }
}

#[test]
fn install_and_lookup() {
    let t = Topology::new();
    assert!(!t.is_loaded());
    let m = t.install(&view());
    assert_eq!(m.covered_slots(), 16384);
    assert_eq!(m.primary_for_slot(100).unwrap().addr.port(), 1);
    assert_eq!(m.primary_for_slot(16383).unwrap().addr.port(), 2);
    assert!(t.is_loaded());
}

#[test]
fn patch_moves_and_promotes() {
    let t = Topology::new();
    t.install(&view());
    let g = t.load().generation();
    assert_eq!(
        t.patch_slot(5, &NodeAddr::new("127.0.0.1", 2)),
        PatchOutcome::Patched
    );
    assert_eq!(t.load().primary_for_slot(5).unwrap().addr.port(), 2);
    assert!(t.load().generation() > g);
    assert_eq!(
        t.patch_slot(5, &NodeAddr::new("127.0.0.1", 2)),
        PatchOutcome::Unchanged
    );
    assert_eq!(
        t.patch_slot(5, &NodeAddr::new("127.0.0.1", 99)),
        PatchOutcome::UnknownNode
    );
    // replica 11 of shard 0 promoted
    assert_eq!(
        t.patch_slot(0, &NodeAddr::new("127.0.0.1", 11)),
        PatchOutcome::Patched
    );
    let m = t.load();
    let s = m.shard_for_slot(0).unwrap();
    assert_eq!(s.primary.addr.port(), 11);
    assert_eq!(s.replicas[0].addr.port(), 1);
    assert_eq!(s.replicas[0].role, Role::Replica);
}

#[test]
fn health_survives_installs() {
    let t = Topology::new();
    t.install(&view());
    let a = NodeAddr::new("127.0.0.1", 1);
    t.load().node(&a).unwrap().1.health.record_failure();
    t.install(&view());
    assert_eq!(
        t.load().node(&a).unwrap().1.health.consecutive_failures(),
        1
    );
}

#[test]
fn node_index_follows_patches() {
    let t = Topology::new();
    t.install(&view());
    let m = t.load();
    let (shard, node) = m.node(&NodeAddr::new("127.0.0.1", 12)).unwrap();
    assert_eq!((shard.primary.addr.port(), node.role), (2, Role::Replica));
    assert!(m.node(&NodeAddr::new("127.0.0.1", 99)).is_none());
    assert!(!m.contains(&NodeAddr::new("127.0.0.1", 99)));
    // replica 11 promoted: the index says so
    t.patch_slot(0, &NodeAddr::new("127.0.0.1", 11));
    let m = t.map();
    let (_, promoted) = m.node(&NodeAddr::new("127.0.0.1", 11)).unwrap();
    assert_eq!(promoted.role, Role::Primary);
    let (shard, demoted) = m.node(&NodeAddr::new("127.0.0.1", 1)).unwrap();
    assert_eq!(
        (shard.primary.addr.port(), demoted.role),
        (11, Role::Replica)
    );
}

#[test]
fn health_cells_are_shared_and_bounded() {
    let t = Topology::new();
    let a = NodeAddr::new("127.0.0.1", 1);
    let outsider = NodeAddr::new("127.0.0.1", 99);
    // created on first use, then the same cell for everyone
    t.with_health(&outsider, |h| h.record_failure());
    assert_eq!(t.health(&outsider).consecutive_failures(), 1);
    t.with_health(&a, |h| h.record_failure());
    t.install(&view());
    // the map's cell is the registry's cell
    let m = t.load();
    assert!(Arc::ptr_eq(&m.node(&a).unwrap().1.health, &t.health(&a)));
    assert_eq!(t.with_health(&a, |h| h.consecutive_failures()), 1);
    // a node outside the installed view was forgotten
    assert_eq!(t.health(&outsider).consecutive_failures(), 0);
}

#[test]
fn racing_first_uses_get_one_cell() {
    let t = Topology::new();
    let a = NodeAddr::new("127.0.0.1", 1);
    let cells: Vec<Arc<NodeHealth>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| t.insert_health(&a))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(cells.iter().all(|c| Arc::ptr_eq(c, &cells[0])));
}
