//! Abuse controls of the core, applied around client authentication on every
//! authenticated endpoint (token, introspection, revocation):
//!
//! - **Secret-guessing defence.** Failed authentications are counted per peer
//!   address and per client id in the store (so replicas share them). After
//!   `threshold` failures a key backs off exponentially (`base`, doubling per
//!   further failure, capped at `max`); counts are forgotten `reset` after the
//!   last failure. A blocked *peer* is refused outright. A blocked *client id*
//!   is refused only to addresses that have not authenticated successfully as
//!   that client recently (24 h), so an attacker guessing a client's secret
//!   from elsewhere cannot lock the client's established callers out, and a
//!   new address waits at most `max` after the attacker's last failure.
//!   Refusals are `rate_limited` with a retry delay; the secret is not checked
//!   while refused, so refusals reveal nothing about it.
//!   Established callers cost no store read: each replica remembers, for
//!   [`LOCAL_KNOWN_TTL`], the (client, address) pairs it has seen succeed (or
//!   found marked in the store), and skips the pre-check for them, since they
//!   are exempt from both back-offs anyway. Only their failures read the
//!   counters (to update them). So issuing to a steady caller touches the
//!   store not at all, and introspection only for the revocation check.
//! - **Rate limiting.** After a successful authentication, one GCRA token per
//!   request under the client's key (`Store::rate_limit`; atomic and shared
//!   across replicas with Redis).
//!
//! Both fail open when the store cannot answer: they protect the service, and
//! readiness already reports the store outage. Counter updates are
//! read-modify-write, so under heavy concurrency a few failures may go
//! uncounted; the back-off still grows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use sha2::{Digest, Sha256};

use super::client::{Client, Credentials};
use super::error::OAuthError;
use super::{Core, now_unix};

/// A token bucket: `per_sec` sustained, `burst` at once. `per_sec = 0` is off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

/// `[rate_limit]` and `[auth_throttle]` as the core applies them. A reload
/// swaps them in whole (see [`super::Core::replace_limits`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitPolicy {
    /// The default per-client rate limit.
    pub rate_limit: RateLimit,
    /// The secret-guessing back-off.
    pub throttle: ThrottlePolicy,
}

/// The secret-guessing back-off policy (`[auth_throttle]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottlePolicy {
    pub enabled: bool,
    pub threshold: u32,
    pub base: Duration,
    pub max: Duration,
    pub reset: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 10,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset: Duration::from_secs(900),
        }
    }
}

/// How long a success marks an address as a known caller of a client.
const KNOWN_CALLER_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a replica trusts its own memory that an address is a known caller
/// of a client before asking the store again (and refreshing the store's
/// 24 h mark).
pub const LOCAL_KNOWN_TTL: Duration = Duration::from_secs(600);

/// At most this many (client, address) pairs are remembered per replica; a
/// full memory drops its expired entries, then everything (the cost of
/// forgetting is one store read per caller).
const LOCAL_KNOWN_MAX: usize = 100_000;

/// The per-replica memory of known callers (see the module docs).
#[derive(Default)]
pub struct KnownCallers {
    inner: Mutex<KnownInner>,
}

#[derive(Default)]
struct KnownInner {
    by_peer: HashMap<IpAddr, HashMap<Box<str>, Instant>>,
    len: usize,
}

impl KnownCallers {
    fn contains(&self, client_id: &str, peer: IpAddr, now: Instant) -> bool {
        let inner = self.inner.lock();
        inner
            .by_peer
            .get(&peer)
            .and_then(|m| m.get(client_id))
            .is_some_and(|until| *until > now)
    }

    fn remember(&self, client_id: &str, peer: IpAddr, now: Instant) {
        let until = now + LOCAL_KNOWN_TTL;
        let mut inner = self.inner.lock();
        if inner.len >= LOCAL_KNOWN_MAX {
            inner.by_peer.retain(|_, m| {
                m.retain(|_, u| *u > now);
                !m.is_empty()
            });
            inner.len = inner.by_peer.values().map(HashMap::len).sum();
            if inner.len >= LOCAL_KNOWN_MAX {
                inner.by_peer.clear();
                inner.len = 0;
            }
        }
        let added = inner
            .by_peer
            .entry(peer)
            .or_default()
            .insert(client_id.into(), until)
            .is_none();
        if added {
            inner.len += 1;
        }
    }

    /// Pairs remembered (for tests).
    pub fn len(&self) -> usize {
        self.inner.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A failure record: consecutive failures and the end of the current block.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Failures {
    count: u32,
    blocked_until_ms: i64,
}

impl Failures {
    fn decode(raw: Option<&Vec<u8>>) -> Self {
        let Some(text) = raw.and_then(|b| std::str::from_utf8(b).ok()) else {
            return Self::default();
        };
        let mut it = text.split(' ');
        Self {
            count: it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            blocked_until_ms: it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
        }
    }
    fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.count, self.blocked_until_ms).into_bytes()
    }
    fn remaining(&self, now_ms: i64) -> Option<Duration> {
        let left = self.blocked_until_ms - now_ms;
        (left > 0).then(|| Duration::from_millis(left as u64))
    }
}

fn now_ms() -> i64 {
    now_unix().saturating_mul(1000)
        + i64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_millis())
                .unwrap_or(0),
        )
}

/// Client ids are attacker-chosen text (and sometimes a pasted secret), so
/// store keys hold a hash of them.
fn id_hash(client_id: &str) -> String {
    tokend_token::opaque::hex(&Sha256::digest(client_id.as_bytes())[..16])
}

/// The store keys one authentication attempt touches.
struct Keys {
    peer: Option<String>,
    client: String,
    known_caller: Option<String>,
}

impl Keys {
    fn new(creds: &Credentials) -> Self {
        let id = id_hash(&creds.client_id);
        Self {
            peer: creds
                .peer
                .map(|ip| format!("authfail:peer:{}", canonical(ip))),
            client: format!("authfail:client:{id}"),
            known_caller: creds
                .peer
                .map(|ip| format!("authok:{id}:{}", canonical(ip))),
        }
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What the pre-check found.
enum Check {
    /// The defence is off.
    Off,
    /// This replica knows the caller: nothing was read.
    KnownLocally,
    /// The records as read, reused to update them afterwards.
    Read(Observed),
}

struct Observed {
    keys: Keys,
    peer: Failures,
    client: Failures,
    known_caller: bool,
}

impl Core {
    /// Authenticates the caller under the secret-guessing defence, refuses a
    /// client an operator has disabled (the same `invalid_client` as a wrong
    /// secret; see `lifecycle`), then applies the client's rate limit. Every
    /// authenticated endpoint uses it.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Arc<Client>, OAuthError> {
        let client = self.authenticate_caller(creds).await?;
        self.enforce_rate_limit(&client).await?;
        Ok(client)
    }

    /// [`Core::authenticate`] without the rate limit, for an endpoint that
    /// sends the limit's store call together with its own (introspection),
    /// which must then call [`Core::enforce_rate_limit`] itself.
    pub(crate) async fn authenticate_caller(
        &self,
        creds: &Credentials,
    ) -> Result<Arc<Client>, OAuthError> {
        let check = self.throttle_check(creds).await?;
        match self.clients().authenticate(creds).await {
            Ok(client) if self.disabled.contains(&client.id) => Err(OAuthError::InvalidClient {
                basic: creds.via == super::PresentedVia::Basic,
            }),
            Ok(client) => {
                if let Check::Read(o) = check {
                    self.throttle_success(creds, o).await;
                }
                Ok(client)
            }
            Err(e) => {
                if let OAuthError::InvalidClient { .. } = &e {
                    match check {
                        Check::Off => {}
                        Check::Read(o) => self.throttle_failure(o).await,
                        // Skipped before; the counters are needed now.
                        Check::KnownLocally => {
                            if let Some(o) = self.read_records(creds).await {
                                self.throttle_failure(o).await;
                            }
                        }
                    }
                }
                Err(e)
            }
        }
    }

    /// Reads the failure records and the known-caller mark of `creds`;
    /// `None` when the store cannot answer (the defence fails open).
    async fn read_records(&self, creds: &Credentials) -> Option<Observed> {
        let keys = Keys::new(creds);
        let mut wanted = vec![keys.client.clone()];
        wanted.extend(keys.peer.clone());
        wanted.extend(keys.known_caller.clone());
        let found = match self.store.get_many(&wanted).await {
            Ok(f) => f,
            Err(e) => {
                // Debug, not warn: during an outage this is every request, and
                // readiness and tokend_store_up already report it.
                tracing::debug!(error = %e, "auth throttle unavailable; not throttling");
                return None;
            }
        };
        let client = Failures::decode(found[0].as_ref());
        let (peer, known_caller) = if keys.peer.is_some() {
            (Failures::decode(found[1].as_ref()), found[2].is_some())
        } else {
            (Failures::default(), false)
        };
        Some(Observed {
            keys,
            peer,
            client,
            known_caller,
        })
    }

    async fn throttle_check(&self, creds: &Credentials) -> Result<Check, OAuthError> {
        let limits = self.limits.load();
        let policy = &limits.throttle;
        if !policy.enabled {
            return Ok(Check::Off);
        }
        if creds.peer.is_some_and(|ip| {
            self.known_callers
                .contains(&creds.client_id, canonical(ip), Instant::now())
        }) {
            return Ok(Check::KnownLocally);
        }
        let Some(observed) = self.read_records(creds).await else {
            return Ok(Check::Off);
        };
        let now = now_ms();
        // An address that authenticated as this client recently is exempt
        // from both back-offs for this client: a partner whose fleet still
        // sends the pre-rotation secret from some instances must not lose the
        // instances that already use the new one (same NAT address).
        let refusal = if observed.known_caller {
            None
        } else {
            observed
                .peer
                .remaining(now)
                .map(|d| (d, "peer"))
                .or_else(|| observed.client.remaining(now).map(|d| (d, "client")))
        };
        if let Some((retry_after, scope)) = refusal {
            tracing::info!(
                throttled_by = scope,
                retry_after_ms = retry_after.as_millis() as u64,
                "client authentication refused: too many failures"
            );
            self.count_rate_limited(&creds.client_id);
            return Err(OAuthError::RateLimited { retry_after });
        }
        Ok(Check::Read(observed))
    }

    async fn throttle_success(&self, creds: &Credentials, o: Observed) {
        // Only the address's standing with this client improves: resetting
        // the peer or client counters would let an attacker who owns one valid
        // client wipe its own record. The store's mark is (re)written so it
        // lasts 24 h past the latest success this replica reports; then this
        // replica stops asking for LOCAL_KNOWN_TTL.
        let Some(key) = &o.keys.known_caller else {
            return;
        };
        if let Err(e) = self.store.put(key, b"1", Some(KNOWN_CALLER_TTL)).await {
            tracing::warn!(error = %e, "auth throttle: could not record a known caller");
            return;
        }
        if let Some(ip) = creds.peer.map(canonical) {
            self.known_callers
                .remember(&creds.client_id, ip, Instant::now());
        }
    }

    async fn throttle_failure(&self, o: Observed) {
        let now = now_ms();
        let mut updates = vec![(o.keys.client.clone(), o.client)];
        if let Some(k) = o.keys.peer.clone() {
            updates.push((k, o.peer));
        }
        for (key, before) in updates {
            let next = self.next_failure(before, now);
            let ttl =
                self.limits.load().throttle.reset + next.remaining(now).unwrap_or(Duration::ZERO);
            if let Err(e) = self.store.put(&key, &next.encode(), Some(ttl)).await {
                tracing::warn!(error = %e, "auth throttle: could not record a failure");
            }
        }
    }

    fn next_failure(&self, before: Failures, now: i64) -> Failures {
        let limits = self.limits.load();
        let p = &limits.throttle;
        let count = before.count.saturating_add(1);
        let blocked_until_ms = if count >= p.threshold {
            let doublings = (count - p.threshold).min(30);
            let backoff = p.base.saturating_mul(1u32 << doublings).min(p.max);
            now + backoff.as_millis() as i64
        } else {
            0
        };
        Failures {
            count,
            blocked_until_ms,
        }
    }

    /// The effective limit of `client`: its overrides, else the default.
    pub fn rate_limit_of(&self, client: &Client) -> RateLimit {
        let d = self.limits.load().rate_limit;
        let per_sec = client.rate_limit_per_sec.unwrap_or(d.per_sec);
        let burst = client.rate_limit_burst.unwrap_or(d.burst);
        RateLimit { per_sec, burst }
    }

    /// Counts one request against `client`'s rate limit (no store call when
    /// it has none).
    pub(crate) async fn enforce_rate_limit(&self, client: &Client) -> Result<(), OAuthError> {
        let RateLimit { per_sec, burst } = self.rate_limit_of(client);
        if per_sec <= 0.0 {
            return Ok(());
        }
        // Burst 0 means "one second's worth", at least one request.
        let burst = if burst == 0 {
            per_sec.ceil().max(1.0) as u32
        } else {
            burst
        };
        let key = format!("rl:client:{}", id_hash(&client.id));
        match self.store.rate_limit(&key, per_sec, burst).await {
            Ok(d) if d.allowed => Ok(()),
            Ok(d) => {
                self.count_rate_limited(&client.id);
                Err(OAuthError::RateLimited {
                    retry_after: d.retry_after,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; not limiting");
                Ok(())
            }
        }
    }

    fn count_rate_limited(&self, client_id: &str) {
        metrics::counter!(
            "tokend_rate_limited_total",
            "client_id" => self.client_label(client_id)
        )
        .increment(1);
    }

    /// `client_id` as a metrics/log label: configured ids only, so arbitrary
    /// ids sent by callers cannot create series (or leak pasted secrets).
    pub fn client_label(&self, client_id: &str) -> String {
        if self.clients().get(client_id).is_some() {
            client_id.to_owned()
        } else {
            "unknown".to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip() {
        let f = Failures {
            count: 12,
            blocked_until_ms: 1_700_000_000_123,
        };
        assert_eq!(Failures::decode(Some(&f.encode())), f);
        assert_eq!(Failures::decode(Some(&b"garbage".to_vec())).count, 0);
        assert_eq!(Failures::decode(None), Failures::default());
    }

    #[test]
    fn known_callers_expire_and_stay_bounded() {
        let k = KnownCallers::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        assert!(!k.contains("a", ip, t0));
        k.remember("a", ip, t0);
        assert!(k.contains("a", ip, t0));
        assert!(!k.contains("b", ip, t0), "per client");
        assert!(
            !k.contains("a", "192.0.2.8".parse().unwrap(), t0),
            "per address"
        );
        assert!(!k.contains("a", ip, t0 + LOCAL_KNOWN_TTL), "expired");
        k.remember("a", ip, t0);
        assert_eq!(k.len(), 1, "remembering again replaces");
        for i in 0..(LOCAL_KNOWN_MAX as u32 + 10) {
            k.remember("c", IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(k.len() <= LOCAL_KNOWN_MAX, "{}", k.len());
    }

    #[test]
    fn mapped_addresses_share_a_record() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
    }
}
