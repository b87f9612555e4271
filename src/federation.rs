//! Workload identity federation, the service's side: the `jwks_uri` of each
//! `[[trusted_issuers]]` entry, fetched and cached. The rules (which issuer,
//! audience, subject, lifetime, replay) are tokend-core's
//! (`oauth::federation`); it reaches these keys through its
//! [`IssuerKeys`] trait, since the core knows no transport.
//!
//! Why not tokend-verify's JWKS cache: it is built on reqwest, which the
//! server binary does not link (one HTTP stack: hyper, with rustls on
//! aws-lc-rs), and it holds access-token keys (`kid` required, no PS256)
//! rather than assertion keys. The policy is the same one:
//!
//! - a token naming an unknown `kid` triggers a refetch, at most one per
//!   `min_refetch_secs` per issuer (a flood of random `kid`s from
//!   unauthenticated callers costs the issuer one request per interval),
//!   and never two at once: concurrent callers wait for the fetch in flight
//!   (bounded by its timeout) and then use its result;
//! - keys older than `refresh_secs` are refetched in the background, so a
//!   removed key stops verifying;
//! - every fetch is bounded: `fetch_timeout_ms` for the whole exchange
//!   (connect included, which has its own shorter bound), [`MAX_JWKS_BYTES`]
//!   read while streaming the body, no redirects;
//! - a failure (down, slow, an error status, too large, not JSON, no usable
//!   key) keeps the last good keys and is logged with the issuer and the
//!   reason, never a token.
//!
//! Kubernetes: the API server's `/openid/v1/jwks` needs a bearer token
//! (the pod's own service-account token, `bearer_token_file`, re-read on
//! every fetch since the kubelet rotates it) and the cluster CA (`ca_file`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokend_core::oauth::federation::{
    IssuerKeys, IssuerPolicy, KeySource, StaticKeys, TrustedIssuer, TrustedIssuerConfig,
    TrustedIssuers,
};
use tokend_token::assertion::AssertionKeys;
use tokio::time::Instant;

/// Largest JWK Set read from a `jwks_uri` (a Kubernetes cluster's is under
/// 2 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Largest `bearer_token_file` read (a service-account token is ~1 KiB).
const MAX_BEARER_BYTES: u64 = 16 * 1024;
/// Bound on the TCP connect (and the TLS handshake's start) within the
/// fetch's own timeout.
const MAX_CONNECT: Duration = Duration::from_secs(2);

/// How a `jwks_uri` is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    pub uri: String,
    pub bearer_token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub min_refetch: Duration,
    pub refresh: Duration,
    pub timeout: Duration,
}

/// A validated `[[trusted_issuers]]` entry: the core's policy, and for a
/// `jwks_uri` how to fetch it.
#[derive(Debug, Clone)]
pub struct IssuerSpec {
    pub policy: IssuerPolicy,
    pub fetch: Option<FetchSpec>,
}

impl IssuerSpec {
    /// Checks `cfg` (the core's rules, and that the CA file is usable);
    /// `default_audience` is tokend's issuer.
    pub fn new(cfg: &TrustedIssuerConfig, default_audience: &str) -> Result<Self, Vec<String>> {
        let policy = cfg.validate(default_audience)?;
        let fetch = match &policy.source {
            KeySource::Static(_) => None,
            KeySource::Uri(uri) => {
                if let Some(ca) = &cfg.ca_file {
                    roots(Some(ca)).map_err(|e| vec![format!("ca_file: {e:#}")])?;
                }
                Some(FetchSpec {
                    uri: uri.clone(),
                    bearer_token_file: cfg.bearer_token_file.clone(),
                    ca_file: cfg.ca_file.clone(),
                    min_refetch: Duration::from_secs(cfg.min_refetch_secs),
                    refresh: Duration::from_secs(cfg.refresh_secs),
                    timeout: Duration::from_millis(cfg.fetch_timeout_ms),
                })
            }
        };
        Ok(Self { policy, fetch })
    }
}

/// The fetchers of the running configuration, kept across reloads: an
/// issuer whose fetch settings did not change keeps its cached keys and its
/// rate limit.
#[derive(Clone, Default)]
pub struct Federation {
    fetchers: Arc<Mutex<HashMap<String, Arc<JwksFetcher>>>>,
}

impl Federation {
    /// The trusted issuers of `specs` with their keys, reusing the fetchers
    /// whose settings are unchanged; new fetchers start their first fetch
    /// in the background (when a runtime is running).
    pub fn issuers(&self, specs: &[IssuerSpec]) -> TrustedIssuers {
        let mut fetchers = self.fetchers.lock();
        let mut next = HashMap::new();
        let mut out = Vec::new();
        for spec in specs {
            let keys: Arc<dyn IssuerKeys> = match (&spec.policy.source, &spec.fetch) {
                (KeySource::Uri(_), Some(fetch)) => {
                    let fetcher = match fetchers.get(&spec.policy.issuer) {
                        Some(f) if f.spec == *fetch => f.clone(),
                        _ => {
                            let f = JwksFetcher::new(&spec.policy.issuer, fetch.clone());
                            f.clone().start();
                            f
                        }
                    };
                    next.insert(spec.policy.issuer.clone(), fetcher.clone());
                    Arc::new(JwksKeys(fetcher))
                }
                (KeySource::Static(_), _) | (_, None) => {
                    let keys = match &spec.policy.source {
                        KeySource::Static(k) => k.clone(),
                        KeySource::Uri(_) => AssertionKeys::default(),
                    };
                    Arc::new(StaticKeys(Arc::new(keys)))
                }
            };
            out.push(TrustedIssuer {
                policy: spec.policy.clone(),
                keys,
            });
        }
        *fetchers = next;
        TrustedIssuers::new(out)
    }
}

/// One issuer's `jwks_uri`, cached.
pub struct JwksFetcher {
    issuer: String,
    spec: FetchSpec,
    keys: ArcSwap<AssertionKeys>,
    /// Single flight, and when the last fetch started (the rate limit).
    gate: tokio::sync::Mutex<Option<Instant>>,
    /// When the keys in hand were fetched (`None`: never).
    fetched_at: Mutex<Option<Instant>>,
    /// Bumped whenever a fetch brings other keys.
    generation: AtomicU64,
    /// A background refresh is spawned or running (one at a time, however
    /// many requests find the keys stale).
    refreshing: AtomicBool,
}

impl JwksFetcher {
    fn new(issuer: &str, spec: FetchSpec) -> Arc<Self> {
        Arc::new(Self {
            issuer: issuer.to_owned(),
            spec,
            keys: ArcSwap::from_pointee(AssertionKeys::default()),
            gate: tokio::sync::Mutex::new(None),
            fetched_at: Mutex::new(None),
            generation: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The first fetch, in the background.
    fn start(self: Arc<Self>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut gate = self.gate.lock().await;
                *gate = Some(Instant::now());
                self.fetch_logged().await;
            });
        }
    }

    /// A background refresh when the keys are older than `refresh` (or were
    /// never fetched), if no fetch is in flight and the rate limit allows.
    fn refresh_if_stale(self: &Arc<Self>) {
        let stale = self
            .fetched_at
            .lock()
            .is_none_or(|t| t.elapsed() >= self.spec.refresh);
        if !stale {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        rt.spawn(async move {
            if let Ok(mut gate) = me.gate.try_lock()
                && gate.is_none_or(|t| t.elapsed() >= me.spec.min_refetch)
            {
                *gate = Some(Instant::now());
                me.fetch_logged().await;
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    async fn refetch(&self) -> bool {
        let before = self.generation.load(Ordering::Acquire);
        let mut gate = self.gate.lock().await;
        if self.generation.load(Ordering::Acquire) != before {
            return true; // the fetch this caller waited for brought new keys
        }
        if gate.is_some_and(|t| t.elapsed() < self.spec.min_refetch) {
            return false;
        }
        *gate = Some(Instant::now());
        self.fetch_logged().await;
        self.generation.load(Ordering::Acquire) != before
    }

    async fn fetch_logged(&self) {
        let result = match tokio::time::timeout(self.spec.timeout, fetch(&self.spec)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "no complete answer within {:?}",
                self.spec.timeout
            )),
        };
        crate::metrics::federation_jwks_fetch(result.is_ok());
        match result {
            Ok(keys) => {
                let old = self.keys.load();
                let (mut before, mut after) = (old.kids(), keys.kids());
                before.sort_unstable();
                after.sort_unstable();
                if before != after || old.len() != keys.len() {
                    tracing::info!(issuer = %self.issuer, kids = ?after, "trusted issuer's JWKS changed");
                    drop(old);
                    self.keys.store(Arc::new(keys));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                } else {
                    drop(old);
                    self.keys.store(Arc::new(keys));
                }
                *self.fetched_at.lock() = Some(Instant::now());
            }
            Err(e) => tracing::warn!(
                issuer = %self.issuer,
                jwks_uri = %self.spec.uri,
                error = %format!("{e:#}"),
                "trusted issuer's JWKS fetch failed; keeping the last good keys"
            ),
        }
    }
}

/// The [`IssuerKeys`] of a `jwks_uri`.
struct JwksKeys(Arc<JwksFetcher>);

#[async_trait::async_trait]
impl IssuerKeys for JwksKeys {
    fn current(&self) -> Arc<AssertionKeys> {
        self.0.refresh_if_stale();
        self.0.keys.load_full()
    }

    async fn refresh_for_unknown_kid(&self) -> bool {
        self.0.refetch().await
    }
}

/// The trust anchors of a fetch: `ca_file`'s certificates instead of the
/// system's roots.
fn roots(ca_file: Option<&PathBuf>) -> anyhow::Result<rustls::RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.with_context(|| format!("{}: invalid PEM", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
            }
            if roots.is_empty() {
                bail!("{}: no PEM certificate found", path.display());
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// The bearer token to send, read now (the kubelet rotates it).
fn bearer(spec: &FetchSpec) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    let Some(path) = &spec.bearer_token_file else {
        return Ok(None);
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_BEARER_BYTES).read_to_string(&mut text))
        .with_context(|| format!("bearer_token_file: cannot read {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("bearer_token_file {}: not a token", path.display());
    }
    Ok(Some(token.to_owned()))
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One GET of the JWK Set over a fresh connection (HTTP/1.1; fetches are
/// rare, so no pool).
async fn fetch(spec: &FetchSpec) -> anyhow::Result<AssertionKeys> {
    let uri: http::Uri = spec.uri.parse().context("jwks_uri")?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => bail!("jwks_uri: not http(s)"),
    };
    let host = uri.host().context("jwks_uri: no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let bearer = bearer(spec)?;
    let connect_bound = MAX_CONNECT.min(spec.timeout);
    let tcp = tokio::time::timeout(connect_bound, async {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        tokio::net::TcpStream::connect((host, port)).await
    })
    .await
    .map_err(|_| anyhow::anyhow!("no connection within {connect_bound:?}"))?
    .context("cannot connect")?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = if https {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS")?
        .with_root_certificates(roots(spec.ca_file.as_ref())?)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        )
        .context("jwks_uri: not a TLS server name")?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .context("HTTP handshake")?;
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut req = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, "tokend");
    if let Some(token) = bearer {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("bearer_token_file: not a header value")?;
        value.set_sensitive(true);
        req = req.header(http::header::AUTHORIZATION, value);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .context("request")?;
    let exchange = async {
        let resp = sender.send_request(req).await.context("request failed")?;
        if resp.status() != http::StatusCode::OK {
            bail!("answered {}", resp.status());
        }
        if resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            bail!("larger than {MAX_JWKS_BYTES} bytes");
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.context("reading the body")?.into_data() {
                if buf.len() + data.len() > MAX_JWKS_BYTES {
                    bail!("larger than {MAX_JWKS_BYTES} bytes");
                }
                buf.extend_from_slice(&data);
            }
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&buf).map_err(|_| anyhow::anyhow!("not JSON"))?;
        let (keys, skipped) =
            AssertionKeys::from_fetched_jwks(&doc).map_err(|e| anyhow::anyhow!("{e}"))?;
        for s in skipped {
            tracing::debug!(key = %s, "trusted issuer's JWKS key not used");
        }
        Ok(keys)
    };
    // The connection is driven beside the exchange and dropped with it (the
    // fetch's timeout drops both).
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = &mut exchange => r,
        c = &mut conn => {
            c.context("connection")?;
            exchange.await
        }
    }
}
