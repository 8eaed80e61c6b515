//! What `bench throughput` prints: the run's setup and machine, what each
//! client is, and the table or the one JSON object.

use std::fmt::Write as _;

use serde::Serialize;

use super::summary::{ClientName, LoadKind, RefRow, Row};

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Machine {
    /// Logical CPUs this process may use (also tokio's worker count).
    pub(crate) cores: usize,
    pub(crate) cpu_model: Option<String>,
    pub(crate) os: &'static str,
    pub(crate) redis_version: String,
}

/// How the run was set up.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) seconds: u64,
    pub(crate) rounds: usize,
    pub(crate) warmup_ms: u64,
    pub(crate) keys: u64,
    pub(crate) value_size: usize,
    pub(crate) loads: Vec<LoadKind>,
    pub(crate) concurrency: Vec<u64>,
    pub(crate) mix_write_pct: u64,
    /// `local (3 primaries, 1 replica each)` or the seeds given.
    pub(crate) cluster: String,
    /// The client order of each round.
    pub(crate) client_order: Vec<Vec<ClientName>>,
    /// Whether redis-benchmark ran after each cell's clients.
    pub(crate) redis_benchmark: bool,
    pub(crate) clients: Clients,
}

/// What each client is.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Clients {
    pub(crate) fred_cluster: &'static str,
    pub(crate) leaf: &'static str,
    pub(crate) stack: String,
    pub(crate) stack_store: &'static str,
    pub(crate) redis_rs_cluster: &'static str,
    pub(crate) stack_store_no_csc: &'static str,
    pub(crate) redis_benchmark: &'static str,
    pub(crate) stack_fred_leaf: &'static str,
}

/// The descriptions printed with the results; the stack's layers come from
/// the one statement of the recommended order.
pub(crate) fn clients() -> Clients {
    let order =
        slotguard::layers::recommended_order_without(&[slotguard::layers::LayerName::Fallback]);
    Clients {
        fred_cluster:
            "fred 10.1 cluster client, Builder + ServerConfig::new_clustered, default config",
        leaf:
            "slot_refresh → NodeService (NodeConfig::default, with_topology as the docs build it)",
        stack: format!(
        "SlotGuard::builder(seeds).connect(): {} (circuit_breaker per node, leaf NodeService), \
         HealthProber running; all defaults",
        slotguard::layers::describe_order(&order)
    ),
        stack_store:
            "SlotGuard::builder(seeds).store(SqliteStore).connect(): the same with fallback \
                  (near-cache, RESP3 client tracking, client-side caching of entries up to 2 s \
                  old) on top; all defaults",
        redis_rs_cluster: "redis-rs 1.x async cluster client, ClusterClient::new(seeds) + \
                       get_async_connection(), default config",
        stack_store_no_csc:
            "stack_store with .client_side_caching(Duration::ZERO): every healthy read goes \
                to the cluster",
        stack_fred_leaf:
            "SlotGuard::builder(seeds).leaf_kind(LeafKind::Fred).connect(): the stack \
                      over FredLeaf (one centralized fred client per node, PING reply marker); \
                      all defaults",
        redis_benchmark:
            "redis-benchmark --cluster -c <concurrency> -t set,get -r <keys> -d <value \
                      size> (the reference, no client library); mix and zipf compared with \
                      1 / (0.9 / get + 0.1 / set) of its uniform-key rates",
    }
}

/// The one JSON object `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Output {
    pub(crate) rows: Vec<Row>,
    /// redis-benchmark's figures per cell (empty with `--no-redis-benchmark`).
    pub(crate) redis_benchmark: Vec<RefRow>,
    pub(crate) machine: Machine,
    pub(crate) settings: Settings,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

/// The table `bench throughput` prints without `--json`.
pub(crate) fn render(o: &Output) -> String {
    let mut out = render_setup(o);
    render_rows(&mut out, o);
    let _ = writeln!(
        out,
        "\n×fred: ops/s over fred_cluster's in the same cell; ×rb: over redis-benchmark's; \
         p99×fred likewise (below 1 is better); wr/op: write/writev syscalls of the whole process per operation (socket \
         writes plus tokio's eventfd wake-ups); cpu µs: CPU time of the whole process (every thread) per \
         successful operation; near: share of all operations (reads and writes) a slotguard stack's \
         near-cache answered"
    );
    out
}

/// The machine, the settings and what each client is.
fn render_setup(o: &Output) -> String {
    let (m, s) = (&o.machine, &o.settings);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nslotguard bench throughput — {} cores{}, redis {}, {} keys of {} B, {} s per cell × {} rounds \
         (median), warm-up {} ms, cluster {}",
        m.cores,
        m.cpu_model
            .as_ref()
            .map_or_else(String::new, |c| format!(" ({c})")),
        m.redis_version,
        s.keys,
        s.value_size,
        s.seconds,
        s.rounds,
        s.warmup_ms,
        s.cluster
    );
    let c = clients();
    let _ = writeln!(out, "  fred_cluster: {}", c.fred_cluster);
    let _ = writeln!(out, "  leaf:         {}", c.leaf);
    let _ = writeln!(out, "  stack:        {}", c.stack);
    let _ = writeln!(out, "  stack_store:  {}", c.stack_store);
    let _ = writeln!(out, "  redis_rs_cluster: {}", c.redis_rs_cluster);
    let _ = writeln!(out, "  stack_store_no_csc: {}", c.stack_store_no_csc);
    let _ = writeln!(out, "  stack_fred_leaf: {}", c.stack_fred_leaf);
    let _ = writeln!(out, "  redis_benchmark:  {}\n", c.redis_benchmark);
    out
}

/// One line per row, then redis-benchmark's.
fn render_rows(out: &mut String, o: &Output) {
    let _ = writeln!(
        out,
        "{:<5} {:>5} {:<16} {:>10} {:>7} {:>6} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6} {:>7} {:>6}",
        "load",
        "conc",
        "client",
        "ops/s",
        "×fred",
        "×rb",
        "p50 µs",
        "p99 µs",
        "p999 µs",
        "p99×fred",
        "errors",
        "wr/op",
        "cpu µs",
        "near"
    );
    for r in &o.rows {
        let _ = writeln!(
            out,
            "{:<5} {:>5} {:<16} {:>10.0} {:>7} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>7} {:>6} {:>7} {:>6}",
            r.load.as_str(),
            r.concurrency,
            r.client.as_str(),
            r.ops_per_sec,
            opt(r.ratio_to_fred, 2),
            opt(r.ratio_to_redis_benchmark, 2),
            r.p50_us,
            r.p99_us,
            r.p999_us,
            opt(r.p99_ratio_to_fred, 2),
            r.errors,
            opt(r.write_syscalls_per_op, 2),
            opt(r.cpu_us_per_op, 2),
            opt(r.near_cache_share, 2)
        );
    }
    for r in &o.redis_benchmark {
        let _ = writeln!(
            out,
            "{:<5} {:>5} {:<16} {:>10.0} {:>7} {:>6} {:>9} {:>9.1} {:>9} {:>8} {:>7} {:>6} {:>7} {:>6}",
            r.load.as_str(),
            r.concurrency,
            "redis_benchmark",
            r.ops_per_sec,
            "-",
            "1.00",
            "-",
            r.p99_us,
            "-",
            "-",
            "-",
            "-",
            "-",
            "-"
        );
    }
}
