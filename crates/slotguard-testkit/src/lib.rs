//! # slotguard-testkit
//!
//! Runs **real** `redis-server` processes as a Redis Cluster on 127.0.0.1 for
//! slotguard's tests, and injects the faults that a cluster client has to
//! survive: frozen nodes (SIGSTOP), crashed nodes (SIGKILL), restarts,
//! failovers, slow commands (`DEBUG SLEEP`, `CLIENT PAUSE`) and slot
//! migrations stopped half-way (MIGRATING/IMPORTING).
//!
//! Everything is synchronous std code (no async runtime), so the kit can drive
//! a cluster from any test, async or not, and stays independent of the client
//! library under test.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use slotguard_testkit::{ClusterSpec, LocalCluster, TestkitError};
//!
//! fn main() -> Result<(), TestkitError> {
//!     // 3 primaries, 1 replica each, cluster-node-timeout 1000 ms.
//!     let mut cluster = LocalCluster::start(ClusterSpec::default())?;
//!     let seeds = cluster.seeds(); // hand these to the client under test
//!     assert_eq!(seeds.len(), 6);
//!
//!     // Freeze the primary of slot 0: its sockets stay open, it answers nothing.
//!     let owner = cluster.primary_of_slot(0)?;
//!     cluster.pause(owner)?;
//!     let promoted = cluster.wait_for_failover(owner, Duration::from_secs(15))?;
//!     assert_ne!(promoted, owner);
//!
//!     // Thaw it: it rejoins as a replica of the promoted node.
//!     cluster.resume(owner)?;
//!     cluster.wait_until_ok(Duration::from_secs(15))?;
//!
//!     // Crash and restart a node (same port, same node id).
//!     cluster.kill(owner)?;
//!     cluster.restart(owner)?;
//!     cluster.wait_until_ok(Duration::from_secs(15))?;
//!     Ok(())
//! } // Drop SIGKILLs and reaps every server and removes the temp dir.
//! ```
//!
//! With `ClusterSpec { proxied: true, .. }` every node sits behind a
//! [`FaultProxy`] that clients learn from the cluster itself
//! (`cluster-announce-port`): latency with jitter, bandwidth limits, black
//! holes, resets and replies cut after N bytes, per node and direction, at
//! run time ([`LocalCluster::proxy`]); the bus ports are proxied too, so
//! [`LocalCluster::partition`] cuts a node off its peers while clients still
//! reach it (a minority partition, no firewall rules involved).
//!
//! For replies no real server sends (garbage, absurd lengths, deep nesting,
//! silence, a connection cut mid-reply), [`ScriptedNode`] plays a one-node
//! cluster whose answers a test scripts per key.
//!
//! ## How a cluster is built
//!
//! * Every node gets a client port and a cluster-bus port, both allocated by
//!   binding `127.0.0.1:0` (the config sets `cluster-port`, so the bus port is
//!   not `port + 10000`). A node that dies at startup (port raced away by
//!   another test process) makes [`LocalCluster::start`] retry with fresh
//!   ports, up to 3 attempts.
//! * Each node has its own directory (config, `nodes.conf`, `redis.log`) in one
//!   temp dir named `slotguard-testkit-*`. Set `SLOTGUARD_TESTKIT_KEEP_DIR=1`
//!   to keep it for a post-mortem, `SLOTGUARD_REDIS_SERVER` to use another
//!   `redis-server` binary.
//! * The cluster is formed without `redis-cli`: distinct config epochs,
//!   `CLUSTER ADDSLOTSRANGE` splitting the slots evenly, `CLUSTER MEET` from
//!   node 0, `CLUSTER REPLICATE`, then [`LocalCluster::wait_until_ok`].
//! * Indices `0..primaries` are the primaries, then the replicas grouped by
//!   primary. Indices are stable; roles are not (ask
//!   [`LocalCluster::primary_of_slot`] / [`LocalCluster::primaries`]).
//!
//! ## Rules of use
//!
//! * Every wait is a poll with a deadline that fails with
//!   [`TestkitError::Timeout`] naming what it waited for and the last thing it
//!   saw; nothing sleeps blindly.
//! * Commands use a sync RESP2 client with a 1 s connect and 2 s read/write
//!   timeout: commands to a paused node fail, they never hang.
//! * Helpers that "ask the cluster" only ask nodes the testkit believes to be
//!   running (not paused, not killed).
//! * When `/usr/bin/setpriv` exists, servers are started with
//!   `--pdeathsig KILL`, so a test process that crashes cannot leave servers
//!   behind. Linux ties that signal to the **thread** that spawned the
//!   process: call `start`/`restart` from a thread that lives as long as the
//!   cluster, e.g. the test's own thread.

#![warn(missing_docs)]

mod cluster;
mod error;
mod proxy;
mod resp;
mod scripted;
mod slot;
mod topology;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod proxied_tests;
#[cfg(test)]
mod scripted_tests;

pub use cluster::{
    redis_default, ClusterSpec, FailoverMode, LocalCluster, NodeInfo, NodeState, ServerSetting,
    TlsFiles, CACHE_USER_RULES, KEEP_DIR_ENV, REDIS_DEFAULT_NODE_TIMEOUT_MS, REDIS_SERVER_ENV,
};
pub use error::TestkitError;
pub use proxy::{Direction, FaultProxy, Faults};
pub use resp::Reply;
pub use scripted::{Action, ScriptedNode};
pub use slot::{key_in_slot, key_slot, SLOT_COUNT};
pub use topology::ClusterNode;
