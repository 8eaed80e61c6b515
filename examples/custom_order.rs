//! slotguard's stack composed by hand, without the [`SlotGuard`] handle,
//! with tower's own layers between slotguard's and a global breaker just
//! inside the fallback.
//!
//! ```text
//! cargo run -p slotguard-examples --bin custom_order      # a throwaway local cluster
//! SLOTGUARD_SEEDS=127.0.0.1:7000 cargo run -p slotguard-examples --bin custom_order
//! ```
//!
//! The stack, outermost first (each position is also explained where it is
//! built, in [`build`]):
//!
//! ```text
//! Timeout            tower: a hard cap on the whole call, store load included
//! LoadShed           tower: refuse at once (Overloaded) when ...
//! ConcurrencyLimit   tower: ... this many calls are already in the stack
//! Coalesce           one call for identical in-flight reads
//! Fallback           near-cache + SQLite, for misses and a cluster that cannot answer
//! CircuitBreaker     global: stop calling a cluster that fails as a whole
//! InvalidationLog    replay deletes a promotion lost
//! SlotRefresh        stamp the owner from the slot map, keep the map fresh
//! Redirect           MOVED / ASK / TRYAGAIN
//! ReplicaFailover    a read whose primary fails goes to a replica
//! CircuitBreaker     per node: fail fast on a sick node
//! NodeService        the leaf: one connection per node
//! ```
//!
//! Why this order (DESIGN.md §3; the handle's order with tower's layers
//! added and a second breaker):
//!
//! - **Timeout outermost**: the caller's whole budget, coalesced waits and
//!   store loads included. Requests also carry a 1 s deadline, which the
//!   layers plan their retries and the fallback's share of time with; the
//!   tower timeout (1.5 s) only fires when something does not honour it.
//! - **LoadShed + ConcurrencyLimit outside coalesce and fallback**: they
//!   bound everything a call can cost this process, store loads and
//!   write-backs included, and refuse at once (`Overloaded`) instead of
//!   queueing. Inside the fallback, a shed call would count as a cluster
//!   failure and be answered by the store: overload moved onto the database.
//! - **Coalesce outside fallback**: a herd of identical misses makes one
//!   store load.
//! - **Fallback outside the cluster path**: it sees every cluster failure,
//!   a fast `CircuitOpen` included.
//! - **Global breaker just inside the fallback**: it sees one outcome per
//!   request, after redirects, replica failover and the per-node breakers
//!   had their chance, so it opens only when the cluster cannot answer as a
//!   whole, not for one sick node; open, it fails in microseconds and the
//!   fallback answers at once instead of after its 300 ms cluster attempt.
//!   Outside the fallback it would refuse reads the store could answer;
//!   deeper, each redirect hop and failover attempt would count as a call.
//! - **Per-node breakers inside replica failover**: an open breaker on a
//!   primary is a fast failure that sends the read to a replica.
//!
//! It writes an item to SQLite and invalidates its cached copy (a `Delete`
//! through the stack), reads it (a miss: loaded from SQLite, written back),
//! reads it until the cluster answers, and prints what answered each read.
//! With its own local cluster (never with `SLOTGUARD_SEEDS`: it would not
//! stop someone's cluster) it then stops (SIGSTOP) the item's primary and
//! its replica: the reads are still answered, from the near-cache or
//! SQLite; the global breaker opens after a few failed cluster attempts, so
//! later reads do not wait for the cluster at all; once the nodes resume,
//! the breaker's probes close it again. Then it shuts every task down and
//! exits 0.
//!
//! `SLOTGUARD_USERNAME`, `SLOTGUARD_PASSWORD`, `SLOTGUARD_TLS_CA`:
//! credentials and TLS to the nodes (`NodeConfig::from_env`).
//!
//! [`SlotGuard`]: slotguard::SlotGuard

mod cluster;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use slotguard::core::invalidation::InvalidationBus;
use slotguard::core::{key_slot, BreakerScope};
use slotguard::layers::circuit_breaker::{BreakerConfig, BreakerState, CircuitBreakerLayer};
use slotguard::layers::coalesce::CoalesceLayer;
use slotguard::layers::fallback::FallbackLayer;
use slotguard::layers::invalidation::InvalidationLogLayer;
use slotguard::layers::redirect::RedirectLayer;
use slotguard::layers::replica_failover::ReplicaFailoverLayer;
use slotguard::layers::slot_refresh::SlotRefreshLayer;
use slotguard::node::HealthProber;
use slotguard::{
    BoxError, CacheRequest, CacheResponse, NodeAddr, NodeConfig, NodeService, NodeTopologySource,
    ServiceBuilderExt, Topology,
};
use slotguard_store::SqliteStore;
use slotguard_testkit::LocalCluster;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

/// The deadline each request carries: the layers plan their retries,
/// failovers and the fallback's share of time within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// tower's hard cap, a little above the deadline: it only fires when
/// something inside does not honour the request's deadline.
const HARD_TIMEOUT: Duration = Duration::from_millis(1500);
/// Calls in the stack at once; past it, calls are shed.
const MAX_IN_FLIGHT: usize = 256;

type Cache = BoxCloneService<CacheRequest, CacheResponse, BoxError>;

/// The stack and what must be stopped or watched.
struct Stack {
    cache: Cache,
    global: CircuitBreakerLayer,
    leaf: NodeService,
    topology: Topology,
}

async fn build(seeds: Vec<NodeAddr>, store: SqliteStore) -> Result<Stack, BoxError> {
    let topology = Topology::new();
    // The near-cache hears other clients' writes through the leaf's RESP3
    // client tracking, as in the handle.
    let bus = InvalidationBus::default();
    let leaf = NodeService::new(NodeConfig::from_env()?.with_invalidations(bus.clone()))
        .with_topology(topology.clone());
    let source = NodeTopologySource::new(&leaf, seeds);
    let refresh = match SlotRefreshLayer::new(topology.clone(), source).load().await {
        Ok(refresh) => refresh,
        Err(e) => {
            leaf.shutdown().await;
            return Err(e);
        }
    };
    let global = CircuitBreakerLayer::global(BreakerConfig::default());
    let log = InvalidationLogLayer::new(topology.clone());
    let fallback = FallbackLayer::new(store)
        .with_invalidations(&bus)
        .with_topology(topology.clone());
    let cache = ServiceBuilder::new()
        // Outermost: the caller's whole budget, store loads and coalesced
        // waits included; anything slower is cut (`Elapsed`, which
        // `classify` calls a timeout). Inside it, nothing needs its own cap.
        .layer(TimeoutLayer::new(HARD_TIMEOUT))
        // Admission: shed and limit outside coalesce and fallback, so they
        // bound everything a call can cost this process (a cluster call,
        // a store load, a write-back). Shedding fails at once with
        // `Overloaded` instead of queueing: under overload a queue only
        // adds latency to calls that will time out anyway. Inside the
        // fallback instead, a shed call would count as a cluster failure
        // and be answered by the store: overload moved onto the database.
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        // Outside the fallback: a herd of identical misses makes one store
        // load (DESIGN.md §3).
        .coalesce(CoalesceLayer::new())
        // Outside the whole cluster path: it sees every cluster failure,
        // a fast `CircuitOpen` included, and answers from the near-cache
        // or SQLite.
        .fallback(fallback.clone())
        // The global breaker, just inside the fallback: it sees one outcome
        // per request, after redirects, replica failover and per-node
        // breakers had their chance, so it opens only when the cluster as
        // a whole cannot answer (a shard with no node left, CLUSTERDOWN),
        // not for one sick node. Open, it fails in microseconds and the
        // fallback answers at once instead of after its cluster attempt
        // (300 ms). Outside the fallback it would refuse reads the store
        // could answer; deeper, every redirect hop and failover attempt
        // would count as a call, and one sick primary would open it.
        .layer(global.clone())
        // Right above routing: replays deletes a promotion lost, and turns
        // answers it cannot trust into misses the fallback reloads.
        .invalidation_log(log.clone())
        // Outside redirect: a MOVED retry is re-stamped from the patched map.
        .slot_refresh(refresh)
        .redirect(RedirectLayer::new(topology.clone()))
        // Outside the per-node breakers: an open breaker on a primary is a
        // fast failure that sends the read to a replica.
        .layer(ReplicaFailoverLayer::new(topology.clone()))
        .layer(
            CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone()),
        )
        .service(leaf.clone());
    // Their tasks start once the stack is built, on the topology's
    // controller: the log's replayer and the near-cache's watch.
    log.start();
    fallback.start();
    Ok(Stack {
        cache: BoxCloneService::new(cache),
        global,
        leaf,
        topology,
    })
}

/// Read `key`; the answer and how long it took.
async fn get(cache: &Cache, key: &str) -> Result<(CacheResponse, Duration), BoxError> {
    let req = CacheRequest::get(key.to_owned()).with_timeout(REQUEST_TIMEOUT);
    let started = Instant::now();
    let resp = cache.clone().oneshot(req).await?;
    Ok((resp, started.elapsed()))
}

fn describe(key: &str, resp: &CacheResponse, took: Duration) -> String {
    let value = resp.value.as_deref().map(String::from_utf8_lossy);
    let node = resp.served.node.as_ref().map(|n| format!(" {n}"));
    format!(
        "get {key} -> {value:?} via {}{} in {} ms",
        resp.served.path.name(),
        node.unwrap_or_default(),
        took.as_millis()
    )
}

/// Read `key` and print what answered.
async fn read(cache: &Cache, key: &str) -> Result<CacheResponse, BoxError> {
    let (resp, took) = get(cache, key).await?;
    println!("{}", describe(key, &resp, took));
    Ok(resp)
}

/// Read `key` until `done` says yes, at most for `limit`; print the last
/// answer and what answered the reads before it.
async fn read_until(
    cache: &Cache,
    key: &str,
    limit: Duration,
    done: impl Fn(&CacheResponse) -> bool,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + limit;
    let mut before: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let answer = get(cache, key).await;
        match &answer {
            Ok((resp, took)) if done(resp) => {
                println!(
                    "{} (reads before it: {before:?})",
                    describe(key, resp, *took)
                );
                return Ok(());
            }
            Ok((resp, _)) => *before.entry(resp.served.path.name().into()).or_default() += 1,
            Err(e) => *before.entry(format!("error: {e}")).or_default() += 1,
        }
        if Instant::now() > deadline {
            return Err(format!("{key}: not as expected within {limit:?} ({before:?})").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop `key`'s primary and its replicas, read through it, resume them.
async fn stall_shard(stack: &Stack, cluster: &LocalCluster, key: &str) -> Result<(), BoxError> {
    let primary = cluster.primary_of_slot(key_slot(key.as_bytes()))?;
    let mut shard = cluster.replicas_of(primary)?;
    shard.push(primary);
    for &node in &shard {
        cluster.pause(node)?;
    }
    println!(
        "stopped the shard of {key} (SIGSTOP, {} nodes)",
        shard.len()
    );
    let global = || stack.global.state(&BreakerScope::Global);
    let limit = Duration::from_secs(45);
    // Every read answered (near-cache or SQLite) until the breaker opens.
    let mut reads = 0;
    while global() == BreakerState::Closed {
        read(&stack.cache, key).await?;
        reads += 1;
        if reads > 100 {
            return Err("the global breaker did not open".into());
        }
    }
    println!("global breaker: {}", global().name());
    // Open: the cluster is not called, the fallback answers at once.
    read(&stack.cache, key).await?;
    for &node in &shard {
        cluster.resume(node)?;
    }
    println!("resumed the shard");
    // After its cool-down the breaker lets a few probes through; answered
    // by the cluster, they close it.
    read_until(&stack.cache, key, limit, |r| {
        r.served.path == slotguard::Path::Primary && global() == BreakerState::Closed
    })
    .await?;
    println!("global breaker: {}", global().name());
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Use the given cluster, or start a throwaway one on loopback.
    let (cluster, seeds) = cluster::seeds_or_local_cluster()?;
    let tmp = tempfile::tempdir()?;
    let store = SqliteStore::open(tmp.path().join("items.db"))?;
    let stack = build(seeds, store.clone()).await?;
    // Replica link health, for the failover layer's choice of replica.
    let prober = HealthProber::new(&stack.leaf, stack.topology.clone()).spawn();

    let result = run(&stack, &store, cluster.as_ref()).await;
    // Every task the stack runs (refresher, prober, the leaf's lifecycle and
    // connections, the delete replayer, the near-cache watch), stopped and
    // awaited before the cluster goes: one cancellation of the topology's
    // controller, one wait.
    drop(prober);
    stack.topology.controller().shutdown().await;
    drop(cluster);
    result?;
    println!("shut down");
    Ok(())
}

async fn run(
    stack: &Stack,
    store: &SqliteStore,
    cluster: Option<&LocalCluster>,
) -> Result<(), BoxError> {
    let key = "item:custom-order";
    // Write the authoritative copy, then drop the cached one through the
    // stack (the fallback marks the key: no stale copy is served).
    store.put(key.to_owned(), "ada").await?;
    let del = CacheRequest::delete(key.to_owned()).with_timeout(REQUEST_TIMEOUT);
    stack.cache.clone().oneshot(del).await?;
    // A miss: loaded from SQLite and written back.
    read(&stack.cache, key).await?;
    read_until(&stack.cache, key, Duration::from_secs(5), |r| {
        r.served.path == slotguard::Path::Primary
    })
    .await?;
    if let Some(cluster) = cluster {
        stall_shard(stack, cluster, key).await?;
    }
    Ok(())
}
