//! A [`Store`] decorator that records every call's latency
//! (`tokend_store_duration_seconds{op}`) and failures
//! (`tokend_store_errors_total{op}`), so backends stay free of metrics code.
//!
//! It also opens a client span per call of a networked backend (Redis),
//! named after the command and carrying the OpenTelemetry database
//! attributes (`db.system.name`, `db.operation.name`, `server.address`, ...).
//! These are plain `tracing` spans with the target [`SPAN_TARGET`]; the
//! service decides whether anything records them (docs/tracing.md). A span is
//! opened only inside another one (a request's), so background calls (the
//! readiness ping, the disabled-client refresh) never start traces of their
//! own, and with tracing off the cost is one thread-local lookup. Spans never
//! carry keys or values: keys are derived from token hashes and client ids,
//! values are records.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::Instrument;

use super::{LogAppend, LogId, LogView, RateDecision, SharedStore, Store, StoreResult};

/// The `tracing` target of every span meant for export (requests in the
/// service, store calls here). Log output never shows these spans.
pub const SPAN_TARGET: &str = "tokend::span";

pub struct Instrumented {
    inner: SharedStore,
    /// Whether calls get spans: only backends with a network round trip.
    traced: bool,
    server: Option<(String, u16)>,
}

impl Instrumented {
    pub fn new(inner: SharedStore) -> Self {
        let traced = inner.backend() != "memory";
        Self {
            inner,
            traced,
            server: None,
        }
    }

    /// The server the backend talks to, for the spans' `server.address` and
    /// `server.port` (see `StoreConfig::server_address`).
    pub fn with_server_address(mut self, server: Option<(String, u16)>) -> Self {
        self.server = server;
        self
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let start = Instant::now();
        let span = (self.traced && !tracing::Span::current().is_none()).then(|| self.span(op));
        let r = match &span {
            Some(span) => f.instrument(span.clone()).await,
            None => f.await,
        };
        metrics::histogram!("tokend_store_duration_seconds", "op" => op)
            .record(start.elapsed().as_secs_f64());
        if r.is_err() {
            metrics::counter!("tokend_store_errors_total", "op" => op).increment(1);
            if let Some(span) = &span {
                span.record("otel.status_code", "error");
                span.record("error.type", "store_error");
            }
        }
        r
    }

    fn span(&self, op: &'static str) -> tracing::Span {
        let command = command(op);
        let (address, port) = match &self.server {
            Some((h, p)) => (Some(h.as_str()), Some(*p)),
            None => (None, None),
        };
        tracing::info_span!(
            target: SPAN_TARGET,
            "store",
            otel.name = command,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system = self.inner.backend(),
            db.system.name = self.inner.backend(),
            db.operation.name = command,
            server.address = address,
            server.port = port,
            tokend.store.op = op,
            "error.type" = tracing::field::Empty,
        )
    }
}

/// The Redis command (or script call) behind each store operation.
fn command(op: &'static str) -> &'static str {
    match op {
        "put" | "put_new" => "SET",
        "get" => "GET",
        "get_many" => "MGET",
        "take" => "GETDEL",
        "delete" => "DEL",
        "rate_limit" | "incr" => "EVALSHA",
        "ping" => "PING",
        "evictable" => "INFO",
        "log_append" | "log_read" | "log_tail" => "EVAL",
        "log_state" => "HSCAN",
        other => other,
    }
}

#[async_trait]
impl Store for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.timed("put", self.inner.put(key, value, ttl)).await
    }
    async fn put_new(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        self.timed("put_new", self.inner.put_new(key, value, ttl))
            .await
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.timed("get", self.inner.get(key)).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        self.timed("get_many", self.inner.get_many(keys)).await
    }
    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.timed("take", self.inner.take(key)).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.timed("delete", self.inner.delete(key)).await
    }
    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision> {
        self.timed("rate_limit", self.inner.rate_limit(key, per_sec, burst))
            .await
    }
    async fn incr(&self, key: &str, delta: i64, ttl: Duration) -> StoreResult<i64> {
        self.timed("incr", self.inner.incr(key, delta, ttl)).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.timed("ping", self.inner.ping()).await
    }
    async fn evictable(&self) -> StoreResult<Vec<String>> {
        self.timed("evictable", self.inner.evictable()).await
    }
    async fn log_append(&self, append: &LogAppend<'_>) -> StoreResult<LogId> {
        self.timed("log_append", self.inner.log_append(append))
            .await
    }
    async fn log_read(&self, after: LogId, max: usize) -> StoreResult<LogView> {
        self.timed("log_read", self.inner.log_read(after, max))
            .await
    }
    async fn log_tail(&self, max: usize) -> StoreResult<LogView> {
        self.timed("log_tail", self.inner.log_tail(max)).await
    }
    async fn log_state(&self, now_ms: u64, max: usize) -> StoreResult<Vec<Vec<u8>>> {
        self.timed("log_state", self.inner.log_state(now_ms, max))
            .await
    }
    fn prune(&self) -> usize {
        self.inner.prune()
    }
}
