//! An HTTP cache API on slotguard, with axum.
//!
//! ```text
//! cargo run -p slotguard-examples --bin axum_app                      # own local cluster
//! SLOTGUARD_SEEDS=127.0.0.1:7000 cargo run -p slotguard-examples --bin axum_app -- 127.0.0.1:3000
//!
//! curl -X PUT 'http://127.0.0.1:3000/cache/user:42?ttl=60' -d 'ada'
//! curl -i http://127.0.0.1:3000/cache/user:42        # x-served-by: primary|replica
//! curl -X DELETE http://127.0.0.1:3000/cache/user:42
//! curl http://127.0.0.1:3000/health                  # slot map and breaker states
//! ```
//!
//! The full degradation stack: slot_refresh → redirect → replica_failover →
//! circuit_breaker → fred leaf, plus a replication health prober. Errors
//! map to HTTP statuses: bad input 400, a shard that cannot answer 503.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use slotguard::fred::HealthProber;
use slotguard::layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use slotguard::layers::slot_refresh::SlotRefreshLayer;
use slotguard::tower::util::BoxCloneSyncService;
use slotguard::{
    classify, BoxError, CacheRequest, CacheResponse, Failure, FredConfig, FredService,
    FredTopologySource, NodeAddr, ServiceBuilderExt, Topology,
};
use slotguard_testkit::{ClusterSpec, LocalCluster};
use tower::{ServiceBuilder, ServiceExt};

type Cache = BoxCloneSyncService<CacheRequest, CacheResponse, BoxError>;

#[derive(Clone)]
struct App {
    cache: Cache,
    topology: Topology,
    breakers: CircuitBreakerLayer,
}

const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
struct PutParams {
    /// Expiry in seconds.
    ttl: Option<u64>,
}

fn error_response(err: BoxError) -> Response {
    let status = match classify(&err) {
        Failure::InvalidInput => StatusCode::BAD_REQUEST,
        Failure::Timeout
        | Failure::Connection
        | Failure::CircuitOpen
        | Failure::ShardUnavailable
        | Failure::ClusterDown
        | Failure::Loading
        | Failure::Busy
        | Failure::Overloaded
        | Failure::TooManyRedirects => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, format!("{err}\n")).into_response()
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
    h
}

async fn get_key(State(app): State<App>, UrlPath(key): UrlPath<String>) -> Response {
    let req = CacheRequest::get(key).with_timeout(REQUEST_TIMEOUT);
    match app.cache.oneshot(req).await {
        Ok(resp) => {
            let headers = served_headers(&resp);
            match resp.value {
                Some(v) => (StatusCode::OK, headers, v).into_response(),
                None => (StatusCode::NOT_FOUND, headers, "not found\n").into_response(),
            }
        }
        Err(e) => error_response(e),
    }
}

async fn put_key(
    State(app): State<App>,
    UrlPath(key): UrlPath<String>,
    Query(params): Query<PutParams>,
    body: Bytes,
) -> Response {
    let ttl = params.ttl.map(Duration::from_secs);
    let req = CacheRequest::set(key, body, ttl).with_timeout(REQUEST_TIMEOUT);
    match app.cache.oneshot(req).await {
        Ok(resp) => (StatusCode::NO_CONTENT, served_headers(&resp)).into_response(),
        Err(e) => error_response(e),
    }
}

async fn delete_key(State(app): State<App>, UrlPath(key): UrlPath<String>) -> Response {
    let req = CacheRequest::delete(key).with_timeout(REQUEST_TIMEOUT);
    match app.cache.oneshot(req).await {
        Ok(resp) if resp.deleted() => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Err(e) => error_response(e),
    }
}

async fn health(State(app): State<App>) -> Json<serde_json::Value> {
    let map = app.topology.load();
    let shards: Vec<_> = map
        .shards()
        .iter()
        .map(|s| {
            serde_json::json!({
                "primary": s.primary.addr.to_string(),
                "replicas": s.replicas.iter().map(|r| serde_json::json!({
                    "addr": r.addr.to_string(),
                    "link_up": r.health.link_up(),
                    "in_majority": r.health.in_majority(),
                })).collect::<Vec<_>>(),
                "slots": s.slots,
            })
        })
        .collect();
    let breakers: Vec<_> = app
        .breakers
        .states()
        .into_iter()
        .map(
            |(scope, state)| serde_json::json!({"scope": scope.to_string(), "state": state.name()}),
        )
        .collect();
    Json(serde_json::json!({
        "generation": map.generation(),
        "slots_covered": map.covered_slots(),
        "shards": shards,
        "breakers": breakers,
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let (_cluster, seeds): (Option<LocalCluster>, Vec<NodeAddr>) =
        match std::env::var("SLOTGUARD_SEEDS") {
            Ok(list) => (
                None,
                list.split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?,
            ),
            Err(_) => {
                eprintln!("starting a local cluster (3 primaries, 3 replicas)...");
                let cluster = LocalCluster::start(ClusterSpec::default())?;
                let seeds = cluster
                    .seeds()
                    .iter()
                    .map(|s| s.parse())
                    .collect::<Result<_, _>>()?;
                (Some(cluster), seeds)
            }
        };

    let topology = Topology::new();
    let leaf = FredService::new(FredConfig::default()).with_topology(topology.clone());
    let source = FredTopologySource::new(&leaf, seeds);
    let breakers =
        CircuitBreakerLayer::per_node(BreakerConfig::default()).with_topology(topology.clone());
    let cache = ServiceBuilder::new()
        .slot_refresh(
            SlotRefreshLayer::new(topology.clone(), source)
                .load()
                .await?,
        )
        .redirect(topology.clone())
        .replica_failover(topology.clone())
        .circuit_breaker(breakers.clone())
        .service(leaf.clone());
    let _prober = HealthProber::new(&leaf, topology.clone()).spawn();

    let app = App {
        cache: BoxCloneSyncService::new(cache),
        topology,
        breakers,
    };
    let router = Router::new()
        .route("/cache/{key}", get(get_key).put(put_key).delete(delete_key))
        .route("/health", get(health))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    // The first stdout line says where we listen (tests read it).
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
