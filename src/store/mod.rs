//! Shared state behind one async trait: revoked `jti`s, per-client and
//! per-subject "not before" marks, and (for the code and refresh grants)
//! one-time codes and refresh-token records.
//!
//! The trait is a small key/value vocabulary with a TTL on every write, so that
//! memory (embedded or in Redis) is bounded by live tokens, never by history, and
//! with an atomic take-once (`take`) so a code is redeemable exactly once.
//! Keys are given without the deployment's prefix; each backend applies it.
//! Keys never contain a secret, a token or a code: callers hash those first.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod instrumented;
pub mod memory;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// A store call failed (unreachable, timed out, protocol error). The message
/// names the operation and the cause, never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store {op} failed: {cause}")]
pub struct StoreError {
    pub op: &'static str,
    pub cause: String,
}

impl StoreError {
    pub fn new(op: &'static str, cause: impl std::fmt::Display) -> Self {
        Self {
            op,
            cause: cause.to_string(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The answer of [`Store::rate_limit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateDecision {
    pub allowed: bool,
    /// When refused: how long until one request would be allowed.
    pub retry_after: Duration,
}

/// The operations every backend provides. `ttl = None` means the entry never
/// expires (used only for records whose lifetime is "forever" by configuration,
/// e.g. refresh tokens with `refresh_ttl_secs = 0`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short backend name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;

    /// Set `key` to `value`, replacing any previous value.
    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()>;

    /// Set `key` only when absent; `true` when this call created it.
    async fn put_new(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool>;

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Read several keys in one round trip; the result is in `keys` order.
    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>>;

    /// Atomically read and delete `key`: of concurrent callers, at most one
    /// gets `Some`.
    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;

    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Counts one request against a GCRA rate limit (`per_sec` sustained,
    /// `burst` at once) under `key`, atomically; across replicas where the
    /// backend is shared.
    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision>;

    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> StoreResult<()>;

    /// Reclaims expired entries where the backend does not do it itself;
    /// returns how many were removed. Redis expires keys on its own.
    fn prune(&self) -> usize {
        0
    }
}

pub type SharedStore = Arc<dyn Store>;

/// Builds the backend named by `[store] url`. Redis backends connect lazily
/// (see [`RedisStore::new`]): this fails only on a malformed URL, never because
/// Redis is down.
pub async fn connect(settings: &crate::config::StoreSettings) -> anyhow::Result<SharedStore> {
    if is_memory(&settings.url) {
        return Ok(Arc::new(MemoryStore::new()));
    }
    let tls = self::redis::tls_certificates(settings)
        .map_err(|problems| anyhow::anyhow!("{}", problems.join("; ")))?;
    let store = RedisStore::with_tls(
        &settings.url,
        settings.password.as_ref(),
        &settings.key_prefix,
        Duration::from_millis(settings.timeout_ms),
        tls,
    )
    .map_err(|e| anyhow::anyhow!("store.url: {e:#}"))?;
    Ok(Arc::new(store))
}

/// Whether `url` names the embedded backend.
pub fn is_memory(url: &str) -> bool {
    matches!(url, "memory://" | "memory:" | "memory")
}

#[cfg(test)]
mod tests;
