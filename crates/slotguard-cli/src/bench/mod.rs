//! `slotguard bench`: one module per benchmark. [`failover`] drives the
//! demo's cluster, stack and load (`crate::demo::{load, runner, stats}`,
//! shared, not copied) through one frozen primary; [`throughput`] compares
//! clients on the healthy path.

pub(crate) mod failover;
pub(crate) mod throughput;

use std::process::ExitCode;

/// Arguments of `slotguard bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) which: Bench,
}

/// The benchmarks.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Bench {
    /// SIGSTOP one primary under load: reads answered and latency of its
    /// shard and of the others, time to the first replica answer and to the
    /// first write after the promotion.
    Failover(failover::FailoverArgs),
    /// Healthy-path ops/s and latency of slotguard's leaf and full stack
    /// next to fred's own cluster client: closed-loop GET, SET and a 90/10
    /// mix at several concurrencies, alternating rounds in one process,
    /// medians over rounds and ratios to fred.
    Throughput(throughput::ThroughputArgs),
}

/// Run the chosen benchmark.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    match args.which {
        Bench::Failover(args) => failover::run(args),
        Bench::Throughput(args) => throughput::run(args),
    }
}
