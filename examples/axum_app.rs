//! An items API on slotguard's full stack, with axum, and SQLite as the
//! authoritative store behind the cache.
//!
//! ```text
//! cargo run -p slotguard-examples --bin axum_app      # a throwaway local cluster, a temp database
//! SLOTGUARD_SEEDS=127.0.0.1:7000,127.0.0.1:7001 SLOTGUARD_DB=items.db SLOTGUARD_HTTP=127.0.0.1:3000 \
//!     cargo run -p slotguard-examples --bin axum_app
//!
//! curl -X PUT http://127.0.0.1:3000/items/42 -H 'content-type: application/json' -d '{"name":"ada"}'
//! curl -i http://127.0.0.1:3000/items/42   # the same JSON; x-served-by: primary|replica|client_cache|near_cache|secondary
//! curl -i http://127.0.0.1:3000/items/7    # 404
//! curl http://127.0.0.1:3000/healthz       # slot coverage of the cluster
//! curl http://127.0.0.1:3000/metrics       # Prometheus text: slotguard's metrics
//! ```
//!
//! - `GET /items/{id}` reads `item:{id}` through the stack: coalesce →
//!   fallback (near-cache, SQLite) → slot_refresh → redirect →
//!   replica_failover → circuit_breaker → leaf ([`SlotGuard`] builds it). A
//!   miss is loaded from SQLite and written back to the cluster; a read the
//!   cluster cannot answer comes from the near-cache or SQLite. It returns
//!   exactly the JSON body last stored (404 when there is none).
//! - `PUT /items/{id}` takes any JSON body (anything else is a 400), writes
//!   it to SQLite, then invalidates the cached copy through the stack (a
//!   `Delete`, so neither the near-cache nor a replica serves the old one);
//!   it answers 204 only once both are done. When the invalidation fails
//!   (the key's shard is down), it answers 503: SQLite holds the new body,
//!   and reads of the item go to its primary or SQLite until one answers.
//! - Errors map to statuses: bad input 400, a cluster or store that cannot
//!   answer 503, anything else 502.
//!
//! `SLOTGUARD_SEEDS`: comma-separated `host:port` of cluster nodes (without
//! it, a local cluster is started: 3 primaries, 3 replicas).
//! `SLOTGUARD_HTTP`: where to listen (default `127.0.0.1:3000`).
//! `SLOTGUARD_DB`: the SQLite file (default: one in a temporary folder,
//! removed on exit).
//! `SLOTGUARD_USERNAME`, `SLOTGUARD_PASSWORD`: credentials (an ACL user, or
//! a password alone for `requirepass`); `SLOTGUARD_TLS_CA`: a PEM file of CA
//! certificates, TLS on when set (`NodeConfig::from_env`).
//!
//! Telemetry: `GET /metrics` serves slotguard's metrics (the telemetry
//! layer reports through the OpenTelemetry API; here the SDK's meter
//! provider exports them with `opentelemetry-prometheus`). Requests are
//! traced with tower-http's `TraceLayer` into a `tracing` subscriber that
//! logs to stderr, off unless `RUST_LOG` is set (e.g.
//! `RUST_LOG=tower_http=debug,slotguard=debug`).
//!
//! `SLOTGUARD_LEAF`: `node` (default) or `fred`, the fred-backed leaf
//! (`LeafKind::from_env`), with the same credentials and TLS.

mod cluster;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use slotguard::{CacheError, CacheRequest, CacheResponse, Failure, SlotGuard};
use slotguard_store::SqliteStore;
use tower_http::trace::TraceLayer;

/// Deadline of each request through the stack, across every retry,
/// failover and store load.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct App {
    cache: SlotGuard,
    store: SqliteStore,
    metrics: prometheus::Registry,
}

fn item_key(id: &str) -> String {
    format!("item:{id}")
}

fn status_of(failure: Failure) -> StatusCode {
    match failure {
        Failure::InvalidInput => StatusCode::BAD_REQUEST,
        Failure::Timeout
        | Failure::Connection
        | Failure::CircuitOpen
        | Failure::ShardUnavailable
        | Failure::ClusterDown
        | Failure::Loading
        | Failure::Busy
        | Failure::Overloaded
        | Failure::TooManyRedirects
        | Failure::Indeterminate
        | Failure::Secondary => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn error_response(err: &CacheError) -> Response {
    (status_of(err.failure()), format!("{err}\n")).into_response()
}

fn served_headers(resp: &CacheResponse) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "x-served-by",
        HeaderValue::from_static(resp.served.path.name()),
    );
    if let Some(node) = &resp.served.node {
        if let Ok(v) = HeaderValue::from_str(&node.to_string()) {
            h.insert("x-node", v);
        }
    }
    if let Some(age) = resp.served.age {
        if let Ok(v) = HeaderValue::from_str(&age.as_millis().to_string()) {
            h.insert("x-age-ms", v);
        }
    }
    h
}

async fn get_item(State(app): State<App>, UrlPath(id): UrlPath<String>) -> Response {
    let req = CacheRequest::get(item_key(&id)).with_timeout(REQUEST_TIMEOUT);
    match app.cache.call(req).await {
        Ok(resp) => {
            let mut headers = served_headers(&resp);
            match resp.value {
                Some(body) => {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    (StatusCode::OK, headers, body).into_response()
                }
                None => (StatusCode::NOT_FOUND, headers, "not found\n").into_response(),
            }
        }
        Err(e) => error_response(&e),
    }
}

async fn put_item(State(app): State<App>, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    // Any JSON, stored byte for byte; only its validity is checked.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return (StatusCode::BAD_REQUEST, format!("body is not JSON: {e}\n")).into_response();
    }
    let key = item_key(&id);
    if let Err(e) = app.store.put(key.clone(), body).await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response();
    }
    // Then the cached copy goes, through the stack: the fallback layer
    // marks the key, so the old body is served neither from the near-cache
    // nor from a replica.
    let del = CacheRequest::delete(key).with_timeout(REQUEST_TIMEOUT);
    match app.cache.call(del).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error_response(&e),
    }
}

async fn healthz(State(app): State<App>) -> Json<serde_json::Value> {
    let map = app.cache.topology().load();
    Json(serde_json::json!({
        "status": "ok",
        "cluster_ok": map.covered_slots() == 16384,
        "slots_covered": map.covered_slots(),
        "generation": map.generation(),
        "shards": map.shards().len(),
        "store": app.store.path().display().to_string(),
    }))
}

async fn metrics(State(app): State<App>) -> Response {
    let mut out = Vec::new();
    use prometheus::Encoder as _;
    match prometheus::TextEncoder::new().encode(&app.metrics.gather(), &mut out) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn router(app: App) -> Router {
    Router::new()
        .route("/items/{id}", get(get_item).put(put_item))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(TraceLayer::new_for_http())
        .with_state(app)
}

/// The OpenTelemetry SDK's meter provider, exported as Prometheus text
/// from `registry`, installed globally (where the telemetry layer finds
/// it); and a `tracing` subscriber for `TraceLayer`, silent unless
/// `RUST_LOG` says otherwise.
fn install_telemetry() -> Result<prometheus::Registry, Box<dyn std::error::Error>> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()?;
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(exporter)
        .build();
    opentelemetry::global::set_meter_provider(provider);
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        // stderr: stdout's first line is the listen address.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    Ok(registry)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("SLOTGUARD_HTTP").unwrap_or_else(|_| "127.0.0.1:3000".into());
    // Before the stack is built: its telemetry layer takes the global meter.
    let metrics = install_telemetry()?;
    // Use the given cluster, or start a throwaway one on loopback.
    let (_cluster, seeds) = cluster::seeds_or_local_cluster()?;
    // Kept until exit: a default database lives in it.
    let tmp = tempfile::tempdir()?;
    let db = std::env::var("SLOTGUARD_DB")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("items.db"));
    let store = SqliteStore::open(&db)?;
    let cache = SlotGuard::builder(seeds)
        .leaf(slotguard::NodeConfig::from_env()?)
        .leaf_kind(slotguard::LeafKind::from_env()?)
        .store(store.clone())
        .request_timeout(REQUEST_TIMEOUT)
        .connect()
        .await?;

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    // The first stdout line says where we listen (tests read it).
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        router(App {
            cache,
            store,
            metrics,
        }),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
