//! Prometheus metrics: one process-wide recorder (the `metrics` facade with
//! `metrics-exporter-prometheus`), rendered at `GET /metrics`.
//!
//! The recorder is global to the process, so several servers in one process
//! (tests) share it; installing is idempotent. The standard Prometheus
//! process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, ...) come from `metrics-process`, read at each scrape. Metric names are a contract
//! with the Helm chart's Grafana dashboard: do not rename them.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds): token requests take ~0.3 ms (EdDSA) to a few
/// ms (RS256); store calls ~0.1-1 ms; the tail shows timeouts.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Installs the recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed by an embedding
            // program; then our handle renders nothing, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            metrics::gauge!("tokend_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            process_collector().describe();
            process_collector().collect();
            handle
        })
        .clone()
}

/// The process metrics collector (one per process, like the recorder).
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Publishes the active signing key (`kid`, `alg`) as a gauge set to 1.
pub fn signing_keys(keys: &crate::token::KeySet) {
    let active = keys.active();
    metrics::gauge!(
        "tokend_signing_key_info",
        "kid" => active.kid().to_owned(),
        "alg" => active.alg().to_string()
    )
    .set(1.0);
}

/// After a key reload: the previous active key's series drops to 0 (unless
/// it is still the active one) and the new one is published.
pub fn signing_key_changed(before: &crate::token::KeySet, after: &crate::token::KeySet) {
    let (old, new) = (before.active(), after.active());
    if old.kid() != new.kid() {
        metrics::gauge!(
            "tokend_signing_key_info",
            "kid" => old.kid().to_owned(),
            "alg" => old.alg().to_string()
        )
        .set(0.0);
    }
    signing_keys(after);
}

/// One fetch of a trusted issuer's JWKS (workload identity federation):
/// `tokend_federation_jwks_fetches_total{outcome="ok"|"error"}`.
pub fn federation_jwks_fetch(ok: bool) {
    metrics::counter!(
        "tokend_federation_jwks_fetches_total",
        "outcome" => if ok { "ok" } else { "error" }
    )
    .increment(1);
}

/// Drains histogram buckets periodically (the exporter needs it when not
/// scraped often) until `stop`.
pub async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// `GET /metrics`.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route(crate::transport::routes::METRICS, get(render))
        .with_state(handle)
}

async fn render(State(h): State<PrometheusHandle>) -> Response {
    // Memory, CPU and descriptors as of this scrape (a few reads of /proc).
    process_collector().collect();
    let mut res = h.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
