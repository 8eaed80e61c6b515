//! The telemetry layer on a real cluster, with the OpenTelemetry SDK's
//! in-memory span and metric exporters: spans carry the semantic
//! convention attributes and the events of what happened, and
//! `redis_fallback_routing_attempts{status}` counts exactly the reads each
//! path answered (as `CacheResponse.served.path` says).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::Value;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use slotguard_core::{key_slot, BoxError, CacheRequest, CacheResponse, Path};
use slotguard_layers::fallback::{FallbackConfig, FallbackLayer};
use slotguard_layers::slot_refresh::RefreshConfig;
use slotguard_layers::telemetry::{TelemetryBuilder, TelemetryLayer};
use slotguard_node::HealthProber;
use slotguard_store::SqliteStore;
use slotguard_testkit::ClusterSpec;
use slotguard_tests::{eventually, no_replica_reported_loading, Harness};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneSyncService<CacheRequest, CacheResponse, BoxError>;

/// SDK providers with in-memory exporters.
struct Otel {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Otel {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Self {
            spans,
            metrics,
            tracer_provider,
            meter_provider,
        }
    }

    fn builder(&self) -> TelemetryBuilder {
        use opentelemetry::trace::TracerProvider as _;
        TelemetryLayer::builder()
            .meter(self.meter_provider.meter("slotguard"))
            .tracer(self.tracer_provider.tracer("slotguard"))
    }

    fn spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    /// The last export's sum of counter `name` by the value of `label`.
    fn counter_by(&self, name: &str, label: &str) -> HashMap<String, u64> {
        self.metrics.reset();
        self.meter_provider.force_flush().unwrap();
        let mut out = HashMap::new();
        for rm in self.metrics.get_finished_metrics().unwrap() {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                        for dp in sum.data_points() {
                            let v = dp
                                .attributes()
                                .find(|kv| kv.key.as_str() == label)
                                .map(|kv| kv.value.to_string())
                                .unwrap_or_default();
                            // Series start at 0; only counted ones matter here.
                            if dp.value() > 0 {
                                *out.entry(v).or_default() += dp.value();
                            }
                        }
                    }
                }
            }
        }
        out
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn has_event(span: &SpanData, name: &str) -> bool {
    span.events.events.iter().any(|e| e.name == name)
}

/// Every request's outcome, by the status the metric should count it under.
#[derive(Default)]
struct Tally(HashMap<String, u64>);

impl Tally {
    async fn call(&mut self, svc: &Svc, req: CacheRequest) -> Result<CacheResponse, BoxError> {
        let read = req.op.is_read();
        let out = svc.clone().oneshot(req).await;
        if read {
            let status = match &out {
                Ok(r) => match r.served.path {
                    Path::Primary => "primary_hit",
                    Path::Replica => "primary_failover",
                    Path::Secondary => "secondary_fallback",
                    Path::NearCache => "near_cache",
                    _ => "other",
                },
                Err(_) => "error",
            };
            *self.0.entry(status.to_owned()).or_default() += 1;
        }
        out
    }
}

fn last_span(otel: &Otel) -> SpanData {
    otel.spans().pop().expect("a span")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_moved_ask_failover_and_store_spans_and_exact_path_counts() {
    let h = Harness::start().await;
    no_replica_reported_loading(&h.cluster).await;
    h.reload().await;
    let _prober = HealthProber::new(&h.leaf, h.topology.clone()).spawn();
    let otel = Otel::new();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("items.db")).unwrap();
    let refresh = h.refresh_layer(RefreshConfig::default());
    let telemetry = otel
        .builder()
        .topology(h.topology.clone())
        .record_keys(true)
        .build();
    // The cluster attempt gets the request's whole deadline: time for the
    // paused primary's timeout and then a replica.
    let fallback = FallbackLayer::new(store.clone())
        .with_config(FallbackConfig::default().with_cluster_read_timeout(None));
    let stack: Svc =
        BoxCloneSyncService::new(telemetry.layer(fallback.layer(h.full_stack(&refresh))));
    let mut tally = Tally::default();

    // healthy hit
    let key = Bytes::from_static(b"telemetry:healthy");
    tally
        .call(&stack, CacheRequest::set(key.clone(), "v", None))
        .await
        .unwrap();
    let resp = tally
        .call(&stack, CacheRequest::get(key.clone()))
        .await
        .unwrap();
    assert_eq!(resp.served.path, Path::Primary);
    let span = last_span(&otel);
    assert_eq!(span.name, "GET");
    assert_eq!(attr(&span, "db.system.name").unwrap().as_str(), "redis");
    assert_eq!(attr(&span, "db.operation.name").unwrap().as_str(), "GET");
    let node = resp.served.node.clone().unwrap();
    assert_eq!(attr(&span, "server.address").unwrap().as_str(), node.host());
    assert_eq!(
        attr(&span, "server.port"),
        Some(&Value::I64(i64::from(node.port())))
    );
    assert_eq!(attr(&span, "redis.node_role").unwrap().as_str(), "primary");
    assert_eq!(attr(&span, "fallback.path").unwrap().as_str(), "primary");
    assert_eq!(
        attr(&span, "redis.key").unwrap().as_str(),
        "telemetry:healthy"
    );
    assert!(span.events.events.is_empty(), "a healthy read has no event");

    // MOVED: the slot moves behind the map's back
    let key = Bytes::from_static(b"telemetry:moved");
    let slot = key_slot(&key);
    tally
        .call(&stack, CacheRequest::set(key.clone(), "m", None))
        .await
        .unwrap();
    let owner = h.cluster.primary_of_slot(slot).unwrap();
    let primaries = h.cluster.primaries().unwrap();
    let target = *primaries.iter().find(|&&p| p != owner).unwrap();
    h.cluster.begin_migration(slot, owner, target).unwrap();
    h.cluster.migrate_keys(slot, owner, target).unwrap();
    // ASK first, while half-migrated
    let resp = tally
        .call(&stack, CacheRequest::get(key.clone()))
        .await
        .unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"m"[..]));
    let span = last_span(&otel);
    assert!(has_event(&span, "ask_redirect"), "{:?}", span.events);
    h.cluster.finish_migration(slot, target).unwrap();
    let resp = tally
        .call(&stack, CacheRequest::get(key.clone()))
        .await
        .unwrap();
    assert_eq!(resp.value.as_deref(), Some(&b"m"[..]));
    let span = last_span(&otel);
    let moved = span
        .events
        .events
        .iter()
        .find(|e| e.name == "slot_moved")
        .expect("slot_moved event");
    let new_owner = moved
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == "redis.new_owner")
        .unwrap();
    assert_eq!(new_owner.value.to_string(), h.cluster.addr(target));

    // store answer: a miss the store holds
    let key = Bytes::from_static(b"telemetry:store-only");
    store
        .put(key.clone(), Bytes::from_static(b"s"))
        .await
        .unwrap();
    let resp = tally
        .call(&stack, CacheRequest::get(key.clone()))
        .await
        .unwrap();
    assert_eq!(resp.served.path, Path::Secondary);
    let span = last_span(&otel);
    assert!(has_event(&span, "secondary_fallback"));
    assert_eq!(attr(&span, "fallback.path").unwrap().as_str(), "secondary");

    // replica failover: the key's primary paused
    let victim = primaries[0];
    let keys = h.keys_of(victim, 3);
    for k in &keys {
        tally
            .call(&stack, CacheRequest::set(k.clone(), k.clone(), None))
            .await
            .unwrap();
    }
    // Replication is asynchronous: the replica holds them before the pause.
    for k in &keys {
        eventually("replicated", Duration::from_secs(10), || async {
            let req = h.to_replica(CacheRequest::get(k.clone()));
            let resp = h.leaf.clone().oneshot(req).await.ok()?;
            resp.value.is_some().then_some(())
        })
        .await;
    }
    // A write marks its key (no replica answers it until a read from the
    // primary): read each once, healthy.
    for k in &keys {
        let resp = tally.call(&stack, CacheRequest::get(k.clone())).await;
        assert_eq!(resp.unwrap().served.path, Path::Primary);
    }
    h.cluster.pause(victim).unwrap();
    let mut failed_over = None;
    for k in &keys {
        let req = CacheRequest::get(k.clone()).with_timeout(Duration::from_secs(2));
        let resp = tally.call(&stack, req).await;
        if let Ok(r) = resp {
            if r.served.path == Path::Replica {
                failed_over = Some(last_span(&otel));
            }
        }
    }
    h.cluster.resume(victim).unwrap();
    let span = failed_over.expect("a read answered by a replica");
    assert!(has_event(&span, "replica_failover"), "{:?}", span.events);
    assert_eq!(attr(&span, "redis.node_role").unwrap().as_str(), "replica");

    // exactly one increment per read, by the path that answered it
    let counted = otel.counter_by("redis_fallback_routing_attempts", "status");
    assert_eq!(counted, tally.0, "metric vs what the caller saw");
    let redirects = otel.counter_by("slotguard_redirects", "kind");
    assert!(redirects.get("moved").copied().unwrap_or(0) >= 1);
    assert!(redirects.get("ask").copied().unwrap_or(0) >= 1);
    assert_eq!(
        telemetry.stats().reads.total(),
        tally.0.values().sum::<u64>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_store_error_and_clusterdown_spans_and_exact_path_counts() {
    let spec = ClusterSpec {
        replicas_per_primary: 0,
        extra_config: vec![
            ("cluster-require-full-coverage".into(), "yes".into()),
            ("cluster-allow-reads-when-down".into(), "no".into()),
        ],
        ..ClusterSpec::default()
    };
    let h = Harness::start_with(spec, Default::default()).await;
    let otel = Otel::new();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("items.db")).unwrap();
    let refresh = h.refresh_layer(RefreshConfig::default());
    let telemetry = otel.builder().topology(h.topology.clone()).build();
    let with_store: Svc = BoxCloneSyncService::new(
        telemetry.layer(FallbackLayer::new(store.clone()).layer(h.full_stack(&refresh))),
    );
    // The same telemetry over the cluster alone: its failures are errors.
    let bare: Svc = BoxCloneSyncService::new(telemetry.layer(h.full_stack(&refresh)));
    let mut tally = Tally::default();

    let primaries = h.cluster.primaries().unwrap();
    let victim = primaries[0];
    let keys = h.keys_of(victim, 3);
    let (hot, store_only, plain) = (keys[0].clone(), keys[1].clone(), keys[2].clone());
    tally
        .call(&with_store, CacheRequest::set(hot.clone(), "hot", None))
        .await
        .unwrap();
    for _ in 0..3 {
        let r = tally
            .call(&with_store, CacheRequest::get(hot.clone()))
            .await;
        // A healthy answer: the owner, or its replica when the read was
        // hedged on a loaded machine (the tally counts either exactly).
        let path = r.unwrap().served.path;
        assert!(matches!(path, Path::Primary | Path::Replica), "{path:?}");
    }
    store
        .put(store_only.clone(), Bytes::from_static(b"s"))
        .await
        .unwrap();
    let other = h.keys_of(primaries[1], 1).remove(0);
    tally
        .call(&with_store, CacheRequest::set(other.clone(), "o", None))
        .await
        .unwrap();

    h.cluster.pause(victim).unwrap();
    let get = |k: &Bytes| CacheRequest::get(k.clone()).with_timeout(Duration::from_millis(800));
    // near-cache answer
    let r = tally.call(&with_store, get(&hot)).await.unwrap();
    assert_eq!(r.served.path, Path::NearCache);
    let span = last_span(&otel);
    assert!(has_event(&span, "near_cache_hit"), "{:?}", span.events);
    assert_eq!(attr(&span, "fallback.path").unwrap().as_str(), "near_cache");
    // store answer for a cluster failure
    let r = tally.call(&with_store, get(&store_only)).await.unwrap();
    assert_eq!(r.served.path, Path::Secondary);
    let span = last_span(&otel);
    assert!(has_event(&span, "secondary_fallback"));
    // error: nothing answers
    let e = tally.call(&bare, get(&plain)).await.unwrap_err();
    let span = last_span(&otel);
    assert!(attr(&span, "error.type").is_some(), "error class: {e}");
    assert!(matches!(
        span.status,
        opentelemetry::trace::Status::Error { .. }
    ));

    // CLUSTERDOWN on a live shard once the cluster marks the victim failed
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    let span = loop {
        assert!(tokio::time::Instant::now() < end, "no clusterdown in time");
        let req = CacheRequest::get(other.clone()).with_timeout(Duration::from_millis(800));
        if tally.call(&bare, req).await.is_err() {
            let span = last_span(&otel);
            let class = attr(&span, "error.type").map(|v| v.as_str().into_owned());
            if class.as_deref() == Some("clusterdown") {
                break span;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(attr(&span, "db.operation.name").unwrap().as_str(), "GET");
    h.cluster.resume(victim).unwrap();

    let counted = otel.counter_by("redis_fallback_routing_attempts", "status");
    assert_eq!(counted, tally.0, "metric vs what the callers saw");
    assert_eq!(counted.get("near_cache"), Some(&1));
}
