//! The physical limit of the machine as a reference: `redis-benchmark
//! --cluster` (C, one event loop, no client library) at the same number of
//! requests in flight as a cell, run in the same bench between its clients.
//!
//! redis-benchmark runs SET and then GET (`-t set,get`, keys drawn uniformly
//! from `-r <keys>`, `-d <value size>`), each for `-n` requests. A cell of the
//! mixed loads is compared with the rate the two measured rates give at the
//! load's GET/SET shares (`1 / (0.9 / get + 0.1 / set)`): redis-benchmark
//! cannot mix commands, nor draw keys from a Zipf law.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use slotguard::{BoxError, NodeAddr};

use super::cell::MIX_WRITE_PCT;
use super::summary::LoadKind;

/// What one redis-benchmark run measured (ops/s and p99 per command).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Measured {
    pub(crate) set_rps: f64,
    pub(crate) get_rps: f64,
    pub(crate) set_p99_us: f64,
    pub(crate) get_p99_us: f64,
}

impl Measured {
    /// The reference ops/s for `load`.
    pub(crate) fn ops_per_sec(&self, load: LoadKind) -> f64 {
        match load {
            LoadKind::Get => self.get_rps,
            LoadKind::Set => self.set_rps,
            LoadKind::Mix | LoadKind::Zipf => {
                let w = MIX_WRITE_PCT as f64 / 100.0;
                if self.get_rps <= 0.0 || self.set_rps <= 0.0 {
                    return 0.0;
                }
                1.0 / ((1.0 - w) / self.get_rps + w / self.set_rps)
            }
        }
    }

    /// The reference p99 for `load` (the slower command's for the mixes).
    pub(crate) fn p99_us(&self, load: LoadKind) -> f64 {
        match load {
            LoadKind::Get => self.get_p99_us,
            LoadKind::Set => self.set_p99_us,
            LoadKind::Mix | LoadKind::Zipf => self.get_p99_us.max(self.set_p99_us),
        }
    }
}

/// How one run is set up.
#[derive(Debug, Clone)]
pub(crate) struct Run<'a> {
    pub(crate) seed: &'a NodeAddr,
    pub(crate) concurrency: u64,
    pub(crate) requests: u64,
    pub(crate) keys: u64,
    pub(crate) value_size: u64,
    pub(crate) deadline: Duration,
}

impl Run<'_> {
    /// The command line (without the program).
    pub(crate) fn args(&self) -> Vec<String> {
        [
            "--cluster",
            "-h",
            self.seed.host(),
            "-p",
            &self.seed.port().to_string(),
            "-c",
            &self.concurrency.to_string(),
            "-n",
            &self.requests.to_string(),
            "-t",
            "set,get",
            "-d",
            &self.value_size.to_string(),
            "-r",
            &self.keys.to_string(),
            "--csv",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }
}

/// Run redis-benchmark (on a blocking thread); killed when `deadline` passes.
pub(crate) async fn run(spec: Run<'_>) -> Result<Measured, BoxError> {
    let args = spec.args();
    let deadline = spec.deadline;
    tokio::task::spawn_blocking(move || run_blocking(&args, deadline)).await?
}

fn run_blocking(args: &[String], deadline: Duration) -> Result<Measured, BoxError> {
    let mut child = Command::new("redis-benchmark")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start redis-benchmark: {e}"))?;
    let started = Instant::now();
    // Poll rather than block in `wait`: a run that hangs (a sick cluster) is
    // killed, never left behind.
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-benchmark ran longer than {deadline:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("redis-benchmark failed: {}", out.status).into());
    }
    parse_csv(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| "redis-benchmark printed no SET and GET rows".into())
}

/// The SET and GET rows of `redis-benchmark --csv` output.
pub(crate) fn parse_csv(text: &str) -> Option<Measured> {
    let mut set = None;
    let mut get = None;
    for line in text.lines() {
        let cols: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        // test, rps, avg, min, p50, p95, p99, max
        if cols.len() < 7 {
            continue;
        }
        let (Ok(rps), Ok(p99_ms)) = (cols[1].parse::<f64>(), cols[6].parse::<f64>()) else {
            continue;
        };
        match cols[0] {
            "SET" => set = Some((rps, p99_ms * 1000.0)),
            "GET" => get = Some((rps, p99_ms * 1000.0)),
            _ => {}
        }
    }
    let (set_rps, set_p99_us) = set?;
    let (get_rps, get_p99_us) = get?;
    Some(Measured {
        set_rps,
        get_rps,
        set_p99_us,
        get_p99_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                       \"SET\",\"50000.00\",\"0.042\",\"0.008\",\"0.023\",\"0.047\",\"0.631\",\"3.495\"\n\
                       \"GET\",\"100000.00\",\"0.048\",\"0.008\",\"0.023\",\"0.047\",\"0.519\",\"3.847\"\n";

    #[test]
    fn csv_rows_become_rates() {
        let m = parse_csv(CSV).expect("parsed");
        assert_eq!(m.set_rps, 50_000.0);
        assert_eq!(m.get_rps, 100_000.0);
        assert_eq!(m.get_p99_us, 519.0);
        assert_eq!(m.ops_per_sec(LoadKind::Get), 100_000.0);
        assert_eq!(m.ops_per_sec(LoadKind::Set), 50_000.0);
        // 0.9 / 100k + 0.1 / 50k = 11 µs per op
        let mix = m.ops_per_sec(LoadKind::Mix);
        assert!((mix - 1e6 / 11.0).abs() < 1e-6, "{mix}");
        assert_eq!(m.p99_us(LoadKind::Zipf), 631.0);
        assert_eq!(parse_csv("\"test\",\"rps\"\n"), None);
    }

    #[test]
    fn command_line() {
        let seed: NodeAddr = "127.0.0.1:7000".parse().expect("addr");
        let run = Run {
            seed: &seed,
            concurrency: 16,
            requests: 1000,
            keys: 10,
            value_size: 100,
            deadline: Duration::from_secs(1),
        };
        assert_eq!(
            run.args().join(" "),
            "--cluster -h 127.0.0.1 -p 7000 -c 16 -n 1000 -t set,get -d 100 -r 10 --csv"
        );
    }
}
