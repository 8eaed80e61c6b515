//! Running the `slotguard` binary from a test: its stdout must be exactly
//! one JSON value; it is killed (and, through the testkit, its
//! redis-servers) if the test ends early.
// Test support: a panic is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// Run `slotguard <args>` with `env` added, wait at most `timeout` (a hang
/// guard, not a speed check), and return its exit status, stdout and stderr.
#[allow(dead_code)] // not every test binary uses every helper
pub(crate) fn run(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (std::process::ExitStatus, String, String) {
    let what = format!("slotguard {}", args.join(" "));
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_slotguard"))
            .args(args)
            .envs(env.iter().copied())
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
            started.elapsed() < timeout,
            "{what} did not finish within {timeout:?}"
        );
        thread::sleep(Duration::from_millis(100));
    };
    (status, stdout.join().unwrap(), stderr.join().unwrap())
}

/// Exactly one JSON value from `stdout`.
#[allow(dead_code)]
pub(crate) fn one_json(stdout: &str) -> Value {
    let mut values = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let out = values
        .next()
        .expect("a JSON value on stdout")
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    assert!(
        values.next().is_none(),
        "more than one JSON value on stdout:\n{stdout}"
    );
    out
}

/// Run `slotguard <args>`, wait at most `timeout` (a hang guard, not a
/// speed check), require success and exactly one JSON value on stdout.
#[allow(dead_code)]
pub(crate) fn run_json(args: &[&str], timeout: Duration) -> Value {
    let (status, stdout, stderr) = run(args, &[], timeout);
    assert!(
        status.success(),
        "slotguard {} exited with {status}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" ")
    );
    one_json(&stdout)
}
