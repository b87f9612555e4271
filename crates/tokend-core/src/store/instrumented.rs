//! A [`Store`] decorator that records every call's latency
//! (`tokend_store_duration_seconds{op}`) and failures
//! (`tokend_store_errors_total{op}`), so backends stay free of metrics code.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{LogAppend, LogId, LogView, RateDecision, SharedStore, Store, StoreResult};

pub struct Instrumented {
    inner: SharedStore,
}

impl Instrumented {
    pub fn new(inner: SharedStore) -> Self {
        Self { inner }
    }
}

async fn timed<T>(op: &'static str, f: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
    let start = Instant::now();
    let r = f.await;
    metrics::histogram!("tokend_store_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    if r.is_err() {
        metrics::counter!("tokend_store_errors_total", "op" => op).increment(1);
    }
    r
}

#[async_trait]
impl Store for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        timed("put", self.inner.put(key, value, ttl)).await
    }
    async fn put_new(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        timed("put_new", self.inner.put_new(key, value, ttl)).await
    }
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        timed("get", self.inner.get(key)).await
    }
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        timed("get_many", self.inner.get_many(keys)).await
    }
    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        timed("take", self.inner.take(key)).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        timed("delete", self.inner.delete(key)).await
    }
    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision> {
        timed("rate_limit", self.inner.rate_limit(key, per_sec, burst)).await
    }
    async fn incr(&self, key: &str, delta: i64, ttl: Duration) -> StoreResult<i64> {
        timed("incr", self.inner.incr(key, delta, ttl)).await
    }
    async fn ping(&self) -> StoreResult<()> {
        timed("ping", self.inner.ping()).await
    }
    async fn evictable(&self) -> StoreResult<Vec<String>> {
        timed("evictable", self.inner.evictable()).await
    }
    async fn log_append(&self, append: &LogAppend<'_>) -> StoreResult<LogId> {
        timed("log_append", self.inner.log_append(append)).await
    }
    async fn log_read(&self, after: LogId, max: usize) -> StoreResult<LogView> {
        timed("log_read", self.inner.log_read(after, max)).await
    }
    async fn log_tail(&self, max: usize) -> StoreResult<LogView> {
        timed("log_tail", self.inner.log_tail(max)).await
    }
    async fn log_state(&self, now_ms: u64, max: usize) -> StoreResult<Vec<Vec<u8>>> {
        timed("log_state", self.inner.log_state(now_ms, max)).await
    }
    fn prune(&self) -> usize {
        self.inner.prune()
    }
}
