//! The pure part of `bench throughput`: names, percentiles, the median over
//! rounds, ratios to fred's cluster client and to redis-benchmark, the JSON
//! object and the table.

use serde::Serialize;

/// What the closed loop issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LoadKind {
    /// GET only.
    Get,
    /// SET only.
    Set,
    /// 90 % GET, 10 % SET.
    Mix,
    /// 90 % GET, 10 % SET, keys drawn Zipf(0.99) (a read-mostly hot-key load).
    Zipf,
}

impl LoadKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LoadKind::Get => "get",
            LoadKind::Set => "set",
            LoadKind::Mix => "mix",
            LoadKind::Zipf => "zipf",
        }
    }
}

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientName {
    /// fred 10.1's own cluster client, default config.
    FredCluster,
    /// slotguard's leaf with routing only (slot_refresh → NodeService).
    Leaf,
    /// The recommended stack without a store: `SlotGuard` with defaults.
    Stack,
    /// The same with an SQLite store behind it (fallback, near-cache,
    /// client tracking, client-side caching on by default):
    /// `SlotGuard::builder(..).store(..)`.
    StackStore,
    /// redis-rs's async cluster client (`redis::cluster::ClusterClient`).
    RedisRsCluster,
    /// `stack_store` with client-side caching off
    /// (`SlotGuardBuilder::client_side_caching(Duration::ZERO)`): what the
    /// store path costs on a read that goes to the cluster.
    StackStoreNoCsc,
    /// The recommended stack without a store over the fred-backed leaf:
    /// `SlotGuard::builder(..).leaf_kind(LeafKind::Fred)`.
    StackFredLeaf,
}

impl ClientName {
    /// Every client; fred first, the reference of the ratios.
    pub(crate) const ALL: [ClientName; 7] = [
        ClientName::FredCluster,
        ClientName::Leaf,
        ClientName::Stack,
        ClientName::StackStore,
        ClientName::RedisRsCluster,
        ClientName::StackStoreNoCsc,
        ClientName::StackFredLeaf,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientName::FredCluster => "fred_cluster",
            ClientName::Leaf => "leaf",
            ClientName::Stack => "stack",
            ClientName::StackStore => "stack_store",
            ClientName::RedisRsCluster => "redis_rs_cluster",
            ClientName::StackStoreNoCsc => "stack_store_no_csc",
            ClientName::StackFredLeaf => "stack_fred_leaf",
        }
    }

    /// The order the clients run in during round `round`: rotated each
    /// round, so none always runs first (on a cold cache, connections, CPU
    /// frequency) over a run of as many rounds as there are clients.
    pub(crate) fn order(round: usize) -> Vec<ClientName> {
        let mut all = Self::ALL.to_vec();
        let n = all.len();
        all.rotate_left(round % n);
        all
    }
}

/// One client's figures in one cell of one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Successful operations per second (errors do not count).
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) errors: u64,
    pub(crate) write_syscalls_per_op: Option<f64>,
    pub(crate) cpu_us_per_op: Option<f64>,
    pub(crate) near_cache_share: Option<f64>,
}

/// A sample with the cell it belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cell {
    pub(crate) load: LoadKind,
    pub(crate) concurrency: u64,
    pub(crate) client: ClientName,
    pub(crate) round: usize,
    pub(crate) sample: Sample,
}

/// One reported row: the median over rounds of one (load, concurrency,
/// client), with ratios to fred's cluster client in the same cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Row {
    pub(crate) load: LoadKind,
    pub(crate) concurrency: u64,
    pub(crate) client: ClientName,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    /// `ops_per_sec` / fred_cluster's `ops_per_sec` (null when fred did none).
    pub(crate) ratio_to_fred: Option<f64>,
    /// `p99_us` / fred_cluster's `p99_us` (below 1 is better).
    pub(crate) p99_ratio_to_fred: Option<f64>,
    /// `ops_per_sec` / redis-benchmark's in the same cell (null when it did
    /// not run); see [`RefRow`].
    pub(crate) ratio_to_redis_benchmark: Option<f64>,
    /// Failed operations over all rounds.
    pub(crate) errors: u64,
    /// Each round's `ops_per_sec`, in round order (the spread behind the median).
    pub(crate) ops_per_sec_by_round: Vec<f64>,
    /// `write`/`writev` syscalls of the whole process per operation (Linux
    /// `/proc/self/io` `syscw`): socket writes plus tokio's eventfd wake-ups.
    pub(crate) write_syscalls_per_op: Option<f64>,
    /// CPU time of the whole bench process per successful operation, in µs
    /// (every thread, from `/proc/self/task/*/schedstat`): what a client
    /// costs its host, for comparing clients within one run (between runs
    /// it moves about as much as ops/s on a shared machine). Only the
    /// measured client runs in a cell; the others are connected and idle.
    pub(crate) cpu_us_per_op: Option<f64>,
    /// Share of all operations (reads and writes) that the client's
    /// near-cache answered, without a round trip (null for clients without
    /// one).
    pub(crate) near_cache_share: Option<f64>,
}

/// Nearest-rank percentile of sorted `v` (`q` in 0..=1); 0 when empty.
pub(crate) fn percentile_ns(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (mean of the middle two for an even count); `None` when empty.
pub(crate) fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// `a / b` to 3 decimals; `None` when `b` is not positive.
pub(crate) fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| round(a / b, 3))
}

/// `x` to `d` decimals.
pub(crate) fn round(x: f64, d: i32) -> f64 {
    let f = 10f64.powi(d);
    (x * f).round() / f
}

/// redis-benchmark's figures in one cell of one round (see
/// [`super::redis_benchmark`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RefCell {
    pub(crate) load: LoadKind,
    pub(crate) concurrency: u64,
    pub(crate) round: usize,
    pub(crate) ops_per_sec: f64,
    pub(crate) p99_us: f64,
}

/// redis-benchmark's reported row for one (load, concurrency): medians over
/// rounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct RefRow {
    pub(crate) load: LoadKind,
    pub(crate) concurrency: u64,
    pub(crate) ops_per_sec: f64,
    /// For the mixed loads: the slower of its SET and GET p99.
    pub(crate) p99_us: f64,
    pub(crate) ops_per_sec_by_round: Vec<f64>,
}

/// One [`RefRow`] per (load, concurrency) that has a sample.
pub(crate) fn summarise_refs(
    refs: &[RefCell],
    loads: &[LoadKind],
    concurrency: &[u64],
) -> Vec<RefRow> {
    let mut rows = Vec::new();
    for &load in loads {
        for &c in concurrency {
            let mut v: Vec<&RefCell> = refs
                .iter()
                .filter(|x| x.load == load && x.concurrency == c)
                .collect();
            v.sort_by_key(|x| x.round);
            let Some(ops) = median(v.iter().map(|x| x.ops_per_sec)) else {
                continue;
            };
            rows.push(RefRow {
                load,
                concurrency: c,
                ops_per_sec: round(ops, 1),
                p99_us: round(median(v.iter().map(|x| x.p99_us)).unwrap_or(0.0), 1),
                ops_per_sec_by_round: v.iter().map(|x| round(x.ops_per_sec, 1)).collect(),
            });
        }
    }
    rows
}

/// One row per (load, concurrency, client) in the given orders, for every
/// combination that has at least one sample; `refs` are redis-benchmark's
/// rows (from [`summarise_refs`]).
pub(crate) fn summarise(
    cells: &[Cell],
    refs: &[RefRow],
    loads: &[LoadKind],
    concurrency: &[u64],
) -> Vec<Row> {
    let mut rows = Vec::new();
    for &load in loads {
        for &c in concurrency {
            let of = |client: ClientName| -> Vec<&Cell> {
                let mut v: Vec<&Cell> = cells
                    .iter()
                    .filter(|x| x.load == load && x.concurrency == c && x.client == client)
                    .collect();
                v.sort_by_key(|x| x.round);
                v
            };
            let med = |v: &[&Cell], f: fn(&Sample) -> f64| median(v.iter().map(|x| f(&x.sample)));
            let med_opt = |v: &[&Cell], f: fn(&Sample) -> Option<f64>| {
                median(v.iter().filter_map(|x| f(&x.sample))).map(|m| round(m, 2))
            };
            let fred = of(ClientName::FredCluster);
            let fred_ops = med(&fred, |s| s.ops_per_sec).unwrap_or(0.0);
            let fred_p99 = med(&fred, |s| s.p99_us).unwrap_or(0.0);
            let rb_ops = refs
                .iter()
                .find(|r| r.load == load && r.concurrency == c)
                .map_or(0.0, |r| r.ops_per_sec);
            for client in ClientName::ALL {
                let v = of(client);
                let Some(ops) = med(&v, |s| s.ops_per_sec) else {
                    continue;
                };
                let p99 = med(&v, |s| s.p99_us).unwrap_or(0.0);
                rows.push(Row {
                    load,
                    concurrency: c,
                    client,
                    ops_per_sec: round(ops, 1),
                    p50_us: round(med(&v, |s| s.p50_us).unwrap_or(0.0), 1),
                    p99_us: round(p99, 1),
                    p999_us: round(med(&v, |s| s.p999_us).unwrap_or(0.0), 1),
                    ratio_to_fred: ratio(ops, fred_ops),
                    p99_ratio_to_fred: ratio(p99, fred_p99),
                    ratio_to_redis_benchmark: ratio(ops, rb_ops),
                    errors: v.iter().map(|x| x.sample.errors).sum(),
                    ops_per_sec_by_round: v
                        .iter()
                        .map(|x| round(x.sample.ops_per_sec, 1))
                        .collect(),
                    write_syscalls_per_op: med_opt(&v, |s| s.write_syscalls_per_op),
                    cpu_us_per_op: med_opt(&v, |s| s.cpu_us_per_op).map(|c| round(c, 3)),
                    near_cache_share: med_opt(&v, |s| s.near_cache_share).map(|c| round(c, 3)),
                });
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::throughput::output::{clients, render, Machine, Output, Settings};

    fn sample(ops: f64, p99: f64, errors: u64) -> Sample {
        Sample {
            ops_per_sec: ops,
            p50_us: p99 / 2.0,
            p99_us: p99,
            p999_us: p99 * 2.0,
            errors,
            write_syscalls_per_op: Some(1.0),
            cpu_us_per_op: Some(2.0),
            near_cache_share: None,
        }
    }

    fn cell(client: ClientName, round: usize, ops: f64, p99: f64, errors: u64) -> Cell {
        Cell {
            load: LoadKind::Get,
            concurrency: 16,
            client,
            round,
            sample: sample(ops, p99, errors),
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([7.0]), Some(7.0));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_ns(&v, 0.5), 500);
        assert_eq!(percentile_ns(&v, 0.99), 990);
        assert_eq!(percentile_ns(&v, 0.999), 999);
        assert_eq!(percentile_ns(&v, 1.0), 1000);
        assert_eq!(percentile_ns(&v, 0.0), 1);
        assert_eq!(percentile_ns(&[], 0.5), 0);
        assert_eq!(percentile_ns(&[5], 0.999), 5);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(50.0, 100.0), Some(0.5));
        assert_eq!(ratio(2.0, 3.0), Some(0.667));
        assert_eq!(ratio(1.0, 0.0), None);
    }

    #[test]
    fn client_order_rotates() {
        use ClientName::*;
        assert_eq!(
            ClientName::order(0),
            [
                FredCluster,
                Leaf,
                Stack,
                StackStore,
                RedisRsCluster,
                StackStoreNoCsc,
                StackFredLeaf
            ]
        );
        assert_eq!(
            ClientName::order(1),
            [
                Leaf,
                Stack,
                StackStore,
                RedisRsCluster,
                StackStoreNoCsc,
                StackFredLeaf,
                FredCluster
            ]
        );
        let n = ClientName::ALL.len();
        assert_eq!(ClientName::order(n), ClientName::order(0));
        // over n rounds each client goes first once
        let firsts: Vec<ClientName> = (0..n).map(|r| ClientName::order(r)[0]).collect();
        for c in ClientName::ALL {
            assert_eq!(firsts.iter().filter(|&&f| f == c).count(), 1);
        }
    }

    #[test]
    fn rows_are_medians_with_ratios_to_fred() {
        use ClientName::*;
        let cells = [
            cell(FredCluster, 0, 100.0, 10.0, 0),
            cell(FredCluster, 1, 300.0, 30.0, 0),
            cell(FredCluster, 2, 200.0, 20.0, 0),
            cell(Leaf, 0, 50.0, 40.0, 1),
            cell(Leaf, 1, 100.0, 40.0, 2),
            cell(Leaf, 2, 150.0, 40.0, 0),
            cell(Stack, 1, 400.0, 10.0, 0),
        ];
        let refs = summarise_refs(
            &[
                RefCell {
                    load: LoadKind::Get,
                    concurrency: 16,
                    round: 0,
                    ops_per_sec: 800.0,
                    p99_us: 5.0,
                },
                RefCell {
                    load: LoadKind::Get,
                    concurrency: 16,
                    round: 1,
                    ops_per_sec: 400.0,
                    p99_us: 7.0,
                },
            ],
            &[LoadKind::Get, LoadKind::Set],
            &[16, 64],
        );
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(refs[0].ops_per_sec, 600.0);
        assert_eq!(refs[0].p99_us, 6.0);
        let rows = summarise(&cells, &refs, &[LoadKind::Get, LoadKind::Set], &[16, 64]);
        assert_eq!(rows.len(), 3, "only cells that ran: {rows:?}");
        assert_eq!(
            rows.iter().map(|r| r.client).collect::<Vec<_>>(),
            [FredCluster, Leaf, Stack]
        );
        let (fred, leaf, stack) = (&rows[0], &rows[1], &rows[2]);
        assert_eq!(fred.ops_per_sec, 200.0);
        assert_eq!(fred.ratio_to_fred, Some(1.0));
        assert_eq!(fred.p99_ratio_to_fred, Some(1.0));
        assert_eq!(fred.ops_per_sec_by_round, [100.0, 300.0, 200.0]);
        assert_eq!(leaf.ops_per_sec, 100.0);
        assert_eq!(leaf.ratio_to_fred, Some(0.5));
        assert_eq!(leaf.p99_ratio_to_fred, Some(2.0));
        assert_eq!(leaf.errors, 3, "errors add up over rounds");
        assert_eq!(stack.ratio_to_fred, Some(2.0));
        assert_eq!(stack.ratio_to_redis_benchmark, Some(0.667));
        assert_eq!(fred.ratio_to_redis_benchmark, Some(0.333));
        assert_eq!(stack.p99_ratio_to_fred, Some(0.5));
        assert_eq!(stack.write_syscalls_per_op, Some(1.0));
    }

    #[test]
    fn json_shape() {
        let cells = [
            cell(ClientName::FredCluster, 0, 100.0, 10.0, 0),
            cell(ClientName::Leaf, 0, 80.0, 12.0, 0),
        ];
        let out = Output {
            rows: summarise(&cells, &[], &[LoadKind::Get], &[16]),
            redis_benchmark: Vec::new(),
            machine: Machine {
                cores: 2,
                cpu_model: None,
                os: "linux",
                redis_version: "7.0.15".into(),
            },
            settings: Settings {
                seconds: 3,
                rounds: 1,
                warmup_ms: 300,
                keys: 10,
                value_size: 100,
                loads: vec![LoadKind::Get],
                concurrency: vec![16],
                mix_write_pct: 10,
                cluster: "local".into(),
                client_order: vec![ClientName::order(0)],
                redis_benchmark: false,
                clients: clients(),
            },
        };
        let v = serde_json::to_value(&out).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["machine", "redis_benchmark", "rows", "settings"]);
        let row = &v["rows"][1];
        assert_eq!(row["load"], "get");
        assert_eq!(row["concurrency"], 16);
        assert_eq!(row["client"], "leaf");
        assert_eq!(row["ratio_to_fred"], 0.8);
        assert_eq!(row["p99_ratio_to_fred"], 1.2);
        assert_eq!(row["errors"], 0);
        assert!(row["ratio_to_redis_benchmark"].is_null(), "{row}");
        for k in ["ops_per_sec", "p50_us", "p99_us", "p999_us"] {
            assert!(row[k].is_f64(), "{k} in {row}");
        }
        assert_eq!(v["rows"][0]["client"], "fred_cluster");
        assert_eq!(v["machine"]["redis_version"], "7.0.15");
        assert_eq!(v["settings"]["client_order"][0][0], "fred_cluster");
        assert!(render(&out).contains("fred_cluster"));
    }
}
