//! The measured part of `bench throughput`: every client connected once,
//! then rounds of cells, each cell running every client in the round's
//! order and, when asked, redis-benchmark as the reference.

use std::sync::Arc;
use std::time::Duration;

use slotguard::{BoxError, CacheService, NodeAddr, SlotGuard};

use super::cell::{self, CellResult, CellSpec, Data};
use super::clients::{self, FredCluster, LeafService, Tower};
use super::redis_rs::{self, RedisRsCluster};
use super::summary::{Cell, ClientName, LoadKind, RefCell};
use super::{reference, ThroughputArgs};
use crate::progress::Progress;

/// Every client compared, connected for the whole run.
pub(super) struct Contenders {
    pub(super) fred: FredCluster,
    leaf: Tower<LeafService>,
    stack: Tower<CacheService>,
    stack_store: Tower<CacheService>,
    stack_store_no_csc: Tower<CacheService>,
    redis_rs: RedisRsCluster,
    stack_fred_leaf: Tower<CacheService>,
    /// The stacks' handles (and their stores' directories): alive while
    /// measuring.
    _guards: Guards,
}

type Guards = (
    (SlotGuard, tempfile::TempDir),
    (SlotGuard, tempfile::TempDir),
    (SlotGuard, tempfile::TempDir),
    SlotGuard,
);

/// Connect every client, as a user would build each (defaults).
pub(super) async fn connect(
    seeds: &[NodeAddr],
    data: &Data,
    progress: &Progress,
) -> Result<Contenders, BoxError> {
    progress.note(
        "connecting fred_cluster, leaf, stack, stack_store, redis_rs_cluster, stack_store_no_csc and stack_fred_leaf...",
    );
    let named = |name: &'static str| move |e: BoxError| format!("{name}: {e}");
    let fred = clients::fred_cluster(seeds)
        .await
        .map_err(named("fred cluster client"))?;
    let leaf = clients::leaf(seeds).await.map_err(named("leaf"))?;
    let (stack, g1) = clients::stack(seeds, None).await.map_err(named("stack"))?;
    let (stack_store, g2) = clients::stack(seeds, Some(data))
        .await
        .map_err(named("stack_store"))?;
    let (stack_store_no_csc, g3) = clients::stack_with(seeds, Some(data), Some(Duration::ZERO))
        .await
        .map_err(named("stack_store_no_csc"))?;
    let redis_rs = redis_rs::connect(seeds)
        .await
        .map_err(named("redis-rs cluster client"))?;
    let (stack_fred_leaf, g4) = clients::stack_fred_leaf(seeds)
        .await
        .map_err(named("stack_fred_leaf"))?;
    Ok(Contenders {
        fred,
        leaf,
        stack,
        stack_store,
        stack_store_no_csc,
        redis_rs,
        stack_fred_leaf,
        _guards: (g1, g2, g3, g4),
    })
}

impl Contenders {
    /// One client through one cell.
    async fn run(&self, client: ClientName, data: &Arc<Data>, spec: CellSpec) -> CellResult {
        match client {
            ClientName::FredCluster => cell::run(&self.fred, data, spec).await,
            ClientName::Leaf => cell::run(&self.leaf, data, spec).await,
            ClientName::Stack => cell::run(&self.stack, data, spec).await,
            ClientName::StackStore => cell::run(&self.stack_store, data, spec).await,
            ClientName::RedisRsCluster => cell::run(&self.redis_rs, data, spec).await,
            ClientName::StackStoreNoCsc => cell::run(&self.stack_store_no_csc, data, spec).await,
            ClientName::StackFredLeaf => cell::run(&self.stack_fred_leaf, data, spec).await,
        }
    }
}

/// What the rounds measured.
#[derive(Default)]
pub(super) struct Measured {
    pub(super) cells: Vec<Cell>,
    pub(super) refs: Vec<RefCell>,
    pub(super) client_order: Vec<Vec<ClientName>>,
}

/// What every cell shares.
pub(super) struct Plan<'a> {
    pub(super) args: &'a ThroughputArgs,
    pub(super) seeds: &'a [NodeAddr],
    pub(super) data: Arc<Data>,
    pub(super) rounds: usize,
    pub(super) loads: &'a [LoadKind],
    pub(super) concurrency: &'a [u64],
    /// Run redis-benchmark after each cell's clients.
    pub(super) with_rb: bool,
    pub(super) progress: &'a Progress,
}

/// Every round: every (load, concurrency) cell, clients in the round's
/// order (rotated per round, so drift hits every client alike).
pub(super) async fn run_rounds(
    plan: &Plan<'_>,
    contenders: &Contenders,
) -> Result<Measured, BoxError> {
    let mut out = Measured::default();
    for round in 0..plan.rounds {
        let order = ClientName::order(round);
        out.client_order.push(order.clone());
        for (li, &load) in plan.loads.iter().enumerate() {
            for (ci, &c) in plan.concurrency.iter().enumerate() {
                let spec = CellSpec {
                    load,
                    concurrency: usize::try_from(c)?,
                    warmup: Duration::from_millis(plan.args.warmup_ms),
                    window: Duration::from_secs(plan.args.seconds),
                    seed: ((round as u64) << 48)
                        ^ ((li as u64) << 40)
                        ^ ((ci as u64) << 32)
                        ^ 0x5EED,
                };
                let fastest =
                    run_cell(plan, contenders, (&order, round, c), spec, &mut out.cells).await;
                if plan.with_rb {
                    out.refs
                        .extend(reference_cell(plan, round, load, c, fastest).await);
                }
            }
        }
    }
    Ok(out)
}

/// Every client through one cell; the fastest rate of a client that goes
/// to the cluster (what redis-benchmark is sized from).
async fn run_cell(
    plan: &Plan<'_>,
    contenders: &Contenders,
    (order, round, c): (&[ClientName], usize, u64),
    spec: CellSpec,
    cells: &mut Vec<Cell>,
) -> f64 {
    let (load, rounds) = (spec.load, plan.rounds);
    let mut fastest: f64 = 0.0;
    for &client in order {
        let sample = contenders.run(client, &plan.data, spec).await.sample();
        // redis-benchmark is sized from the fastest client that goes to
        // the cluster: client-side caching (`stack_store`'s default)
        // answers from memory, tens of times faster than any network
        // client, and would size a reference run of minutes.
        if client != ClientName::StackStore {
            fastest = fastest.max(sample.ops_per_sec);
        }
        plan.progress.note(&format!(
            "round {}/{rounds} {:<3} c={c:<4} {:<12} {:>9.0} ops/s  p50 {:>7.1} µs  p99 {:>8.1} µs  {:>5} cpu µs/op  {} err",
            round + 1,
            load.as_str(),
            client.as_str(),
            sample.ops_per_sec,
            sample.p50_us,
            sample.p99_us,
            // "–" where the kernel gives no per-task CPU time.
            sample
                .cpu_us_per_op
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.2}")),
            sample.errors
        ));
        cells.push(Cell {
            load,
            concurrency: c,
            client,
            round,
            sample,
        });
    }
    fastest
}

/// redis-benchmark after one cell. A reference that fails is reported, not
/// fatal: the clients' figures stand without it.
async fn reference_cell(
    plan: &Plan<'_>,
    round: usize,
    load: LoadKind,
    c: u64,
    fastest: f64,
) -> Option<RefCell> {
    let r = match reference(plan.seeds, plan.args, load, c, fastest).await {
        Ok(r) => r,
        Err(e) => {
            plan.progress
                .note(&format!("no redis-benchmark reference: {e}"));
            return None;
        }
    };
    plan.progress.note(&format!(
        "round {}/{} {:<3} c={c:<4} {:<12} {:>9.0} ops/s  p99 {:>8.1} µs",
        round + 1,
        plan.rounds,
        load.as_str(),
        "redis-benchmark",
        r.ops_per_sec(load),
        r.p99_us(load),
    ));
    Some(RefCell {
        load,
        concurrency: c,
        round,
        ops_per_sec: r.ops_per_sec(load),
        p99_us: r.p99_us(load),
    })
}
