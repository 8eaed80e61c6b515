//! The `slotguard` command.
//!
//! ```text
//! slotguard demo [--seconds N] [--workers N] [--keys N] [--timeout-ms N]
//!                [--write-pct N] [--phases a,b,c] [--quick] [--report FILE] [--json]
//! slotguard bench failover [--seconds N] [--stop-secs N] [... same load options]
//! slotguard bench throughput [--seconds N] [--rounds N] [--concurrency 1,16,64,256]
//!                            [--loads get,set,mix] [--keys N] [--value-size N]
//!                            [--warmup-ms N] [--seeds host:port,...] [--json]
//! slotguard doctor [SEED ...] [--timeout-ms N] [--json]
//! ```

mod bench;
mod demo;
mod doctor;
mod metrics;
mod stack;

// The demo's parts that `bench` and `doctor` share.
use demo::{load, progress, report, runner, stats};

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// slotguard: keep a Redis Cluster cache answering while the cluster degrades.
#[derive(Debug, Parser)]
#[command(name = "slotguard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A local cluster, real load through the slotguard stack, faults injected, results per phase.
    ///
    /// Starts a local Redis Cluster (3 primaries, 1 replica each) on Redis's
    /// default settings, drives a mixed load (90 % GET, 10 % SET by default)
    /// through `SlotGuard` on its defaults over an SQLite store and injects
    /// faults one phase at a time: healthy, primary-sigstop,
    /// full-coverage-sigstop, primary-sigkill, live-migration,
    /// manual-failover, cluster-outage, default-node-timeout. Prints one row
    /// per phase with the targets it missed; misses are reported, not fatal
    /// (exit 0 when the run completed, 1 when it stopped early, 2 when the
    /// cluster could not start).
    Demo(demo::DemoArgs),
    /// Benchmarks against a local cluster.
    Bench(bench::BenchArgs),
    /// The degradation runbook against a running cluster: cluster state,
    /// slot coverage, migrations, replica links, settings, evictions.
    ///
    /// Prints one row per check (`--json`: one object). Exit 0 when no check
    /// failed (warnings allowed), 1 when one did, 2 when no seed answered.
    Doctor(doctor::DoctorArgs),
}

/// The handle's request deadline, in milliseconds: what a user gets.
const DEFAULT_TIMEOUT_MS: u64 = slotguard::DEFAULT_REQUEST_TIMEOUT.as_millis() as u64;

/// The load options `demo` and `bench` share.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LoadArgs {
    /// Seconds of load per phase (a phase also lasts until its fault sequence ends).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) seconds: u64,
    /// Closed-loop workers (tokio tasks), each picking a random key of any shard per operation.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) workers: u64,
    /// Distinct keys, spread over every shard; all are written before the first phase.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) keys: u64,
    /// Deadline of each request, in milliseconds (default: the `SlotGuard`
    /// handle's request timeout).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub(crate) timeout_ms: u64,
    /// Share of operations that are SETs, in percent (the rest are GETs).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    pub(crate) write_pct: u64,
    /// Print exactly one JSON object on stdout (and no progress).
    #[arg(long)]
    pub(crate) json: bool,
    /// Turn hedged replica reads off (to compare with the default, on).
    #[arg(long)]
    pub(crate) no_hedge: bool,
    /// The leaf under the stack: `node` (the default leaf) or `fred` (the
    /// fred-backed leaf).
    #[arg(long, default_value = "node", value_parser = parse_leaf)]
    pub(crate) leaf: slotguard::LeafKind,
}

fn parse_leaf(s: &str) -> Result<slotguard::LeafKind, String> {
    slotguard::LeafKind::parse(s).map_err(|e| e.to_string())
}

impl LoadArgs {
    pub(crate) fn config(&self) -> load::LoadConfig {
        load::LoadConfig {
            workers: usize::try_from(self.workers).unwrap_or(16),
            keys: usize::try_from(self.keys).unwrap_or(10_000),
            timeout: Duration::from_millis(self.timeout_ms),
            write_pct: u32::try_from(self.write_pct).unwrap_or(10),
            hedge: !self.no_hedge,
            redis_rs: false,
            leaf: self.leaf,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Everything runs from this thread: the local cluster's servers live
    // exactly as long as it (see slotguard_testkit::LocalCluster).
    match cli.command {
        Command::Demo(args) => {
            // Before the demo builds its stack (which takes the global meter).
            if let Err(e) = metrics::start(&args.metrics) {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
            demo::run(args)
        }
        Command::Bench(args) => bench::run(args),
        Command::Doctor(args) => doctor::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn phases_parse_from_a_comma_list() {
        let cli = Cli::try_parse_from([
            "slotguard",
            "demo",
            "--phases",
            "manual-failover,healthy",
            "--seconds",
            "2",
            "--json",
        ])
        .unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(
            args.phases,
            vec![
                runner::PhaseName::ManualFailover,
                runner::PhaseName::Healthy
            ]
        );
        assert_eq!(args.load.seconds, 2);
        assert!(args.load.json);
        assert!(Cli::try_parse_from(["slotguard", "demo", "--phases", "nope"]).is_err());
        assert!(Cli::try_parse_from(["slotguard", "demo", "--seconds", "0"]).is_err());
    }

    #[test]
    fn demo_takes_the_leaf_kind() {
        let leaf = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Demo(args)) => Ok(args.load.leaf),
            Ok(other) => panic!("not demo: {other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            leaf(&["slotguard", "demo"]).unwrap(),
            slotguard::LeafKind::Node
        );
        assert_eq!(
            leaf(&["slotguard", "demo", "--leaf", "fred"]).unwrap(),
            slotguard::LeafKind::Fred
        );
        assert!(leaf(&["slotguard", "demo", "--leaf", "nope"]).is_err());
    }

    #[test]
    fn throughput_lists_parse_and_default() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["slotguard", "bench", "throughput"];
            argv.extend_from_slice(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Bench(bench::BenchArgs {
                    which: bench::Bench::Throughput(t),
                })) => Ok(t),
                Ok(other) => panic!("not bench throughput: {other:?}"),
                Err(e) => Err(e),
            }
        };
        let t = parse(&[]).unwrap();
        assert_eq!(t.concurrency, vec![1, 16, 64, 256]);
        assert_eq!(
            t.loads,
            vec![
                bench::throughput::LoadKind::Get,
                bench::throughput::LoadKind::Set,
                bench::throughput::LoadKind::Mix
            ]
        );
        assert_eq!(
            (t.seconds, t.rounds, t.keys, t.value_size),
            (3, 3, 10_000, 100)
        );
        assert!(t.seeds.is_empty() && !t.json);

        let t = parse(&[
            "--concurrency",
            "1,4",
            "--loads",
            "get",
            "--seconds",
            "1",
            "--rounds",
            "1",
            "--seeds",
            "127.0.0.1:7000,127.0.0.1:7001",
            "--json",
        ])
        .unwrap();
        assert_eq!(t.concurrency, vec![1, 4]);
        assert_eq!(t.loads, vec![bench::throughput::LoadKind::Get]);
        assert_eq!(t.seeds.len(), 2);
        assert_eq!(t.seeds[1].port(), 7001);
        assert!(t.json);

        assert!(parse(&["--concurrency", "0"]).is_err());
        assert!(parse(&["--loads", "scan"]).is_err());
        assert!(parse(&["--seeds", "nohost"]).is_err());
        assert!(parse(&["--rounds", "0"]).is_err());
    }
}
