//! The embedded store: a sharded in-process map with per-entry expiry. It makes
//! `tokend serve` work with no setup and is what a single replica needs; it is
//! not shared between replicas (use Redis for that).
//!
//! Expired entries are invisible at once (checked on read) and reclaimed by
//! [`MemoryStore::prune`], which the server runs periodically, so memory stays
//! bounded by live entries however many tokens are issued and revoked.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::log::{LogAppend, LogEntry, LogId, LogView, StateChange};
use super::{RateDecision, Store, StoreError, StoreResult};

const SHARDS: usize = 16;

struct Entry {
    value: Vec<u8>,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// In-process [`Store`]. Time follows tokio's clock, so tests can pause and
/// advance it.
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    /// GCRA theoretical arrival times, per rate-limit key.
    rates: Mutex<HashMap<String, Instant>>,
    log: Mutex<MemoryLog>,
}

/// The revocation log, in process (see [`super::log`]): the same semantics
/// as the Redis stream, ids included.
#[derive(Default)]
struct MemoryLog {
    entries: VecDeque<LogEntry>,
    last: LogId,
    trimmed: LogId,
    /// When the log expires (its retention after the last append).
    expires_at: Option<Instant>,
    /// field -> (value, expiry in Unix ms)
    state: HashMap<String, (Vec<u8>, Option<u64>)>,
}

impl MemoryLog {
    fn expire(&mut self) {
        if self.expires_at.is_some_and(|t| t <= Instant::now()) {
            self.entries.clear();
            self.last = LogId::ZERO;
            self.trimmed = LogId::ZERO;
            self.expires_at = None;
        }
    }

    fn view(&self, entries: Vec<LogEntry>) -> LogView {
        LogView {
            entries,
            exists: self.last != LogId::ZERO,
            last: self.last,
            trimmed: Some(self.trimmed),
            first: self.entries.front().map(|e| e.id),
        }
    }

    fn next_id(&self) -> LogId {
        let now_ms = super::now_ms();
        if now_ms > self.last.ms {
            LogId { ms: now_ms, seq: 0 }
        } else {
            LogId {
                ms: self.last.ms,
                seq: self.last.seq + 1,
            }
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            rates: Mutex::new(HashMap::new()),
            log: Mutex::new(MemoryLog::default()),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Entry>> {
        // FNV-1a: cheap and good enough to spread keys over a few shards.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        &self.shards[(h as usize) % SHARDS]
    }

    /// Drops expired entries; returns how many were removed.
    pub fn prune_expired(&self) -> usize {
        let now = Instant::now();
        let mut removed = 0;
        for shard in &self.shards {
            let mut map = shard.lock();
            let before = map.len();
            map.retain(|_, e| e.live(now));
            removed += before - map.len();
        }
        let mut rates = self.rates.lock();
        let before = rates.len();
        rates.retain(|_, tat| *tat > now);
        removed += before - rates.len();
        let now_ms = super::now_ms();
        let mut log = self.log.lock();
        let before = log.state.len();
        log.state
            .retain(|_, (_, exp)| exp.is_none_or(|t| t > now_ms));
        removed + (before - log.state.len())
    }

    /// Number of entries held, expired or not (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get_live(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let map = self.shard(key).lock();
        map.get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }
}

fn expiry(ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|d| Instant::now() + d)
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let entry = Entry {
            value: value.to_vec(),
            expires_at: expiry(ttl),
        };
        self.shard(key).lock().insert(key.to_owned(), entry);
        Ok(())
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let now = Instant::now();
        let mut map = self.shard(key).lock();
        if map.get(key).is_some_and(|e| e.live(now)) {
            return Ok(false);
        }
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires_at: expiry(ttl),
            },
        );
        Ok(true)
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Duration) -> StoreResult<i64> {
        let now = Instant::now();
        let mut map = self.shard(key).lock();
        let before = map
            .get(key)
            .filter(|e| e.live(now))
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        let after = before.saturating_add(delta);
        map.insert(
            key.to_owned(),
            Entry {
                value: after.to_string().into_bytes(),
                expires_at: Some(now + ttl),
            },
        );
        Ok(after)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.get_live(key))
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        Ok(keys.iter().map(|k| self.get_live(k)).collect())
    }

    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let now = Instant::now();
        let mut map = self.shard(key).lock();
        Ok(map.remove(key).filter(|e| e.live(now)).map(|e| e.value))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.shard(key).lock().remove(key);
        Ok(())
    }

    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision> {
        // GCRA: each request advances the theoretical arrival time (TAT) by
        // one emission interval; a request is allowed while the TAT is at most
        // `burst` intervals ahead of now.
        let interval = Duration::from_secs_f64(1.0 / per_sec.max(1e-9));
        let tolerance = interval * burst.max(1);
        let now = Instant::now();
        let mut rates = self.rates.lock();
        let tat = rates.get(key).copied().unwrap_or(now).max(now);
        let next = tat + interval;
        if next - now > tolerance {
            return Ok(RateDecision {
                allowed: false,
                retry_after: (next - now) - tolerance,
            });
        }
        rates.insert(key.to_owned(), next);
        Ok(RateDecision {
            allowed: true,
            retry_after: Duration::ZERO,
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Never: entries leave only when they expire.
    async fn evictable(&self) -> StoreResult<Vec<String>> {
        Ok(Vec::new())
    }

    async fn log_append(&self, append: &LogAppend<'_>) -> StoreResult<LogId> {
        let mut log = self.log.lock();
        log.expire();
        let id = log.next_id();
        log.entries.push_back(LogEntry {
            id,
            data: append.event.to_vec(),
        });
        log.last = id;
        while log.entries.len() > append.max_len.max(1) {
            if let Some(old) = log.entries.pop_front() {
                log.trimmed = old.id;
            }
        }
        log.expires_at = Some(Instant::now() + append.retention);
        match append.change {
            StateChange::Set {
                value,
                expires_at_ms,
            } => {
                log.state
                    .insert(append.field.to_owned(), (value.to_vec(), expires_at_ms));
            }
            StateChange::Delete => {
                log.state.remove(append.field);
            }
            StateChange::Nothing => {}
        }
        Ok(id)
    }

    async fn log_read(&self, after: LogId, max: usize) -> StoreResult<LogView> {
        let mut log = self.log.lock();
        log.expire();
        let start = log.entries.partition_point(|e| e.id <= after);
        let entries = log.entries.range(start..).take(max).cloned().collect();
        Ok(log.view(entries))
    }

    async fn log_tail(&self, max: usize) -> StoreResult<LogView> {
        let mut log = self.log.lock();
        log.expire();
        let skip = log.entries.len().saturating_sub(max);
        let entries = log.entries.range(skip..).cloned().collect();
        Ok(log.view(entries))
    }

    async fn log_state(&self, now_ms: u64, max: usize) -> StoreResult<Vec<Vec<u8>>> {
        let mut log = self.log.lock();
        log.state
            .retain(|_, (_, exp)| exp.is_none_or(|t| t > now_ms));
        if log.state.len() > max {
            return Err(StoreError::new(
                "log_state",
                format!("{} revocations in force, more than {max}", log.state.len()),
            ));
        }
        Ok(log.state.values().map(|(v, _)| v.clone()).collect())
    }

    fn prune(&self) -> usize {
        self.prune_expired()
    }
}
