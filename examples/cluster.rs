//! Where every example's cluster comes from: the one `SLOTGUARD_SEEDS`
//! names, or a throwaway local one (3 primaries, 3 replicas) that lives as
//! long as the returned [`LocalCluster`].

use std::io;

use slotguard::NodeAddr;
use slotguard_testkit::{ClusterSpec, LocalCluster};

/// The seeds to connect to, and the local cluster behind them if one was
/// started (keep it until exit). The error is an `io::Error` so that every
/// example's `main`, whatever its boxed error type, can use `?` on it.
pub(crate) fn seeds_or_local_cluster() -> io::Result<(Option<LocalCluster>, Vec<NodeAddr>)> {
    if let Some(seeds) = slotguard::node::seeds_from_env().map_err(io::Error::other)? {
        return Ok((None, seeds));
    }
    // On stderr: the server examples print where they listen as their
    // first stdout line.
    eprintln!("starting a local cluster (3 primaries, 3 replicas)...");
    let cluster = LocalCluster::start(ClusterSpec::default()).map_err(io::Error::other)?;
    let seeds = cluster
        .seeds()
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    Ok((Some(cluster), seeds))
}
