//! The client of tokend's `RevocationFeed` (proto/tokend/v1/feed.proto): one
//! background task per [`Verifier`](crate::Verifier) keeps a
//! [`RevocationSet`] current.
//!
//! - **Start and resume.** The first `Watch` has an empty cursor, so tokend
//!   sends a snapshot of every revocation in force (events with
//!   `snapshot = true`), then SNAPSHOT_COMPLETE. The snapshot is built into a
//!   fresh set and swapped in whole at SNAPSHOT_COMPLETE: a snapshot is
//!   everything in force, so it replaces what was known (a revocation that
//!   expired meanwhile is gone, nothing is lost). Later streams resume from
//!   the last non-empty cursor received; tokend answers with a new snapshot
//!   when that cursor is too old.
//! - **Liveness.** Every event, heartbeats included, proves the feed alive. A
//!   stream silent for twice the announced `heartbeat_ms` (before any is
//!   announced: [`FeedConfig::max_staleness`]) is dead and reopened.
//! - **Reconnects** back off exponentially with jitter from
//!   [`FeedConfig::backoff_initial`] to [`FeedConfig::backoff_max`], reset
//!   once a stream delivered events. UNAVAILABLE and ABORTED (tokend's store
//!   is down, or this watcher fell behind) resume from the cursor; rejected
//!   credentials (UNAUTHENTICATED, PERMISSION_DENIED) keep retrying at the
//!   slowest pace and are logged as errors, since only an operator can fix
//!   them.
//! - **Policy while down** ([`FeedPolicy`]): the feed counts as live when the
//!   first snapshot has completed and an event arrived within
//!   [`FeedConfig::max_staleness`]. Otherwise [`FeedPolicy::FailClosed`] (the
//!   default) rejects every token with `feed_unavailable`, and
//!   [`FeedPolicy::FailOpen`] accepts tokens until their `exp`, still
//!   honouring the revocations it already knows.
//! - KEYS_CHANGED makes the verifier refetch the JWKS.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use parking_lot::{Mutex, RwLock};
use secrecy::{ExposeSecret, SecretString};
use tokend_token::AccessClaims;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tracing::Instrument;

use crate::layer::RejectReason;
use crate::metrics;
use crate::proto::revocation_feed_client::RevocationFeedClient;
use crate::proto::{EventKind, RevocationEvent, WatchRequest};
use crate::revocation::RevocationSet;

/// What to do while the feed is down (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedPolicy {
    /// Reject every token while the feed is not live: a revocation is never
    /// missed, at the price of availability while tokend is unreachable.
    #[default]
    FailClosed,
    /// Accept validly signed tokens until their `exp` while the feed is not
    /// live (revocations already known still apply): availability first; a
    /// revocation made during the outage is honoured once the feed is back.
    FailOpen,
}

/// How to reach and watch the revocation feed.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// tokend's gRPC endpoint, `http://host:50051` or `https://host:50051`.
    pub endpoint: String,
    /// A client whose `[[clients]]` entry has `revocation_feed = true`.
    pub client_id: String,
    pub client_secret: SecretString,
    /// A PEM CA certificate to trust for an `https://` endpoint besides the
    /// system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    pub policy: FeedPolicy,
    /// How long the feed may go without an event (heartbeats included)
    /// before it counts as down: default 30 s, comfortably above tokend's
    /// heartbeat interval so a healthy but quiet feed never flaps, and long
    /// enough to ride out a tokend restart.
    pub max_staleness: Duration,
    /// First reconnect delay (default 250 ms), doubled per failure up to
    /// `backoff_max` (default 15 s), each with up to 50 % jitter.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
}

impl FeedConfig {
    pub fn new(
        endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            ca_file: None,
            policy: FeedPolicy::FailClosed,
            max_staleness: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        }
    }

    pub fn policy(mut self, policy: FeedPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn max_staleness(mut self, d: Duration) -> Self {
        self.max_staleness = d;
        self
    }

    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    pub(crate) fn endpoint(&self) -> anyhow::Result<Endpoint> {
        let mut ep = Endpoint::from_shared(self.endpoint.clone())
            .with_context(|| format!("feed endpoint {:?} is not a URL", self.endpoint))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10));
        if self.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(path) = &self.ca_file {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the feed CA file {}", path.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            ep = ep.tls_config(tls).context("feed TLS settings")?;
        } else if self.ca_file.is_some() {
            anyhow::bail!("a feed CA file needs an https:// endpoint");
        }
        Ok(ep)
    }
}

/// What the feed has told this process, shared by the feed task (writer)
/// and every verification (reader).
pub(crate) struct FeedState {
    set: RwLock<RevocationSet>,
    policy: FeedPolicy,
    max_staleness: Duration,
    leeway_secs: i64,
    /// The first snapshot has completed.
    ready: AtomicBool,
    connected: AtomicBool,
    /// When an event last arrived, in ms since `base`; `u64::MAX`: never.
    last_live_ms: AtomicU64,
    base: Instant,
    cursor: Mutex<String>,
}

/// What one stream has seen so far.
#[derive(Default)]
pub(crate) struct Session {
    /// The snapshot under construction.
    building: Option<RevocationSet>,
    /// The announced heartbeat interval.
    heartbeat: Option<Duration>,
    /// Events received.
    events: u64,
    last_prune: Option<Instant>,
}

/// What the caller should do after an event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    KeysChanged,
}

impl FeedState {
    pub(crate) fn new(policy: FeedPolicy, max_staleness: Duration, leeway_secs: i64) -> Self {
        Self {
            set: RwLock::new(RevocationSet::new()),
            policy,
            max_staleness,
            leeway_secs,
            ready: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            last_live_ms: AtomicU64::new(u64::MAX),
            base: Instant::now(),
            cursor: Mutex::new(String::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The first snapshot has completed and an event arrived within
    /// `max_staleness`.
    pub(crate) fn is_live(&self) -> bool {
        if !self.ready.load(Ordering::Acquire) {
            return false;
        }
        let last = self.last_live_ms.load(Ordering::Acquire);
        last != u64::MAX
            && self.now_ms().saturating_sub(last) <= self.max_staleness.as_millis() as u64
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
        metrics::feed_connected(up);
    }

    pub(crate) fn cursor(&self) -> String {
        self.cursor.lock().clone()
    }

    pub(crate) fn revocations(&self) -> usize {
        self.set.read().len()
    }

    /// Whether a verified token may be accepted: the policy while the feed
    /// is not live, then the revocations known.
    pub(crate) fn check(&self, claims: &AccessClaims) -> Result<(), RejectReason> {
        if self.policy == FeedPolicy::FailClosed && !self.is_live() {
            return Err(RejectReason::FeedUnavailable);
        }
        if self.set.read().is_revoked(claims) {
            return Err(RejectReason::Revoked);
        }
        Ok(())
    }

    /// Applies one event of the stream `session` (see the module
    /// documentation). `now_unix` is the wall clock in seconds (pruning and
    /// lag).
    pub(crate) fn apply(
        &self,
        session: &mut Session,
        ev: &RevocationEvent,
        now_unix_ms: i64,
    ) -> Effect {
        session.events += 1;
        self.last_live_ms.store(self.now_ms(), Ordering::Release);
        if !ev.cursor.is_empty() {
            ev.cursor.clone_into(&mut self.cursor.lock());
        }
        if ev.heartbeat_ms > 0 {
            session.heartbeat = Some(Duration::from_millis(ev.heartbeat_ms as u64));
        }
        if !ev.snapshot && ev.at_ms > 0 {
            metrics::feed_lag((now_unix_ms - ev.at_ms) as f64 / 1000.0);
        }
        let kind = ev.kind();
        metrics::feed_event(kind.as_str_name());
        let now_unix = now_unix_ms.div_euclid(1000);
        let mut effect = Effect::None;
        match kind {
            EventKind::SnapshotComplete => {
                let mut fresh = session.building.take().unwrap_or_default();
                fresh.prune(now_unix, self.leeway_secs);
                let n = fresh.len();
                *self.set.write() = fresh;
                self.ready.store(true, Ordering::Release);
                metrics::revocations(n);
                tracing::info!(revocations = n, "revocation feed snapshot complete");
            }
            EventKind::Heartbeat | EventKind::Unspecified => {}
            EventKind::KeysChanged => effect = Effect::KeysChanged,
            _ if ev.snapshot => session.building.get_or_insert_default().apply(ev),
            _ => {
                let mut set = self.set.write();
                set.apply(ev);
                metrics::revocations(set.len());
            }
        }
        // Prune at most once a minute, on the feed task (never on the
        // request path).
        if session
            .last_prune
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            session.last_prune = Some(Instant::now());
            let mut set = self.set.write();
            set.prune(now_unix, self.leeway_secs);
            metrics::revocations(set.len());
        }
        effect
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How one stream ended.
enum End {
    /// The server closed the stream.
    Closed,
    /// Nothing arrived for twice the heartbeat interval.
    Silent,
    Status(tonic::Status),
    Connect(tonic::transport::Error),
}

/// The feed task: watch, apply, reconnect; forever (the verifier aborts it
/// when dropped).
pub(crate) async fn run(
    state: Arc<FeedState>,
    endpoint: Endpoint,
    cfg: FeedConfig,
    keys_changed: Arc<Notify>,
) {
    let mut backoff = cfg.backoff_initial;
    loop {
        let mut session = Session::default();
        let span = tracing::info_span!("tokend_verify.feed", endpoint = %cfg.endpoint);
        let end = watch(&state, &endpoint, &cfg, &mut session, &keys_changed)
            .instrument(span)
            .await;
        state.set_connected(false);
        metrics::feed_reconnect();
        if session.events > 0 {
            backoff = cfg.backoff_initial;
        }
        let mut delay = backoff;
        match end {
            End::Closed => tracing::info!("revocation feed stream closed by tokend; reconnecting"),
            End::Silent => {
                tracing::warn!("revocation feed silent for twice its heartbeat; reconnecting")
            }
            End::Connect(e) => tracing::warn!(error = %e, "revocation feed unreachable"),
            End::Status(s) => match s.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    tracing::error!(code = ?s.code(), message = s.message(), client_id = %cfg.client_id,
                        "revocation feed refused these credentials (is `revocation_feed = true` set for the client?)");
                    delay = cfg.backoff_max;
                }
                code => tracing::warn!(
                    ?code,
                    message = s.message(),
                    "revocation feed stream ended; resuming from the cursor"
                ),
            },
        }
        // Up to 50 % jitter, so a fleet of resource servers does not
        // reconnect in lockstep after a tokend restart.
        let jittered = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        tokio::time::sleep(jittered).await;
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}

async fn watch(
    state: &FeedState,
    endpoint: &Endpoint,
    cfg: &FeedConfig,
    session: &mut Session,
    keys_changed: &Notify,
) -> End {
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return End::Connect(e),
    };
    let request = WatchRequest {
        client_id: cfg.client_id.clone(),
        client_secret: cfg.client_secret.expose_secret().to_owned(),
        cursor: state.cursor(),
        // A resource server watches with its secret (no client assertion).
        ..Default::default()
    };
    let resuming = !request.cursor.is_empty();
    let mut stream = match RevocationFeedClient::new(channel).watch(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => return End::Status(s),
    };
    state.set_connected(true);
    tracing::info!(resuming, "revocation feed connected");
    loop {
        let silence = session.heartbeat.map_or(cfg.max_staleness, |h| h * 2);
        match tokio::time::timeout(silence, stream.message()).await {
            Err(_) => return End::Silent,
            Ok(Err(s)) => return End::Status(s),
            Ok(Ok(None)) => return End::Closed,
            Ok(Ok(Some(ev))) => {
                if state.apply(session, &ev, now_unix_ms()) == Effect::KeysChanged {
                    keys_changed.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::CredentialChange;
    use tokend_token::opaque::time_ordered_id;

    const NOW_MS: i64 = 1_760_000_000_000;

    fn claims(jti: &str) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "alice".into(),
            aud: vec![],
            exp: NOW_MS / 1000 + 300,
            iat: NOW_MS / 1000,
            nbf: NOW_MS / 1000,
            jti: jti.into(),
            client_id: "shop".into(),
            scope: String::new(),
            sid: None,
            legacy_iat_ms: None,
            act: None,
            chain: Vec::new(),
            cnf: None,
            extra: serde_json::Map::new(),
        }
    }

    fn ev(kind: EventKind, f: impl FnOnce(&mut RevocationEvent)) -> RevocationEvent {
        let mut e = RevocationEvent {
            kind: kind as i32,
            expires_at: NOW_MS / 1000 + 300,
            at_ms: NOW_MS,
            ..Default::default()
        };
        f(&mut e);
        e
    }

    fn revoked(jti: &str, snapshot: bool) -> RevocationEvent {
        ev(EventKind::TokenRevoked, |e| {
            e.jti = jti.into();
            e.snapshot = snapshot;
        })
    }

    fn complete(cursor: &str) -> RevocationEvent {
        ev(EventKind::SnapshotComplete, |e| {
            e.cursor = cursor.into();
            e.heartbeat_ms = 1000;
        })
    }

    #[tokio::test(start_paused = true)]
    async fn fail_closed_until_the_snapshot_and_after_staleness() {
        let st = FeedState::new(FeedPolicy::FailClosed, Duration::from_secs(10), 30);
        let (a, b) = (time_ordered_id(NOW_MS), time_ordered_id(NOW_MS));
        assert_eq!(st.check(&claims(&a)), Err(RejectReason::FeedUnavailable));
        let mut s = Session::default();
        st.apply(&mut s, &revoked(&a, true), NOW_MS);
        assert_eq!(
            st.check(&claims(&b)),
            Err(RejectReason::FeedUnavailable),
            "a snapshot in progress is not live yet"
        );
        st.apply(&mut s, &complete("c1"), NOW_MS);
        assert_eq!(st.check(&claims(&a)), Err(RejectReason::Revoked));
        assert_eq!(st.check(&claims(&b)), Ok(()));
        assert_eq!(st.cursor(), "c1");
        assert_eq!(s.heartbeat, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            st.check(&claims(&b)),
            Ok(()),
            "exactly max_staleness is still live"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(st.check(&claims(&b)), Err(RejectReason::FeedUnavailable));
        // A heartbeat brings it back.
        st.apply(
            &mut s,
            &ev(EventKind::Heartbeat, |e| e.cursor = "c2".into()),
            NOW_MS,
        );
        assert_eq!(st.check(&claims(&b)), Ok(()));
        assert_eq!(st.cursor(), "c2");
    }

    #[tokio::test(start_paused = true)]
    async fn fail_open_accepts_while_down_but_keeps_known_revocations() {
        let st = FeedState::new(FeedPolicy::FailOpen, Duration::from_secs(10), 30);
        let (a, b) = (time_ordered_id(NOW_MS), time_ordered_id(NOW_MS));
        assert_eq!(st.check(&claims(&a)), Ok(()), "before any snapshot");
        let mut s = Session::default();
        st.apply(&mut s, &revoked(&a, true), NOW_MS);
        st.apply(&mut s, &complete("c1"), NOW_MS);
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!st.is_live());
        assert_eq!(st.check(&claims(&b)), Ok(()));
        assert_eq!(st.check(&claims(&a)), Err(RejectReason::Revoked));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_snapshot_replaces_the_set_and_live_events_apply_at_once() {
        let st = FeedState::new(FeedPolicy::FailClosed, Duration::from_secs(10), 30);
        let (a, b, c) = (
            time_ordered_id(NOW_MS),
            time_ordered_id(NOW_MS),
            time_ordered_id(NOW_MS),
        );
        let mut s = Session::default();
        st.apply(&mut s, &revoked(&a, true), NOW_MS);
        st.apply(&mut s, &complete("c1"), NOW_MS);
        st.apply(&mut s, &revoked(&b, false), NOW_MS);
        assert_eq!(
            st.check(&claims(&b)),
            Err(RejectReason::Revoked),
            "live event"
        );
        assert_eq!(st.revocations(), 2);
        // Reconnect with a cursor too old: a new snapshot that no longer has
        // `a` (expired meanwhile, say) but has `c`. Until it completes, the
        // old set stays in force.
        let mut s = Session::default();
        st.apply(&mut s, &revoked(&c, true), NOW_MS);
        assert_eq!(st.check(&claims(&a)), Err(RejectReason::Revoked));
        assert_eq!(st.check(&claims(&c)), Ok(()));
        st.apply(&mut s, &complete("c9"), NOW_MS);
        assert_eq!(st.check(&claims(&a)), Ok(()));
        assert_eq!(st.check(&claims(&b)), Ok(()));
        assert_eq!(st.check(&claims(&c)), Err(RejectReason::Revoked));
        // An empty snapshot empties the set.
        let mut s = Session::default();
        st.apply(&mut s, &complete("c10"), NOW_MS);
        assert_eq!(st.revocations(), 0);
        // Key changes are passed on; credential changes apply.
        assert_eq!(
            st.apply(&mut s, &ev(EventKind::KeysChanged, |_| {}), NOW_MS),
            Effect::KeysChanged
        );
        st.apply(
            &mut s,
            &ev(EventKind::CredentialChange, |e| {
                e.client_id = "shop".into();
                e.change = CredentialChange::Disabled as i32;
            }),
            NOW_MS,
        );
        assert_eq!(st.check(&claims(&a)), Err(RejectReason::Revoked));
    }

    #[tokio::test(start_paused = true)]
    async fn pruning_drops_what_expired_once_a_minute() {
        let st = FeedState::new(FeedPolicy::FailClosed, Duration::from_secs(10), 30);
        let mut s = Session::default();
        st.apply(&mut s, &complete("c1"), NOW_MS);
        st.apply(&mut s, &revoked("x", false), NOW_MS);
        assert_eq!(st.revocations(), 1);
        let later = NOW_MS + 400_000; // past expires_at (+300 s) and leeway (30 s)
        st.apply(&mut s, &ev(EventKind::Heartbeat, |_| {}), later);
        assert_eq!(st.revocations(), 1, "pruned at most once a minute");
        tokio::time::advance(Duration::from_secs(60)).await;
        st.apply(&mut s, &ev(EventKind::Heartbeat, |_| {}), later);
        assert_eq!(st.revocations(), 0);
    }
}
