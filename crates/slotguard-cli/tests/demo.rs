//! `slotguard demo --json` end to end: a real local cluster, every phase,
//! one JSON object on stdout.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Flip to `true` once `replica_failover` and `circuit_breaker` are in the
/// demo's stack (crates/slotguard-cli/src/stack.rs): then a frozen or killed
/// primary must cost no read, no stale read, and never more than half the
/// healthy rate in any second (DESIGN.md §9).
const FAILOVER_LAYERS_READY: bool = true;

/// Generous: the run takes ~20 s in release mode; failovers that stall and
/// a slow debug build must not make this flaky.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(600);

const PHASES: [&str; 5] = [
    "healthy",
    "primary-sigstop",
    "primary-sigkill",
    "live-migration",
    "manual-failover",
];

const KEYS: [&str; 15] = [
    "name",
    "ops",
    "reads",
    "reads_answered_pct",
    "read_errors",
    "writes",
    "write_errors",
    "stale_reads",
    "lost_writes",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "worst_second_pct",
    "served",
    "verdict",
];

/// Kills the demo (and so, through the testkit, its redis-servers) when the
/// test ends early: timeout or failed assertion.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

fn num(phase: &Value, key: &str) -> f64 {
    phase[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} of {} is not a number: {phase}", phase["name"]))
}

#[test]
fn demo_json_reports_every_phase_in_order() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(["demo", "--json", "--seconds", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the slotguard binary starts"),
    );
    let stdout = read_all(child.0.stdout.take().unwrap());
    let stderr = read_all(child.0.stderr.take().unwrap());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < OVERALL_TIMEOUT,
            "slotguard demo did not finish within {OVERALL_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.success(),
        "slotguard demo exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // exactly one JSON object and nothing else
    let mut values = serde_json::Deserializer::from_str(&stdout).into_iter::<Value>();
    let out = values
        .next()
        .expect("a JSON value on stdout")
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    assert!(
        values.next().is_none(),
        "more than one JSON value on stdout:\n{stdout}"
    );
    assert!(out.is_object(), "not an object: {out}");

    let phases = out["phases"].as_array().expect("a phases array");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, PHASES, "phases in the canonical order");
    for p in phases {
        for key in KEYS {
            assert!(p.get(key).is_some(), "phase {} lacks {key}: {p}", p["name"]);
        }
        for path in ["primary", "replica"] {
            assert!(
                p["served"][path].is_u64(),
                "phase {} lacks served.{path}: {p}",
                p["name"]
            );
        }
        assert!(num(p, "ops") > 0.0, "phase {} ran no operation", p["name"]);
        assert_eq!(
            num(p, "ops"),
            num(p, "reads") + num(p, "writes"),
            "ops = reads + writes in {}",
            p["name"]
        );
        assert!(num(p, "p50_ms") <= num(p, "p99_ms"));
        assert!(num(p, "p99_ms") <= num(p, "max_ms"));
    }

    let phase = |name: &str| phases.iter().find(|p| p["name"] == name).unwrap();
    for name in ["healthy", "live-migration", "manual-failover"] {
        let p = phase(name);
        assert_eq!(
            num(p, "read_errors") + num(p, "write_errors"),
            0.0,
            "{name} must have 0 errors: {p}"
        );
    }

    if FAILOVER_LAYERS_READY {
        for name in ["primary-sigstop", "primary-sigkill"] {
            let p = phase(name);
            assert_eq!(
                num(p, "reads_answered_pct"),
                100.0,
                "{name} must answer every read: {p}"
            );
            assert_eq!(num(p, "stale_reads"), 0.0, "{name} stale reads: {p}");
            assert!(
                num(p, "worst_second_pct") >= 50.0,
                "{name} must keep half the healthy rate in every second: {p}"
            );
        }
    }
}
