//! The [`Verifier`]: local verification of tokend access tokens, the JWKS
//! cache, the verified-token cache and the revocation feed behind one handle.
//!
//! A verification is, in order: the verified-token cache (keyed by the
//! token's SHA-256; `exp`/`nbf` re-checked on every hit, see
//! `tokend_token::cache`), else the strict check of `tokend_token::jwt`
//! against the JWKS (header `typ: at+jwt`, the `kid`'s pinned algorithm, the
//! signature, `iss`, `exp`/`nbf` with leeway) followed by the audience; then,
//! hit or miss, the feed policy and the revocation set. Revocation is never
//! cached.

use std::sync::Arc;
use std::time::Duration;

use tokend_token::AccessClaims;
use tokend_token::cache::{TokenKey, VerifiedCache};
use tokend_token::jwt;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::feed::{self, FeedConfig, FeedState};
use crate::jwks::{Jwks, JwksConfig};
use crate::layer::{RejectReason, Rejection, VerifiedToken};
use crate::metrics;

/// Everything a [`Verifier`] needs.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The `iss` tokens must carry (tokend's `issuer`).
    pub issuer: String,
    /// A token's `aud` must name at least one of these (RFC 9068 4: a
    /// resource server accepts only tokens meant for it). Never empty.
    pub audiences: Vec<String>,
    /// Clock skew accepted on `exp` and `nbf`, both ways (default 30 s,
    /// like tokend's `leeway_secs`).
    pub leeway: Duration,
    pub jwks: JwksConfig,
    /// The revocation feed; `None` verifies signatures and claims only (no
    /// revocation is ever seen: for tests and for tokens short enough to
    /// live with that).
    pub feed: Option<FeedConfig>,
    /// Tokens remembered as verified (default 10 000; 0 disables).
    pub cache_capacity: usize,
    /// Refuse tokens that are not certificate-bound (RFC 8705 3): every
    /// token must carry `cnf.x5t#S256` and come with its certificate.
    /// Default `false`: bearer tokens are accepted, bound ones are checked.
    pub require_certificate_binding: bool,
}

impl VerifierConfig {
    /// `issuer` and the JWKS URL of the tokend to trust, and the audience
    /// this resource server answers to.
    pub fn new(
        issuer: impl Into<String>,
        jwks_url: impl Into<String>,
        audience: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: vec![audience.into()],
            leeway: Duration::from_secs(30),
            jwks: JwksConfig::new(jwks_url),
            feed: None,
            cache_capacity: tokend_token::cache::DEFAULT_CAPACITY,
            require_certificate_binding: false,
        }
    }

    /// Accept certificate-bound tokens only (see the field).
    pub fn require_certificate_binding(mut self, required: bool) -> Self {
        self.require_certificate_binding = required;
        self
    }

    /// Accepts `audience` too.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    pub fn feed(mut self, feed: FeedConfig) -> Self {
        self.feed = Some(feed);
        self
    }

    pub fn jwks(mut self, f: impl FnOnce(JwksConfig) -> JwksConfig) -> Self {
        self.jwks = f(self.jwks);
        self
    }

    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }
}

/// See the module documentation. Cheap to clone; the background tasks (JWKS
/// refresh, feed) stop when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuer: String,
    audiences: Vec<String>,
    leeway: i64,
    require_binding: bool,
    jwks: Arc<Jwks>,
    cache: VerifiedCache,
    /// The JWKS generation the cache was filled under.
    cache_generation: std::sync::atomic::AtomicU64,
    feed: Option<Arc<FeedState>>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_unix() -> i64 {
    feed::now_unix_ms().div_euclid(1000)
}

impl Verifier {
    /// Starts the verifier: fetches the JWKS once (a failure is logged, not
    /// fatal: tokens are refused as `unknown_key` until a fetch succeeds, see
    /// [`Verifier::is_ready`]) and spawns the JWKS refresh and the feed
    /// tasks on the current Tokio runtime. Fails on a configuration error
    /// (no audience, unreadable CA file, bad endpoint).
    pub async fn start(config: VerifierConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !config.audiences.is_empty() && config.audiences.iter().all(|a| !a.is_empty()),
            "a verifier needs the audience its tokens must name"
        );
        anyhow::ensure!(!config.issuer.is_empty(), "a verifier needs the issuer");
        let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
        let jwks = Arc::new(Jwks::new(config.jwks.clone())?);
        let keys_changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let feed = match &config.feed {
            Some(f) => {
                let endpoint = f.endpoint()?;
                let state = Arc::new(FeedState::new(f.policy, f.max_staleness, leeway));
                metrics::feed_connected(false);
                tasks.push(
                    tokio::spawn(feed::run(
                        state.clone(),
                        endpoint,
                        f.clone(),
                        keys_changed.clone(),
                    ))
                    .abort_handle(),
                );
                Some(state)
            }
            None => {
                tracing::warn!(
                    "tokend-verify runs without a revocation feed: revoked tokens stay valid until exp"
                );
                None
            }
        };
        if let Err(e) = jwks.refresh().await {
            tracing::warn!(error = %format!("{e:#}"), url = %config.jwks.url, "initial JWKS fetch failed; retrying");
        }
        tasks.push(tokio::spawn(refresh_jwks(jwks.clone(), keys_changed)).abort_handle());
        Ok(Self {
            inner: Arc::new(Inner {
                issuer: config.issuer,
                audiences: config.audiences,
                leeway,
                require_binding: config.require_certificate_binding,
                cache_generation: jwks.generation().into(),
                jwks,
                cache: VerifiedCache::new(config.cache_capacity),
                feed,
                tasks,
            }),
        })
    }

    /// Verifies a bearer token. When the token names a key id the cached
    /// JWKS lacks, refetches the JWKS first (rate-limited, see
    /// [`JwksConfig::min_refetch_interval`]) and tries once more.
    ///
    /// Without a certificate: a certificate-bound token is refused
    /// ([`RejectReason::CertificateMismatch`]); see [`Verifier::verify_bound`].
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, Rejection> {
        self.verify_bound(token, None).await
    }

    /// [`Verifier::verify`] for a request that came with the TLS client
    /// certificate `peer_cert` (DER, the leaf): a token with
    /// `cnf.x5t#S256` is accepted only with the certificate whose SHA-256
    /// that is (RFC 8705 3), compared in constant time; a token without
    /// `cnf` as before, unless the verifier requires binding.
    pub async fn verify_bound(
        &self,
        token: &str,
        peer_cert: Option<&[u8]>,
    ) -> Result<VerifiedToken, Rejection> {
        let span = tracing::debug_span!(
            "tokend_verify.verify",
            result = tracing::field::Empty,
            client_id = tracing::field::Empty
        );
        async {
            let mut result = self.check(token, peer_cert);
            if result == Err(RejectReason::UnknownKey)
                && self.inner.jwks.refetch_for_unknown_kid().await
            {
                result = self.check(token, peer_cert);
            }
            self.finish(result)
        }
        .instrument(span)
        .await
    }

    /// Verifies a bearer token without waiting for anything: an unknown key
    /// id is refused (and triggers no refetch). For synchronous callers.
    pub fn verify_now(&self, token: &str) -> Result<VerifiedToken, Rejection> {
        self.verify_bound_now(token, None)
    }

    /// [`Verifier::verify_now`] with the TLS client certificate (see
    /// [`Verifier::verify_bound`]).
    pub fn verify_bound_now(
        &self,
        token: &str,
        peer_cert: Option<&[u8]>,
    ) -> Result<VerifiedToken, Rejection> {
        let _span = tracing::debug_span!(
            "tokend_verify.verify",
            result = tracing::field::Empty,
            client_id = tracing::field::Empty
        )
        .entered();
        self.finish(self.check(token, peer_cert))
    }

    fn finish(
        &self,
        result: Result<Arc<AccessClaims>, RejectReason>,
    ) -> Result<VerifiedToken, Rejection> {
        let span = tracing::Span::current();
        match result {
            Ok(claims) => {
                metrics::accepted();
                span.record("result", "accepted");
                span.record("client_id", claims.client_id.as_str());
                Ok(VerifiedToken(claims))
            }
            Err(reason) => {
                self.count_rejection(reason);
                span.record("result", reason.as_str());
                tracing::debug!(reason = reason.as_str(), "token refused");
                Err(reason.into())
            }
        }
    }

    pub(crate) fn count_rejection(&self, reason: RejectReason) {
        metrics::rejected(reason);
    }

    fn check(
        &self,
        token: &str,
        peer_cert: Option<&[u8]>,
    ) -> Result<Arc<AccessClaims>, RejectReason> {
        let inner = &*self.inner;
        let now = now_unix();
        let key = TokenKey::of(token);
        // A key removed from the JWKS must not keep verifying from the cache.
        let generation = inner.jwks.generation();
        if inner
            .cache_generation
            .swap(generation, std::sync::atomic::Ordering::AcqRel)
            != generation
        {
            inner.cache.clear();
        }
        let claims = match inner.cache.get(&key, now, inner.leeway) {
            Some(c) => c,
            None => {
                let keys = inner.jwks.keys();
                let claims = jwt::verify_with(&**keys, token, &inner.issuer, now, inner.leeway)?;
                if !claims.aud.iter().any(|a| inner.audiences.contains(a)) {
                    return Err(RejectReason::WrongAudience);
                }
                let claims = Arc::new(claims);
                inner.cache.insert(key, claims.clone(), now, inner.leeway);
                claims
            }
        };
        if let Some(feed) = &inner.feed {
            feed.check(&claims)?;
        }
        // RFC 8705 3: checked on every request (the cache knows tokens, not
        // connections).
        match (&claims.cnf, peer_cert) {
            (Some(cnf), Some(der)) if cnf.matches_certificate(der) => {}
            (Some(_), _) => return Err(RejectReason::CertificateMismatch),
            (None, _) if inner.require_binding => return Err(RejectReason::CertificateRequired),
            (None, _) => {}
        }
        Ok(claims)
    }

    /// Ready to accept tokens: the JWKS has been fetched, and the feed (when
    /// configured) is live. For a readiness probe.
    pub fn is_ready(&self) -> bool {
        !self.inner.jwks.keys().is_empty() && self.inner.feed.as_ref().is_none_or(|f| f.is_live())
    }

    /// The state of the revocation feed, `None` without one.
    pub fn feed_status(&self) -> Option<FeedStatus> {
        self.inner.feed.as_ref().map(|f| FeedStatus {
            connected: f.is_connected(),
            live: f.is_live(),
            revocations: f.revocations(),
            cursor: f.cursor(),
        })
    }

    /// JWKS fetches attempted so far (diagnostics and tests).
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.jwks.fetches()
    }
}

/// What [`Verifier::feed_status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    /// A stream is open.
    pub connected: bool,
    /// The first snapshot completed and an event arrived within
    /// `max_staleness`.
    pub live: bool,
    /// Entries in the revocation set.
    pub revocations: usize,
    /// The last cursor received (empty before any).
    pub cursor: String,
}

/// Refreshes the JWKS periodically and on KEYS_CHANGED; retries quickly
/// while no key is known.
async fn refresh_jwks(jwks: Arc<Jwks>, keys_changed: Arc<Notify>) {
    loop {
        let cfg = jwks.config();
        let wait = if jwks.keys().is_empty() {
            cfg.min_refetch_interval.min(Duration::from_secs(5))
        } else {
            cfg.refresh_interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = keys_changed.notified() => tracing::info!("KEYS_CHANGED from the feed: refetching the JWKS"),
        }
        if let Err(e) = jwks.refresh().await {
            tracing::warn!(error = %format!("{e:#}"), "JWKS refresh failed; keeping the last good keys");
        }
    }
}
