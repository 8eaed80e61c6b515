//! Faults on whole processes and commands: pause, kill, restart, failover,
//! `DEBUG SLEEP`, `CLIENT PAUSE`.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::process::{lock, poll};
use super::{
    FailoverMode, LocalCluster, NodeState, CONNECT_TIMEOUT, FAILOVER_DEADLINE, IO_TIMEOUT,
    POLL_INTERVAL, READY_DEADLINE, RESTART_ATTEMPTS,
};
use crate::error::TestkitError;
use crate::resp::{self, Conn};
use crate::topology::{self, ClusterNode};

impl LocalCluster {
    // ----- faults --------------------------------------------------------

    /// Freezes node `index` with SIGSTOP. Its sockets stay open, so peers and
    /// clients see timeouts rather than refused connections. Idempotent.
    pub fn pause(&self, index: usize) -> Result<(), TestkitError> {
        let node = self.node(index)?;
        match node.state() {
            NodeState::Killed => Err(TestkitError::NodeUnavailable {
                index,
                state: NodeState::Killed,
            }),
            NodeState::Paused => Ok(()),
            NodeState::Running => {
                node.signal(Signal::SIGSTOP, "SIGSTOP")?;
                node.set_state(NodeState::Paused);
                Ok(())
            }
        }
    }

    /// Continues a paused node with SIGCONT. A no-op on a running node.
    pub fn resume(&self, index: usize) -> Result<(), TestkitError> {
        let node = self.node(index)?;
        match node.state() {
            NodeState::Killed => Err(TestkitError::NodeUnavailable {
                index,
                state: NodeState::Killed,
            }),
            NodeState::Running => Ok(()),
            NodeState::Paused => {
                node.signal(Signal::SIGCONT, "SIGCONT")?;
                node.set_state(NodeState::Running);
                Ok(())
            }
        }
    }

    /// SIGKILLs node `index` and reaps it. Works on paused nodes; a no-op on killed ones.
    pub fn kill(&mut self, index: usize) -> Result<(), TestkitError> {
        let node = self.node_mut(index)?;
        if node.child.is_some() {
            // Signal while the child is still ours: until it is reaped its pid
            // cannot be reused, so this can only hit our redis-server.
            node.signal(Signal::SIGKILL, "SIGKILL")?;
        }
        if let Some(mut child) = node.child.take() {
            child.wait().map_err(|source| TestkitError::Io {
                context: format!("reaping node {index}"),
                source,
            })?;
        }
        node.set_state(NodeState::Killed);
        node.drop_conn();
        Ok(())
    }

    /// Starts node `index` again with the same port, directory and
    /// `nodes.conf` (so the same node id), and waits until it answers PING.
    /// A running or paused node is killed first. Rejoining the cluster
    /// happens on its own; use [`wait_until_ok`](Self::wait_until_ok) to wait for it.
    ///
    /// Call this from a thread that outlives the cluster (see the type docs).
    pub fn restart(&mut self, index: usize) -> Result<(), TestkitError> {
        self.kill(index)?;
        let node = self.node_mut(index)?;
        let mut last = None;
        for attempt in 0..RESTART_ATTEMPTS {
            if attempt > 0 {
                // Something briefly held our port (e.g. an outgoing connection's
                // ephemeral port); give it a moment before binding again.
                std::thread::sleep(Duration::from_millis(200));
            }
            node.spawn()?;
            match node.wait_ready(READY_DEADLINE) {
                Ok(()) => return Ok(()),
                Err(e @ (TestkitError::NodeExited { .. } | TestkitError::PortInUse { .. })) => {
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::Unexpected("no restart attempt made".into())))
    }

    /// Runs `CLUSTER FAILOVER` on replica `replica_index` and waits (up to
    /// ~10 s) until its `ROLE` says master.
    pub fn failover(&self, replica_index: usize) -> Result<(), TestkitError> {
        self.failover_with(replica_index, FailoverMode::Coordinated)
    }

    /// [`failover`](Self::failover) with an explicit `FORCE`/`TAKEOVER` mode.
    pub fn failover_with(
        &self,
        replica_index: usize,
        mode: FailoverMode,
    ) -> Result<(), TestkitError> {
        let node = self.node(replica_index)?;
        match mode {
            FailoverMode::Coordinated => node.exec_ok(&["CLUSTER", "FAILOVER"])?,
            FailoverMode::Force => node.exec_ok(&["CLUSTER", "FAILOVER", "FORCE"])?,
            FailoverMode::Takeover => node.exec_ok(&["CLUSTER", "FAILOVER", "TAKEOVER"])?,
        };
        let what = format!("node {replica_index} to become master after CLUSTER FAILOVER");
        poll(&what, FAILOVER_DEADLINE, POLL_INTERVAL, || {
            let role = self.role(replica_index)?;
            if role == "master" {
                Ok(())
            } else {
                Err(TestkitError::Unexpected(format!("ROLE is {role}")))
            }
        })?;
        self.refresh_snapshot();
        Ok(())
    }

    /// Waits until a replica of `old_primary` has been promoted: its `ROLE`
    /// says master and its own `CLUSTER NODES` shows it serving every slot
    /// `old_primary` served. Returns the new primary's index.
    ///
    /// Which replicas and slots belonged to `old_primary` is read from a live
    /// node's current view when it still shows `old_primary` with slots, and
    /// otherwise from the last healthy snapshot, so calling this after the
    /// failover already happened still works.
    pub fn wait_for_failover(
        &self,
        old_primary: usize,
        deadline: Duration,
    ) -> Result<usize, TestkitError> {
        let old_id = self.node_id(old_primary)?;
        let analyse = |view: &[ClusterNode]| {
            let slots = view
                .iter()
                .find(|n| n.id == old_id)
                .map(|n| n.slots.clone())
                .unwrap_or_default();
            let replicas: Vec<String> = view
                .iter()
                .filter(|n| n.master_id.as_deref() == Some(old_id.as_str()))
                .map(|n| n.id.clone())
                .collect();
            (slots, replicas)
        };
        let current = self
            .live_view(Some(old_primary))
            .map(|(_, v)| analyse(&v))
            .unwrap_or_default();
        let (slots, replica_ids) = if current.0.is_empty() {
            analyse(&lock(&self.snapshot))
        } else {
            current
        };
        if slots.is_empty() {
            return Err(TestkitError::Unexpected(format!(
                "node {old_primary} served no slots, so there is no failover to wait for"
            )));
        }
        let candidates = replica_ids
            .iter()
            .map(|id| self.index_of_id_or_err(id))
            .collect::<Result<Vec<_>, _>>()?;
        let what = format!(
            "a replica of node {old_primary} (candidates {candidates:?}) to take over its slots"
        );
        let new_primary = poll(&what, deadline, POLL_INTERVAL, || {
            let mut last = TestkitError::Unexpected("no live candidate".to_owned());
            for &c in &candidates {
                if c == old_primary || self.nodes[c].state() != NodeState::Running {
                    continue;
                }
                let check = || -> Result<usize, TestkitError> {
                    let role = self.role(c)?;
                    if role != "master" {
                        return Err(TestkitError::Unexpected(format!("node {c} ROLE is {role}")));
                    }
                    let view = self.cluster_nodes(c)?;
                    let mine = view
                        .iter()
                        .find(|n| n.is_myself())
                        .map(|n| n.slots.clone())
                        .unwrap_or_default();
                    if topology::covers(&mine, &slots) {
                        Ok(c)
                    } else {
                        Err(TestkitError::Unexpected(format!(
                            "node {c} is master but does not serve all of {slots:?} yet"
                        )))
                    }
                };
                match check() {
                    Ok(c) => return Ok(c),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })?;
        Ok(new_primary)
    }

    // ----- latency faults ------------------------------------------------

    /// Sends `DEBUG SLEEP seconds` to node `index` and returns without waiting
    /// for the reply: a background thread owns the connection and reads the
    /// reply when the server wakes up. While asleep the node answers nothing.
    pub fn debug_sleep(&self, index: usize, seconds: f64) -> Result<(), TestkitError> {
        let node = self.node(index)?;
        let what = "DEBUG SLEEP";
        let mut conn = Conn::connect(node.socket_addr(), CONNECT_TIMEOUT, IO_TIMEOUT)
            .map_err(|e| node.io_error(what, e))?;
        let secs = seconds.max(0.0);
        conn.send(&resp::encode(&["DEBUG", "SLEEP", &secs.to_string()]))
            .map_err(|e| node.io_error(what, e))?;
        // Keep the socket open until the reply arrives so the server never sees
        // an early close; the thread ends by itself at the latest 5 s after the
        // sleep should have ended.
        let wait = Duration::from_secs_f64(secs.min(3600.0)) + Duration::from_secs(5);
        conn.set_read_timeout(wait)
            .map_err(|e| node.io_error(what, e))?;
        std::thread::Builder::new()
            .name(format!("slotguard-testkit-debug-sleep-{index}"))
            .spawn(move || {
                let _ = conn.read_reply();
            })
            .map_err(|source| TestkitError::Io {
                context: "spawning DEBUG SLEEP reader thread".to_owned(),
                source,
            })?;
        Ok(())
    }

    /// `CLIENT PAUSE millis` on node `index`: client commands stall (but the
    /// cluster bus keeps running, unlike [`pause`](Self::pause)).
    pub fn client_pause(&self, index: usize, millis: u64) -> Result<(), TestkitError> {
        self.node(index)?
            .exec_ok(&["CLIENT", "PAUSE", &millis.to_string()])?;
        Ok(())
    }
}
