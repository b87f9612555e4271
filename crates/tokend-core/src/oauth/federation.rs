//! Workload identity federation: a client authenticated by a JWT that
//! *another* issuer signed (a Kubernetes projected service-account token,
//! any OIDC workload token), sent as the same RFC 7523 `client_assertion` as
//! `private_key_jwt`.
//!
//! The rules live here: which issuers are trusted (`[[trusted_issuers]]`),
//! which audiences and lifetimes they may use, whether a token's `jti` is
//! single-use, and which client a `(iss, sub)` pair acts as (the client's
//! `federated_identities`, matched exactly). The keys come through
//! [`IssuerKeys`]: a `jwks_file` is a fixed set ([`StaticKeys`]); a
//! `jwks_uri` is fetched by the service (the core knows no transport), which
//! implements the trait with a cache, a rate limit and bounds on time and
//! size. Verification itself is tokend-token's
//! [`verify_assertion`](tokend_token::assertion::verify_assertion), the same
//! as for `private_key_jwt`.
//!
//! Replay: a Kubernetes projected token is presented again and again until
//! the kubelet rotates it (at 80 % of its life), so its `jti` cannot be
//! single-use without breaking every workload after its first request;
//! `single_use_jti` is off by default and a federated token is a bearer
//! credential for its (bounded) life, like the secret it replaces. An issuer
//! that mints a token per request may turn it on.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use tokend_token::assertion::AssertionKeys;

/// `max_lifetime_secs` default: a day. Kubernetes projected tokens live an
/// hour by default (`expirationSeconds`, at least 10 minutes); a day leaves
/// room for longer settings while refusing the year-long tokens of legacy
/// clusters.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 86_400;
/// Longest `max_lifetime_secs` accepted.
pub const MAX_MAX_LIFETIME_SECS: u64 = 7 * 86_400;
/// `min_refetch_secs` default: at most one JWKS fetch per issuer per this
/// interval, whatever the unknown `kid`s callers send.
pub const DEFAULT_MIN_REFETCH_SECS: u64 = 10;
/// `refresh_secs` default: keys older than this are refetched (in the
/// background) so removed keys stop verifying.
pub const DEFAULT_REFRESH_SECS: u64 = 300;
/// `fetch_timeout_ms` default: bound on a whole JWKS fetch (connect, TLS,
/// response).
pub const DEFAULT_FETCH_TIMEOUT_MS: u64 = 5_000;

/// One `[[trusted_issuers]]` entry as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// The tokens' `iss`, compared byte for byte.
    pub issuer: String,
    /// A JSON JWK Set file (relative to the config file, re-read on reload).
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// What `jwks_file` held when loaded (read by the service's loader).
    #[serde(skip)]
    pub jwks_file_text: Option<Result<String, String>>,
    /// The issuer's JWK Set URL, fetched by the service.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The `aud` values accepted; default: tokend's issuer URL.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// `jwks_uri` only: a file holding a bearer token sent as
    /// `Authorization: Bearer` (Kubernetes: the pod's own service-account
    /// token), re-read on every fetch.
    #[serde(default)]
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// `jwks_uri` only: PEM CA certificates trusted for the fetch instead of
    /// the system's roots (Kubernetes: the cluster CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime_secs: u64,
    /// Record each token's `jti` and refuse a second use (off: see the
    /// module docs).
    #[serde(default)]
    pub single_use_jti: bool,
    #[serde(default = "default_min_refetch")]
    pub min_refetch_secs: u64,
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_ms: u64,
}

fn default_max_lifetime() -> u64 {
    DEFAULT_MAX_LIFETIME_SECS
}
fn default_min_refetch() -> u64 {
    DEFAULT_MIN_REFETCH_SECS
}
fn default_refresh() -> u64 {
    DEFAULT_REFRESH_SECS
}
fn default_fetch_timeout() -> u64 {
    DEFAULT_FETCH_TIMEOUT_MS
}

/// An issuer URL: `https://` (or `http://`), a host, no query or fragment.
/// It always contains `:`, which no client_id may: an assertion's `iss`
/// names either a client (`private_key_jwt`) or a trusted issuer, never both.
fn is_http_url(s: &str, allow_query: bool) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && !r.contains('#')
            && (allow_query || !r.contains('?'))
            && !r.chars().any(|c| c.is_whitespace() || c.is_control())
    }) && s.len() <= 512
}

/// Where a trusted issuer's keys come from once validated.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// `jwks_file`, parsed.
    Static(AssertionKeys),
    /// `jwks_uri`: the service fetches it.
    Uri(String),
}

/// A validated `[[trusted_issuers]]` entry, keys not yet attached.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub max_lifetime_secs: i64,
    pub single_use_jti: bool,
    pub source: KeySource,
}

impl TrustedIssuerConfig {
    /// Every problem with this entry, each naming its key; `default_audience`
    /// is tokend's issuer URL.
    pub fn validate(&self, default_audience: &str) -> Result<IssuerPolicy, Vec<String>> {
        let mut errs = Vec::new();
        if !is_http_url(&self.issuer, false) {
            errs.push(format!(
                "issuer: {:?} must be an absolute http(s) URL without a query or fragment",
                self.issuer
            ));
        }
        let source = match (&self.jwks_file, &self.jwks_uri) {
            (Some(_), Some(_)) | (None, None) => {
                errs.push("jwks_file, jwks_uri: give exactly one".into());
                None
            }
            (None, Some(uri)) => {
                if !is_http_url(uri, true) {
                    errs.push(format!(
                        "jwks_uri: {uri:?} must be an absolute http(s) URL without a fragment"
                    ));
                }
                Some(KeySource::Uri(uri.clone()))
            }
            (Some(path), None) => {
                let doc = match &self.jwks_file_text {
                    None => Err(format!("{} was not read", path.display())),
                    Some(Err(e)) => Err(e.clone()),
                    Some(Ok(text)) => serde_json::from_str::<serde_json::Value>(text)
                        .map_err(|e| format!("{}: not JSON ({e})", path.display())),
                };
                match doc
                    .map_err(|e| vec![e])
                    .and_then(|d| AssertionKeys::from_jwks(&d))
                {
                    Ok(keys) => Some(KeySource::Static(keys)),
                    Err(e) => {
                        errs.extend(e.into_iter().map(|e| format!("jwks_file: {e}")));
                        None
                    }
                }
            }
        };
        if self.jwks_uri.is_none() {
            for (key, set) in [
                ("bearer_token_file", self.bearer_token_file.is_some()),
                ("ca_file", self.ca_file.is_some()),
            ] {
                if set {
                    errs.push(format!("{key}: only with jwks_uri"));
                }
            }
        }
        let audiences = match &self.audiences {
            None => vec![default_audience.to_owned()],
            Some(a) if a.is_empty() => {
                errs.push("audiences: must not be empty (leave it out for tokend's issuer)".into());
                Vec::new()
            }
            Some(a) => {
                for (i, v) in a.iter().enumerate() {
                    if v.is_empty() || v.len() > 512 || v.chars().any(char::is_control) {
                        errs.push(format!("audiences[{i}]: {v:?} is not valid"));
                    }
                }
                a.clone()
            }
        };
        if !(1..=MAX_MAX_LIFETIME_SECS).contains(&self.max_lifetime_secs) {
            errs.push(format!(
                "max_lifetime_secs: must be 1 to {MAX_MAX_LIFETIME_SECS} (a week)"
            ));
        }
        for (key, v) in [
            ("min_refetch_secs", self.min_refetch_secs),
            ("refresh_secs", self.refresh_secs),
            ("fetch_timeout_ms", self.fetch_timeout_ms),
        ] {
            if v == 0 {
                errs.push(format!("{key}: must be positive"));
            }
        }
        if self.fetch_timeout_ms > 60_000 {
            errs.push("fetch_timeout_ms: at most 60000".into());
        }
        match (errs.is_empty(), source) {
            (true, Some(source)) => Ok(IssuerPolicy {
                issuer: self.issuer.clone(),
                audiences,
                max_lifetime_secs: i64::try_from(self.max_lifetime_secs).unwrap_or(i64::MAX),
                single_use_jti: self.single_use_jti,
                source,
            }),
            _ => Err(errs),
        }
    }
}

/// A trusted issuer's current keys. The service implements it for a
/// `jwks_uri` (a cache it refreshes); [`StaticKeys`] is a `jwks_file`.
#[async_trait::async_trait]
pub trait IssuerKeys: Send + Sync {
    /// The keys in hand (possibly none yet).
    fn current(&self) -> Arc<AssertionKeys>;
    /// A token named a `kid` (or an algorithm) the keys in hand lack: fetch
    /// again if the rate limit allows, at most one fetch at a time. Returns
    /// whether the keys changed (so verifying again is worth it). Bounded in
    /// time; never fails (a failed fetch keeps the last good keys).
    async fn refresh_for_unknown_kid(&self) -> bool;
}

/// A `jwks_file`'s keys: what the file held at the last (re)load.
pub struct StaticKeys(pub Arc<AssertionKeys>);

#[async_trait::async_trait]
impl IssuerKeys for StaticKeys {
    fn current(&self) -> Arc<AssertionKeys> {
        self.0.clone()
    }
    async fn refresh_for_unknown_kid(&self) -> bool {
        false
    }
}

/// A trusted issuer with its keys.
#[derive(Clone)]
pub struct TrustedIssuer {
    pub policy: IssuerPolicy,
    pub keys: Arc<dyn IssuerKeys>,
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Every trusted issuer, by `iss`.
#[derive(Debug, Clone, Default)]
pub struct TrustedIssuers {
    by_issuer: HashMap<String, TrustedIssuer>,
}

impl TrustedIssuers {
    pub fn new(issuers: impl IntoIterator<Item = TrustedIssuer>) -> Self {
        Self {
            by_issuer: issuers
                .into_iter()
                .map(|i| (i.policy.issuer.clone(), i))
                .collect(),
        }
    }

    pub fn get(&self, issuer: &str) -> Option<&TrustedIssuer> {
        self.by_issuer.get(issuer)
    }

    pub fn len(&self) -> usize {
        self.by_issuer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }
}

/// One `federated_identities` entry of a client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedIdentity {
    /// A `[[trusted_issuers]]` issuer.
    pub issuer: String,
    /// The token's `sub`, matched exactly (Kubernetes:
    /// `system:serviceaccount:<namespace>:<name>`).
    pub subject: String,
}

/// Checks of the `[[trusted_issuers]]` list as a whole: unique issuers.
pub fn check_unique(configs: &[TrustedIssuerConfig]) -> Vec<String> {
    let mut seen = HashMap::new();
    let mut errs = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        if let Some(j) = seen.insert(c.issuer.as_str(), i) {
            errs.push(format!(
                "trusted_issuers[{i}].issuer: {:?} is also trusted_issuers[{j}]",
                c.issuer
            ));
        }
    }
    errs
}
