//! Response future of [`Telemetry`](super::Telemetry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use opentelemetry::KeyValue;
use pin_project_lite::pin_project;
use slotguard_core::observe::{Observation, Record, Scope, StoreOutcome};
use slotguard_core::{classify, BoxError, CacheResponse, Failure, Op, Path, Role};
use std::time::Instant;

use super::metrics::ReadPath;
use super::span::SpanStart;
use super::tally::{self, bump};
use super::Shared;

/// What a request's outcome is reported with.
pub(crate) struct Meta {
    // `None` when neither a meter nor a tracer listens.
    pub(crate) start: Option<Instant>,
    pub(crate) op: u8,
    pub(crate) read: bool,
    // Only while a tracer listens.
    pub(crate) span: Option<SpanStart>,
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
    /// run with the request's observation scope entered around each poll;
    /// reported once it ends.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // What the inner call observed so far (null while nothing was).
        record: Record,
        // The layer's plain counters (see `tally`); 0 once counted.
        tally: u64,
        read: bool,
        // Only while a meter or tracer listens: with none, the future is
        // the inner one and a few words, and nothing here is dropped.
        listen: Option<Listen>,
    }
}

/// What a request reports to a listening meter or tracer.
pub(crate) struct Listen {
    pub(crate) shared: Arc<Shared>,
    pub(crate) meta: Meta,
}

impl<F> ResponseFuture<F> {
    /// Wrap `inner`, the future an inner `call` made.
    #[inline(always)]
    pub(crate) fn new(inner: F, tally: u64, read: bool, listen: Option<Listen>) -> Self {
        Self {
            inner,
            record: Record::new(),
            tally,
            read,
            listen,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<CacheResponse, E>>,
    E: Into<BoxError>,
{
    type Output = Result<CacheResponse, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let scope = Scope::enter();
        let poll = this.inner.poll(cx);
        scope.leave(this.record);
        let out = match poll {
            Poll::Ready(out) => out.map_err(Into::into),
            Poll::Pending => return Poll::Pending,
        };
        let tally = std::mem::take(this.tally);
        if tally == 0 {
            // Polled again after it ended: counted already.
            return Poll::Ready(out);
        }
        if this.record.is_empty() && this.listen.is_none() {
            // The healthy path with nobody listening: one counter.
            if let Ok(resp) = &out {
                count_ok(tally, *this.read, resp);
                return Poll::Ready(out);
            }
        }
        let record = std::mem::take(this.record);
        let failure = out.as_ref().err().map(classify);
        let refused = count(tally, *this.read, &out, failure, &record);
        if let Some(Listen { shared, meta }) = this.listen.take() {
            report(&shared, meta, &out, failure, refused, &record);
        }
        Poll::Ready(out)
    }
}

/// Count one answered request that observed nothing.
#[inline]
fn count_ok(tally: u64, read: bool, resp: &CacheResponse) {
    tally::count(tally, |c| {
        if read {
            bump(&c.reads[read_path_of(resp) as usize]);
        } else {
            bump(&c.writes);
        }
    });
}

/// Which read path answered.
fn read_path(out: &Result<CacheResponse, BoxError>) -> ReadPath {
    match out {
        Ok(resp) => read_path_of(resp),
        Err(_) => ReadPath::Error,
    }
}

fn read_path_of(resp: &CacheResponse) -> ReadPath {
    match resp.served.path {
        Path::Primary => ReadPath::PrimaryHit,
        Path::Replica => ReadPath::PrimaryFailover,
        Path::Secondary => ReadPath::SecondaryFallback,
        Path::NearCache => ReadPath::NearCache,
        Path::ClientCache => ReadPath::ClientCache,
        _ => ReadPath::PrimaryHit,
    }
}

/// The plain counters (`stats()`, and the routing counters' source) for
/// one finished request; whether it was a write refused before sending.
fn count(
    tally: u64,
    read: bool,
    out: &Result<CacheResponse, BoxError>,
    failure: Option<Failure>,
    record: &Record,
) -> bool {
    let refused = !read
        && failure.is_some_and(|f| {
            matches!(f, Failure::ShardUnavailable | Failure::CircuitOpen)
                || record
                    .iter()
                    .any(|o| matches!(o, Observation::WriteFenced { .. }))
        });
    tally::count(tally, |c| {
        if read {
            bump(&c.reads[read_path(out) as usize]);
        } else {
            bump(&c.writes);
            if failure.is_some() {
                bump(&c.write_errors);
            }
            if refused {
                bump(&c.writes_refused);
            }
        }
        for o in record.iter() {
            match o {
                Observation::Moved { .. } => bump(&c.redirects[0]),
                Observation::Ask { .. } => bump(&c.redirects[1]),
                Observation::TryAgain { .. } => bump(&c.redirects[2]),
                Observation::Coalesced => bump(&c.coalesced),
                Observation::StoreLoad { outcome } => bump(&c.store_loads[store_index(*outcome)]),
                _ => {}
            }
        }
    });
    refused
}

fn store_index(outcome: StoreOutcome) -> usize {
    match outcome {
        StoreOutcome::Hit => 0,
        StoreOutcome::Miss => 1,
        _ => 2,
    }
}

/// Metrics, clocks and the span for one finished request, when a meter or
/// a tracer listens.
pub(crate) fn report(
    shared: &Shared,
    meta: Meta,
    out: &Result<CacheResponse, BoxError>,
    failure: Option<Failure>,
    refused: bool,
    record: &Record,
) {
    let now = Instant::now();
    let secs = meta.start.map_or(0.0, |start| {
        now.saturating_duration_since(start).as_secs_f64()
    });
    if shared.metering {
        record_durations(shared, &meta, out, failure, secs);
        if refused {
            shared.instruments.writes_refused.add(1, &[]);
        }
        if !record.is_empty() {
            meter_observations(shared, record);
        }
        // The failover clocks feed histograms and gauges only.
        let healthy = record.is_empty() && !shared.timers.any();
        if !healthy {
            failover_clocks(shared, &meta, out, record, now);
        }
    }
    if let (Some(start), Some(tracer)) = (&meta.span, &shared.tracer) {
        tracer.emit(&super::span::Ended {
            shared,
            start,
            meta: &meta,
            out,
            failure,
            record,
            now,
        });
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
        None => ins.ok_durations[usize::from(meta.op)].record(secs),
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
        ins.read_latency[read_path(out) as usize].record(secs);
    }
}

fn meter_observations(shared: &Shared, record: &Record) {
    let ins = &shared.instruments;
    for o in record.iter() {
        match o {
            Observation::Moved { .. } => ins.redirects.add(1, &ins.redirect_attrs[0]),
            Observation::Ask { .. } => ins.redirects.add(1, &ins.redirect_attrs[1]),
            Observation::TryAgain { .. } => ins.redirects.add(1, &ins.redirect_attrs[2]),
            Observation::Coalesced => ins.coalesced.add(1, &[]),
            Observation::StoreLoad { outcome } => ins
                .store_loads
                .add(1, &ins.store_attrs[store_index(*outcome)]),
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
