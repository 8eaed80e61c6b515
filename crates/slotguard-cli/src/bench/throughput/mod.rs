//! `slotguard bench throughput`: healthy-path speed of slotguard's leaf and
//! full stack, side by side with fred's and redis-rs's cluster clients, and
//! `redis-benchmark --cluster` as the machine's limit.
//!
//! One process, one cluster, all clients connected for the whole run;
//! rounds alternate the client order, and each (load, concurrency, client)
//! cell reports the median over rounds, so drift (CPU frequency, another
//! build on the machine) hits every client alike.

mod cell;
mod clients;
mod output;
mod redis_benchmark;
mod redis_rs;
mod rounds;
mod summary;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{ClientLike, KeysInterface};
use slotguard::{BoxError, NodeAddr};
use slotguard_testkit::{ClusterSpec, LocalCluster};

use crate::progress::Progress;
use cell::{Data, MIX_WRITE_PCT};
use clients::{BenchClient, FredCluster};
use output::{Machine, Output, Settings};
pub(crate) use summary::LoadKind;

/// Arguments of `slotguard bench throughput`.
#[derive(Debug, clap::Args)]
pub(crate) struct ThroughputArgs {
    /// Measured seconds per (load, concurrency, client) cell per round.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) seconds: u64,
    /// Rounds; each runs every cell once, with the client order rotated.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub(crate) rounds: u64,
    /// Closed-loop tasks per cell (comma-separated list).
    #[arg(long, value_delimiter = ',', default_values_t = [1u64, 16, 64, 256],
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub(crate) concurrency: Vec<u64>,
    /// Loads to run (comma-separated): get, set, mix (90 % GET, 10 % SET),
    /// zipf (the mix with keys drawn Zipf(0.99): a few keys are hot).
    #[arg(long, alias = "load", value_enum, value_delimiter = ',',
          default_values_t = [LoadKind::Get, LoadKind::Set, LoadKind::Mix])]
    pub(crate) loads: Vec<LoadKind>,
    /// Distinct keys, spread over every shard, all written before the first cell.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub(crate) keys: u64,
    /// Bytes of every value.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=1_048_576))]
    pub(crate) value_size: u64,
    /// Unrecorded load before each cell's window, in milliseconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub(crate) warmup_ms: u64,
    /// An existing cluster's nodes (host:port, comma-separated) instead of a
    /// local one. Its keys `sg:tput:*` are overwritten.
    #[arg(long, value_delimiter = ',')]
    pub(crate) seeds: Vec<NodeAddr>,
    /// Print exactly one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    pub(crate) json: bool,
    /// Skip the redis-benchmark reference run after each cell.
    #[arg(long)]
    pub(crate) no_redis_benchmark: bool,
}

/// Longest the initial key load may take.
const POPULATE_DEADLINE: Duration = Duration::from_secs(120);

/// Deduplicated, in the order given.
fn unique<T: PartialEq + Copy>(v: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    for &x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

pub(crate) fn run(args: ThroughputArgs) -> ExitCode {
    let progress = Progress::new(false);
    // The local cluster (when there is one) is started on, and dropped by,
    // this thread: the testkit ties its servers' lives to it.
    let (cluster, seeds) = if args.seeds.is_empty() {
        if let Some(program) = crate::runner::missing_redis_server() {
            eprintln!(
                "slotguard bench: {}",
                crate::runner::not_installed(&program).0
            );
            return ExitCode::from(2);
        }
        progress.note("starting a local Redis Cluster (3 primaries, 1 replica each)...");
        let cluster = match LocalCluster::start(ClusterSpec::default()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "slotguard bench: {}",
                    crate::runner::cluster_start_error(e).0
                );
                return ExitCode::from(2);
            }
        };
        let seeds: Result<Vec<NodeAddr>, _> = cluster.seeds().iter().map(|s| s.parse()).collect();
        match seeds {
            Ok(s) => (Some(cluster), s),
            Err(e) => {
                eprintln!("slotguard bench: bad node address: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        (None, args.seeds.clone())
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slotguard bench: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cluster_name = match &cluster {
        Some(_) => "local (3 primaries, 1 replica each)".to_owned(),
        None => seeds
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    let result = rt.block_on(bench(&args, &seeds, cluster_name, &progress));
    // Clients and their connection tasks go before the servers do.
    drop(rt);
    drop(cluster);
    match result {
        Ok(out) => {
            if args.json {
                if !crate::report::print_json("bench", &out) {
                    return ExitCode::FAILURE;
                }
            } else {
                print!("{}", output::render(&out));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("slotguard bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(
    args: &ThroughputArgs,
    seeds: &[NodeAddr],
    cluster: String,
    progress: &Progress,
) -> Result<Output, BoxError> {
    let loads = unique(&args.loads);
    let concurrency = unique(&args.concurrency);
    let data = Arc::new(Data::new(
        usize::try_from(args.keys)?,
        usize::try_from(args.value_size)?,
    ));
    let first = seeds.first().ok_or("no seed node")?;
    let redis_version = clients::redis_version(first)
        .await
        .map_err(|e| format!("could not read the redis version from {first}: {e}"))?;
    let contenders = rounds::connect(seeds, &data, progress).await?;
    let with_rb = !args.no_redis_benchmark && redis_benchmark_installed(progress);

    progress.note(&format!(
        "writing {} keys of {} B...",
        data.keys.len(),
        data.value.len()
    ));
    tokio::time::timeout(POPULATE_DEADLINE, populate(&contenders.fred, &data))
        .await
        .map_err(|_| format!("the keys were not written within {POPULATE_DEADLINE:?}"))??;

    let plan = rounds::Plan {
        args,
        seeds,
        data: data.clone(),
        rounds: usize::try_from(args.rounds)?,
        loads: &loads,
        concurrency: &concurrency,
        with_rb,
        progress,
    };
    let measured = rounds::run_rounds(&plan, &contenders).await?;
    let _ = contenders.fred.0.quit().await;

    let ref_rows = summary::summarise_refs(&measured.refs, &loads, &concurrency);
    Ok(Output {
        rows: summary::summarise(&measured.cells, &ref_rows, &loads, &concurrency),
        redis_benchmark: ref_rows,
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpu_model(),
            os: std::env::consts::OS,
            redis_version,
        },
        settings: Settings {
            seconds: args.seconds,
            rounds: plan.rounds,
            warmup_ms: args.warmup_ms,
            keys: args.keys,
            value_size: data.value.len(),
            loads: loads.clone(),
            concurrency: concurrency.clone(),
            mix_write_pct: MIX_WRITE_PCT,
            cluster,
            client_order: measured.client_order,
            redis_benchmark: with_rb,
            clients: output::clients(),
        },
    })
}

/// Whether `redis-benchmark` can be started (a note says so when not).
fn redis_benchmark_installed(progress: &Progress) -> bool {
    let ok = std::process::Command::new("redis-benchmark")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        progress.note("redis-benchmark is not installed: no reference run");
    }
    ok
}

/// redis-benchmark at `concurrency` in flight, sized to run about as long as
/// a cell's window per command at the `fastest` client's rate.
async fn reference(
    seeds: &[NodeAddr],
    args: &ThroughputArgs,
    load: LoadKind,
    concurrency: u64,
    fastest: f64,
) -> Result<redis_benchmark::Measured, BoxError> {
    let seed = seeds.first().ok_or("no seed node")?;
    let requests = ((fastest * args.seconds as f64) as u64).max(1_000);
    let r = redis_benchmark::run(redis_benchmark::Run {
        seed,
        concurrency,
        requests,
        keys: args.keys,
        value_size: args.value_size,
        // generous: it may be several times faster or slower than our clients
        deadline: Duration::from_secs(30 + 20 * args.seconds),
    })
    .await
    .map_err(|e| format!("redis-benchmark ({} c={concurrency}): {e}", load.as_str()))?;
    Ok(r)
}

/// Write every key once through fred's cluster client (the reference), 64
/// writes in flight.
async fn populate(fred: &FredCluster, data: &Arc<Data>) -> Result<(), BoxError> {
    const TASKS: usize = 64;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let client = fred.0.clone();
        let data = data.clone();
        handles.push(tokio::spawn(async move {
            for key in data.keys.iter().skip(t).step_by(TASKS) {
                client
                    .set::<(), _, _>(key.clone(), data.value.clone(), None, None, false)
                    .await
                    .map_err(|e| format!("could not write {key:?}: {e}"))?;
            }
            Ok::<(), String>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    // Every client must find what was written: a nil GET counts as an error.
    let mut probe = fred.clone();
    let last = data.keys.last().cloned().unwrap_or_else(Bytes::new);
    if !probe.get(last.clone()).await? {
        return Err(format!("key {last:?} reads back as nil after the load").into());
    }
    Ok(())
}

/// The CPU's model name from `/proc/cpuinfo` (Linux), for the header.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_keeps_the_first_of_each() {
        assert_eq!(unique(&[1, 16, 1, 64, 16]), vec![1, 16, 64]);
        assert_eq!(unique::<u64>(&[]), Vec::<u64>::new());
    }
}
