//! Unit tests of the per-phase figures and their targets, on synthetic records.

use super::super::phases::{PhaseName, PhasePlan};
use super::super::table::{format_pct, table};
use super::super::targets::judge;
use super::*;

fn rec(t_ms: u32, lat_ms: u32, write: bool, ok: bool, code: u8) -> Record {
    Record {
        phase: 0,
        t_us: t_ms * 1000,
        lat_us: lat_ms * 1000,
        key: 0,
        node: 0,
        write,
        ok,
        code,
    }
}

fn run(name: PhaseName, secs: u64) -> PhaseRun {
    PhaseRun {
        index: 0,
        plan: PhasePlan {
            name,
            seconds: Duration::from_secs(secs),
            hidden: false,
        },
        duration: Duration::from_millis(secs * 1000 + 300),
        fault: None,
        sweep: (0, 0),
        settle_error: None,
        hedges: Default::default(),
        converged: Ok(Duration::from_millis(20)),
        settings_error: None,
    }
}

/// 1000 successful 1 ms reads a second for `secs` seconds.
fn healthy(secs: u32) -> Baseline {
    Baseline {
        records: (0..secs * 1000)
            .map(|i| rec(i, 1, false, true, 0))
            .collect(),
        duration: Duration::from_millis(u64::from(secs) * 1000 + 300),
    }
}

fn judged(run: &PhaseRun, records: &[Record], tally: &Tally, base: &Baseline) -> PhaseReport {
    let mut rep = summarize(run, records, tally, base, &|_| 0, Vec::new());
    judge(run, &mut rep);
    rep
}

#[test]
fn a_clean_healthy_phase_is_ok() {
    let records: Vec<Record> = (0..2000).map(|i| rec(i, 1, i % 10 == 0, true, 0)).collect();
    let r = run(PhaseName::Healthy, 2);
    let base = Baseline {
        records: records.clone(),
        duration: r.duration,
    };
    assert_eq!(baseline_rate(&records, r.duration), 1000.0);
    let rep = judged(&r, &records, &Tally::default(), &base);
    assert_eq!(rep.ops, 2000);
    assert_eq!(rep.writes, 200);
    assert_eq!(rep.reads, 1800);
    assert_eq!(rep.reads_answered_pct, 100.0);
    assert_eq!(rep.served.primary, 1800);
    assert_eq!(rep.worst_second_pct, Some(100.0));
    assert_eq!(rep.per_second, vec![1000, 1000]);
    assert_eq!(rep.per_second_errors, vec![0, 0]);
    assert_eq!(rep.per_second_p99_ms, vec![1.0, 1.0]);
    assert_eq!(rep.verdict, "ok");
    assert!(rep.targets_missed.is_empty());
}

#[test]
fn a_frozen_second_and_failed_reads_are_misses() {
    // second 0: 1000 ok; second 1: 100 ok + 50 failed reads (timeouts)
    let mut records: Vec<Record> = (0..1000).map(|i| rec(i, 1, false, true, 0)).collect();
    records.extend((0..100).map(|i| rec(1000 + i, 1, false, true, 1)));
    records.extend((0..50).map(|i| rec(1100 + i, 200, false, false, 7)));
    let r = run(PhaseName::PrimarySigstop, 2);
    let tally = Tally {
        stale_reads: 2,
        ..Tally::default()
    };
    let rep = judged(&r, &records, &tally, &healthy(2));
    assert_eq!(rep.read_errors, 50);
    assert_eq!(rep.errors_by_kind.get("timeout"), Some(&50));
    assert_eq!(rep.served.replica, 100);
    assert_eq!(rep.worst_second_pct, Some(10.0));
    assert_eq!(rep.per_second_errors, vec![0, 50]);
    assert!(rep.reads_answered_pct < 100.0);
    assert_eq!(rep.max_ms, 200.0);
    assert_eq!(
        rep.targets_missed,
        vec![
            "reads-answered",
            "read-max-50ms",
            "worst-second-90pct",
            "no-stale-reads"
        ]
    );
    assert_eq!(rep.misses.len(), 4, "{:?}", rep.misses);
    assert!(rep.verdict.starts_with("MISS: "));
    let t = table(&[rep]);
    assert!(t.contains("reads-answered, read-max-50ms"), "{t}");
}

#[test]
fn lost_writes_miss_only_where_no_write_may_be_lost() {
    let records = vec![rec(0, 1, false, true, 0)];
    let before = Tally {
        lost_writes: 3,
        lost_before_fault: 3,
        ..Tally::default()
    };
    let base = healthy(1);
    let base = Baseline {
        records: base.records[..1].to_vec(),
        ..base
    };
    let kill = judged(&run(PhaseName::PrimarySigkill, 1), &records, &before, &base);
    assert!(kill.misses.is_empty(), "{:?}", kill.misses);
    assert_eq!(kill.lost_writes_before_fault, 3);
    let after = Tally {
        lost_writes: 1,
        lost_after_fault: 1,
        ..Tally::default()
    };
    let kill = judged(&run(PhaseName::PrimarySigkill, 1), &records, &after, &base);
    assert_eq!(kill.targets_missed, vec!["no-lost-writes-after-fault"]);
    let manual = judged(&run(PhaseName::ManualFailover, 1), &records, &before, &base);
    assert_eq!(manual.misses, vec!["3 lost writes (target 0)".to_owned()]);
}

#[test]
fn a_stack_that_did_not_converge_by_itself_is_a_miss() {
    let records = vec![rec(0, 1, false, true, 0)];
    let mut r = run(PhaseName::Healthy, 1);
    r.converged = Err("not converged".to_owned());
    let rep = judged(&r, &records, &Tally::default(), &healthy(1));
    assert_eq!(rep.targets_missed, vec!["stack-converges"]);
    assert_eq!(rep.converged_after_ms, None);
}

#[test]
fn fault_figures_split_the_faulted_shard_from_the_others() {
    let fault = FaultRun {
        affected: vec![0..=99],
        victim: Some(0),
        t_fault: Duration::from_millis(100),
        ..FaultRun::default()
    };
    let slot_of = |key: u32| if key < 10 { 5 } else { 500 };
    let mut r = run(PhaseName::PrimarySigstop, 1);
    r.fault = Some(fault);
    let records = vec![
        // the faulted shard: a write refused after 300 ms
        Record {
            key: 1,
            ..rec(400, 300, true, false, 11)
        },
        Record {
            key: 1,
            ..rec(500, 2, false, true, PATH_REPLICA)
        },
        // another shard: reads at 4 ms
        Record {
            key: 20,
            ..rec(600, 4, false, true, 0)
        },
    ];
    let base = Baseline {
        records: vec![
            Record {
                key: 20,
                ..rec(0, 2, false, true, 0)
            },
            Record {
                key: 1,
                ..rec(10, 1, false, true, 0)
            },
        ],
        duration: Duration::from_millis(1300),
    };
    let mut rep = summarize(&r, &records, &Tally::default(), &base, &slot_of, Vec::new());
    judge(&r, &mut rep);
    assert_eq!(rep.faulted_shard_write_error_max_ms, Some(300.0));
    assert_eq!(rep.other_shards_read_p99_ms, Some(4.0));
    assert_eq!(rep.other_shards_baseline_read_p99_ms, Some(2.0));
    assert_eq!(rep.faulted_shard_worst_second_pct, Some(100.0));
    assert!(rep.targets_missed.contains(&"other-shards-p99-1.5x"));
    assert!(rep.targets_missed.contains(&"write-error-250ms"));
}

#[test]
fn fault_timings_from_records() {
    let fault = FaultRun {
        affected: vec![0..=99],
        victim: Some(0),
        t_fault: Duration::from_millis(1000),
        t_promoted: Some(Duration::from_millis(3000)),
        ..FaultRun::default()
    };
    let slot_of = |key: u32| if key < 10 { 5 } else { 500 };
    let mut records = vec![
        // before the fault: ignored
        rec(500, 1, false, true, PATH_REPLICA),
        // another shard's replica: ignored
        Record {
            key: 20,
            ..rec(1200, 1, false, true, PATH_REPLICA)
        },
        // the shard's first replica read
        rec(1250, 1, false, true, PATH_REPLICA),
        // a write answered by the old primary: not the new one
        rec(2900, 1, true, true, 0),
    ];
    records.push(Record {
        node: 3,
        ..rec(3040, 1, true, true, 0)
    });
    let rep = fault_timings(&fault, &records, &slot_of);
    assert_eq!(rep.first_replica_read_after_ms, Some(250.0));
    assert_eq!(rep.first_write_after_promotion_ms, Some(40.0));
}

#[test]
fn percentages_never_round_up_to_100() {
    assert_eq!(format_pct(100.0), "100");
    assert_eq!(format_pct(99.999), "99.99");
    assert_eq!(format_pct(66.666), "66.67");
}
