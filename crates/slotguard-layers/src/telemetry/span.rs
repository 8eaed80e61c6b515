//! One span per request, after the OpenTelemetry database semantic
//! conventions, with the request's observations as events.
//!
//! The span is built when the request ends, with the start time taken when
//! it began: nothing is held (or allocated) for it while the request runs,
//! and its events carry the end time (observations are not timestamped).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, Tracer};
use opentelemetry::{Context, KeyValue};
use slotguard_core::observe::{Observation, Record};
use slotguard_core::{BoxError, CacheResponse, Failure, NodeAddr, Role};

use super::future::{role_of, Meta};
use super::metrics::OPS;
use super::Shared;

/// Taken when the request starts, only while a tracer listens. No wall
/// clock is read here: the span's start is its end less the request's
/// monotonic duration. Held in the future itself: with a sampler that
/// keeps 1 % of spans, a box per request would cost more than the rest of
/// the dropped span.
pub(crate) struct SpanStart {
    pub(crate) parent: Context,
    // Only spans show keys (opt-in): boxed, the future stays small without.
    pub(crate) key: Option<Box<Bytes>>,
    pub(crate) slot: u16,
}

impl SpanStart {
    pub(crate) fn now(key: Option<Bytes>, slot: u16) -> Self {
        Self {
            parent: Context::current(),
            key: key.map(Box::new),
            slot,
        }
    }
}

/// The wall clock from the monotonic one: a span's timestamps need wall
/// time, but reading it costs a clock call per request even for spans the
/// sampler drops. The offset between the two clocks is re-read once a
/// second (so a stepped wall clock is followed within a second).
#[derive(Debug)]
pub(crate) struct WallClock {
    base: Instant,
    // Wall time at `base`, in nanoseconds since the Unix epoch.
    offset: AtomicU64,
    // When `offset` was last read, in nanoseconds since `base`.
    read_at: AtomicU64,
}

const REREAD: u64 = 1_000_000_000;

impl WallClock {
    pub(crate) fn new() -> Self {
        let clock = Self {
            base: Instant::now(),
            offset: AtomicU64::new(0),
            read_at: AtomicU64::new(0),
        };
        clock.reread(0);
        clock
    }

    fn reread(&self, since_base: u64) {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.offset
            .store(wall.saturating_sub(since_base), Ordering::Relaxed);
        self.read_at.store(since_base, Ordering::Relaxed);
    }

    /// The wall time at the monotonic instant `at`.
    pub(crate) fn at(&self, at: Instant) -> SystemTime {
        let since_base =
            u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        if since_base.saturating_sub(self.read_at.load(Ordering::Relaxed)) > REREAD {
            self.reread(since_base);
        }
        let nanos = self
            .offset
            .load(Ordering::Relaxed)
            .saturating_add(since_base);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
    }
}

fn addr_attrs(attrs: &mut Vec<KeyValue>, node: &NodeAddr) {
    attrs.push(KeyValue::new("server.address", node.host().to_owned()));
    attrs.push(KeyValue::new("server.port", i64::from(node.port())));
}

fn node_kv(key: &'static str, node: &NodeAddr) -> KeyValue {
    KeyValue::new(key, node.to_string())
}

/// The span event for one observation (`None`: not an event).
fn event(o: &Observation) -> Option<(&'static str, Vec<KeyValue>)> {
    Some(match o {
        Observation::Moved { slot, to } => (
            "slot_moved",
            vec![
                KeyValue::new("redis.slot", i64::from(*slot)),
                node_kv("redis.new_owner", to),
            ],
        ),
        Observation::Ask { slot, to } => (
            "ask_redirect",
            vec![
                KeyValue::new("redis.slot", i64::from(*slot)),
                node_kv("redis.target", to),
            ],
        ),
        Observation::TryAgain { slot } => (
            "tryagain",
            vec![KeyValue::new("redis.slot", i64::from(*slot))],
        ),
        Observation::ReplicaFailover { from, to } => {
            let mut attrs = vec![node_kv("redis.to", to)];
            if let Some(from) = from {
                attrs.push(node_kv("redis.from", from));
            }
            ("replica_failover", attrs)
        }
        Observation::BreakerOpen { node } => (
            "breaker_open",
            node.iter().map(|n| node_kv("redis.node", n)).collect(),
        ),
        Observation::SecondaryFallback { cause, failure } => {
            let mut attrs = vec![KeyValue::new("fallback.cause", cause.name())];
            if let Some(f) = failure {
                attrs.push(KeyValue::new("error.type", f.name()));
            }
            ("secondary_fallback", attrs)
        }
        Observation::NearCacheHit => ("near_cache_hit", Vec::new()),
        Observation::Coalesced => ("coalesced", Vec::new()),
        Observation::InvalidationReplayed { slot } => (
            "invalidation_replayed",
            vec![KeyValue::new("redis.slot", i64::from(*slot))],
        ),
        Observation::WriteFenced { slot } => (
            "write_fenced",
            vec![KeyValue::new("redis.slot", i64::from(*slot))],
        ),
        Observation::NodeFault { node, failure } => (
            "node_fault",
            vec![
                node_kv("redis.node", node),
                KeyValue::new("error.type", failure.name()),
            ],
        ),
        Observation::StoreLoad { outcome } => {
            ("store_load", vec![KeyValue::new("outcome", outcome.name())])
        }
        _ => return None,
    })
}

/// One finished request, as its span is built from it.
pub(crate) struct Ended<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) start: &'a SpanStart,
    pub(crate) meta: &'a Meta,
    pub(crate) out: &'a Result<CacheResponse, BoxError>,
    pub(crate) failure: Option<Failure>,
    pub(crate) record: &'a Record,
    pub(crate) now: Instant,
}

/// Where the layer's spans go: the tracer it was given, with its own span
/// type. A [`BoxedTracer`](opentelemetry::global::BoxedTracer) allocates
/// a box for every span it starts, sampled or not; going through this
/// trait instead costs one virtual call per request and no allocation
/// (the SDK's tracer builds its span on the stack).
pub(crate) trait SpanSink: Send + Sync {
    /// Build, fill and end one request's span (see [`emit`]).
    fn emit(&self, ended: &Ended<'_>);

    /// Whether spans from this tracer are real: the API's no-op tracer
    /// (no SDK installed) makes spans with no valid context.
    fn records(&self) -> bool;
}

impl<T> SpanSink for T
where
    T: Tracer + Send + Sync,
{
    #[inline]
    fn emit(&self, ended: &Ended<'_>) {
        emit(self, ended);
    }

    fn records(&self) -> bool {
        let mut probe = self.start("slotguard.probe");
        let valid = probe.span_context().is_valid();
        probe.end();
        valid
    }
}

/// Build, fill and end the request's span. A span the sampler dropped is
/// ended at once, before any attribute or event is built for it.
fn emit<T: Tracer>(tracer: &T, ended: &Ended<'_>) {
    let &Ended {
        shared,
        start,
        meta,
        out,
        failure,
        record,
        now,
    } = ended;
    let op = OPS[usize::from(meta.op)];
    let end = shared.wall.at(now);
    let begun = end
        .checked_sub(
            meta.start
                .map_or_else(Default::default, |s| now.saturating_duration_since(s)),
        )
        .unwrap_or(end);
    let mut span = tracer.build_with_context(
        SpanBuilder::from_name(op)
            .with_kind(SpanKind::Client)
            .with_start_time(begun),
        &start.parent,
    );
    if !span.is_recording() {
        return;
    }
    let mut attrs = Vec::with_capacity(10);
    attrs.push(KeyValue::new("db.system.name", "redis"));
    attrs.push(KeyValue::new("db.operation.name", op));
    attrs.push(KeyValue::new("redis.slot", i64::from(start.slot)));
    if let Some(key) = &start.key {
        attrs.push(KeyValue::new(
            "redis.key",
            String::from_utf8_lossy(key).into_owned(),
        ));
    }
    match out {
        Ok(resp) => {
            if let Some(node) = &resp.served.node {
                addr_attrs(&mut attrs, node);
            }
            if let Some(role) = role_of(resp.served.path) {
                let role = match role {
                    Role::Primary => "primary",
                    Role::Replica => "replica",
                };
                attrs.push(KeyValue::new("redis.node_role", role));
            }
            attrs.push(KeyValue::new("fallback.path", resp.served.path.name()));
        }
        Err(_) => {
            // The last node that failed it, when one did.
            let node = record.iter().rev().find_map(|o| match o {
                Observation::NodeFault { node, .. } => Some(node),
                _ => None,
            });
            if let Some(node) = node {
                addr_attrs(&mut attrs, node);
            }
            if let Some(f) = failure {
                attrs.push(KeyValue::new("error.type", f.name()));
            }
        }
    }
    span.set_attributes(attrs);
    for o in record.iter() {
        if let Some((name, attrs)) = event(o) {
            span.add_event(name, attrs);
        }
    }
    if let Err(err) = out {
        span.set_status(Status::Error {
            description: Cow::Owned(err.to_string()),
        });
    }
    span.end_with_timestamp(end);
}
