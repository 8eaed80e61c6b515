//! [`SlotGuard`]: the recommended stack behind one handle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::leaf_kind::LeafKind;
use bytes::Bytes;
use slotguard_core::{
    as_cache_error, BoxError, BreakerScope, CacheError, CacheRequest, CacheResponse,
    ClusterController, Leaf, LeafControl, NodeAddr, SecondaryRequest, Topology, SLOT_COUNT,
};
use slotguard_layers::circuit_breaker::BreakerState;
use slotguard_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard_layers::coalesce::CoalesceLayer;
use slotguard_layers::fallback::{FallbackConfig, FallbackLayer};
use slotguard_layers::invalidation::InvalidationLogLayer;
use slotguard_layers::redirect::RedirectLayer;
use slotguard_layers::replica_failover::{FailoverPolicy, HedgeStats, ReplicaFailoverLayer};
use slotguard_layers::slot_refresh::{RefreshConfig, SlotRefreshLayer};
use slotguard_layers::telemetry::{TelemetryBuilder, TelemetryLayer, TelemetryStats};
use slotguard_layers::RecommendedStack;
use slotguard_node::{HealthProber, NodeConfig, NodeService};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// The stack as one cloneable, `Sync` tower service, for axum state or
/// further layering.
pub type CacheService = BoxCloneSyncService<CacheRequest, CacheResponse, BoxError>;

/// An authoritative store, boxed (see [`SlotGuardBuilder::store`]).
pub type StoreService = BoxCloneSyncService<SecondaryRequest, Option<Bytes>, BoxError>;

/// The recommended stack over one cluster, with its background tasks, behind
/// one cheap-clone handle.
///
/// The layers of [`RECOMMENDED_ORDER`](slotguard_layers::RECOMMENDED_ORDER),
/// built by [`RecommendedStack`] (without a store, `fallback` is left out;
/// the breaker is per node), plus the replication health prober, every
/// setting at its default unless the [`SlotGuardBuilder`] says otherwise.
/// With a [store](SlotGuardBuilder::store), misses are loaded from it and
/// written back, and reads the cluster cannot answer are served
/// from the near-cache or the store (see
/// [`fallback`](slotguard_layers::fallback)). Use
/// [`get`](Self::get)/[`set`](Self::set)/[`delete`](Self::delete) directly,
/// or [`service`](Self::service) as a tower service.
///
/// ```no_run
/// # async fn run() -> Result<(), slotguard::CacheError> {
/// use std::time::Duration;
/// use slotguard::SlotGuard;
///
/// let cache = SlotGuard::builder(["127.0.0.1:7000".parse().unwrap()]).connect().await?;
/// cache.set("user:42", "ada", Some(Duration::from_secs(60))).await?;
/// assert_eq!(cache.get("user:42").await?.as_deref(), Some(&b"ada"[..]));
/// cache.delete("user:42").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SlotGuard {
    service: CacheService,
    topology: Topology,
    leaf: Arc<dyn LeafControl>,
    refresh: SlotRefreshLayer,
    failover: ReplicaFailoverLayer,
    fallback: Option<FallbackLayer<StoreService>>,
    breakers: CircuitBreakerLayer,
    telemetry: TelemetryLayer,
    request_timeout: Duration,
    controller: ClusterController,
}

/// A plain snapshot of the stack's state and counts, for applications
/// without OpenTelemetry ([`SlotGuard::stats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Reads per answering path, writes, redirects, store loads, … (the
    /// telemetry layer's counts).
    pub telemetry: TelemetryStats,
    /// Every per-node breaker's state (read without changing it).
    pub breakers: Vec<(BreakerScope, BreakerState)>,
    /// Slots the current map assigns.
    pub slots_assigned: u64,
    /// Slots whose primary answers (`redis_cluster_slots_ok`).
    pub slots_ok: u64,
    /// The store guard's breaker, with a store.
    pub store_breaker: Option<BreakerState>,
    /// Near-cache entries and bytes, with a store.
    pub near_cache: (u64, u64),
}

impl fmt::Debug for SlotGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuard")
            .field("leaf", &self.leaf)
            .field("fallback", &self.fallback)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// Settings of a [`SlotGuard`]; every one has a default.
#[derive(Clone)]
#[must_use]
pub struct SlotGuardBuilder {
    seeds: Vec<NodeAddr>,
    store: Option<StoreService>,
    fallback: FallbackConfig,
    leaf: NodeConfig,
    leaf_kind: LeafKind,
    #[cfg(feature = "fred")]
    fred_leaf: Option<slotguard_fred::FredLeafConfig>,
    breaker: BreakerConfig,
    failover: FailoverPolicy,
    refresh: RefreshConfig,
    telemetry: TelemetryBuilder,
    request_timeout: Duration,
}

/// Deadline of each request made through the handle's methods, across every
/// retry and failover. One second: a healthy cluster answers in well under a
/// millisecond, and a read whose primary stalls is answered by a replica
/// within the failover policy's primary deadline (100 ms).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

impl fmt::Debug for SlotGuardBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotGuardBuilder")
            .field("seeds", &self.seeds)
            .field("store", &self.store.is_some())
            .field("fallback", &self.fallback)
            .field("leaf", &self.leaf)
            .field("leaf_kind", &self.leaf_kind)
            .field("breaker", &self.breaker)
            .field("failover", &self.failover)
            .field("refresh", &self.refresh)
            .field("telemetry", &self.telemetry)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl SlotGuardBuilder {
    /// The authoritative store behind the cache: any
    /// `Service<SecondaryRequest, Response = Option<Bytes>>`, such as
    /// `slotguard-store`'s SQLite example. Adds the
    /// [`fallback`](slotguard_layers::fallback) layer on top of the stack.
    pub fn store<St>(mut self, store: St) -> Self
    where
        St: tower::Service<SecondaryRequest, Response = Option<Bytes>>
            + Clone
            + Send
            + Sync
            + 'static,
        St::Error: Into<BoxError>,
        St::Future: Send + 'static,
    {
        self.store = Some(BoxCloneSyncService::new(store.map_err(Into::into)));
        self
    }

    /// The fallback layer's settings (used with a [store](Self::store)).
    pub fn fallback(mut self, config: FallbackConfig) -> Self {
        self.fallback = config;
        self
    }

    /// Client-side caching (needs a [store](Self::store)), **on by default
    /// with a store**, entries at most 2 s old: healthy reads of hot keys
    /// are answered by the near-cache, without a round trip, from entries
    /// read from their slot's primary over a connection with RESP3 client
    /// tracking, at most `max_age` old. An entry stops answering the moment
    /// its key's invalidation arrives (another client's write, pushed by
    /// the server; a write or delete through this handle; a slot move) or
    /// its node's tracking connection is lost, and answers again only once
    /// re-read. Between another client's write and the arrival of its
    /// invalidation, a read may still see the old value (measured in
    /// `docs/client-side-caching.md`, which also says why it is the
    /// default). `Duration::ZERO` turns it off: every healthy read then
    /// goes to the cluster.
    ///
    /// ```no_run
    /// # async fn f(store: slotguard_store::SqliteStore) -> Result<(), slotguard::CacheError> {
    /// use std::time::Duration;
    /// use slotguard::SlotGuard;
    ///
    /// // Off: another client's write is seen by the next read, always.
    /// let guard = SlotGuard::builder(vec!["127.0.0.1:7000".parse().unwrap()])
    ///     .store(store)
    ///     .client_side_caching(Duration::ZERO)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn client_side_caching(mut self, max_age: Duration) -> Self {
        self.fallback.near_cache = match (self.fallback.near_cache.take(), max_age.is_zero()) {
            // No near-cache: turning client-side caching off adds none.
            (None, true) => None,
            (near, _) => Some(near.unwrap_or_default().with_tracked_for(max_age)),
        };
        self
    }

    /// The leaf's settings (deadlines, limits, credentials, TLS, remap).
    /// The fred-backed leaf takes the same ones unless
    /// [`fred_leaf`](Self::fred_leaf) gives its own.
    pub fn leaf(mut self, config: NodeConfig) -> Self {
        self.leaf = config;
        self
    }

    /// Which leaf the stack sits on (default [`LeafKind::Node`]).
    pub fn leaf_kind(mut self, kind: LeafKind) -> Self {
        self.leaf_kind = kind;
        self
    }

    /// The fred-backed leaf, with these settings (feature `fred`).
    #[cfg(feature = "fred")]
    pub fn fred_leaf(mut self, config: slotguard_fred::FredLeafConfig) -> Self {
        self.leaf_kind = LeafKind::Fred;
        self.fred_leaf = Some(config);
        self
    }

    /// The per-node circuit breakers' settings.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// The replica failover policy.
    pub fn failover(mut self, policy: FailoverPolicy) -> Self {
        self.failover = policy;
        self
    }

    /// The slot map refresher's settings.
    pub fn refresh(mut self, config: RefreshConfig) -> Self {
        self.refresh = config;
        self
    }

    /// The telemetry layer's settings (meter and tracer, default the
    /// global providers; keys on spans). The handle adds its topology,
    /// breakers and fallback for the gauges.
    pub fn telemetry(mut self, telemetry: TelemetryBuilder) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Deadline of each request made through [`SlotGuard`]'s methods
    /// (default [`DEFAULT_REQUEST_TIMEOUT`]). Requests sent through
    /// [`SlotGuard::service`] carry their own.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Load the slot map from the seeds (the first that answers), start the
    /// refresher and the health prober, and build the stack. Fails when no
    /// seed answers within the leaf's admin deadline.
    pub async fn connect(self) -> Result<SlotGuard, CacheError> {
        if self.seeds.is_empty() {
            return Err(CacheError::InvalidInput("no seed node given".into()));
        }
        // With a near-cache, the node connections track what they read
        // (RESP3 client tracking), so other clients' writes evict it; a bus
        // the caller put in the leaf's settings is the one used.
        let near_cache = self.store.is_some() && self.fallback.near_cache.is_some();
        match self.leaf_kind {
            LeafKind::Node => {
                let mut config = self.leaf.clone();
                if near_cache && config.invalidations.is_none() {
                    config = config.with_invalidations(Default::default());
                }
                let bus = config.invalidations.clone().unwrap_or_default();
                self.assemble(NodeService::new(config), bus).await
            }
            #[cfg(feature = "fred")]
            LeafKind::Fred => {
                let mut config = self.fred_leaf.clone().unwrap_or_else(|| {
                    slotguard_fred::FredLeafConfig::from_node_config(&self.leaf)
                });
                if near_cache && config.invalidations.is_none() {
                    config = config.with_invalidations(Default::default());
                }
                let bus = config.invalidations.clone().unwrap_or_default();
                self.assemble(slotguard_fred::FredLeaf::new(config), bus)
                    .await
            }
        }
    }

    /// The stack over any leaf of the contract.
    async fn assemble<L: Leaf>(
        self,
        leaf: L,
        bus: slotguard_core::invalidation::InvalidationBus,
    ) -> Result<SlotGuard, CacheError> {
        // The one owner of the cluster state and of every task below.
        let controller = ClusterController::new();
        let topology = controller.topology().clone();
        // The fallback layer subscribes to the bus before any connection
        // exists: it must see every connection's `Tracking` event, or it
        // never trusts that connection's reads (client-side caching).
        let fallback = self.store.map(|store| {
            FallbackLayer::new(store)
                .with_config(self.fallback)
                .with_invalidations(&bus)
                .with_topology(topology.clone())
        });
        let leaf = leaf.with_topology(topology.clone());
        let source = leaf.topology_source(self.seeds);
        let refresh = match SlotRefreshLayer::with_config(topology.clone(), source, self.refresh)
            .load()
            .await
        {
            Ok(refresh) => refresh,
            Err(e) => {
                // Nothing may outlive a failed connect: the leaf's lifecycle
                // task and any connection the seeds were asked on.
                controller.shutdown().await;
                return Err(into_cache_error(e));
            }
        };
        let breakers = CircuitBreakerLayer::per_node(self.breaker).with_topology(topology.clone());
        // Registered before the first call, so the stack's own events
        // (breaker transitions, refreshes, fences) all reach it.
        let mut telemetry = self
            .telemetry
            .topology(topology.clone())
            .breakers(&breakers);
        let _ = controller.spawn(HealthProber::new(&leaf, topology.clone()).run());
        // The delete log sits right above routing: it replays deletes a
        // promotion lost and turns answers it cannot trust into misses,
        // which the fallback above then loads from the store.
        let failover = ReplicaFailoverLayer::with_policy(topology.clone(), self.failover);
        let log = InvalidationLogLayer::new(topology.clone());
        if let Some(layer) = &fallback {
            telemetry = telemetry.fallback(layer);
        }
        let telemetry = telemetry.build();
        // The one statement of the order (slotguard_layers::RECOMMENDED_ORDER,
        // DESIGN.md §3); the delete log replays through the service below it.
        let stack = RecommendedStack::new(
            telemetry.clone(),
            CoalesceLayer::new(),
            fallback.clone(),
            log.clone(),
            refresh.clone(),
            RedirectLayer::new(topology.clone()),
            failover.clone(),
            breakers.clone(),
        );
        // Without a store, nothing in the fallback's place: every
        // request's boxed future stays sized for the cluster path alone.
        let service = if stack.fallback.is_some() {
            BoxCloneSyncService::new(stack.builder().service(leaf.clone()))
        } else {
            BoxCloneSyncService::new(stack.builder_without_fallback().service(leaf.clone()))
        };
        // Started once the stack is built: the replayer sends through the
        // service below the log, the watches follow the bus and the map.
        log.start();
        if let Some(layer) = &fallback {
            layer.start();
        }
        Ok(SlotGuard {
            service,
            fallback,
            topology,
            leaf: Arc::new(leaf),
            refresh,
            breakers,
            telemetry,
            request_timeout: self.request_timeout,
            failover,
            controller,
        })
    }
}

impl SlotGuard {
    /// Settings for a stack over the cluster that `seeds` belong to.
    pub fn builder(seeds: impl IntoIterator<Item = NodeAddr>) -> SlotGuardBuilder {
        SlotGuardBuilder {
            seeds: seeds.into_iter().collect(),
            store: None,
            fallback: FallbackConfig::default(),
            leaf: NodeConfig::default(),
            leaf_kind: LeafKind::default(),
            #[cfg(feature = "fred")]
            fred_leaf: None,
            breaker: BreakerConfig::default(),
            failover: FailoverPolicy::default(),
            refresh: RefreshConfig::default(),
            telemetry: TelemetryLayer::builder(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The stack as a tower service (a clone; cheap).
    pub fn service(&self) -> CacheService {
        self.service.clone()
    }

    /// The slot map the stack routes by (read-only use: health, coverage).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Whether the stack has settled on a working view of the cluster: every
    /// slot covered by a primary whose last call did not fail, whose breaker
    /// admits calls and whose writes are not fenced. Reads state only; for
    /// waiting, with a deadline, until the stack has converged by itself
    /// after a topology change (as the demo does between its phases).
    pub fn is_settled(&self) -> bool {
        let map = self.topology.map();
        map.covered_slots() == usize::from(SLOT_COUNT)
            && map.shards().iter().all(|shard| {
                let health = &shard.primary.health;
                health.consecutive_failures() == 0
                    && !health.breaker_open()
                    && !health.writes_fenced()
            })
    }

    /// What hedged replica reads did so far (hedges sent, won, refused by
    /// their budget); see [`FailoverPolicy::hedge`].
    pub fn hedge_stats(&self) -> HedgeStats {
        self.failover.hedge_stats()
    }

    /// The leaf, for its connection state (`is_connected`, `in_flight`,
    /// `running_tasks`), whichever [`LeafKind`] it is.
    pub fn leaf(&self) -> &dyn LeafControl {
        &*self.leaf
    }

    /// What the stack counted and its state now: reads per answering path
    /// (as `redis_fallback_routing_attempts_total`), breaker states, slots
    /// assigned and ok, the store guard and the near-cache. Reading it
    /// changes nothing.
    pub fn stats(&self) -> Stats {
        Stats {
            telemetry: self.telemetry.stats(),
            breakers: self.breakers.states(),
            slots_assigned: self.topology.map().covered_slots() as u64,
            slots_ok: slotguard_layers::telemetry::slots_ok(&self.topology),
            store_breaker: self.fallback.as_ref().map(|f| f.store_breaker_state()),
            near_cache: self
                .fallback
                .as_ref()
                .map_or((0, 0), |f| f.near_cache_size()),
        }
    }

    /// Mark `key` invalidated in the near-cache (an application that changed
    /// the store by another way than this handle): it is not served from the
    /// near-cache or a replica until re-read from the primary or the store.
    /// Without a store there is no near-cache and this does nothing.
    pub fn invalidate(&self, key: impl Into<Bytes>) {
        if let Some(f) = &self.fallback {
            f.invalidate(key);
        }
    }

    /// The owner of the stack's cluster state and tasks.
    pub fn controller(&self) -> &ClusterController {
        &self.controller
    }

    /// Stop every task the stack runs — the slot map refresher, the health
    /// prober, the leaf's lifecycle and connections, the invalidation
    /// replayer, the near-cache watch, store loads and write-backs — and
    /// wait until they have ended: one cancellation of the
    /// [`ClusterController`], one wait. Calls after it fail fast with a
    /// typed error (or are answered by the store, when there is one);
    /// nothing is dialled again. Every clone of this handle shares the
    /// shutdown.
    pub async fn shutdown(&self) {
        self.controller.shutdown().await;
    }

    /// Refresh the slot map now and wait for it.
    pub async fn refresh_now(&self) -> Result<(), CacheError> {
        self.refresh.refresh_now().await.map_err(into_cache_error)
    }

    /// Send one request through the stack (its own deadline, if any, or the
    /// handle's request timeout).
    pub async fn call(&self, mut req: CacheRequest) -> Result<CacheResponse, CacheError> {
        if req.deadline.is_none() {
            req = req.with_timeout(self.request_timeout);
        }
        self.service
            .clone()
            .oneshot(req)
            .await
            .map_err(into_cache_error)
    }

    /// The value of `key`, `None` when absent.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, CacheError> {
        Ok(self.call(CacheRequest::get(key)).await?.value)
    }

    /// Store `value` under `key`, expiring after `ttl` when given.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        self.call(CacheRequest::set(key, value, ttl))
            .await
            .map(drop)
    }

    /// Remove `key`; `true` when it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, CacheError> {
        Ok(self.call(CacheRequest::delete(key)).await?.deleted > 0)
    }
}

/// Every error the stack returns is a `CacheError` somewhere in its chain;
/// anything else (a user's own layer) keeps its text as a server error.
fn into_cache_error(err: BoxError) -> CacheError {
    match as_cache_error(&err) {
        Some(e) => e.clone(),
        None => CacheError::Server(err.to_string()),
    }
}
