//! The items API of `axum_app` over gRPC, with tonic, on slotguard's full
//! stack, and SQLite as the authoritative store behind the cache.
//!
//! ```text
//! cargo run -p slotguard-examples --bin tonic_app      # a throwaway local cluster, a temp database
//! SLOTGUARD_SEEDS=127.0.0.1:7000,127.0.0.1:7001 SLOTGUARD_DB=items.db SLOTGUARD_GRPC=127.0.0.1:50051 \
//!     cargo run -p slotguard-examples --bin tonic_app
//! ```
//!
//! The service is `slotguard.items.Items` (see `items_grpc.rs` for its
//! contract written as a `.proto` file; any gRPC client can call it):
//!
//! - `Get(id)` reads `item:{id}` through the stack: coalesce → fallback
//!   (near-cache, SQLite) → invalidation log → slot_refresh → redirect →
//!   replica_failover → circuit_breaker → leaf ([`SlotGuard`] builds it). A
//!   miss is loaded from SQLite and written back to the cluster; a read the
//!   cluster cannot answer comes from the near-cache or SQLite. It returns
//!   exactly the body last stored, or `NOT_FOUND`. The response metadata
//!   says what answered: `x-served-by` (`primary|replica|client_cache|near_cache|secondary`),
//!   `x-node` (the node, for cluster answers) and `x-age-ms` (the age of a
//!   near-cache answer).
//! - `Put(id, body)` writes any bytes to SQLite, then invalidates the cached
//!   copy through the stack (a `Delete`, so neither the near-cache nor a
//!   replica serves the old one); it answers only once both are done. When
//!   the invalidation fails (the key's shard is down), the call fails
//!   `UNAVAILABLE`: SQLite holds the new body, and reads of the item go to
//!   its primary or SQLite until one answers.
//! - Each call gets the stack's deadline of 1 s, or the caller's gRPC
//!   deadline (`grpc-timeout`, less a tenth) when shorter: retries,
//!   failover and the fallback all fit within what the caller waits. A
//!   caller leaving under 5 ms is refused `DEADLINE_EXCEEDED` at once.
//! - Errors are typed gRPC status codes, from [`CacheError::failure`]: an
//!   empty id or a request the stack refuses as bad (an oversize key) is
//!   `INVALID_ARGUMENT`; a deadline that passed `DEADLINE_EXCEEDED`; a cluster or store that cannot answer
//!   (connection, breaker open, shard unavailable, `CLUSTERDOWN`, overload,
//!   a write of unknown outcome) `UNAVAILABLE`, safe to retry since `Get`
//!   and `Put` are idempotent; anything else `INTERNAL`.
//!
//! `SLOTGUARD_SEEDS`: comma-separated `host:port` of cluster nodes (without
//! it, a local cluster is started: 3 primaries, 3 replicas).
//! `SLOTGUARD_GRPC`: where to listen (default `127.0.0.1:50051`).
//! `SLOTGUARD_DB`: the SQLite file (default: one in a temporary folder,
//! removed on exit). `SLOTGUARD_USERNAME`, `SLOTGUARD_PASSWORD`,
//! `SLOTGUARD_TLS_CA`: credentials and TLS to the nodes
//! (`NodeConfig::from_env`). Requests are traced with tower-http's
//! `TraceLayer`. Ctrl-C shuts it down: the server drains, the stack's tasks
//! stop, the local cluster (if any) is removed.
//!
//! # What gRPC costs to build
//!
//! No system `protoc`: the messages are Rust structs with `prost` derives
//! and `build.rs` generates the service with `tonic_build::manual`. That is
//! the lighter of the two ways: vendoring `protoc` (`protoc-bin-vendored`)
//! brings a prebuilt `protoc` binary per platform (one crate each) and
//! still needs `prost-build` and its dependencies to drive it. tonic is built with
//! `codegen`, `server` and `router` only: an HTTP/2 server, no TLS, no
//! compression, and not its `channel` client, which would turn on tower's
//! `balance`/`discover` features and so, by feature unification, rebuild
//! tower and every slotguard crate above it in workspace builds (the test's
//! client runs on hyper-util's HTTP/2 client instead).
//!
//! Measured on the project's 2-core machine shared with other builds (load
//! average 6–9), debug profile, the rest of the workspace already built:
//! tonic, tonic-prost, prost and tonic-build add 19 packages to the examples
//! crate's build (11 new to `Cargo.lock`; hyper, tower and tokio were there
//! already); with those not yet built,
//! `cargo build -p slotguard-examples --bin tonic_app` took 16 s wall,
//! 25 s CPU (`--timings`: the added packages' units sum to 10.7 s, h2
//! 2.5 s, tonic 1.1 s, itertools 1.1 s, prost-derive 0.9 s; the first such
//! build, at load average 11 and still with tonic's `channel` feature, took
//! 92 s wall). After an edit of this file
//! it rebuilds in 1–2 s.

#[path = "items_grpc.rs"]
mod items_grpc;

mod cluster;

use std::time::Duration;

use items_grpc::items_server::{Items, ItemsServer};
use items_grpc::{GetRequest, GetResponse, PutRequest, PutResponse};
use slotguard::{CacheError, CacheRequest, CacheResponse, Failure, SlotGuard};
use slotguard_store::SqliteStore;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status};
use tower_http::trace::TraceLayer;

/// Deadline of each request through the stack, across every retry,
/// failover and store load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The least time a call is sent through the stack with (see
/// [`timeout_for`]).
const MIN_CALL_TIME: Duration = Duration::from_millis(5);

#[derive(Clone)]
struct App {
    cache: SlotGuard,
    store: SqliteStore,
}

fn item_key(id: &str) -> Result<String, Status> {
    // Checked here because an empty id is the API's own rule; a key the
    // stack refuses (oversize) comes back from it as `InvalidInput`.
    if id.is_empty() {
        return Err(Status::invalid_argument("id is empty"));
    }
    Ok(format!("item:{id}"))
}

fn code_of(failure: Failure) -> Code {
    match failure {
        Failure::InvalidInput => Code::InvalidArgument,
        Failure::Timeout => Code::DeadlineExceeded,
        Failure::Connection
        | Failure::CircuitOpen
        | Failure::ShardUnavailable
        | Failure::ClusterDown
        | Failure::Loading
        | Failure::Busy
        | Failure::Overloaded
        | Failure::TooManyRedirects
        | Failure::Indeterminate
        | Failure::Secondary => Code::Unavailable,
        _ => Code::Internal,
    }
}

fn status_of(err: &CacheError) -> Status {
    Status::new(code_of(err.failure()), err.to_string())
}

/// The deadline of a call through the stack: ours, or the caller's gRPC
/// deadline (`grpc-timeout`) less a tenth for the reply's way back when
/// that is shorter. So the stack plans its fallback within what the caller
/// will wait and fails with a typed `DEADLINE_EXCEEDED` before the caller
/// gives up; tonic on its own would only cancel the call at that moment.
///
/// A caller that leaves less than [`MIN_CALL_TIME`] is refused at once:
/// such a call would only time out waiting for its node, and the node's
/// breaker counts that timeout against the node, however healthy it is
/// (measured: five calls with a 1 ns deadline opened a healthy primary's
/// breaker).
fn timeout_for(metadata: &MetadataMap) -> Result<Duration, Status> {
    let Some(t) = caller_timeout(metadata) else {
        return Ok(REQUEST_TIMEOUT);
    };
    let t = (t - t / 10).min(REQUEST_TIMEOUT);
    if t < MIN_CALL_TIME {
        return Err(Status::deadline_exceeded(
            "the caller's deadline leaves no time for the call",
        ));
    }
    Ok(t)
}

/// `grpc-timeout`: at most 8 digits and a unit (gRPC over HTTP/2); `None`
/// when absent or malformed (then tonic ignores it too).
fn caller_timeout(metadata: &MetadataMap) -> Option<Duration> {
    // `to_str` admits visible ASCII only, so the slicing below is on
    // character boundaries.
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit = v.chars().last()?;
    let digits = &v[..v.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What answered, as response metadata.
fn served_metadata(resp: &CacheResponse, md: &mut MetadataMap) {
    md.insert(
        "x-served-by",
        MetadataValue::from_static(resp.served.path.name()),
    );
    if let Some(node) = &resp.served.node {
        if let Ok(v) = node.to_string().parse() {
            md.insert("x-node", v);
        }
    }
    if let Some(age) = resp.served.age {
        if let Ok(v) = age.as_millis().to_string().parse() {
            md.insert("x-age-ms", v);
        }
    }
}

#[tonic::async_trait]
impl Items for App {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let timeout = timeout_for(request.metadata())?;
        let id = request.into_inner().id;
        let req = CacheRequest::get(item_key(&id)?).with_timeout(timeout);
        let resp = self.cache.call(req).await.map_err(|e| status_of(&e))?;
        let Some(body) = resp.value.clone() else {
            let mut status = Status::not_found(format!("no item {id}"));
            served_metadata(&resp, status.metadata_mut());
            return Err(status);
        };
        let mut reply = Response::new(GetResponse { id, body });
        served_metadata(&resp, reply.metadata_mut());
        Ok(reply)
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let timeout = timeout_for(request.metadata())?;
        let PutRequest { id, body } = request.into_inner();
        let key = item_key(&id)?;
        self.store
            .put(key.clone(), body)
            .await
            .map_err(|e| Status::unavailable(format!("store: {e}")))?;
        // Then the cached copy goes, through the stack: the fallback layer
        // marks the key, so the old body is served neither from the
        // near-cache nor from a replica.
        let del = CacheRequest::delete(key).with_timeout(timeout);
        let resp = self.cache.call(del).await.map_err(|e| status_of(&e))?;
        let mut reply = Response::new(PutResponse {});
        served_metadata(&resp, reply.metadata_mut());
        Ok(reply)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("SLOTGUARD_GRPC").unwrap_or_else(|_| "127.0.0.1:50051".into());
    // Use the given cluster, or start a throwaway one on loopback.
    let (cluster, seeds) = cluster::seeds_or_local_cluster()?;
    // Kept until exit: a default database lives in it.
    let tmp = tempfile::tempdir()?;
    let db = std::env::var("SLOTGUARD_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("items.db"));
    let store = SqliteStore::open(&db)?;
    let cache = SlotGuard::builder(seeds)
        .leaf(slotguard::NodeConfig::from_env()?)
        .store(store.clone())
        .request_timeout(REQUEST_TIMEOUT)
        .connect()
        .await?;

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    // The first stdout line says where we listen (tests read it).
    println!("listening on http://{}", listener.local_addr()?);
    let app = App {
        cache: cache.clone(),
        store,
    };
    tonic::transport::Server::builder()
        .layer(TraceLayer::new_for_grpc())
        .add_service(ItemsServer::new(app))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    // In-flight calls have drained: stop the stack's tasks before the
    // cluster they talk to goes away.
    cache.shutdown().await;
    drop(cluster);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(v: &'static str) -> MetadataMap {
        let mut md = MetadataMap::new();
        md.insert("grpc-timeout", MetadataValue::from_static(v));
        md
    }

    #[test]
    fn the_callers_grpc_timeout_bounds_the_stack_deadline() {
        let timeout = |v| timeout_for(&with_timeout(v)).map_err(|s| s.code());
        assert_eq!(timeout_for(&MetadataMap::new()).unwrap(), REQUEST_TIMEOUT);
        assert_eq!(timeout("200m"), Ok(Duration::from_millis(180)));
        assert_eq!(timeout("500000u"), Ok(Duration::from_millis(450)));
        // Longer than ours: ours.
        assert_eq!(timeout("5S"), Ok(REQUEST_TIMEOUT));
        assert_eq!(timeout("1H"), Ok(REQUEST_TIMEOUT));
        // No time left for the call: refused.
        assert_eq!(timeout("5m"), Err(Code::DeadlineExceeded));
        assert_eq!(timeout("1n"), Err(Code::DeadlineExceeded));
        // Malformed (no unit, unknown unit, over 8 digits): ignored.
        for bad in ["200", "200x", "m", "123456789m", "-5m", ""] {
            assert_eq!(caller_timeout(&with_timeout(bad)), None, "{bad}");
        }
        assert_eq!(
            caller_timeout(&with_timeout("3M")),
            Some(Duration::from_secs(180))
        );
        assert_eq!(
            caller_timeout(&with_timeout("7n")),
            Some(Duration::from_nanos(7))
        );
    }
}
