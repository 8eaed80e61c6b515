//! The hand-composed stack example, run as a user would: it starts its own
//! local cluster, reads through a stopped shard, and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Killed if the test ends first (its servers die with it: the testkit
/// starts them with a parent-death signal).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn custom_order_runs_answers_through_a_stopped_shard_and_exits_0() {
    let child = Command::new(env!("CARGO_BIN_EXE_custom_order"))
        .env_remove("SLOTGUARD_SEEDS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let mut stdout = running.0.stdout.take().unwrap();
    // Read on a thread so the wait below has a deadline.
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "custom_order did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = reader.join().unwrap();
    println!("{out}");
    assert!(status.success(), "{status}\n{out}");

    let gets: Vec<&str> = out.lines().filter(|l| l.starts_with("get ")).collect();
    assert!(!gets.is_empty(), "{out}");
    // Every read answered with the stored value.
    for line in &gets {
        assert!(line.contains(r#"-> Some("ada") via "#), "{line}");
    }
    let first = gets[0];
    assert!(
        first.contains("via secondary"),
        "a miss loads from SQLite: {first}"
    );
    let lines: Vec<&str> = out.lines().collect();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{out}"))
    };
    // In this order: the write-back reaches the cluster, the shard stops,
    // the global breaker opens, the shard resumes, the breaker closes.
    let order = [
        pos("via primary"),
        pos("stopped the shard"),
        pos("global breaker: open"),
        pos("resumed the shard"),
        pos("global breaker: closed"),
        pos("shut down"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{out}");
    // While the shard was stopped, the near-cache or SQLite answered.
    let stalled = &lines[order[1] + 1..order[2]];
    assert!(!stalled.is_empty());
    for line in stalled {
        assert!(
            line.contains("via near_cache") || line.contains("via secondary"),
            "{line}"
        );
    }
    // Open, the breaker answers without waiting for the cluster.
    let open_read = lines[order[2] + 1];
    assert!(
        open_read.contains("via near_cache") || open_read.contains("via secondary"),
        "{open_read}"
    );
}
