//! The telemetry layer over layers that decide in `call`: what they
//! observed there reaches the request's span and counts, although the
//! layer scopes only its future's polls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use slotguard_core::{
    classify, BoxError, CacheError, CacheRequest, CacheResponse, Failure, Op, Path, Role, Topology,
};
use tower::{service_fn, Layer, ServiceExt};
use tower_test::mock;

use super::TelemetryLayer;
use crate::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use crate::coalesce::CoalesceLayer;
use crate::slot_refresh::SlotRefreshLayer;
use crate::test_support::{addr, two_shards, FakeSource};

#[test]
fn the_quiet_path_tells_reads_as_op_is_read_does() {
    let reqs = [
        CacheRequest::get("k"),
        CacheRequest::set("k", "v", None),
        CacheRequest::delete("k"),
    ];
    for req in reqs {
        assert_eq!(matches!(req.op, Op::Get), req.op.is_read(), "{:?}", req.op);
    }
}

fn traced() -> (TelemetryLayer, SdkTracerProvider, InMemorySpanExporter) {
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let layer = TelemetryLayer::builder()
        .tracer(provider.tracer("test"))
        .build();
    (layer, provider, spans)
}

/// The requests' spans (not the one the builder probes its tracer with).
fn finished(provider: &SdkTracerProvider, spans: &InMemorySpanExporter) -> Vec<SpanData> {
    provider.force_flush().unwrap();
    let mut spans = spans.get_finished_spans().unwrap();
    spans.retain(|s| s.name != "slotguard.probe");
    spans
}

fn events(span: &SpanData) -> Vec<String> {
    span.events.iter().map(|e| e.name.to_string()).collect()
}

#[tokio::test]
async fn a_follower_joined_in_call_is_counted_and_traced() {
    let (telemetry, provider, spans) = traced();
    let (leaf, mut handle) = mock::pair::<CacheRequest, CacheResponse>();
    let coalesce = CoalesceLayer::new();
    let svc = telemetry.layer(coalesce.layer(leaf));
    let lead = tokio::spawn(svc.clone().oneshot(CacheRequest::get("hot")));
    let (_req, send) = handle.next_request().await.unwrap();
    // The leader's call is in flight: this read joins it in `call`.
    let follow = tokio::spawn(svc.clone().oneshot(CacheRequest::get("hot")));
    // Bounded: a test never spins.
    for _ in 0..10_000 {
        if coalesce.joined_total() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(coalesce.joined_total(), 1);
    send.send_response(CacheResponse::from_node(
        Some("v".into()),
        addr(1),
        Path::Primary,
    ));
    lead.await.unwrap().unwrap();
    follow.await.unwrap().unwrap();
    assert_eq!(telemetry.stats().coalesced, 1);
    let spans = finished(&provider, &spans);
    assert_eq!(spans.len(), 2);
    let coalesced = spans.iter().filter(|s| events(s) == ["coalesced"]).count();
    assert_eq!(
        coalesced,
        1,
        "{:?}",
        spans.iter().map(events).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_breaker_refusal_made_in_call_is_traced() {
    let (telemetry, provider, spans) = traced();
    let breakers = CircuitBreakerLayer::per_node(BreakerConfig {
        consecutive_failures: 2,
        ..BreakerConfig::default()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let leaf = service_fn(move |_req: CacheRequest| {
        seen.fetch_add(1, Ordering::Relaxed);
        async { Err::<CacheResponse, BoxError>(CacheError::Timeout { node: addr(1) }.into()) }
    });
    let svc = telemetry.layer(breakers.layer(leaf));
    let req = || CacheRequest::get("k").to_node(addr(1), Role::Primary);
    for _ in 0..2 {
        assert!(svc.clone().oneshot(req()).await.is_err());
    }
    let refused = svc.clone().oneshot(req()).await.unwrap_err();
    assert!(refused.to_string().contains("circuit"), "{refused}");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        2,
        "the refusal never reached the leaf"
    );
    let spans = finished(&provider, &spans);
    assert_eq!(spans.len(), 3);
    assert!(events(&spans[0]).is_empty() && events(&spans[1]).is_empty());
    assert_eq!(events(&spans[2]), ["breaker_open"]);
}

#[tokio::test(start_paused = true)]
async fn a_write_fence_met_in_call_is_traced() {
    let (telemetry, provider, spans) = traced();
    let topology = Topology::new();
    let source = FakeSource::new(two_shards(), Duration::ZERO);
    let refresh = SlotRefreshLayer::new(topology.clone(), source)
        .load()
        .await
        .unwrap();
    let (leaf, mut handle) = mock::pair::<CacheRequest, CacheResponse>();
    let svc = telemetry.layer(refresh.layer(leaf));
    // Node 1 (slots below 8192, "bar"'s) timed out: its writes are fenced.
    crate::test_support::unreachable(&topology, &addr(1));
    let err = svc
        .oneshot(CacheRequest::set("bar", "v", None))
        .await
        .unwrap_err();
    assert_eq!(classify(&err), Failure::ShardUnavailable);
    assert!(
        no_request(&mut handle),
        "the fenced write never reached the leaf"
    );
    assert_eq!(telemetry.stats().writes_refused, 1);
    let spans = finished(&provider, &spans);
    assert_eq!(spans.len(), 1);
    assert_eq!(events(&spans[0]), ["write_fenced"]);
}

/// No request reached the leaf (nothing waiting, or the leaf is gone).
fn no_request(handle: &mut mock::Handle<CacheRequest, CacheResponse>) -> bool {
    use futures_util::FutureExt;
    !matches!(
        tokio::task::unconstrained(handle.next_request()).now_or_never(),
        Some(Some(_))
    )
}
