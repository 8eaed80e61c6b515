//! Checks over what the nodes say about each other: nodes the cluster
//! flags (`fail`, `pfail`, still in handshake, without an address), and
//! nodes whose view of slot owners is not the majority view (a partition,
//! or a node that missed a failover; see [`super::nodes::agreement`]).

use super::checks::{check, Check, Status};
use super::facts::NodeFacts;
use super::nodes::Agreement;

/// Flags that make a node a failure; the others (`handshake`, `noaddr`)
/// are a node joining or leaving, a warning.
const FAILING: [&str; 2] = ["fail", "pfail"];

pub(crate) fn marked(nodes: &[NodeFacts]) -> Check {
    const NAME: &str = "node_flags";
    let flagged: Vec<&NodeFacts> = nodes.iter().filter(|n| !n.marked.is_empty()).collect();
    if flagged.is_empty() {
        return check(
            NAME,
            Status::Ok,
            format!("no node of {} is flagged by another", nodes.len()),
        );
    }
    let failing = flagged
        .iter()
        .any(|n| n.marked.keys().any(|k| FAILING.contains(&k.as_str())));
    let detail = flagged
        .iter()
        .map(|n| {
            let marks = n
                .marked
                .iter()
                .map(|(flag, by)| format!("{flag} by {by}"))
                .collect::<Vec<_>>()
                .join(", ");
            let id = n.id.as_deref().map(|i| i.get(..8).unwrap_or(i));
            format!("{} ({} {}): {marks}", n.addr, n.role, id.unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let status = if failing { Status::Fail } else { Status::Warn };
    check(NAME, status, detail)
}

pub(crate) fn view_agreement(nodes: &[NodeFacts]) -> Check {
    const NAME: &str = "view_agreement";
    let viewed: Vec<&NodeFacts> = nodes.iter().filter(|n| n.view.is_some()).collect();
    if viewed.is_empty() {
        return check(NAME, Status::Unknown, "no node listed the cluster");
    }
    let with = |a: Agreement| -> Vec<&str> {
        viewed
            .iter()
            .filter(|n| n.view == Some(a))
            .map(|n| n.addr.as_str())
            .collect()
    };
    let (agree, slots, epochs) = (
        with(Agreement::Majority),
        with(Agreement::SlotsDiffer),
        with(Agreement::EpochsDiffer),
    );
    let total = viewed.len();
    if !slots.is_empty() {
        // Such a node sends clients to other owners than the rest: a
        // partition, or a node that missed a failover; writes through it
        // can be lost.
        check(
            NAME,
            Status::Fail,
            format!(
                "slot owners differ from the majority view (newest claim per slot; {} of {total} nodes share it) at {}",
                total - slots.len(),
                slots.join(", ")
            ),
        )
    } else if !epochs.is_empty() {
        check(
            NAME,
            Status::Warn,
            format!(
                "same slot owners everywhere, other config epochs at {} (gossip still converging)",
                epochs.join(", ")
            ),
        )
    } else {
        check(
            NAME,
            Status::Ok,
            format!(
                "{} of {total} nodes share one view of slots and epochs",
                agree.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str, view: Agreement, marks: &[(&str, usize)]) -> NodeFacts {
        NodeFacts {
            addr: addr.into(),
            role: "primary",
            id: Some("0123456789abcdef".into()),
            view: Some(view),
            marked: marks.iter().map(|(f, n)| ((*f).to_owned(), *n)).collect(),
            ..NodeFacts::default()
        }
    }

    #[test]
    fn flagged_nodes_fail_joining_nodes_warn() {
        let ok = [node("a:1", Agreement::Majority, &[])];
        assert_eq!(marked(&ok).status, Status::Ok);
        let joining = [node("a:1", Agreement::Majority, &[("handshake", 1)])];
        assert_eq!(marked(&joining).status, Status::Warn);
        let failed = [
            node("a:1", Agreement::Majority, &[]),
            node("b:1", Agreement::Majority, &[("fail", 3), ("pfail", 1)]),
        ];
        let c = marked(&failed);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.detail, "b:1 (primary 01234567): fail by 3, pfail by 1");
    }

    #[test]
    fn dissenting_views_are_named() {
        let all = [
            node("a:1", Agreement::Majority, &[]),
            node("b:1", Agreement::Majority, &[]),
        ];
        assert_eq!(view_agreement(&all).status, Status::Ok);
        let epochs = [
            node("a:1", Agreement::Majority, &[]),
            node("b:1", Agreement::EpochsDiffer, &[]),
        ];
        assert_eq!(view_agreement(&epochs).status, Status::Warn);
        let split = [
            node("a:1", Agreement::Majority, &[]),
            node("b:1", Agreement::Majority, &[]),
            node("c:1", Agreement::SlotsDiffer, &[]),
        ];
        let c = view_agreement(&split);
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail.ends_with("2 of 3 nodes share it) at c:1"),
            "{}",
            c.detail
        );
        assert_eq!(view_agreement(&[]).status, Status::Unknown);
    }
}
