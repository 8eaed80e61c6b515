//! `--metrics-addr`: serve slotguard's metrics as Prometheus text while a
//! command runs, so an operator can point a real Prometheus at a demo.
//!
//! The stack's telemetry layer reports through the OpenTelemetry API to the
//! global meter provider; this installs the SDK's provider with the
//! Prometheus exporter there, before the stack is built, and serves
//! `GET /metrics` from a thread of its own (the command keeps its runtime).

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::Encoder as _;

/// The `--metrics-addr` flag.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics on http://HOST:PORT/metrics while running.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<SocketAddr>,
}

/// Install the exporter and start serving, when asked to. Errors (a taken
/// port) are reported and the command runs without it.
pub(crate) fn start(args: &MetricsArgs) -> Result<(), String> {
    let Some(addr) = args.metrics_addr else {
        return Ok(());
    };
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .map_err(|e| format!("metrics exporter: {e}"))?;
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(exporter)
        .build();
    opentelemetry::global::set_meter_provider(provider);
    let listener =
        std::net::TcpListener::bind(addr).map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    eprintln!(
        "metrics on http://{}/metrics",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    std::thread::Builder::new()
        .name("slotguard-metrics".into())
        .spawn(move || serve(listener, registry))
        .map_err(|e| format!("metrics thread: {e}"))?;
    Ok(())
}

fn serve(listener: std::net::TcpListener, registry: prometheus::Registry) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let app = Router::new().route("/metrics", get(move || async move { scrape(&registry) }));
        let _ = axum::serve(listener, app).await;
    });
}

fn scrape(registry: &prometheus::Registry) -> Response {
    let mut out = Vec::new();
    match prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
