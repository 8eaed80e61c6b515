//! `CLUSTER NODES` as each node sees the cluster: the parser, and what the
//! views say together (which nodes the cluster knows, which it marks failed,
//! which nodes disagree with the majority about who owns which slot).
//! Kept apart from the network so every verdict is tested on fixed text.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use slotguard::NodeAddr;

/// A slot a node is handing over or taking in (its own line of `CLUSTER NODES`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct SlotMove {
    /// The slot.
    pub(crate) slot: u16,
    /// `migrating` (this node is the source) or `importing` (the target).
    pub(crate) state: &'static str,
    /// The node id on the other side.
    pub(crate) peer: String,
}

/// One line of `CLUSTER NODES`: one node as the answering node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PeerLine {
    pub(crate) id: String,
    /// `host:port` as announced; `None` when the node has no address yet
    /// (`noaddr`, `:0`).
    pub(crate) addr: Option<NodeAddr>,
    pub(crate) flags: Vec<String>,
    /// The primary's id, for a replica.
    pub(crate) master: Option<String>,
    pub(crate) config_epoch: u64,
    /// Slot ranges this node is seen to own.
    pub(crate) slots: Vec<(u16, u16)>,
    /// Migrating/importing entries (only the `myself` line carries them).
    pub(crate) moves: Vec<SlotMove>,
}

impl PeerLine {
    pub(crate) fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub(crate) fn role(&self) -> &'static str {
        if self.has("slave") {
            "replica"
        } else {
            "primary"
        }
    }
}

/// Parses every line of a `CLUSTER NODES` reply; lines that are not node
/// lines are skipped.
pub(crate) fn parse_cluster_nodes(text: &str) -> Vec<PeerLine> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<PeerLine> {
    let mut words = line.split_whitespace();
    let id = words.next()?.to_owned();
    let addr = parse_addr(words.next()?);
    let flags: Vec<String> = words.next()?.split(',').map(str::to_owned).collect();
    let master = words.next().filter(|m| *m != "-").map(str::to_owned);
    let _ping_sent = words.next()?;
    let _pong_recv = words.next()?;
    let config_epoch = words.next()?.parse().ok()?;
    let _link_state = words.next()?;
    let mut out = PeerLine {
        id,
        addr,
        flags,
        master,
        config_epoch,
        ..PeerLine::default()
    };
    for entry in words {
        if let Some(inner) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            out.moves.extend(parse_move(inner));
        } else if let Some((a, b)) = entry.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                out.slots.push((a, b));
            }
        } else if let Ok(s) = entry.parse() {
            out.slots.push((s, s));
        }
    }
    Some(out)
}

/// `ip:port@cport[,hostname]`; the IP may be IPv6 without brackets.
fn parse_addr(word: &str) -> Option<NodeAddr> {
    let host_port = word.split(['@', ',']).next()?;
    let (host, port) = host_port.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && port != 0).then(|| NodeAddr::new(host, port))
}

fn parse_move(inner: &str) -> Option<SlotMove> {
    let (slot, state, peer) = if let Some((s, p)) = inner.split_once("->-") {
        (s, "migrating", p)
    } else {
        let (s, p) = inner.split_once("-<-")?;
        (s, "importing", p)
    };
    Some(SlotMove {
        slot: slot.parse().ok()?,
        state,
        peer: peer.to_owned(),
    })
}

/// The answering node's own line.
pub(crate) fn myself(lines: &[PeerLine]) -> Option<&PeerLine> {
    lines.iter().find(|l| l.has("myself"))
}

/// The flags that make a node a finding when any other node gives them to it.
pub(crate) const MARKS: [&str; 4] = ["fail", "fail?", "handshake", "noaddr"];

/// How the other nodes mark each node: node id → flag → how many nodes say
/// so (`fail?` is Redis's spelling of pfail).
pub(crate) fn marks(views: &[&[PeerLine]]) -> HashMap<String, BTreeMap<String, usize>> {
    let mut out: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for view in views {
        for line in view.iter().filter(|l| !l.has("myself")) {
            for flag in line.flags.iter().filter(|f| MARKS.contains(&f.as_str())) {
                let name = if flag == "fail?" { "pfail" } else { flag };
                *out.entry(line.id.clone())
                    .or_default()
                    .entry(name.to_owned())
                    .or_default() += 1;
            }
        }
    }
    out
}

/// Slot ranges with their owner's id, sorted.
pub(crate) type Owners = Vec<(u16, u16, String)>;

/// What a node believes about slot ownership: sorted (first, last, owner
/// id) ranges, and the config epoch of each owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Belief {
    pub(crate) owners: Owners,
    pub(crate) epochs: Vec<(String, u64)>,
}

pub(crate) fn belief(view: &[PeerLine]) -> Belief {
    let mut owners = Vec::new();
    let mut epochs = Vec::new();
    for line in view.iter().filter(|l| !l.slots.is_empty()) {
        owners.extend(line.slots.iter().map(|&(a, b)| (a, b, line.id.clone())));
        epochs.push((line.id.clone(), line.config_epoch));
    }
    owners.sort();
    epochs.sort();
    Belief { owners, epochs }
}

/// How far a node's view is from the majority view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Agreement {
    /// The majority view's slot owners and epochs.
    Majority,
    /// The same slot owners with older config epochs (gossip converging).
    EpochsDiffer,
    /// Other slot owners: this node routes some slots elsewhere.
    SlotsDiffer,
}

const SLOTS: usize = slotguard::core::SLOT_COUNT as usize;

/// Compares each view (by position) with the majority view: for every
/// slot, the owner claimed with the highest config epoch, which is how
/// Redis itself settles conflicting claims. Why not the most common view:
/// right after a failover most nodes may not have heard of it yet, and
/// counting heads would call the up-to-date nodes the dissenters. Only a
/// majority of primaries can elect a new owner (and so raise an epoch), so
/// the newest claim is the majority side's, and a node cut off in a
/// minority, or one that missed the change, is named.
pub(crate) fn agreement(beliefs: &[Belief]) -> Vec<Agreement> {
    let owners: Vec<Vec<Option<(&str, u64)>>> = beliefs.iter().map(slot_owners).collect();
    let newest: Vec<Option<&str>> = (0..SLOTS)
        .map(|slot| newest_claim(owners.iter().filter_map(|o| o[slot])))
        .collect();
    let same_owners: Vec<bool> = owners
        .iter()
        .map(|o| {
            o.iter()
                .zip(&newest)
                .all(|(c, n)| c.map(|(id, _)| id) == *n)
        })
        .collect();
    // The newest epoch of each owner, among the views with the right owners.
    let mut epochs: Vec<(&str, u64)> = Vec::new();
    for (b, _) in beliefs.iter().zip(&same_owners).filter(|(_, same)| **same) {
        for (id, e) in &b.epochs {
            match epochs.iter_mut().find(|(i, _)| i == id) {
                Some((_, max)) => *max = (*max).max(*e),
                None => epochs.push((id, *e)),
            }
        }
    }
    beliefs
        .iter()
        .zip(&same_owners)
        .map(|(b, same)| {
            let stale = b
                .epochs
                .iter()
                .any(|(id, e)| epochs.iter().any(|(i, max)| *i == id.as_str() && e < max));
            match (same, stale) {
                (false, _) => Agreement::SlotsDiffer,
                (true, true) => Agreement::EpochsDiffer,
                (true, false) => Agreement::Majority,
            }
        })
        .collect()
}

/// Slot → (owner id, the owner's config epoch) as one view has it.
fn slot_owners(b: &Belief) -> Vec<Option<(&str, u64)>> {
    let mut out = vec![None; SLOTS];
    for (first, last, id) in &b.owners {
        let epoch = b
            .epochs
            .iter()
            .find(|(i, _)| i == id)
            .map_or(0, |(_, e)| *e);
        let range = usize::from(*first)..=usize::from(*last).min(SLOTS - 1);
        for slot in out.get_mut(range).into_iter().flatten() {
            *slot = Some((id.as_str(), epoch));
        }
    }
    out
}

/// The owner with the highest epoch among `claims`; among equal epochs the
/// most claimed, then the smallest id (so the answer is deterministic).
fn newest_claim<'a>(claims: impl Iterator<Item = (&'a str, u64)>) -> Option<&'a str> {
    let mut tally: Vec<(&str, u64, usize)> = Vec::new();
    for (id, epoch) in claims {
        match tally.iter_mut().find(|(i, e, _)| *i == id && *e == epoch) {
            Some((_, _, n)) => *n += 1,
            None => tally.push((id, epoch, 1)),
        }
    }
    tally
        .into_iter()
        .max_by(|(ia, ea, na), (ib, eb, nb)| ea.cmp(eb).then(na.cmp(nb)).then(ib.cmp(ia)))
        .map(|(id, _, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIEW: &str = "\
aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [93->-bbb] [7000-<-ccc]
bbb 127.0.0.1:7001@17001,host-b master - 0 1700000000000 2 connected 5461-10922 12000
ccc 127.0.0.1:7002@17002 master,fail - 1700000000000 1700000000000 3 disconnected
ddd 127.0.0.1:7003@17003 slave,fail? aaa 0 1700000000000 1 connected
eee :0@0 noaddr,handshake - 0 0 0 disconnected
";

    #[test]
    fn every_line_parses_with_flags_slots_and_moves() {
        let lines = parse_cluster_nodes(VIEW);
        assert_eq!(lines.len(), 5);
        let me = myself(&lines).unwrap();
        assert_eq!(me.id, "aaa");
        assert_eq!(me.slots, vec![(0, 5460)]);
        assert_eq!(
            me.moves,
            vec![
                SlotMove {
                    slot: 93,
                    state: "migrating",
                    peer: "bbb".into()
                },
                SlotMove {
                    slot: 7000,
                    state: "importing",
                    peer: "ccc".into()
                },
            ]
        );
        assert_eq!(
            lines[1].addr.as_ref().unwrap().to_string(),
            "127.0.0.1:7001"
        );
        assert_eq!(lines[1].slots, vec![(5461, 10922), (12000, 12000)]);
        assert!(lines[2].has("fail") && lines[2].slots.is_empty());
        assert_eq!(lines[3].role(), "replica");
        assert_eq!(lines[3].master.as_deref(), Some("aaa"));
        assert_eq!(lines[4].addr, None, "noaddr has no address to dial");
        assert!(parse_cluster_nodes("garbage\n\n").is_empty());
    }

    #[test]
    fn marks_count_other_nodes_never_myself() {
        let a = parse_cluster_nodes(VIEW);
        let b = parse_cluster_nodes(
            "ccc 127.0.0.1:7002@17002 myself,master,fail - 0 0 3 connected\n\
             ddd 127.0.0.1:7003@17003 slave,fail aaa 0 0 1 connected\n",
        );
        let m = marks(&[&a, &b]);
        assert_eq!(m["ccc"].get("fail"), Some(&1), "{m:?}");
        assert_eq!(m["ddd"].get("pfail"), Some(&1));
        assert_eq!(m["ddd"].get("fail"), Some(&1));
        assert_eq!(m["eee"].get("noaddr"), Some(&1));
        assert!(!m.contains_key("aaa"));
    }

    #[test]
    fn the_newest_claim_is_the_majority_view_and_dissenters_are_named() {
        let view = |owner_of_high: &str, epoch: u64| {
            parse_cluster_nodes(&format!(
                "aaa 1.1.1.1:1@2 master - 0 0 1 connected 0-8191\n\
                 {owner_of_high} 1.1.1.2:1@2 master - 0 0 {epoch} connected 8192-16383\n"
            ))
        };
        // A cut-off primary (ccc, epoch 2) still claims what the others
        // gave to ddd (epoch 3); one node knows ddd with an older epoch.
        let beliefs = [
            belief(&view("ddd", 3)),
            belief(&view("ddd", 3)),
            belief(&view("ccc", 2)),
            belief(&view("ddd", 1)),
        ];
        assert_eq!(
            agreement(&beliefs),
            vec![
                Agreement::Majority,
                Agreement::Majority,
                Agreement::SlotsDiffer,
                Agreement::EpochsDiffer
            ]
        );
        // Right after a failover most nodes have not heard of it: the
        // promoted owner's newer epoch wins over the head count.
        let converging = [
            belief(&view("ccc", 2)),
            belief(&view("ccc", 2)),
            belief(&view("ccc", 2)),
            belief(&view("ddd", 3)),
        ];
        assert_eq!(
            agreement(&converging),
            vec![
                Agreement::SlotsDiffer,
                Agreement::SlotsDiffer,
                Agreement::SlotsDiffer,
                Agreement::Majority
            ]
        );
        // Equal epochs: the most claimed owner.
        let tie = [
            belief(&view("bbb", 2)),
            belief(&view("bbb", 2)),
            belief(&view("ccc", 2)),
        ];
        assert_eq!(agreement(&tie)[2], Agreement::SlotsDiffer);
        // Unassigned slots agree with unassigned slots.
        let partial = parse_cluster_nodes("aaa 1.1.1.1:1@2 master - 0 0 1 connected 0-100\n");
        assert_eq!(
            agreement(&[belief(&partial), belief(&partial)]),
            vec![Agreement::Majority; 2]
        );
        assert!(agreement(&[]).is_empty());
    }
}
