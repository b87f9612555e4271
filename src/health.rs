//! Readiness, shared by HTTP `/readyz` and gRPC health.
//!
//! A background task pings the store every second (bounded by the store
//! timeout) and flips one flag; both probes read it, so they always agree.
//! Shutdown turns readiness off at once, before listeners stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::store::SharedStore;

/// The gRPC health service name of the token API.
pub const TOKEN_SERVICE: &str = "tokend.v1.TokenService";
/// The gRPC health service name of the login-app API.
pub const AUTHORIZATION_SERVICE: &str = "tokend.v1.AuthorizationService";
/// gRPC health name for liveness probes: SERVING while the process runs,
/// whatever the store does (readiness is "" and the service names above), so
/// a Redis outage takes pods out of the Service without restarting them.
pub const LIVENESS_SERVICE: &str = "liveness";

#[derive(Clone)]
pub struct Readiness {
    inner: Arc<Inner>,
}

struct Inner {
    ready: AtomicBool,
    shutting_down: AtomicBool,
    reason: Mutex<String>,
    reporter: HealthReporter,
}

impl Readiness {
    pub fn new(reporter: HealthReporter) -> Self {
        Self {
            inner: Arc::new(Inner {
                ready: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                reason: Mutex::new("starting".into()),
                reporter,
            }),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> String {
        self.inner.reason.lock().clone()
    }

    /// Records the latest check and publishes it to gRPC health.
    pub async fn set(&self, ready: bool, reason: &str) {
        let ready = ready && !self.inner.shutting_down.load(Ordering::Acquire);
        let was = self.inner.ready.swap(ready, Ordering::AcqRel);
        *self.inner.reason.lock() = if ready {
            String::new()
        } else {
            reason.to_owned()
        };
        if was != ready {
            if ready {
                tracing::info!("ready");
            } else {
                tracing::warn!(reason, "not ready");
            }
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.inner.reporter.set_service_status("", status).await;
        for service in [TOKEN_SERVICE, AUTHORIZATION_SERVICE] {
            self.inner
                .reporter
                .set_service_status(service, status)
                .await;
        }
    }

    /// Marks the process as draining: not ready from now on.
    pub async fn shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.set(false, "shutting down").await;
    }
}

/// Runs the store check until `stop` is cancelled.
pub async fn run_checks(
    readiness: Readiness,
    store: SharedStore,
    timeout: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let result = tokio::time::timeout(timeout, store.ping()).await;
        let up = matches!(result, Ok(Ok(())));
        metrics::gauge!("tokend_store_up").set(if up { 1.0 } else { 0.0 });
        match result {
            Ok(Ok(())) => readiness.set(true, "").await,
            Ok(Err(e)) => {
                readiness
                    .set(false, &format!("store unreachable: {}", e.cause))
                    .await
            }
            Err(_) => readiness.set(false, "store ping timed out").await,
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
