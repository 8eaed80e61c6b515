//! The breakers of one layer, shared with every service it made.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use slotguard_core::topology::AddrMap;
use slotguard_core::{BreakerScope, CacheRequest, Topology};
use tokio::time::Instant;

use super::breaker::{Breaker, BreakerState};
use super::config::BreakerConfig;

/// Transition counters, shared by every breaker of a layer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) opened: AtomicU64,
    pub(crate) half_opened: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

/// What every breaker of a layer shares.
pub(crate) struct Common {
    pub(crate) config: BreakerConfig,
    // What a global breaker guards, for its events (`None`: the cluster).
    pub(crate) name: Option<&'static str>,
    pub(crate) counters: Counters,
    // Read on transitions only (rare), so a lock costs nothing on the hot
    // path; a lock rather than a plain field so `with_topology` works on a
    // layer that was already cloned.
    topology: RwLock<Option<Topology>>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the topology itself: every breaker would print the slot map.
        let publishing = self
            .topology
            .read()
            .is_ok_and(|topology| topology.is_some());
        f.debug_struct("Common")
            .field("config", &self.config)
            .field("name", &self.name)
            .field("counters", &self.counters)
            .field("publishing_to_topology", &publishing)
            .finish()
    }
}

impl Common {
    pub(super) fn topology(&self) -> Option<Topology> {
        self.topology
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[derive(Debug)]
enum Breakers {
    // Looked up on every call, so reads are lock-free; the mutex only
    // orders the writers (a first call to a node), which copy the map.
    PerNode {
        map: ArcSwap<AddrMap<Arc<Breaker>>>,
        write: Mutex<()>,
    },
    Global(Arc<Breaker>),
}

/// The breakers of one layer, shared with every service it made.
#[derive(Debug)]
pub(crate) struct Shared {
    common: Arc<Common>,
    breakers: Breakers,
}

impl Shared {
    fn common(config: BreakerConfig) -> Arc<Common> {
        Arc::new(Common {
            config,
            name: None,
            counters: Counters::default(),
            topology: RwLock::new(None),
        })
    }

    pub(crate) fn per_node(config: BreakerConfig) -> Self {
        Self {
            common: Self::common(config),
            breakers: Breakers::PerNode {
                map: ArcSwap::from_pointee(AddrMap::default()),
                write: Mutex::new(()),
            },
        }
    }

    pub(crate) fn global(config: BreakerConfig) -> Self {
        Self::global_of(Self::common(config))
    }

    /// A global breaker over something other than the cluster: `name` is
    /// the `scope` of its events.
    pub(crate) fn named(name: &'static str, config: BreakerConfig) -> Self {
        Self::global_of(Arc::new(Common {
            config,
            name: Some(name),
            counters: Counters::default(),
            topology: RwLock::new(None),
        }))
    }

    fn global_of(common: Arc<Common>) -> Self {
        Self {
            breakers: Breakers::Global(Arc::new(Breaker::new(
                BreakerScope::Global,
                common.clone(),
            ))),
            common,
        }
    }

    /// The breaker of a global registry (a per-node one gets a breaker
    /// that guards nothing of it: the registry never looks it up).
    pub(crate) fn global_breaker(&self) -> Arc<Breaker> {
        match &self.breakers {
            Breakers::Global(breaker) => breaker.clone(),
            Breakers::PerNode { .. } => {
                Arc::new(Breaker::new(BreakerScope::Global, self.common.clone()))
            }
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.common.counters
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.common.config
    }

    /// Publish breaker states to `topology` from now on, and the current
    /// ones right away.
    pub(crate) fn set_topology(&self, topology: Topology) {
        *self
            .common
            .topology
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(topology.clone());
        if let Breakers::PerNode { map, .. } = &self.breakers {
            for breaker in map.load().values() {
                breaker.publish(&topology);
            }
        }
    }

    /// The breaker guarding `req`; `None` for a request without a node when
    /// breakers are per node.
    pub(crate) fn breaker_for(&self, req: &CacheRequest) -> Option<Arc<Breaker>> {
        match &self.breakers {
            Breakers::Global(breaker) => Some(breaker.clone()),
            Breakers::PerNode { map, write } => {
                let addr = req.node()?;
                if let Some(breaker) = map.load().get(addr) {
                    return Some(breaker.clone());
                }
                // First call to this node: the only allocating path.
                let _writer = write
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let current = map.load_full();
                if let Some(breaker) = current.get(addr) {
                    return Some(breaker.clone());
                }
                let breaker = Arc::new(Breaker::new(
                    BreakerScope::Node(addr.clone()),
                    self.common.clone(),
                ));
                let mut next = AddrMap::clone(&current);
                // A new node usually means the topology changed: drop the
                // breakers of nodes that left it, so the registry holds the
                // cluster's nodes, not every node it ever had. A node that
                // comes back starts with a closed breaker.
                if let Some(topology) = self.common.topology() {
                    let map = topology.map();
                    if map.covered_slots() > 0 {
                        next.retain(|a, _| map.contains(a));
                    }
                }
                next.insert(addr.clone(), breaker.clone());
                map.store(Arc::new(next));
                Some(breaker)
            }
        }
    }

    pub(crate) fn state(&self, scope: &BreakerScope) -> BreakerState {
        let now = Instant::now();
        match (&self.breakers, scope) {
            (Breakers::Global(breaker), BreakerScope::Global) => breaker.state(now),
            (Breakers::PerNode { map, .. }, BreakerScope::Node(addr)) => {
                let breaker = map.load().get(addr).cloned();
                breaker.map_or(BreakerState::Closed, |b| b.state(now))
            }
            _ => BreakerState::Closed,
        }
    }

    pub(crate) fn states(&self) -> Vec<(BreakerScope, BreakerState)> {
        let now = Instant::now();
        match &self.breakers {
            Breakers::Global(breaker) => vec![(BreakerScope::Global, breaker.state(now))],
            Breakers::PerNode { map, .. } => {
                // A snapshot of the breakers, read one by one (a read
                // never transitions one).
                let breakers: Vec<Arc<Breaker>> = map.load().values().cloned().collect();
                let mut states: Vec<_> = breakers
                    .iter()
                    .map(|b| (b.scope().clone(), b.state(now)))
                    .collect();
                states.sort_by(|a, b| match (&a.0, &b.0) {
                    (BreakerScope::Node(x), BreakerScope::Node(y)) => x.cmp(y),
                    _ => std::cmp::Ordering::Equal,
                });
                states
            }
        }
    }
}
