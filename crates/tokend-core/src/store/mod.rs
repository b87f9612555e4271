//! Shared state behind one async trait: revoked `jti`s, per-client and
//! per-subject "not before" marks, and (for the code and refresh grants)
//! one-time codes and refresh-token records.
//!
//! The trait is a small key/value vocabulary with a TTL on every write, so that
//! memory (embedded or in Redis) is bounded by live tokens, never by history, and
//! with an atomic take-once (`take`) so a code is redeemable exactly once.
//! Keys are given without the deployment's prefix; each backend applies it.
//! Keys never contain a secret, a token or a code: callers hash those first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub mod instrumented;
pub mod log;
pub mod memory;
pub mod redis;

pub use log::{LogAppend, LogEntry, LogId, LogView, StateChange};
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

/// The wall clock in Unix milliseconds (the log's state expiries).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

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

    /// Atomically adds `delta` to the counter under `key` (absent counts as
    /// 0) and sets its expiry to `ttl` from now; returns the new value. Of
    /// concurrent callers each sees a distinct value, across replicas where
    /// the backend is shared.
    async fn incr(&self, key: &str, delta: i64, ttl: Duration) -> StoreResult<i64>;

    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> StoreResult<()>;

    /// The nodes that may evict keys under memory pressure, each named with
    /// its policy (`"127.0.0.1:6379 maxmemory-policy=volatile-lru"`); empty
    /// when none can. Every key tokend writes has a TTL, so any policy but
    /// `noeviction` (`volatile-*` included) can silently drop a revocation.
    /// The memory store never evicts.
    async fn evictable(&self) -> StoreResult<Vec<String>>;

    /// Appends an event to the revocation log (see [`log`]) and applies its
    /// state change, atomically; returns the entry's id.
    async fn log_append(&self, append: &LogAppend<'_>) -> StoreResult<LogId>;

    /// Up to `max` log entries after `after`, oldest first;
    /// [`LogView::continues`] tells whether they follow `after` with no gap.
    async fn log_read(&self, after: LogId, max: usize) -> StoreResult<LogView>;

    /// The newest `max` log entries, oldest first.
    async fn log_tail(&self, max: usize) -> StoreResult<LogView>;

    /// The log's state: every value set and neither deleted nor expired at
    /// `now_ms` (expired ones are pruned on the way). Fails when there are
    /// more than `max`.
    async fn log_state(&self, now_ms: u64, max: usize) -> StoreResult<Vec<Vec<u8>>>;

    /// Reclaims expired entries where the backend does not do it itself;
    /// returns how many were removed. Redis expires keys on its own.
    fn prune(&self) -> usize {
        0
    }
}

pub type SharedStore = Arc<dyn Store>;

/// `[store]` as the operator wrote it: the store component owns its section
/// (the service's config module only places it in the file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    #[serde(default = "default_store_url")]
    pub url: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(
        default = "default_store_timeout",
        deserialize_with = "crate::de::de_num"
    )]
    pub timeout_ms: u64,
    /// PEM CA certificate(s) that `rediss://` trusts instead of the system's
    /// roots (a private CA of a managed or self-hosted Redis).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain and private key, for a Redis that demands
    /// client certificates (`tls-auth-clients yes`). Both or neither.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// From `TOKEND_STORE_PASSWORD` only (never the file, so Helm can mount it
    /// from a Secret); overrides a password in `url`.
    #[serde(skip)]
    pub password: Option<StorePassword>,
    /// The Sentinels' own ACL user, for `redis+sentinel://` (Sentinels
    /// authenticate separately from the Redis nodes; none by default).
    #[serde(default)]
    pub sentinel_username: Option<String>,
    /// The Sentinels' password: from `TOKEND_STORE_SENTINEL_PASSWORD` only.
    #[serde(skip)]
    pub sentinel_password: Option<StorePassword>,
    /// Replicas that must acknowledge each security-relevant write (`WAIT`)
    /// before it counts as done; 0 (the default) does not wait. See
    /// [`redis::ReplicaAcks`].
    #[serde(default, deserialize_with = "crate::de::de_num")]
    pub replica_acks: u64,
    /// How long a write waits for those acknowledgements.
    #[serde(
        default = "default_replica_ack_timeout",
        deserialize_with = "crate::de::de_num"
    )]
    pub replica_ack_timeout_ms: u64,
    /// Become ready even though Redis may evict keys (`maxmemory-policy`
    /// other than `noeviction`): an evicted revocation makes a revoked token
    /// active again. Off by default: such a store keeps tokend not ready.
    #[serde(default, deserialize_with = "crate::de::de_bool")]
    pub allow_eviction: bool,
}

/// The Redis password: never printed, compared in constant time (a reload
/// reports a changed password by key name only).
#[derive(Clone)]
pub struct StorePassword(pub SecretString);

impl PartialEq for StorePassword {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(
            self.0
                .expose_secret()
                .as_bytes()
                .ct_eq(other.0.expose_secret().as_bytes()),
        )
    }
}

impl std::fmt::Debug for StorePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorePassword([REDACTED])")
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            key_prefix: default_key_prefix(),
            timeout_ms: default_store_timeout(),
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            password: None,
            sentinel_username: None,
            sentinel_password: None,
            replica_acks: 0,
            replica_ack_timeout_ms: default_replica_ack_timeout(),
            allow_eviction: false,
        }
    }
}

fn default_store_url() -> String {
    "memory://".into()
}
fn default_key_prefix() -> String {
    "tokend:".into()
}
fn default_store_timeout() -> u64 {
    250
}
fn default_replica_ack_timeout() -> u64 {
    100
}

/// `[store]` parsed and checked: the URL understood, the TLS files read. What
/// [`connect`] needs, produced once by [`StoreSettings::parse`].
#[derive(Clone)]
pub struct StoreConfig {
    settings: StoreSettings,
    tls: Option<::redis::TlsCertificates>,
}

impl StoreConfig {
    /// The bound on each store call (and the readiness probe's ping).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms)
    }

    /// `[store] allow_eviction`: readiness ignores an evicting policy.
    pub fn allow_eviction(&self) -> bool {
        self.settings.allow_eviction
    }

    /// The Redis server's host and port for trace spans (`None` for the
    /// memory store and Sentinel URLs); never the credentials.
    pub fn server_address(&self) -> Option<(String, u16)> {
        redis::server_address(&self.settings.url)
    }
}

impl StoreSettings {
    /// Checks the section without connecting and reads the TLS files, or
    /// returns every problem found, each naming its key.
    pub fn parse(&self) -> Result<StoreConfig, Vec<String>> {
        let mut problems = Vec::new();
        if self.timeout_ms == 0 {
            problems.push("store.timeout_ms: must be positive".into());
        }
        if !is_memory(&self.url)
            && let Err(e) =
                self::redis::validate_url(&self.url, self.password.as_ref().map(|p| &p.0))
        {
            problems.push(format!("store.url: {e}"));
        }
        if self.replica_acks > 0 && is_memory(&self.url) {
            problems.push("store.replica_acks: only for a Redis store".into());
        }
        if self.replica_acks > 16 {
            problems.push("store.replica_acks: at most 16".into());
        }
        if !(1..=10_000).contains(&self.replica_ack_timeout_ms) {
            problems.push("store.replica_ack_timeout_ms: must be 1 to 10000".into());
        }
        if !self::redis::is_sentinel_url(&self.url)
            && (self.sentinel_username.is_some() || self.sentinel_password.is_some())
        {
            problems.push(
                "store.sentinel_username/TOKEND_STORE_SENTINEL_PASSWORD: only for a \
                 redis+sentinel:// or rediss+sentinel:// store.url"
                    .into(),
            );
        }
        let tls = self::redis::tls_certificates(self).unwrap_or_else(|e| {
            problems.extend(e);
            None
        });
        if problems.is_empty() {
            Ok(StoreConfig {
                settings: self.clone(),
                tls,
            })
        } else {
            Err(problems)
        }
    }
}

/// Builds the backend named by `[store] url`. Redis backends connect lazily
/// (see [`RedisStore::new`]): this fails only on a malformed URL, never because
/// Redis is down.
pub async fn connect(config: &StoreConfig) -> anyhow::Result<SharedStore> {
    let s = &config.settings;
    if is_memory(&s.url) {
        return Ok(Arc::new(MemoryStore::new()));
    }
    let store = RedisStore::open(
        &s.url,
        s.password.as_ref().map(|p| &p.0),
        &s.key_prefix,
        config.timeout(),
        config.tls.clone(),
        self::redis::SentinelAuth {
            username: s.sentinel_username.clone(),
            password: s.sentinel_password.as_ref().map(|p| p.0.clone()),
        },
        (s.replica_acks > 0).then(|| self::redis::ReplicaAcks {
            replicas: u32::try_from(s.replica_acks).unwrap_or(u32::MAX),
            timeout: Duration::from_millis(s.replica_ack_timeout_ms),
        }),
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
