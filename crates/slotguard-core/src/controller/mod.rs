//! The cluster controller: the one owner of a stack's cluster state and
//! background tasks.
//!
//! **State.** The controller is the only writer of the slot map, node
//! health, write fences, majority verdicts and the refresh schedule.
//! Layers, leaves, the prober and the refresher read the [`Topology`]
//! (lock-free) and [`report`](Topology::report) what they saw — a call's
//! outcome ([`CallEnded`]), a probe ([`Probed`], [`LinkStatus`]), a breaker
//! transition ([`BreakerChanged`]), a `MOVED` ([`SlotMoved`]), a sign of a
//! stale map ([`StaleMap`]), the views a refresh round fetched
//! ([`RoundFetched`]). The policy (`controller/policy.rs`: plain code, no
//! I/O, no clock) decides what each report does; its decision table is in
//! `docs/architecture.md`.
//!
//! **Tasks.**
//! Every task slotguard runs besides the leaf's connection drivers — the
//! slot map refresher, the health prober, the leaf's node lifecycle, the
//! invalidation replayer, the fallback layer's watch, its store loads and
//! write-backs — runs on one [`ClusterController`]'s task tracker, under its
//! one cancellation token. Nothing is spawned from a service's `call` or a
//! layer's `layer()`: a component hands its worker future to the controller
//! at an explicit start (`SlotRefreshLayer::load`/`start`,
//! `FallbackLayer::start`, `InvalidationLogLayer::start`,
//! `HealthProber::run`, `Leaf::with_topology`), and
//! [`shutdown`](ClusterController::shutdown) is one cancel-and-await: every
//! task stops, the leaf's pool is shut (its connections closed), and the
//! call returns when all of them have ended. See `docs/architecture.md`.
//!
//! A [`Topology`] belongs to one controller: a layer or a leaf that was
//! given the topology reaches its owner with [`Topology::controller`].
//!
//! ```
//! use slotguard_core::ClusterController;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let controller = ClusterController::new();
//! let ticks = controller.spawn(async {
//!     loop {
//!         tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//!     }
//! });
//! assert!(ticks.is_some());
//! assert_eq!(controller.running_tasks(), 1);
//! controller.shutdown().await;
//! assert_eq!(controller.running_tasks(), 0);
//! // Nothing starts after shutdown.
//! assert!(controller.spawn(async {}).is_none());
//! # }
//! ```

mod apply;
pub(crate) mod policy;
mod report;

use std::fmt;
use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::topology::{ClusterView, Topology};

pub use report::{
    BreakerChanged, CallEnded, LinkStatus, Probed, Report, RoundApplied, RoundFetched, SlotMoved,
    StaleMap, ViewLoaded,
};

/// Size of the largest group of healthy views (not `cluster_state:fail`)
/// that agree on every slot range's primary: for a refresher deciding it
/// heard from enough nodes to stop waiting for stragglers.
pub fn largest_agreement(views: &[ClusterView]) -> usize {
    policy::largest_agreement(views)
}

/// The controller's tracker and token; they live in the topology's shared
/// state, so every clone of the topology names the same owner.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The owner of a stack's cluster state and background tasks (see the
/// [module docs](self)). Cheap to clone; clones share everything.
#[derive(Clone, Default)]
pub struct ClusterController {
    topology: Topology,
}

impl fmt::Debug for ClusterController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterController")
            .field("generation", &self.topology.map().generation())
            .field("running_tasks", &self.running_tasks())
            .field("shut_down", &self.is_shut_down())
            .finish()
    }
}

impl ClusterController {
    /// A controller with an empty topology and no task yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The controller that owns `topology` (the same one
    /// [`Topology::controller`] returns).
    pub fn of(topology: &Topology) -> Self {
        Self {
            topology: topology.clone(),
        }
    }

    /// The topology it owns: the snapshot layers and leaves read.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// [`Topology::report`] to this controller.
    pub fn report<R: Report>(&self, report: R) -> R::Reply {
        self.topology.report(report)
    }

    fn tasks(&self) -> &Tasks {
        self.topology.tasks()
    }

    /// Run `task` as one of the controller's own until it ends or the
    /// controller shuts down (then it is dropped at its next wait). `None`
    /// when the controller was shut down or there is no tokio runtime: the
    /// task is dropped unstarted. The handle yields `None` when the task
    /// was cancelled.
    pub fn spawn<F>(&self, task: F) -> Option<JoinHandle<Option<F::Output>>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let tasks = self.tasks();
        if tasks.cancel.is_cancelled() {
            return None;
        }
        tokio::runtime::Handle::try_current().ok()?;
        let cancel = tasks.cancel.clone();
        Some(tasks.tracker.spawn(async move {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                out = task => Some(out),
            }
        }))
    }

    /// Run `cleanup` once the controller shuts down, before
    /// [`shutdown`](Self::shutdown) returns: for what must be closed, not
    /// dropped (a leaf's pool waits for its connections to end). Returns
    /// whether it was taken (not after shutdown, and only inside a tokio
    /// runtime).
    pub fn on_shutdown<F>(&self, cleanup: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let tasks = self.tasks();
        if tasks.cancel.is_cancelled() || tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        let cancel = tasks.cancel.clone();
        tasks.tracker.spawn(async move {
            cancel.cancelled().await;
            cleanup.await;
        });
        true
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.tasks().cancel.is_cancelled()
    }

    /// Tasks of the controller still running: 0 once
    /// [`shutdown`](Self::shutdown) returned.
    pub fn running_tasks(&self) -> usize {
        self.tasks().tracker.len()
    }

    /// Resolves when the controller shuts down.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.tasks().cancel.clone().cancelled_owned()
    }

    /// Stop every task (one cancellation), run the shutdown clean-ups, and
    /// return when all of them have ended. Nothing starts afterwards.
    /// Every clone shares it; calling it again only waits.
    pub async fn shutdown(&self) {
        let tasks = self.tasks();
        tasks.cancel.cancel();
        tasks.tracker.close();
        tasks.tracker.wait().await;
    }
}

impl Topology {
    /// The controller that owns this topology and runs the stack's tasks.
    pub fn controller(&self) -> ClusterController {
        ClusterController::of(self)
    }
}

#[cfg(test)]
mod report_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn shutdown_cancels_waits_for_cleanups_and_refuses_new_tasks() {
        let c = ClusterController::new();
        let cleaned = Arc::new(AtomicBool::new(false));
        c.spawn(std::future::pending::<()>()).unwrap();
        assert!(c.on_shutdown({
            let cleaned = cleaned.clone();
            async move {
                tokio::task::yield_now().await;
                cleaned.store(true, Ordering::SeqCst);
            }
        }));
        assert_eq!(c.running_tasks(), 2);
        // A clone of the topology names the same owner.
        let other = c.topology().clone().controller();
        other.shutdown().await;
        assert!(cleaned.load(Ordering::SeqCst));
        assert_eq!(c.running_tasks(), 0);
        assert!(c.is_shut_down());
        assert!(c.spawn(async {}).is_none());
        assert!(!c.on_shutdown(async {}));
    }

    #[tokio::test]
    async fn a_task_that_ends_yields_its_output() {
        let c = ClusterController::new();
        let out = c.spawn(async { 7 }).unwrap().await.unwrap();
        assert_eq!(out, Some(7));
    }

    #[test]
    fn nothing_starts_without_a_runtime() {
        let c = ClusterController::new();
        assert!(c.spawn(async {}).is_none());
        assert!(!c.on_shutdown(async {}));
    }
}
