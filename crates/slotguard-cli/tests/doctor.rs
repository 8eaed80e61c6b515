//! `slotguard doctor` against a real local cluster: healthy, one node
//! stopped, and no seed answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::Value;
use slotguard_testkit::{ClusterSpec, LocalCluster, CACHE_USER_RULES};

const HANG_GUARD: Duration = Duration::from_secs(60);

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

#[test]
fn doctor_reports_a_healthy_cluster_then_names_a_stopped_node() {
    let cluster = LocalCluster::start(ClusterSpec::default()).unwrap();
    let seed = cluster.addr(0);

    let (status, stdout, stderr) = common::run(&["doctor", &seed, "--json"], &[], HANG_GUARD);
    assert!(status.success(), "exit {status}\n{stdout}\n{stderr}");
    let report = common::one_json(&stdout);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["nodes"].as_array().unwrap().len(), cluster.len());
    for name in [
        "reachable",
        "cluster_state",
        "slots_assigned",
        "slots_ok",
        "replica_links",
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

    // A stopped replica: reachable fails, naming it, exit 1, within the deadlines.
    let primary = cluster.primaries().unwrap()[0];
    let replica = cluster.replicas_of(primary).unwrap()[0];
    cluster.pause(replica).unwrap();
    let (status, stdout, stderr) = common::run(
        &["doctor", &seed, "--json", "--timeout-ms", "300"],
        &[],
        HANG_GUARD,
    );
    cluster.resume(replica).unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    let report = common::one_json(&stdout);
    assert_eq!(report["ok"], false);
    let reachable = check(&report, "reachable");
    assert_eq!(reachable["status"], "fail", "{report}");
    assert!(
        reachable["detail"]
            .as_str()
            .unwrap()
            .contains(&cluster.addr(replica)),
        "{reachable}"
    );
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
    let (status, stdout, stderr) =
        common::run(&["doctor", &seed, "--timeout-ms", "300"], &[], HANG_GUARD);
    assert_eq!(status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("no seed answered"), "{stderr}");
    let (status, _, stderr) = common::run(&["doctor"], &[("SLOTGUARD_SEEDS", "")], HANG_GUARD);
    assert_eq!(status.code(), Some(2), "{stderr}");
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
