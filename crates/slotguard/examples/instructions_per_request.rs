//! A fixed number of requests through the default `SlotGuard` handle, one
//! after another, against a local cluster: for counting the client's
//! instructions per request with callgrind, which counts the same for the
//! same binary and input whatever else the machine is doing (throughput on
//! a shared 2-core machine moves ±20 % between runs; this moves < 0.5 %).
//!
//! ```sh
//! cargo build --release -p slotguard --example instructions_per_request
//! for n in 2000 10000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$n \
//!     target/release/examples/instructions_per_request $n 2>&1 | grep Collected
//! done
//! # instructions per request = (Collected(10000) - Collected(2000)) / 8000
//! ```
//!
//! With `store` after the count (`instructions_per_request 2000 store`),
//! the handle is built over an SQLite store in a temporary directory, as
//! `bench throughput`'s `stack_store` is: the fallback layer, its
//! near-cache and RESP3 client tracking.
//!
//! Each request is a GET of one of 200 keys, and every tenth is followed by
//! a SET of it (100-byte values). The cluster (`redis-server` processes) is
//! not traced: valgrind follows this process only. The difference of two
//! runs cancels the start-up, the cluster's formation and the shutdown.

use slotguard::SlotGuard;
use slotguard_testkit::{ClusterSpec, LocalCluster};

const KEYS: usize = 200;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1000,
    };
    let with_store = std::env::args().nth(2).as_deref() == Some("store");
    let dir = tempfile::tempdir()?;
    let cluster = LocalCluster::start(ClusterSpec::default())?;
    // One thread: the count then does not depend on how work is spread
    // over worker threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let seeds = cluster
            .seeds()
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<slotguard::NodeAddr>, _>>()?;
        let mut builder = SlotGuard::builder(seeds);
        if with_store {
            builder = builder.store(slotguard_store::SqliteStore::open(
                dir.path().join("store.db"),
            )?);
        }
        let guard = builder.connect().await?;
        for i in 0..KEYS {
            guard.set(format!("k{i}"), vec![b'v'; 100], None).await?;
        }
        for i in 0..n {
            let key = format!("k{}", i % KEYS);
            guard.get(key.clone()).await?;
            if i % 10 == 0 {
                guard.set(key, vec![b'w'; 100], None).await?;
            }
        }
        guard.shutdown().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    println!(
        "{n} requests{}",
        if with_store { " with a store" } else { "" }
    );
    Ok(())
}
