//! `slotguard doctor` against a real local cluster: healthy, a
//! half-migrated slot, a killed replica, a node marked failed, a dead
//! primary nobody replaces, a paused primary before and after its
//! promotion, and no seed answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;
use slotguard_testkit::{ClusterSpec, LocalCluster, NodeState, CACHE_USER_RULES};

const HANG_GUARD: Duration = Duration::from_secs(60);
/// A hang guard for "no seed": doctor must give up on its own deadlines
/// (300 ms per call here), so anything near this means a missing deadline.
const NO_SEED_GUARD: Duration = Duration::from_secs(15);

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// A deadline for conditions the cluster reaches by itself (gossip marking
/// a node failed, a replica noticing its primary died); a hang guard.
const CONVERGE: Duration = Duration::from_secs(30);

fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < CONVERGE,
            "{what}: not within {CONVERGE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs doctor with `--json` and a short command deadline; returns the exit
/// code and the report.
fn doctor(seed: &str) -> (Option<i32>, Value) {
    let (status, stdout, stderr) = common::run(
        &["doctor", seed, "--json", "--timeout-ms", "300"],
        &[],
        HANG_GUARD,
    );
    assert!(
        !stdout.is_empty(),
        "exit {status}, no report\nstderr:\n{stderr}"
    );
    (status.code(), common::one_json(&stdout))
}

fn assert_fails(report: &Value, name: &str, mentions: &str) {
    let c = check(report, name);
    assert_eq!(c["status"], "fail", "{name}: {report:#}");
    assert_eq!(report["ok"], false);
    assert!(
        c["detail"].as_str().unwrap().contains(mentions),
        "{name} should mention {mentions}: {c}"
    );
}

fn node<'a>(report: &'a Value, addr: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["addr"] == addr)
        .unwrap_or_else(|| panic!("{addr} is missing from the report: {report:#}"))
}

/// The table output exits 1 and names the failed checks on its last line.
fn table_names_failures(seed: &str, names: &[&str]) {
    let (status, stdout, stderr) =
        common::run(&["doctor", seed, "--timeout-ms", "300"], &[], HANG_GUARD);
    eprintln!("{stdout}"); // the table, for --nocapture readers
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    for name in names {
        assert!(last.contains(name), "{name} not in {last:?}");
    }
}

/// Whether any running node other than `index` flags it `fail`.
fn marked_fail(cluster: &LocalCluster, index: usize) -> bool {
    let id = cluster.node_id(index).unwrap();
    (0..cluster.len())
        .filter(|&i| i != index && cluster.node_state(i).ok() == Some(NodeState::Running))
        .filter_map(|i| cluster.cluster_nodes(i).ok())
        .any(|view| {
            view.iter()
                .any(|n| n.id == id && n.flags.iter().any(|f| f == "fail"))
        })
}

/// One cluster through a run of faults, each reported with its check named:
/// healthy (0), a half-migrated slot (1) and back (0), a killed replica (1),
/// the same replica once the cluster marks it `fail` (1), and a killed
/// primary whose replica may not take over (1, with the takeover advice).
#[test]
fn doctor_names_each_fault_of_one_cluster() {
    // No automatic failover, so a killed primary leaves its replica's link
    // down for as long as the test looks at it.
    let mut cluster = LocalCluster::start(ClusterSpec {
        extra_config: vec![("cluster-replica-no-failover".into(), "yes".into())],
        ..ClusterSpec::default()
    })
    .unwrap();
    let seed = cluster.addr(0);

    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), cluster.len());
    for name in [
        "reachable",
        "node_flags",
        "view_agreement",
        "cluster_state",
        "slots_assigned",
        "slots_ok",
        "migrating_slots",
        "replica_links",
        "migration_barrier",
    ] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}: {report}");
    }
    assert_eq!(check(&report, "slots_ok")["detail"], "16384/16384");
    // The testkit runs Redis's default `cluster-require-full-coverage yes`;
    // doctor reads it and warns (one shard without a primary stops every
    // shard), which leaves the report ok.
    let coverage = check(&report, "require_full_coverage");
    assert_eq!(coverage["status"], "warn", "{report}");
    assert!(
        coverage["detail"].as_str().unwrap().starts_with("yes"),
        "{report}"
    );

    // The seed from the environment, and the table output.
    let (status, stdout, _) = common::run(&["doctor"], &[("SLOTGUARD_SEEDS", &seed)], HANG_GUARD);
    assert!(status.success(), "{stdout}");
    eprintln!("{stdout}"); // the table, for --nocapture readers
    assert!(
        stdout.contains("slots_ok") && stdout.contains("16384/16384"),
        "{stdout}"
    );

    // A half-migrated slot: exit 1, the slot named; undone, healthy again.
    let primaries = cluster.primaries().unwrap();
    let (from, to) = (primaries[0], primaries[1]);
    let slot = cluster.slots_of(from).unwrap()[0].start() + 7;
    cluster.begin_migration(slot, from, to).unwrap();
    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_fails(
        &report,
        "migrating_slots",
        &format!("slot {slot} migrating"),
    );
    for i in [from, to] {
        cluster
            .command_ok(i, &["CLUSTER", "SETSLOT", &slot.to_string(), "STABLE"])
            .unwrap();
    }
    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(0), "{report:#}");

    // A killed replica: still in the report, unreachable, exit 1.
    let replica = cluster.replicas_of(primaries[2]).unwrap()[0];
    let replica_addr = cluster.addr(replica);
    cluster.kill(replica).unwrap();
    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_fails(&report, "reachable", &replica_addr);
    assert!(node(&report, &replica_addr)["error"].is_string());

    // Once the cluster marks it failed, doctor names that too.
    poll("the killed replica marked fail", || {
        marked_fail(&cluster, replica)
    });
    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_fails(&report, "node_flags", &format!("{replica_addr} (replica"));
    assert!(node(&report, &replica_addr)["marked"]["fail"].as_u64() >= Some(1));

    // A dead primary that nobody replaces: its replica's link is down, and
    // doctor gives the takeover advice for that replica.
    let (dead, orphan) = (primaries[1], cluster.replicas_of(primaries[1]).unwrap()[0]);
    let orphan_addr = cluster.addr(orphan);
    cluster.kill(dead).unwrap();
    poll("the orphaned replica's link down", || {
        cluster
            .info(orphan, "replication")
            .is_ok_and(|i| i.get("master_link_status").map(String::as_str) == Some("down"))
    });
    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_fails(
        &report,
        "replica_links",
        &format!("run CLUSTER FAILOVER TAKEOVER on {orphan_addr}"),
    );
    assert_fails(&report, "reachable", &cluster.addr(dead));
    table_names_failures(&seed, &["reachable", "replica_links"]);
}

/// A paused primary is reported before its replica is promoted (it does
/// not answer) and after (it is no longer in the topology view, yet doctor
/// finds it in the nodes' own lists, flagged `fail`).
#[test]
fn doctor_reports_a_paused_primary_before_and_after_its_promotion() {
    // A longer node timeout leaves doctor time to run before the promotion.
    let cluster = LocalCluster::start(ClusterSpec {
        node_timeout_ms: 5000,
        ..ClusterSpec::default()
    })
    .unwrap();
    let primary = cluster.primaries().unwrap()[0];
    let seed = cluster.addr(cluster.primaries().unwrap()[1]);
    let paused = cluster.addr(primary);
    cluster.pause(primary).unwrap();

    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_fails(&report, "reachable", &paused);
    assert_eq!(report["nodes"].as_array().unwrap().len(), cluster.len());
    table_names_failures(&seed, &["reachable"]);

    cluster
        .wait_for_failover(primary, Duration::from_secs(60))
        .unwrap();
    poll("the paused primary marked fail", || {
        marked_fail(&cluster, primary)
    });
    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), cluster.len());
    assert_fails(&report, "reachable", &paused);
    assert_fails(&report, "node_flags", &paused);
    let old = node(&report, &paused);
    assert!(old["error"].is_string(), "{old}");
    assert!(old["marked"]["fail"].as_u64() >= Some(1), "{old}");
    table_names_failures(&seed, &["reachable", "node_flags"]);
    cluster.resume(primary).unwrap();
}

/// A primary cut off the cluster bus (clients still reach it) while the
/// majority promotes its replica: it still routes its old slots to itself,
/// so doctor names it outside the majority view; the majority flags it
/// `fail`, and its own flags on the others (it sees them all failed) do not
/// count.
#[test]
fn doctor_names_a_partitioned_primary_outside_the_majority_view() {
    let cluster = LocalCluster::start(ClusterSpec {
        proxied: true,
        ..ClusterSpec::default()
    })
    .unwrap();
    let primaries = cluster.primaries().unwrap();
    let (cut, seed) = (primaries[0], cluster.addr(primaries[1]));
    let cut_addr = cluster.addr(cut);
    let slot = *cluster.slots_of(cut).unwrap()[0].start();
    cluster.partition(cut).unwrap();
    let promoted = cluster
        .wait_for_failover(cut, Duration::from_secs(60))
        .unwrap();
    poll("the partitioned primary marked fail", || {
        marked_fail(&cluster, cut)
    });
    // Every other node has learned the new owner, so the cut-off node is
    // the only one outside the majority view.
    let promoted_id = cluster.node_id(promoted).unwrap();
    poll(
        "every other node routing the slot to the promoted replica",
        || {
            (0..cluster.len()).filter(|&i| i != cut).all(|i| {
                cluster.cluster_nodes(i).is_ok_and(|view| {
                    view.iter()
                        .any(|n| n.id == promoted_id && n.slots.iter().any(|r| r.contains(&slot)))
                })
            })
        },
    );

    let (code, report) = doctor(&seed);
    assert_eq!(code, Some(1), "{report:#}");
    assert_fails(
        &report,
        "view_agreement",
        &format!("share it) at {cut_addr}"),
    );
    assert_eq!(node(&report, &cut_addr)["view"], "slots_differ");
    assert_fails(&report, "node_flags", &cut_addr);
    let flags = check(&report, "node_flags")["detail"].as_str().unwrap();
    assert!(
        !flags.contains(&seed),
        "the cut-off node's view of the others is not trusted: {flags}"
    );
    assert_eq!(check(&report, "reachable")["status"], "ok", "{report:#}");
    table_names_failures(&seed, &["node_flags", "view_agreement"]);
    cluster.heal(cut).unwrap();
}

#[test]
fn doctor_exits_2_when_no_seed_answers() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seed = format!("127.0.0.1:{port}");
    let (status, stdout, stderr) = common::run(
        &["doctor", &seed, "--timeout-ms", "300"],
        &[],
        NO_SEED_GUARD,
    );
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("no seed answered"), "{stderr}");
    let (status, _, stderr) = common::run(&["doctor"], &[("SLOTGUARD_SEEDS", "")], NO_SEED_GUARD);
    assert_eq!(status.code(), Some(2), "{stderr}");

    // A seed that accepts the connection and never answers: the command
    // deadline ends it, exit 2, with the same clear message.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let seed = silent.local_addr().unwrap().to_string();
    // Not joined: should doctor never connect, the test must not hang on it.
    std::thread::spawn(move || {
        // Hold the accepted connection open (never write) until doctor
        // closes its end.
        if let Ok((mut conn, _)) = silent.accept() {
            let mut sink = Vec::new();
            let _ = conn.read_to_end(&mut sink);
        }
    });
    let (status, stdout, stderr) = common::run(
        &["doctor", &seed, "--timeout-ms", "300"],
        &[],
        NO_SEED_GUARD,
    );
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("no seed answered"), "{stderr}");
}

/// A limited ACL user (a cache client's commands, no `CONFIG`): doctor
/// authenticates from the environment, every check it may run passes, the
/// refused settings are `unknown`, and a wrong password is a clear exit 2.
#[test]
fn doctor_authenticates_from_the_environment() {
    let cluster = LocalCluster::start(ClusterSpec {
        acl_users: vec![format!("doctor >s3cret {}", CACHE_USER_RULES.join(" "))],
        ..ClusterSpec::default()
    })
    .unwrap();
    let seed = cluster.addr(0);
    let env = [
        ("SLOTGUARD_USERNAME", "doctor"),
        ("SLOTGUARD_PASSWORD", "s3cret"),
    ];
    let (status, stdout, stderr) = common::run(&["doctor", &seed, "--json"], &env, HANG_GUARD);
    assert!(status.success(), "exit {status}\n{stdout}\n{stderr}");
    let report = common::one_json(&stdout);
    assert_eq!(check(&report, "slots_ok")["status"], "ok", "{report}");
    assert_eq!(check(&report, "replica_links")["status"], "ok", "{report}");
    let coverage = check(&report, "require_full_coverage");
    assert_eq!(coverage["status"], "unknown", "CONFIG is refused: {report}");

    let env = [
        ("SLOTGUARD_USERNAME", "doctor"),
        ("SLOTGUARD_PASSWORD", "wrong"),
    ];
    let (status, stdout, stderr) =
        common::run(&["doctor", &seed, "--timeout-ms", "500"], &env, HANG_GUARD);
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("authentication"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password is never printed: {stderr}"
    );
}
