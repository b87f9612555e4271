//! The issuer's JWKS, fetched over HTTP(S) and cached.
//!
//! - A token naming an unknown `kid` triggers a refetch (the issuer rotated
//!   its key), at most once per [`JwksConfig::min_refetch_interval`]: a flood
//!   of forged `kid`s costs the issuer one request per interval, not one per
//!   token. Concurrent misses share one fetch.
//! - A periodic refresh ([`JwksConfig::refresh_interval`]) and the feed's
//!   KEYS_CHANGED event pick up removals too.
//! - A failed fetch (network, status, oversized or unparsable document, or a
//!   document with no usable key) keeps the last good keys.
//! - The response is read up to [`JwksConfig::max_bytes`], no further.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use tokend_token::{JwkSet, KeyLookup};
use tokio::time::Instant;

use crate::metrics;

/// How the JWKS is fetched and kept.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    /// The JWK Set URL, e.g. `https://tokend.example/.well-known/jwks.json`.
    pub url: String,
    /// Refetch unconditionally this often (default 5 minutes).
    pub refresh_interval: Duration,
    /// At most one refetch triggered by unknown `kid`s per this interval
    /// (default 30 s).
    pub min_refetch_interval: Duration,
    /// Per-request timeout (default 5 s).
    pub timeout: Duration,
    /// Largest JWKS document read (default 64 KiB; tokend's are under 2 KiB).
    pub max_bytes: usize,
    /// A PEM CA certificate to trust for an `https://` URL besides the
    /// system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
}

impl JwksConfig {
    pub fn min_refetch_interval(mut self, d: Duration) -> Self {
        self.min_refetch_interval = d;
        self
    }

    pub fn refresh_interval(mut self, d: Duration) -> Self {
        self.refresh_interval = d;
        self
    }

    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            refresh_interval: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            max_bytes: 64 * 1024,
            ca_file: None,
        }
    }
}

pub(crate) struct Jwks {
    keys: ArcSwap<JwkSet>,
    client: reqwest::Client,
    cfg: JwksConfig,
    /// Single flight for fetches, and when the last refetch for an unknown
    /// `kid` started.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    fetches: AtomicU64,
    /// Bumped whenever the set of key ids changes (the verifier then drops
    /// its cache of verified tokens).
    generation: AtomicU64,
}

impl Jwks {
    pub(crate) fn new(cfg: JwksConfig) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the JWKS CA file {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(Self {
            keys: ArcSwap::from_pointee(JwkSet::default()),
            client: builder.build().context("building the JWKS HTTP client")?,
            cfg,
            last_fetch: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    pub(crate) fn config(&self) -> &JwksConfig {
        &self.cfg
    }

    pub(crate) fn keys(&self) -> arc_swap::Guard<Arc<JwkSet>> {
        self.keys.load()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Fetches attempted so far (tests and diagnostics).
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Refetches because a token named an unknown `kid`, unless a fetch
    /// started less than `min_refetch_interval` ago. Returns whether the
    /// key set may have changed (so a retry is worth it).
    pub(crate) async fn refetch_for_unknown_kid(&self) -> bool {
        let before = self.generation();
        let mut last = self.last_fetch.lock().await;
        if self.generation() != before {
            return true; // another caller's fetch just changed the keys
        }
        if last.is_some_and(|t| t.elapsed() < self.cfg.min_refetch_interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_logged().await;
        self.generation() != before
    }

    /// Fetches now, whatever the rate limit (start-up, the periodic refresh
    /// and KEYS_CHANGED), which only counts refetches for unknown `kid`s: a
    /// key published just after a scheduled fetch is still picked up by the
    /// first token that uses it.
    pub(crate) async fn refresh(&self) -> anyhow::Result<()> {
        let _single_flight = self.last_fetch.lock().await;
        self.fetch().await
    }

    async fn fetch_logged(&self) {
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %format!("{e:#}"), url = %self.cfg.url, "JWKS fetch failed; keeping the last good keys");
        }
    }

    async fn fetch(&self) -> anyhow::Result<()> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.fetch_inner().await;
        metrics::jwks_fetch(result.is_ok());
        result
    }

    async fn fetch_inner(&self) -> anyhow::Result<()> {
        let span = tracing::debug_span!(
            "tokend_verify.jwks_fetch",
            otel.name = "GET",
            otel.kind = "client",
            http.request.method = "GET",
            http.response.status_code = tracing::field::Empty,
        );
        let request = self
            .client
            .get(&self.cfg.url)
            .header(http::header::ACCEPT, "application/json");
        let request = trace_context(request, &span);
        let mut resp = request
            .send()
            .instrument(span.clone())
            .await
            .context("JWKS request failed")?;
        span.record("http.response.status_code", resp.status().as_u16());
        if !resp.status().is_success() {
            bail!("JWKS answered {}", resp.status());
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.cfg.max_bytes as u64)
        {
            bail!("JWKS is larger than {} bytes", self.cfg.max_bytes);
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.context("reading the JWKS")? {
            if body.len() + chunk.len() > self.cfg.max_bytes {
                bail!("JWKS is larger than {} bytes", self.cfg.max_bytes);
            }
            body.extend_from_slice(&chunk);
        }
        let set = JwkSet::from_json(&body)?;
        for skipped in set.skipped() {
            tracing::debug!(key = %skipped, "JWKS key not used");
        }
        if set.is_empty() {
            bail!("JWKS has no usable signing key");
        }
        // Changed: another key id, or other key material under the same id
        // (tokend's kids are thumbprints, other issuers' need not be).
        let old = self.keys.load();
        let changed = old.len() != set.len()
            || set.kids().any(|kid| {
                old.verify_key(kid).map(|k| &k.jwk) != set.verify_key(kid).map(|k| &k.jwk)
            });
        let mut kids: Vec<String> = set.kids().map(str::to_owned).collect();
        kids.sort_unstable();
        self.keys.store(Arc::new(set));
        if changed {
            tracing::info!(?kids, "JWKS keys changed");
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// With the `otel` feature: the W3C `traceparent` (and `tracestate`) of
/// `span`, so tokend's spans for the JWKS request join the caller's trace
/// (a refetch for an unknown `kid` happens inside the request being
/// verified). Without it, or outside a sampled trace, nothing is added.
#[cfg(feature = "otel")]
fn trace_context(
    request: reqwest::RequestBuilder,
    span: &tracing::Span,
) -> reqwest::RequestBuilder {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return request;
    }
    let parent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let state = sc.trace_state().header();
    let request = request.header("traceparent", parent);
    if state.is_empty() {
        request
    } else {
        request.header("tracestate", state)
    }
}

#[cfg(not(feature = "otel"))]
fn trace_context(
    request: reqwest::RequestBuilder,
    _span: &tracing::Span,
) -> reqwest::RequestBuilder {
    request
}
