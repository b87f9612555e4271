//! The revocation feed (issue 15): every revocation is also an event in the
//! store's revocation log ([`crate::store::log`]), and each replica's [`Hub`]
//! follows that log and serves it to watchers (resource servers verifying
//! tokens locally) as `tokend.v1.RevocationFeed`.
//!
//! - **Publishing.** [`Core`] appends the event *before* it writes the
//!   revocation itself: if the append fails, nothing is revoked and the
//!   caller gets the store error; if the revocation write fails after it,
//!   watchers reject a token the store does not (yet) hold revoked, which
//!   errs on the safe side, and the caller, told of the failure, retries.
//!   A revocation can never be stored while its event is lost.
//! - **Following.** One task per replica (the tailer) reads the log every
//!   `poll_interval` (at once after a local append) into a ring of the last
//!   `log_max_len` events, shared by every watcher of the replica: a
//!   thousand watchers cost one store read per interval, not a thousand.
//! - **Resuming.** A cursor is a log id. A watcher resumes from its cursor
//!   when the ring still holds everything after it; otherwise (empty cursor,
//!   too old, from a log that has since been lost) it gets a snapshot of the
//!   state (every revocation in force), built at most once per
//!   `snapshot_max_age` per replica and shared, then follows the ring.
//! - **Bounded.** A watcher holds its position and a small channel, never
//!   a queue of its own: one that cannot take events as fast as they come
//!   is ended (resumable) when its position leaves the ring or a send
//!   blocks for `send_timeout`. Watchers are capped per client and in total.
//! - **Store down.** The tailer's read fails: every watcher's stream ends
//!   with UNAVAILABLE and new watches are refused until it reads again;
//!   cursors then resume as before.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::oauth::{Core, now_unix_ms};
use crate::store::{LogAppend, LogId, SharedStore, StateChange, StoreError};

/// What happened (named after CAEP where it matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    TokenRevoked,
    FamilyRevoked,
    /// CAEP `session-revoked`: a subject logged out everywhere.
    SessionRevoked,
    /// CAEP `credential-change`: a client cut off, disabled or enabled.
    CredentialChange,
    KeysChanged,
}

/// What changed about a client (`credential_change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientChange {
    CutOff,
    Disabled,
    Enabled,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// One event, as stored in the log (compact JSON) and served to watchers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedEvent {
    #[serde(rename = "k")]
    pub kind: EventKind,
    /// Unix ms.
    #[serde(rename = "t")]
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subject: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_before_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ClientChange>,
    /// Unix seconds after which the revocation covers no live token; 0 =
    /// never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expires_at: i64,
}

impl FeedEvent {
    fn new(kind: EventKind) -> Self {
        Self {
            kind,
            at_ms: now_unix_ms(),
            jti: String::new(),
            sid: String::new(),
            client_id: String::new(),
            subject: String::new(),
            not_before_ms: 0,
            change: None,
            expires_at: 0,
        }
    }

    pub(crate) fn expiring(mut self, ttl: Option<Duration>) -> Self {
        self.expires_at = ttl.map_or(0, |t| {
            (self.at_ms / 1000).saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX) + 1)
        });
        self
    }

    pub fn token_revoked(jti: &str, client_id: &str, ttl: Duration) -> Self {
        Self {
            jti: jti.into(),
            client_id: client_id.into(),
            ..Self::new(EventKind::TokenRevoked)
        }
        .expiring(Some(ttl))
    }

    pub fn family_revoked(sid: &str, ttl: Duration) -> Self {
        Self {
            sid: sid.into(),
            ..Self::new(EventKind::FamilyRevoked)
        }
        .expiring(Some(ttl))
    }

    pub fn session_revoked(subject: &str, not_before_ms: i64, ttl: Option<Duration>) -> Self {
        Self {
            subject: subject.into(),
            not_before_ms,
            ..Self::new(EventKind::SessionRevoked)
        }
        .expiring(ttl)
    }

    pub fn client_changed(client_id: &str, change: ClientChange, not_before_ms: i64) -> Self {
        Self {
            client_id: client_id.into(),
            change: Some(change),
            not_before_ms,
            ..Self::new(EventKind::CredentialChange)
        }
    }

    pub fn keys_changed() -> Self {
        Self::new(EventKind::KeysChanged)
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an event serialises")
    }

    /// Parses a stored event; `None` (logged) for one this version cannot
    /// read (a newer kind during a rolling upgrade).
    fn decode(raw: &[u8]) -> Option<Self> {
        match serde_json::from_slice(raw) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable revocation log entry skipped");
                None
            }
        }
    }
}

/// `[revocation_feed]`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSettings {
    /// About how many events the log (and each replica's ring) keeps.
    pub log_max_len: usize,
    /// How long the log outlives its last append.
    pub log_retention: Duration,
    /// How often each replica reads the log.
    pub poll_interval: Duration,
    /// A quiet stream gets a heartbeat this often.
    pub heartbeat: Duration,
    /// How old a shared snapshot may be when served.
    pub snapshot_max_age: Duration,
    /// The most revocations a snapshot may hold.
    pub max_snapshot: usize,
    pub max_watchers: usize,
    pub max_watchers_per_client: usize,
    /// A watcher whose stream does not take an event for this long is ended.
    pub send_timeout: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            log_max_len: 10_000,
            log_retention: Duration::from_secs(7 * 86_400),
            poll_interval: Duration::from_millis(50),
            heartbeat: Duration::from_secs(5),
            snapshot_max_age: Duration::from_secs(1),
            max_snapshot: 1_000_000,
            max_watchers: 1_000,
            max_watchers_per_client: 16,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// `[revocation_feed]` as written (see [`FeedSettings`] for the meaning).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedConfig {
    #[serde(deserialize_with = "crate::de::de_num")]
    pub log_max_len: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub log_retention_secs: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub poll_interval_ms: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub heartbeat_secs: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub snapshot_max_age_ms: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub max_snapshot: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub max_watchers: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub max_watchers_per_client: u64,
    #[serde(deserialize_with = "crate::de::de_num")]
    pub send_timeout_secs: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        let d = FeedSettings::default();
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        let ms = |v: Duration| u64::try_from(v.as_millis()).unwrap_or(u64::MAX);
        Self {
            log_max_len: n(d.log_max_len),
            log_retention_secs: d.log_retention.as_secs(),
            poll_interval_ms: ms(d.poll_interval),
            heartbeat_secs: d.heartbeat.as_secs(),
            snapshot_max_age_ms: ms(d.snapshot_max_age),
            max_snapshot: n(d.max_snapshot),
            max_watchers: n(d.max_watchers),
            max_watchers_per_client: n(d.max_watchers_per_client),
            send_timeout_secs: d.send_timeout.as_secs(),
        }
    }
}

impl FeedConfig {
    /// Every out-of-range key, named.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut range = |key: &str, v: u64, lo: u64, hi: u64| {
            if !(lo..=hi).contains(&v) {
                p.push(format!("revocation_feed.{key}: must be {lo} to {hi}"));
            }
        };
        range("log_max_len", self.log_max_len, 100, 1_000_000);
        range(
            "log_retention_secs",
            self.log_retention_secs,
            60,
            90 * 86_400,
        );
        range("poll_interval_ms", self.poll_interval_ms, 10, 10_000);
        range("heartbeat_secs", self.heartbeat_secs, 1, 300);
        range("snapshot_max_age_ms", self.snapshot_max_age_ms, 0, 60_000);
        range("max_snapshot", self.max_snapshot, 1, 100_000_000);
        range("max_watchers", self.max_watchers, 0, 1_000_000);
        range(
            "max_watchers_per_client",
            self.max_watchers_per_client,
            1,
            1_000_000,
        );
        range("send_timeout_secs", self.send_timeout_secs, 1, 600);
        p
    }

    /// The checked section (call [`FeedConfig::check`] first).
    pub fn parse(&self) -> FeedSettings {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        FeedSettings {
            log_max_len: n(self.log_max_len),
            log_retention: Duration::from_secs(self.log_retention_secs),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            heartbeat: Duration::from_secs(self.heartbeat_secs),
            snapshot_max_age: Duration::from_millis(self.snapshot_max_age_ms),
            max_snapshot: n(self.max_snapshot),
            max_watchers: n(self.max_watchers),
            max_watchers_per_client: n(self.max_watchers_per_client),
            send_timeout: Duration::from_secs(self.send_timeout_secs),
        }
    }
}

impl Core {
    /// Appends `event` to the revocation log, setting (or with `set =
    /// false`, clearing) the state under `field`. Called before the
    /// revocation itself is written (see the module docs).
    pub(crate) async fn publish(
        &self,
        field: &str,
        event: &FeedEvent,
        set: bool,
    ) -> Result<LogId, StoreError> {
        let raw = event.encode();
        let expires_at_ms = (event.expires_at > 0)
            .then(|| u64::try_from(event.expires_at.saturating_mul(1000)).unwrap_or(0));
        let change = match (event.kind, set) {
            (EventKind::KeysChanged, _) => StateChange::Nothing,
            (_, true) => StateChange::Set {
                value: &raw,
                expires_at_ms,
            },
            (_, false) => StateChange::Delete,
        };
        let limits = &self.settings().feed;
        let id = self
            .store()
            .log_append(&LogAppend {
                event: &raw,
                field,
                change,
                max_len: limits.log_max_len,
                retention: limits.log_retention,
            })
            .await?;
        self.feed_poke.notify_one();
        Ok(id)
    }

    /// Tells watchers the signing keys changed (after a reload).
    pub async fn publish_keys_changed(&self) -> Result<(), StoreError> {
        self.publish("", &FeedEvent::keys_changed(), false)
            .await
            .map(|_| ())
    }
}

/// One thing a watcher is sent.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// A live event (with its cursor) or a snapshot entry (without).
    Event {
        cursor: Option<LogId>,
        event: Arc<FeedEvent>,
    },
    SnapshotComplete {
        cursor: LogId,
    },
    Heartbeat {
        cursor: LogId,
    },
}

/// Why a watch ended (the stream's final status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The store is unreachable or the log was reset; resume later.
    Unavailable(String),
    /// The watcher fell too far behind; resume from its cursor.
    TooSlow,
}

/// Why a watch was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchRefused {
    /// Too many watchers (in total or for this client).
    Busy(&'static str),
    /// The feed cannot serve now (store down, shutting down).
    Unavailable(String),
}

struct Ring {
    items: VecDeque<(LogId, Arc<FeedEvent>)>,
    /// Every event after this id is in `items`.
    covered_from: LogId,
    /// Client cursors at or after this (and at or before `last`) resume.
    resume_floor: LogId,
    /// The tailer's position: the newest id read.
    last: LogId,
    /// Bumped when the ring is rebuilt (log lost or trimmed past us).
    epoch: u64,
    /// The tailer's last read succeeded.
    up: bool,
    /// The ring has been loaded since the last reset.
    loaded: bool,
}

struct Snapshot {
    position: LogId,
    epoch: u64,
    built: Instant,
    events: Vec<Arc<FeedEvent>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<String, usize>,
}

/// A replica's view of the revocation log and its watchers.
pub struct Hub {
    store: SharedStore,
    settings: FeedSettings,
    poke: Arc<Notify>,
    ring: RwLock<Ring>,
    /// Bumped on every ring change, so watchers wake.
    changed: watch::Sender<u64>,
    snapshot: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
    counts: Mutex<Counts>,
    shutdown: CancellationToken,
}

/// Events read per store round trip.
const READ_BATCH: usize = 1_000;
/// Items a watcher may have queued for its stream.
const CHANNEL: usize = 32;

impl Hub {
    /// A hub following `core`'s store; [`Hub::run`] must be spawned.
    pub fn new(core: &Core, settings: FeedSettings, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            store: core.store().clone(),
            settings,
            poke: core.feed_poke.clone(),
            ring: RwLock::new(Ring {
                items: VecDeque::new(),
                covered_from: LogId::ZERO,
                resume_floor: LogId::ZERO,
                last: LogId::ZERO,
                epoch: 0,
                up: false,
                loaded: false,
            }),
            changed: watch::channel(0).0,
            snapshot: tokio::sync::Mutex::new(None),
            counts: Mutex::new(Counts::default()),
            shutdown,
        })
    }

    pub fn settings(&self) -> &FeedSettings {
        &self.settings
    }

    /// Watchers connected to this replica.
    pub fn watchers(&self) -> usize {
        self.counts.lock().total
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn set_up(&self, up: bool, reason: &str) {
        let mut ring = self.ring.write();
        if ring.up != up {
            if up {
                tracing::info!("revocation log readable again");
            } else {
                tracing::warn!(error = %reason, "revocation log unreadable; watchers are told UNAVAILABLE");
                ring.epoch += 1;
            }
            ring.up = up;
            metrics::gauge!("tokend_feed_up").set(if up { 1.0 } else { 0.0 });
            drop(ring);
            self.bump();
        }
    }

    /// The tailer: follows the log until shutdown.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = self.settings.poll_interval;
        loop {
            let more = match self.step().await {
                Ok(more) => {
                    backoff = self.settings.poll_interval;
                    more
                }
                Err(e) => {
                    self.set_up(false, &e.to_string());
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    false
                }
            };
            if more {
                continue;
            }
            let up = self.ring.read().up;
            let wait = if up {
                self.settings.poll_interval
            } else {
                backoff
            };
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
                () = self.poke.notified() => {}
            }
        }
        let mut ring = self.ring.write();
        ring.up = false;
        ring.epoch += 1;
        drop(ring);
        self.bump();
    }

    /// One read of the log; `true` when there may be more right away.
    async fn step(&self) -> Result<bool, StoreError> {
        let len = self.settings.log_max_len.max(1);
        let loaded = self.ring.read().loaded;
        if !loaded {
            let view = self.store.log_tail(len).await?;
            let mut ring = self.ring.write();
            ring.last = view.last;
            ring.covered_from = match view.entries.first() {
                None => view.last,
                Some(_) if view.entries.len() < len && view.continues(LogId::ZERO) => LogId::ZERO,
                Some(first) => first.id,
            };
            // An absent log cannot vouch for any cursor until its first event.
            ring.resume_floor = if view.exists {
                ring.covered_from
            } else {
                LogId {
                    ms: u64::MAX,
                    seq: u64::MAX,
                }
            };
            ring.items = view
                .entries
                .iter()
                .filter_map(|e| Some((e.id, Arc::new(FeedEvent::decode(&e.data)?))))
                .collect();
            ring.loaded = true;
            drop(ring);
            self.set_up(true, "");
            self.bump();
            return Ok(false);
        }
        let after = self.ring.read().last;
        let view = self.store.log_read(after, READ_BATCH).await?;
        if !view.continues(after) {
            tracing::warn!(
                "revocation log trimmed past this replica or lost; rebuilding (watchers resume or get a snapshot)"
            );
            {
                let mut ring = self.ring.write();
                ring.loaded = false;
                ring.epoch += 1;
                ring.items.clear();
            }
            *self.snapshot.lock().await = None;
            self.bump();
            return Ok(true);
        }
        self.set_up(true, "");
        if view.entries.is_empty() {
            return Ok(false);
        }
        let more = view.entries.len() == READ_BATCH;
        let mut ring = self.ring.write();
        for e in view.entries {
            if e.id <= ring.last {
                continue;
            }
            ring.last = e.id;
            if ring.resume_floor.ms == u64::MAX {
                ring.resume_floor = e.id;
            }
            let Some(event) = FeedEvent::decode(&e.data) else {
                continue;
            };
            ring.items.push_back((e.id, Arc::new(event)));
            while ring.items.len() > len {
                if let Some((old, _)) = ring.items.pop_front() {
                    ring.covered_from = old;
                    ring.resume_floor = ring.resume_floor.max(old);
                }
            }
        }
        drop(ring);
        self.bump();
        Ok(more)
    }

    /// Starts a watch for `client_id` from `cursor` (empty: snapshot first).
    /// The receiver ends after a final `Err` (or, when the watcher could not
    /// even queue that, without one: treat as [`WatchEnd::TooSlow`]).
    pub async fn watch(
        self: &Arc<Self>,
        client_id: &str,
        cursor: &str,
    ) -> Result<mpsc::Receiver<Result<WatchItem, WatchEnd>>, WatchRefused> {
        let permit = self.admit(client_id)?;
        let resume = cursor.parse::<LogId>().ok().filter(|c| self.resumable(*c));
        let (tx, rx) = mpsc::channel(CHANNEL);
        let (start, epoch, snapshot) = match resume {
            Some(c) => (c, self.ring.read().epoch, None),
            None => {
                let snap = self.snapshot().await?;
                (snap.position, snap.epoch, Some(snap))
            }
        };
        let hub = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            hub.serve(tx, start, epoch, snapshot).await;
        });
        Ok(rx)
    }

    fn resumable(&self, c: LogId) -> bool {
        let ring = self.ring.read();
        ring.up && ring.loaded && c >= ring.resume_floor && c <= ring.last
    }

    fn admit(self: &Arc<Self>, client_id: &str) -> Result<Permit, WatchRefused> {
        if self.shutdown.is_cancelled() {
            return Err(WatchRefused::Unavailable("shutting down".into()));
        }
        let mut counts = self.counts.lock();
        if counts.total >= self.settings.max_watchers {
            return Err(WatchRefused::Busy("too many watchers on this replica"));
        }
        let mine = counts.per_client.entry(client_id.to_owned()).or_default();
        if *mine >= self.settings.max_watchers_per_client {
            return Err(WatchRefused::Busy("too many watchers for this client"));
        }
        *mine += 1;
        counts.total += 1;
        metrics::gauge!("tokend_feed_watchers").set(counts.total as f64);
        Ok(Permit {
            hub: self.clone(),
            client_id: client_id.to_owned(),
        })
    }

    /// The shared snapshot: a recent one, or one built now (one build at a
    /// time; concurrent watchers wait for it and share it).
    async fn snapshot(&self) -> Result<Arc<Snapshot>, WatchRefused> {
        let mut cached = self.snapshot.lock().await;
        let (up, loaded, epoch, position, covered_from) = {
            let r = self.ring.read();
            (r.up, r.loaded, r.epoch, r.last, r.covered_from)
        };
        if !(up && loaded) {
            return Err(WatchRefused::Unavailable(
                "the revocation log is unavailable".into(),
            ));
        }
        if let Some(s) = cached.as_ref()
            && s.epoch == epoch
            && s.position >= covered_from
            && s.built.elapsed() <= self.settings.snapshot_max_age
        {
            metrics::counter!("tokend_feed_snapshots_total", "source" => "shared").increment(1);
            return Ok(s.clone());
        }
        // The position is read before the state: whatever the state misses
        // from after it, the watcher gets as events.
        let now = u64::try_from(now_unix_ms()).unwrap_or(0);
        let values = self
            .store
            .log_state(now, self.settings.max_snapshot)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "revocation snapshot failed");
                WatchRefused::Unavailable("the revocation snapshot cannot be read".into())
            })?;
        let now_s = now_unix_ms() / 1000;
        let events = values
            .iter()
            .filter_map(|v| FeedEvent::decode(v))
            .filter(|e| e.expires_at == 0 || e.expires_at > now_s)
            .map(Arc::new)
            .collect();
        let snap = Arc::new(Snapshot {
            position,
            epoch,
            built: Instant::now(),
            events,
        });
        metrics::counter!("tokend_feed_snapshots_total", "source" => "built").increment(1);
        *cached = Some(snap.clone());
        Ok(snap)
    }

    /// Sends one item, bounded by `send_timeout`; `false` ends the watch.
    async fn send(
        &self,
        tx: &mpsc::Sender<Result<WatchItem, WatchEnd>>,
        item: Result<WatchItem, WatchEnd>,
    ) -> bool {
        tokio::select! {
            r = tokio::time::timeout(self.settings.send_timeout, tx.send(item)) => match r {
                Ok(Ok(())) => true,
                Ok(Err(_)) => false,
                Err(_) => {
                    metrics::counter!("tokend_feed_watchers_ended_total", "reason" => "slow").increment(1);
                    false
                }
            },
            () = self.shutdown.cancelled() => {
                let _ = tx.try_send(Err(WatchEnd::Unavailable(
                    "server shutting down; resume from your cursor".into(),
                )));
                false
            }
        }
    }

    async fn serve(
        &self,
        tx: mpsc::Sender<Result<WatchItem, WatchEnd>>,
        mut position: LogId,
        epoch: u64,
        snapshot: Option<Arc<Snapshot>>,
    ) {
        if let Some(snap) = snapshot {
            for event in &snap.events {
                let item = WatchItem::Event {
                    cursor: None,
                    event: event.clone(),
                };
                if !self.send(&tx, Ok(item)).await {
                    return;
                }
            }
            let done = WatchItem::SnapshotComplete { cursor: position };
            if !self.send(&tx, Ok(done)).await {
                return;
            }
        }
        let mut changed = self.changed.subscribe();
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            // Everything after `position`, a batch at a time.
            let batch: Result<Vec<(LogId, Arc<FeedEvent>)>, WatchEnd> = {
                let ring = self.ring.read();
                if ring.epoch != epoch || !ring.up {
                    Err(WatchEnd::Unavailable(
                        "the revocation log is unavailable; resume from your cursor".into(),
                    ))
                } else if position < ring.covered_from {
                    Err(WatchEnd::TooSlow)
                } else {
                    let start = ring.items.partition_point(|(id, _)| *id <= position);
                    Ok(ring.items.range(start..).take(CHANNEL).cloned().collect())
                }
            };
            let batch = match batch {
                Ok(b) => b,
                Err(end) => {
                    if end == WatchEnd::TooSlow {
                        metrics::counter!("tokend_feed_watchers_ended_total", "reason" => "slow")
                            .increment(1);
                    }
                    let _ = tx.try_send(Err(end));
                    return;
                }
            };
            if !batch.is_empty() {
                for (id, event) in batch {
                    let item = WatchItem::Event {
                        cursor: Some(id),
                        event,
                    };
                    if !self.send(&tx, Ok(item)).await {
                        return;
                    }
                    position = id;
                }
                quiet_since = tokio::time::Instant::now();
                continue;
            }
            let beat = quiet_since + self.settings.heartbeat;
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(beat) => {
                    if !self.send(&tx, Ok(WatchItem::Heartbeat { cursor: position })).await {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                () = tx.closed() => return,
                () = self.shutdown.cancelled() => {
                    let _ = tx.try_send(Err(WatchEnd::Unavailable("server shutting down; resume from your cursor".into())));
                    return;
                }
            }
        }
    }
}

/// A watcher's place under the caps, returned when it ends.
struct Permit {
    hub: Arc<Hub>,
    client_id: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.hub.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&self.client_id) {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&self.client_id);
            }
        }
        metrics::gauge!("tokend_feed_watchers").set(counts.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_compactly() {
        let e = FeedEvent::token_revoked("j1", "svc", Duration::from_secs(60));
        let raw = e.encode();
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains(r#""k":"token_revoked""#), "{text}");
        assert!(!text.contains("subject"), "{text}");
        assert_eq!(FeedEvent::decode(&raw), Some(e.clone()));
        assert!(e.expires_at > e.at_ms / 1000 + 59);
        let c = FeedEvent::client_changed("svc", ClientChange::Disabled, 0);
        assert_eq!(c.expires_at, 0);
        assert!(FeedEvent::decode(br#"{"k":"from_the_future","t":1}"#).is_none());
    }
}
