//! Running the examples from a test: start the binary (`axum_app` or
//! `tonic_app`) as a user would and talk to it (HTTP here; gRPC with the
//! tonic client in `tests/tonic.rs`).
// Test support: a panic is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The running example; stopped when the test ends, also on panic.
pub(crate) struct App(Child);

/// Which example server to run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bin {
    /// `axum_app`, HTTP on `SLOTGUARD_HTTP`.
    Axum,
    /// `tonic_app`, gRPC on `SLOTGUARD_GRPC`.
    Tonic,
}

impl Bin {
    /// The binary and the variable that says where it listens.
    fn exe_and_listen_var(self) -> (&'static str, &'static str) {
        match self {
            Bin::Axum => (env!("CARGO_BIN_EXE_axum_app"), "SLOTGUARD_HTTP"),
            Bin::Tonic => (env!("CARGO_BIN_EXE_tonic_app"), "SLOTGUARD_GRPC"),
        }
    }
}

impl App {
    /// Start the axum example (see [`App::start_bin`]).
    pub(crate) fn start(seeds: Option<String>) -> (App, String) {
        App::start_bin(Bin::Axum, seeds)
    }

    /// Start the example `bin` on a free port, with `SLOTGUARD_SEEDS` set to
    /// `seeds` (or unset: it starts its own local cluster) and a temporary
    /// database; returns it and the address it listens on.
    pub(crate) fn start_bin(bin: Bin, seeds: Option<String>) -> (App, String) {
        App::start_bin_with(bin, seeds, &[])
    }

    /// [`App::start`] with more environment variables (e.g.
    /// `SLOTGUARD_LEAF=fred`).
    pub(crate) fn start_with(seeds: Option<String>, envs: &[(&str, &str)]) -> (App, String) {
        App::start_bin_with(Bin::Axum, seeds, envs)
    }

    /// [`App::start_bin`] with more environment variables.
    pub(crate) fn start_bin_with(
        bin: Bin,
        seeds: Option<String>,
        envs: &[(&str, &str)],
    ) -> (App, String) {
        let (exe, listen_var) = bin.exe_and_listen_var();
        let mut cmd = Command::new(exe);
        cmd.envs(envs.iter().copied());
        cmd.env(listen_var, "127.0.0.1:0")
            .env_remove("SLOTGUARD_DB")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match seeds {
            Some(seeds) => cmd.env("SLOTGUARD_SEEDS", seeds),
            None => cmd.env_remove("SLOTGUARD_SEEDS"),
        };
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let app = App(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .expect("listen line")
            .to_owned();
        (app, addr)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // Ctrl-C first: the example shuts down and drops its cluster (servers
        // stopped, temp dir removed); SIGKILL only if it does not exit.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..250 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; (status, head, body). Status 0: no answer.
pub(crate) fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let no_answer = || (0, String::new(), Vec::new());
    let Ok(mut s) = TcpStream::connect(addr) else {
        return no_answer();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return no_answer();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return no_answer();
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, raw[split + 4..].to_vec())
}
