//! Readiness, shared by HTTP `/readyz` and gRPC health.
//!
//! A background task pings the store every second (bounded by the store
//! timeout) and flips one flag; both probes read it, so they always agree.
//! Shutdown turns readiness off at once, before listeners stop.
//!
//! The same task reads the store's eviction policy every
//! [`EVICTION_CHECK_EVERY`] (Redis `INFO memory`: one command per check, not
//! per probe). Revocations are keys with a TTL, so a Redis whose
//! `maxmemory-policy` is not `noeviction` can silently drop one under memory
//! pressure and a revoked token is active again (issue 14 measured it). Such
//! a store keeps tokend not ready, with a loud warning, unless
//! `[store] allow_eviction = true` (then only the warning).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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

/// How often readiness re-reads the store's eviction policy (the result is
/// cached in between, so probes never cause an `INFO` each).
pub const EVICTION_CHECK_EVERY: Duration = Duration::from_secs(3);

/// The last eviction-policy check.
#[derive(Debug, Clone, PartialEq)]
enum Eviction {
    /// No node evicts.
    Never,
    /// These nodes (with their policy) may evict keys.
    Possible(Vec<String>),
    /// The policy could not be read (the cause).
    Unknown(String),
}

impl Eviction {
    async fn check(store: &SharedStore, timeout: Duration) -> Self {
        match tokio::time::timeout(timeout, store.evictable()).await {
            Ok(Ok(nodes)) if nodes.is_empty() => Self::Never,
            Ok(Ok(nodes)) => Self::Possible(nodes),
            Ok(Err(e)) => Self::Unknown(e.cause),
            Err(_) => Self::Unknown("timed out".into()),
        }
    }

    /// Why readiness is off, if this result keeps it off.
    fn blocks(&self, allow_eviction: bool) -> Option<String> {
        match self {
            _ if allow_eviction => None,
            Self::Never => None,
            Self::Possible(nodes) => Some(format!(
                "the store may evict keys ({}); set maxmemory-policy noeviction, \
                 or [store] allow_eviction = true to accept the risk",
                nodes.join(", ")
            )),
            Self::Unknown(cause) => {
                Some(format!("cannot read the store's eviction policy: {cause}"))
            }
        }
    }

    /// Logs a change of the result (and the first result) loudly.
    fn report(&self, previous: Option<&Self>, allow_eviction: bool) {
        if previous == Some(self) {
            return;
        }
        metrics::gauge!("tokend_store_evictable").set(match self {
            Self::Never => 0.0,
            _ => 1.0,
        });
        match self {
            Self::Never if previous.is_some() => {
                tracing::info!("the store no longer evicts keys (maxmemory-policy noeviction)");
            }
            Self::Never => {}
            Self::Possible(nodes) => tracing::warn!(
                nodes = %nodes.join(", "),
                allow_eviction,
                "THE STORE MAY EVICT KEYS: its maxmemory-policy is not noeviction, so under memory \
                 pressure Redis can drop revocations and revoked tokens become active again; set \
                 maxmemory-policy noeviction (docs/redis.md). {}",
                if allow_eviction {
                    "[store] allow_eviction = true: serving anyway"
                } else {
                    "Not ready until it is fixed ([store] allow_eviction = true overrides)"
                }
            ),
            Self::Unknown(cause) => tracing::warn!(
                cause = %cause,
                allow_eviction,
                "cannot read the store's eviction policy (INFO memory)"
            ),
        }
    }
}

/// Runs the store check until `stop` is cancelled.
pub async fn run_checks(
    readiness: Readiness,
    store: SharedStore,
    timeout: Duration,
    interval: Duration,
    allow_eviction: bool,
    stop: CancellationToken,
) {
    let mut eviction: Option<(Eviction, Instant)> = None;
    loop {
        let result = tokio::time::timeout(timeout, store.ping()).await;
        let up = matches!(result, Ok(Ok(())));
        metrics::gauge!("tokend_store_up").set(if up { 1.0 } else { 0.0 });
        if up
            && eviction
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= EVICTION_CHECK_EVERY)
        {
            let next = Eviction::check(&store, timeout).await;
            next.report(eviction.as_ref().map(|(e, _)| e), allow_eviction);
            eviction = Some((next, Instant::now()));
        }
        let blocked = eviction
            .as_ref()
            .and_then(|(e, _)| e.blocks(allow_eviction));
        match result {
            Ok(Ok(())) => match blocked {
                None => readiness.set(true, "").await,
                Some(reason) => readiness.set(false, &reason).await,
            },
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
