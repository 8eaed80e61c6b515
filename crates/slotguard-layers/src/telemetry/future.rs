//! Response future of [`Telemetry`](super::Telemetry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use slotguard_core::observe::{Observation, Record, Scoped, StoreOutcome};
use slotguard_core::{classify, BoxError, CacheResponse, Failure, Op, Path, Role};
use std::time::Instant;

use super::metrics::ReadPath;
use super::span::SpanStart;
use super::Shared;

/// What a request's outcome is reported with.
pub(crate) struct Meta {
    // `None` when neither a meter nor a tracer listens.
    pub(crate) start: Option<Instant>,
    pub(crate) op: u8,
    pub(crate) read: bool,
    pub(crate) slot: u16,
    // Boxed: only a recording tracer needs it (with the key), and the
    // future stays small (it is moved a few times per request).
    pub(crate) span: Option<Box<SpanStart>>,
}

pub(crate) fn op_index(op: &Op) -> u8 {
    match op {
        Op::Get => 0,
        Op::Set { .. } => 1,
        Op::Delete => 2,
        _ => 3,
    }
}

pin_project! {
    /// Response future of [`Telemetry`](super::Telemetry): the inner call,
    /// run with the request's observation record installed; reported once
    /// it ends.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Scoped<F>,
        shared: Arc<Shared>,
        meta: Option<Meta>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F>
where
    F: Future,
{
    pub(crate) fn new(inner: Scoped<F>, shared: Arc<Shared>, meta: Meta) -> Self {
        Self {
            inner,
            shared,
            meta: Some(meta),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let out = match this.inner.as_mut().poll(cx) {
            Poll::Ready(out) => out.map_err(Into::into),
            Poll::Pending => return Poll::Pending,
        };
        let record = this.inner.take_record();
        if let Some(meta) = this.meta.take() {
            report(this.shared, meta, &out, &record);
        }
        Poll::Ready(out)
    }
}

/// Which read path answered.
fn read_path(out: &Result<CacheResponse, BoxError>) -> ReadPath {
    match out {
        Ok(resp) => match resp.served.path {
            Path::Primary => ReadPath::PrimaryHit,
            Path::Replica => ReadPath::PrimaryFailover,
            Path::Secondary => ReadPath::SecondaryFallback,
            Path::NearCache => ReadPath::NearCache,
            _ => ReadPath::PrimaryHit,
        },
        Err(_) => ReadPath::Error,
    }
}

/// Metrics, counters, clocks and the span for one finished request.
pub(crate) fn report(
    shared: &Shared,
    meta: Meta,
    out: &Result<CacheResponse, BoxError>,
    record: &Record,
) {
    let ins = &shared.instruments;
    let counters = &shared.counters;
    let failure = out.as_ref().err().map(classify);
    // Only a listening meter or tracer needs the clock.
    let timed = meta.start.map(|start| {
        let now = Instant::now();
        (now, now.saturating_duration_since(start).as_secs_f64())
    });
    if let Some((_, secs)) = timed.filter(|_| shared.metering) {
        record_durations(shared, &meta, out, failure, secs);
    }
    if meta.read {
        let path = read_path(out) as usize;
        // Also `redis_fallback_routing_attempts` and the near-cache hits
        // (observable counters over these atomics).
        counters.reads[path].fetch_add(1, Ordering::Relaxed);
    } else {
        counters.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = failure {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
            let fenced = record
                .iter()
                .any(|o| matches!(o, Observation::WriteFenced { .. }));
            if fenced || matches!(f, Failure::ShardUnavailable | Failure::CircuitOpen) {
                counters.writes_refused.fetch_add(1, Ordering::Relaxed);
                if shared.metering {
                    ins.writes_refused.add(1, &[]);
                }
            }
        }
    }
    if !record.is_empty() {
        count_observations(shared, record);
    }
    let Some((now, _)) = timed else { return };
    // The failover clocks feed histograms and gauges only.
    let healthy = record.is_empty() && !shared.timers.any();
    if shared.metering && !healthy {
        failover_clocks(shared, &meta, out, record, now);
    }
    if let Some(start) = &meta.span {
        super::span::emit(shared, start, &meta, out, failure, record, now);
    }
}

/// `db.client.operation.duration` and, for reads, the routing latency.
fn record_durations(
    shared: &Shared,
    meta: &Meta,
    out: &Result<CacheResponse, BoxError>,
    failure: Option<Failure>,
    secs: f64,
) {
    let ins = &shared.instruments;
    match failure {
        None => ins
            .duration
            .record(secs, &ins.op_attrs[usize::from(meta.op)]),
        Some(f) => ins.duration.record(
            secs,
            &[
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new(
                    "db.operation.name",
                    super::metrics::OPS[usize::from(meta.op)],
                ),
                KeyValue::new("error.type", f.name()),
            ],
        ),
    }
    if meta.read {
        ins.latency
            .record(secs, &ins.path_attrs[read_path(out) as usize]);
    }
}

fn count_observations(shared: &Shared, record: &Record) {
    let ins = &shared.instruments;
    let counters = &shared.counters;
    for o in record.iter() {
        let redirect = match o {
            Observation::Moved { .. } => Some(0),
            Observation::Ask { .. } => Some(1),
            Observation::TryAgain { .. } => Some(2),
            _ => None,
        };
        if let Some(i) = redirect {
            if shared.metering {
                ins.redirects.add(1, &ins.redirect_attrs[i]);
            }
            counters.redirects[i].fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match o {
            Observation::Coalesced => {
                if shared.metering {
                    ins.coalesced.add(1, &[]);
                }
                counters.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            Observation::StoreLoad { outcome } => {
                let i = match outcome {
                    StoreOutcome::Hit => 0,
                    StoreOutcome::Miss => 1,
                    _ => 2,
                };
                if shared.metering {
                    ins.store_loads.add(1, &ins.store_attrs[i]);
                }
                counters.store_loads[i].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Start, advance and close the per-failover clocks.
fn failover_clocks(
    shared: &Shared,
    meta: &Meta,
    out: &Result<CacheResponse, BoxError>,
    record: &Record,
    now: Instant,
) {
    let ins = &shared.instruments;
    let is_primary = |node: &slotguard_core::NodeAddr| {
        shared.topology.as_ref().is_some_and(|t| {
            t.map()
                .shards()
                .iter()
                .any(|s| &s.primary.addr == node && !s.slots.is_empty())
        })
    };
    for o in record.iter() {
        let failed = match o {
            Observation::NodeFault { node, failure } if failure.is_node_fault() => Some(node),
            // A hedge that outran its primary: the primary did not answer
            // within its latency bound, and with hedging a stalled
            // primary's reads may never fail at all.
            Observation::ReplicaFailover {
                from: Some(node), ..
            } => Some(node),
            _ => None,
        };
        if let Some(node) = failed.filter(|n| is_primary(n)) {
            // The failed call began with the request.
            if let Some(start) = meta.start {
                shared.timers.primary_failed(node, start);
            }
        }
    }
    if let Some(u) = (!record.is_empty())
        .then_some(())
        .and(shared.topology.as_ref())
    {
        shared.unowned.sample(u);
    }
    let Ok(resp) = out else { return };
    if !shared.timers.any() {
        return;
    }
    match (meta.read, resp.served.path) {
        (true, Path::Replica) => {
            let from = record.iter().find_map(|o| match o {
                Observation::ReplicaFailover {
                    from: Some(from), ..
                } => Some(from),
                _ => None,
            });
            if let Some(secs) = from.and_then(|p| shared.timers.replica_answered(p, now)) {
                ins.first_replica.record(secs, &[]);
            }
        }
        (false, Path::Primary) => {
            if let Some(node) = &resp.served.node {
                if let Some(secs) = shared.timers.write_succeeded(node, now) {
                    ins.first_write.record(secs, &[]);
                }
            }
        }
        _ => {}
    }
}

/// The role of the node that answered, for `redis.node_role`.
pub(crate) fn role_of(path: Path) -> Option<Role> {
    match path {
        Path::Primary => Some(Role::Primary),
        Path::Replica => Some(Role::Replica),
        _ => None,
    }
}
