//! Abuse controls of the core, applied around client authentication on every
//! authenticated endpoint (token, introspection, revocation):
//!
//! - **Secret-guessing defence.** Failures are counted per peer address (all
//!   client ids together, so unknown ids cost one record per address, not one
//!   per id) and per configured client id (all addresses together), in the
//!   store so that replicas share them (`Store::incr`, atomic: no failure is
//!   lost under concurrency). After `threshold` failures a key backs off
//!   exponentially (`base`, doubling per further failure, capped at `max`);
//!   counts are forgotten `reset` after the last failure. While a key backs
//!   off, attempts are refused with `rate_limited` and a retry delay without
//!   their secret being checked, so refusals reveal nothing about it.
//!   A refused client assertion (`private_key_jwt`, see `assertion`) is a
//!   failure like a wrong secret, and a back-off refuses assertions unchecked
//!   too, so guessing with forged assertions costs no more signature checks.
//!   Each replica checks the unverified attempts of one address or client
//!   one at a time ([`GuessLocks`]), so the failure count it reads is never
//!   behind its own checks: a burst of concurrent guesses cannot outrun the
//!   threshold. The margin is one extra check per replica racing another.
//! - **Known callers.** A (client, address) pair that authenticated is
//!   remembered (in the store for 24 h, and by each
//!   replica for [`LOCAL_KNOWN_TTL`]). A pair this replica remembers costs
//!   no store round trip at all (steady callers), and a pair the store
//!   remembers is not refused because of the *client's* back-off, so an
//!   attacker guessing a client's secret from elsewhere cannot lock the
//!   client's established callers out. Neither exempts anyone from counting:
//!   any failure of a known pair is counted and ends the pair's standing
//!   (locally and in the store), so an attacker behind the same address as a
//!   partner (a proxy, a NAT) gets no free guesses: at most one per success
//!   of the partner, and none while the address backs off.
//! - **Rate limiting.** After a successful authentication, one GCRA token per
//!   request under the client's key (`Store::rate_limit`; atomic and shared
//!   across replicas with Redis).
//!
//! Both fail open when the store cannot answer: they protect the service, and
//! readiness already reports the store outage. The argon2 work itself is
//! bounded separately (see `client::Registry::authenticate`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use sha2::{Digest, Sha256};

use super::Core;
use super::client::{Client, Credentials};
use super::error::OAuthError;

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

    fn forget(&self, client_id: &str, peer: IpAddr) {
        let mut inner = self.inner.lock();
        let removed = inner
            .by_peer
            .get_mut(&peer)
            .and_then(|m| m.remove(client_id))
            .is_some();
        if removed {
            inner.len -= 1;
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

/// The end of a back-off, as stored under an `authblock:` key.
fn decode_until(raw: Option<&Vec<u8>>) -> Option<i64> {
    std::str::from_utf8(raw?).ok()?.parse().ok()
}

/// The value of a back-off mark ending `backoff` from now.
fn until_mark(backoff: Duration) -> Vec<u8> {
    let ms = i64::try_from(backoff.as_millis()).unwrap_or(i64::MAX / 2);
    now_ms().saturating_add(ms).to_string().into_bytes()
}

/// The defence fails open: a store error means "not throttling".
fn fail_open<T>(r: crate::store::StoreResult<T>) -> Option<T> {
    r.map_err(|e| {
        // Debug, not warn: during an outage this is every request, and
        // readiness and tokend_store_up already report it.
        tracing::debug!(error = %e, "auth throttle unavailable; not throttling");
    })
    .ok()
}

/// Whether an answer was a failed client authentication (the one outcome
/// that counts as a guess: a wrong secret or a refused client assertion).
fn is_wrong_secret<T>(r: &Result<T, OAuthError>) -> bool {
    matches!(r, Err(OAuthError::InvalidClient))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Client ids are attacker-chosen text (and sometimes a pasted secret), so
/// store keys hold a hash of them.
fn id_hash(client_id: &str) -> String {
    tokend_token::opaque::hex(&Sha256::digest(client_id.as_bytes())[..16])
}

/// One counted scope of an attempt: its counter and its back-off mark.
#[derive(Clone)]
struct Scope {
    count: String,
    block: String,
}

impl Scope {
    fn new(kind: &str, id: &str) -> Self {
        Self {
            count: format!("authfail:{kind}:{id}"),
            block: format!("authblock:{kind}:{id}"),
        }
    }
}

/// The store keys one authentication attempt touches.
struct Keys {
    /// Every attempt from the address, whatever client id it names.
    peer: Option<Scope>,
    /// Attempts naming a configured client, from any address; `None` for an
    /// unknown id (counted per address only, so ids cost no keys).
    client: Option<Scope>,
    /// The store's mark of a known (client, address) pair.
    known_caller: Option<String>,
}

impl Keys {
    fn new(creds: &Credentials, configured: bool) -> Self {
        let id = id_hash(&creds.client_id);
        let peer = creds.peer.map(canonical);
        Self {
            peer: peer.map(|ip| Scope::new("peer", &ip.to_string())),
            client: configured.then(|| Scope::new("client", &id)),
            known_caller: peer
                .filter(|_| configured)
                .map(|ip| format!("authok:{id}:{ip}")),
        }
    }

    /// The counted scopes, each with whether it is the client's.
    fn scopes(&self) -> Vec<(&Scope, bool)> {
        let peer = self.peer.iter().map(|s| (s, false));
        peer.chain(self.client.iter().map(|s| (s, true))).collect()
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Per-replica turns for unverified attempts: one check at a time per
/// address and per client id (striped, so memory stays fixed; unrelated
/// callers sharing a stripe wait at most for one check of the other).
pub struct GuessLocks {
    stripes: Vec<tokio::sync::Mutex<()>>,
}

const GUESS_STRIPES: usize = 256;

impl Default for GuessLocks {
    fn default() -> Self {
        Self {
            stripes: (0..GUESS_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl GuessLocks {
    /// Takes the turns of every scope of `keys`, in stripe order (so two
    /// attempts never wait for each other crosswise).
    async fn lock(&self, keys: &Keys) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = keys
            .scopes()
            .iter()
            .map(|(s, _)| {
                let h = Sha256::digest(s.count.as_bytes());
                usize::from(u16::from_le_bytes([h[0], h[1]])) % GUESS_STRIPES
            })
            .collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }
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
        // A federated assertion without client_id names its client through
        // its (iss, sub): resolved first, so the defence counts that client.
        let resolved = self.resolve_federated_client(creds);
        let creds = resolved.as_ref().unwrap_or(creds);
        if !self.limits.load().throttle.enabled {
            return self.verify(creds).await;
        }
        // The store keys (a hash of the id, a few strings) are only built when
        // needed: a steady caller's success needs none.
        let keys = || Keys::new(creds, self.clients().get(&creds.client_id).is_some());
        let peer = creds.peer.map(canonical);
        let known_here = peer.is_some_and(|ip| {
            self.known_callers
                .contains(&creds.client_id, ip, Instant::now())
        });
        if known_here {
            // A steady caller: no store round trip unless it fails.
            let r = self.verify(creds).await;
            if is_wrong_secret(&r) {
                if let Some(ip) = peer {
                    self.known_callers.forget(&creds.client_id, ip);
                }
                self.count_failure(&keys()).await;
            }
            return r;
        }
        let keys = keys();
        // One unverified check at a time per address and per client on this
        // replica: the counts it reads are never behind its own checks.
        let _turn = self.guess_locks.lock(&keys).await;
        if !self.precheck(creds, &keys).await? {
            return self.verify(creds).await; // the store could not answer: fail open
        }
        let r = self.verify(creds).await;
        if is_wrong_secret(&r) {
            self.count_failure(&keys).await;
        } else if r.is_ok() {
            self.remember_caller(creds, &keys).await;
        }
        r
    }

    /// The secret check itself, and the operator's cut-off.
    async fn verify(&self, creds: &Credentials) -> Result<Arc<Client>, OAuthError> {
        let checked = match creds.assertion {
            Some(_) => self.authenticate_assertion(creds).await,
            None => self.clients().authenticate(creds).await,
        };
        match checked {
            Ok(client) if self.disabled.contains(&client.id) => Err(OAuthError::InvalidClient),
            other => other,
        }
    }

    /// Refuses an attempt while its address or client backs off. `Ok(false)`
    /// when the store cannot answer (the defence fails open).
    async fn precheck(&self, creds: &Credentials, keys: &Keys) -> Result<bool, OAuthError> {
        let scopes = keys.scopes();
        let mut wanted: Vec<String> = scopes.iter().map(|(s, _)| s.block.clone()).collect();
        wanted.extend(keys.known_caller.clone());
        let Some(found) = fail_open(self.store.get_many(&wanted).await) else {
            return Ok(false);
        };
        let known_in_store = keys.known_caller.is_some() && found[scopes.len()].is_some();
        let now = now_ms();
        for (i, (_, is_client)) in scopes.iter().enumerate() {
            // The client's back-off does not apply to a pair the store knows.
            if *is_client && known_in_store {
                continue;
            }
            if let Some(until) = decode_until(found[i].as_ref()).filter(|u| *u > now) {
                let left = Duration::from_millis(u64::try_from(until - now).unwrap_or(0));
                return Err(self.refuse(creds, left));
            }
        }
        Ok(true)
    }

    /// The back-off after `count` attempts: `base` at the threshold, doubling
    /// per further failure, capped at `max`.
    fn backoff(&self, count: i64) -> Duration {
        let limits = self.limits.load();
        let p = &limits.throttle;
        let doublings = (count - i64::from(p.threshold)).clamp(0, 30) as u32;
        p.base.saturating_mul(1u32 << doublings).min(p.max)
    }

    fn refuse(&self, creds: &Credentials, retry_after: Duration) -> OAuthError {
        tracing::info!(
            retry_after_ms = retry_after.as_millis() as u64,
            "client authentication refused: too many failures"
        );
        self.count_rate_limited(&creds.client_id);
        OAuthError::RateLimited { retry_after }
    }

    /// A success makes the pair a known caller: should it fail later, that
    /// failure is counted and ends its standing.
    async fn remember_caller(&self, creds: &Credentials, keys: &Keys) {
        let (Some(key), Some(ip)) = (&keys.known_caller, creds.peer.map(canonical)) else {
            return;
        };
        if let Err(e) = self.store.put(key, b"1", Some(KNOWN_CALLER_TTL)).await {
            tracing::warn!(error = %e, "auth throttle: could not record a known caller");
            return;
        }
        self.known_callers
            .remember(&creds.client_id, ip, Instant::now());
    }

    /// A wrong secret: counted at once, and at the threshold the back-off
    /// starts (or grows); whatever standing the pair had ends.
    async fn count_failure(&self, keys: &Keys) {
        let reset = self.limits.load().throttle.reset;
        if let Some(key) = &keys.known_caller {
            let _ = self.store.delete(key).await;
        }
        for (scope, _) in keys.scopes() {
            match self.store.incr(&scope.count, 1, reset).await {
                Ok(n) => self.start_backoff(scope, n).await,
                Err(e) => tracing::warn!(error = %e, "auth throttle: could not record a failure"),
            }
        }
    }

    async fn start_backoff(&self, scope: &Scope, failures: i64) {
        if failures < i64::from(self.limits.load().throttle.threshold) {
            return;
        }
        let backoff = self.backoff(failures);
        let mark = until_mark(backoff);
        if let Err(e) = self.store.put(&scope.block, &mark, Some(backoff)).await {
            tracing::warn!(error = %e, "auth throttle: could not record a back-off");
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
        k.forget("a", ip);
        assert!(!k.contains("a", ip, t0) && k.is_empty(), "forgotten");
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
