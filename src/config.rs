//! The TOML configuration file, environment overrides, and validation into the
//! typed settings the server runs on.
//!
//! Every scalar key can be overridden by an environment variable named
//! `TOKEND_<SECTION>_<KEY>` (`TOKEND_HTTP_LISTEN`, `TOKEND_STORE_URL`) or, for
//! top-level keys, `TOKEND_<KEY>` (`TOKEND_ISSUER`). Unknown keys are errors, so
//! a typo never silently falls back to a default. Errors name the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer};

use crate::oauth::client::{ClientConfig, SecretHash};
use crate::token::Algorithm;

/// The whole file as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Extra TOML file holding only `[[clients]]` (e.g. mounted from a Secret).
    #[serde(default)]
    pub clients_file: Option<PathBuf>,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub grpc: GrpcSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub tokens: TokenSettings,
    #[serde(default)]
    pub signing: SigningSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub authorization: AuthorizationSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    #[serde(default)]
    pub auth_throttle: AuthThrottleSettings,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

fn default_issuer() -> String {
    "http://127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Largest request body accepted on the OAuth endpoints.
    #[serde(default = "default_max_body", deserialize_with = "de_num")]
    pub max_body_bytes: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            max_body_bytes: default_max_body(),
        }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> u64 {
    64 * 1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    #[serde(default = "default_grpc_listen")]
    pub listen: String,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            listen: default_grpc_listen(),
        }
    }
}

fn default_grpc_listen() -> String {
    "127.0.0.1:50051".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    #[serde(default = "default_store_url")]
    pub url: String,
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default = "default_store_timeout", deserialize_with = "de_num")]
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
    pub password: Option<secrecy::SecretString>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    #[serde(default = "default_access_ttl", deserialize_with = "de_num")]
    pub access_ttl_secs: u64,
    /// 0 means refresh tokens never expire.
    #[serde(default = "default_refresh_ttl", deserialize_with = "de_num")]
    pub refresh_ttl_secs: u64,
    #[serde(default = "default_code_ttl", deserialize_with = "de_num")]
    pub code_ttl_secs: u64,
    /// Clock skew tolerated on `exp`/`nbf` when introspecting.
    #[serde(default = "default_leeway", deserialize_with = "de_num")]
    pub leeway_secs: u64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            access_ttl_secs: default_access_ttl(),
            refresh_ttl_secs: default_refresh_ttl(),
            code_ttl_secs: default_code_ttl(),
            leeway_secs: default_leeway(),
        }
    }
}

fn default_access_ttl() -> u64 {
    3600
}
fn default_refresh_ttl() -> u64 {
    30 * 24 * 3600
}
fn default_code_ttl() -> u64 {
    60
}
fn default_leeway() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    #[serde(default = "default_alg", deserialize_with = "de_alg")]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
}

impl Default for SigningSettings {
    fn default() -> Self {
        Self {
            algorithm: default_alg(),
            key_file: None,
            previous_key_files: Vec::new(),
        }
    }
}

fn default_alg() -> Algorithm {
    Algorithm::RS256
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "default_grace", deserialize_with = "de_num")]
    pub shutdown_grace_secs: u64,
    /// After SIGTERM, how long tokend keeps accepting new requests while
    /// already reporting not ready, so load balancers and Kubernetes
    /// endpoints stop sending traffic before the listeners close. 0 = close
    /// at once.
    #[serde(default, deserialize_with = "de_num")]
    pub drain_delay_secs: u64,
    /// How often (seconds) `serve` checks the config, clients and key files
    /// for changes to hot-reload; 0 = only on SIGHUP.
    #[serde(default = "default_reload_poll", deserialize_with = "de_num")]
    pub reload_poll_secs: u64,
    /// Time a client gets to send a complete set of HTTP/1 request headers
    /// (and, with TLS, to finish the handshake): the slow-loris bound.
    #[serde(default = "default_header_timeout", deserialize_with = "de_num")]
    pub header_read_timeout_secs: u64,
    /// Bound on one request, body read included, on both listeners.
    #[serde(default = "default_request_timeout", deserialize_with = "de_num")]
    pub request_timeout_secs: u64,
    /// Requests handled at once per listener; more are answered at once with
    /// `temporarily_unavailable` (HTTP 503, gRPC UNAVAILABLE).
    #[serde(default = "default_max_requests", deserialize_with = "de_num")]
    pub max_concurrent_requests: u64,
    /// Open connections per listener; beyond it, new connections wait in the
    /// kernel's accept queue until one closes.
    #[serde(default = "default_max_connections", deserialize_with = "de_num")]
    pub max_connections: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: default_grace(),
            drain_delay_secs: 0,
            reload_poll_secs: default_reload_poll(),
            header_read_timeout_secs: default_header_timeout(),
            request_timeout_secs: default_request_timeout(),
            max_concurrent_requests: default_max_requests(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_reload_poll() -> u64 {
    1
}

fn default_header_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}
fn default_max_requests() -> u64 {
    1024
}
fn default_max_connections() -> u64 {
    10_000
}

/// `[tls]`: optional TLS on both listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// When set, clients must present a certificate signed by this CA (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes (SIGHUP
    /// reloads at once).
    #[serde(default = "default_tls_reload", deserialize_with = "de_num")]
    pub reload_check_secs: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_check_secs: default_tls_reload(),
        }
    }
}

fn default_tls_reload() -> u64 {
    5
}

/// `[rate_limit]`: the default per-client token bucket (a client's
/// `rate_limit_per_sec` / `rate_limit_burst` override it). `per_sec = 0`
/// turns rate limiting off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    #[serde(default, deserialize_with = "de_f64")]
    pub per_sec: f64,
    /// Requests allowed at once on top of the sustained rate; 0 = `per_sec`.
    #[serde(default, deserialize_with = "de_num")]
    pub burst: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_sec: 0.0,
            burst: 0,
        }
    }
}

/// `[auth_throttle]`: back-off after failed client authentications.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthThrottleSettings {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Failures (per client id, per peer address) before back-off starts.
    #[serde(default = "default_throttle_threshold", deserialize_with = "de_num")]
    pub threshold: u64,
    /// First back-off; it doubles with every further failure.
    #[serde(default = "default_throttle_base", deserialize_with = "de_num")]
    pub base_secs: u64,
    /// Longest back-off.
    #[serde(default = "default_throttle_max", deserialize_with = "de_num")]
    pub max_secs: u64,
    /// Failures are forgotten this long after the last one.
    #[serde(default = "default_throttle_reset", deserialize_with = "de_num")]
    pub reset_secs: u64,
}

impl Default for AuthThrottleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: default_throttle_threshold(),
            base_secs: default_throttle_base(),
            max_secs: default_throttle_max(),
            reset_secs: default_throttle_reset(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_throttle_threshold() -> u64 {
    10
}
fn default_throttle_base() -> u64 {
    1
}
fn default_throttle_max() -> u64 {
    60
}
fn default_throttle_reset() -> u64 {
    900
}

/// Decimal numbers from TOML floats, integers or (env overrides) strings.
pub(crate) fn de_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        I(i64),
        Str(String),
    }
    let v = match N::deserialize(d)? {
        N::F(f) => f,
        N::I(i) => i as f64,
        N::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}")))?,
    };
    if !v.is_finite() || v < 0.0 {
        return Err(serde::de::Error::custom("expected a non-negative number"));
    }
    Ok(v)
}

fn default_grace() -> u64 {
    20
}

/// `[authorization]`: the authorization-code flow's delegated login.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationSettings {
    /// The login app's page; the browser is sent there with `login_challenge`.
    #[serde(default)]
    pub login_url: Option<String>,
    /// How long the login app has to accept or reject a request.
    #[serde(default = "default_challenge_ttl", deserialize_with = "de_num")]
    pub challenge_ttl_secs: u64,
    /// `sha256:<64 hex>` of the login app's bearer secret (`tokend
    /// hash-secret`): `tokend.v1.AuthorizationService` answers only callers
    /// presenting it, since whoever accepts a login chooses the user a token
    /// is issued for. Required with `login_url`.
    #[serde(default)]
    pub login_app_token_hash: Option<String>,
}

impl Default for AuthorizationSettings {
    fn default() -> Self {
        Self {
            login_url: None,
            challenge_ttl_secs: default_challenge_ttl(),
            login_app_token_hash: None,
        }
    }
}

fn default_challenge_ttl() -> u64 {
    600
}

/// `[admin]`: the operator listener (off unless `listen` is set) and the
/// SHA-256 hash of its bearer secret.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    #[serde(default)]
    pub listen: Option<String>,
    /// `sha256:<64 hex>` of the admin bearer secret (`tokend hash-secret`).
    #[serde(default)]
    pub token_hash: Option<String>,
}

/// Numbers may come from TOML integers or, through env overrides, strings.
fn de_num<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Int(u64),
        Str(String),
    }
    match N::deserialize(d)? {
        N::Int(n) => Ok(n),
        N::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a whole number, got {s:?}"))),
    }
}

fn de_alg<'de, D: Deserializer<'de>>(d: D) -> Result<Algorithm, D::Error> {
    let s = String::deserialize(d)?;
    Algorithm::parse(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown algorithm {s:?}; expected RS256, ES256 or EdDSA"
        ))
    })
}

/// Sections whose scalar keys env variables may override.
const SECTIONS: &[&str] = &[
    "http",
    "grpc",
    "store",
    "tokens",
    "signing",
    "log",
    "server",
    "authorization",
    "admin",
    "tls",
    "rate_limit",
    "auth_throttle",
];
const TOP_LEVEL: &[&str] = &["issuer", "clients_file"];
/// Env variables read elsewhere (secrets), never mapped onto the file.
/// (`TOKEND_ADMIN_ADDR`/`TOKEND_ADMIN_TOKEN` belong to the `tokend admin` CLI.)
const RESERVED_ENV: &[&str] = &[
    "TOKEND_CONFIG",
    "TOKEND_STORE_PASSWORD",
    "TOKEND_ADMIN_ADDR",
    "TOKEND_ADMIN_TOKEN",
];

impl Config {
    /// Reads `path` (or the built-in defaults when `None`), applies environment
    /// overrides from `env`, and parses. Errors name the file and key.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                let table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("{}: invalid TOML", p.display()))?;
                (table, p.display().to_string())
            }
            None => (toml::Table::new(), "built-in defaults".to_string()),
        };
        let env: Vec<(String, String)> = env.into_iter().collect();
        let store_password = env
            .iter()
            .find(|(k, v)| k == "TOKEND_STORE_PASSWORD" && !v.is_empty())
            .map(|(_, v)| secrecy::SecretString::from(v.clone()));
        apply_env(&mut table, env)?;
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                anyhow::anyhow!("{origin}: {path}: {}", inner.message())
            })?;
        cfg.store.password = store_password;
        if let Some(extra) = cfg.clients_file.clone() {
            let extra = resolve(path, &extra);
            cfg.clients.extend(load_clients_file(&extra)?);
            cfg.clients_file = Some(extra);
        }
        // Relative key paths are relative to the config file's folder.
        if let Some(k) = cfg.signing.key_file.take() {
            cfg.signing.key_file = Some(resolve(path, &k));
        }
        for f in [
            &mut cfg.tls.cert_file,
            &mut cfg.tls.key_file,
            &mut cfg.tls.client_ca_file,
            &mut cfg.store.tls_ca_file,
            &mut cfg.store.tls_cert_file,
            &mut cfg.store.tls_key_file,
        ] {
            if let Some(p) = f.take() {
                *f = Some(resolve(path, &p));
            }
        }
        cfg.signing.previous_key_files = cfg
            .signing
            .previous_key_files
            .iter()
            .map(|p2| resolve(path, p2))
            .collect();
        Ok(cfg)
    }

    /// Checks everything that can be checked without binding ports: addresses,
    /// key files, clients. Returns every problem found, not just the first.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.issuer.trim().is_empty() {
            problems.push("issuer: must not be empty".to_string());
        }
        for (key, addr) in [
            ("http.listen", &self.http.listen),
            ("grpc.listen", &self.grpc.listen),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("{key}: {addr:?} is not an IP:port address"));
            }
        }
        if let Some(addr) = &self.admin.listen {
            if addr.parse::<SocketAddr>().is_err() {
                problems.push(format!("admin.listen: {addr:?} is not an IP:port address"));
            }
            // Without token_hash the admin listener serves /metrics only.
            if let Some(h) = &self.admin.token_hash
                && SecretHash::parse_sha256(h).is_none()
            {
                problems.push("admin.token_hash: must be sha256:<64 hex digits>".into())
            }
        }
        if self.http.max_body_bytes == 0 {
            problems.push("http.max_body_bytes: must be positive".into());
        }
        if self.tokens.access_ttl_secs == 0 {
            problems.push("tokens.access_ttl_secs: must be positive".into());
        }
        if self.tokens.code_ttl_secs == 0 {
            problems.push("tokens.code_ttl_secs: must be positive".into());
        }
        if self.authorization.challenge_ttl_secs == 0 {
            problems.push("authorization.challenge_ttl_secs: must be positive".into());
        }
        match (
            &self.authorization.login_url,
            &self.authorization.login_app_token_hash,
        ) {
            (_, Some(h)) if SecretHash::parse_sha256(h).is_none() => {
                problems.push(
                    "authorization.login_app_token_hash: must be sha256:<64 hex digits>".into(),
                )
            }
            (Some(_), None) => problems.push(
                "authorization.login_app_token_hash: required with login_url (the login app's \
                 bearer secret for tokend.v1.AuthorizationService; hash it with `tokend hash-secret`)"
                    .into(),
            ),
            _ => {}
        }
        match &self.authorization.login_url {
            Some(u)
                if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains('#') =>
            {
                problems.push(format!(
                    "authorization.login_url: {u:?} must be an absolute http(s) URL without a fragment"
                ));
            }
            Some(_) => {}
            None => {
                let code_clients = self
                    .clients
                    .iter()
                    .any(|c| c.grant_types.iter().any(|g| g == "authorization_code"));
                if code_clients {
                    problems.push(
                        "authorization.login_url: required when a client has the authorization_code grant"
                            .into(),
                    );
                }
            }
        }
        for (key, v) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.request_timeout_secs",
                self.server.request_timeout_secs,
            ),
            (
                "server.max_concurrent_requests",
                self.server.max_concurrent_requests,
            ),
            ("server.max_connections", self.server.max_connections),
        ] {
            if v == 0 {
                problems.push(format!("{key}: must be positive"));
            }
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => problems.push("tls.key_file: required with tls.cert_file".into()),
            (None, Some(_)) => problems.push("tls.cert_file: required with tls.key_file".into()),
            (None, None) if self.tls.client_ca_file.is_some() => {
                problems.push("tls.client_ca_file: requires tls.cert_file and tls.key_file".into())
            }
            _ => {}
        }
        if self.auth_throttle.enabled && self.auth_throttle.threshold == 0 {
            problems.push("auth_throttle.threshold: must be positive".into());
        }
        if self.auth_throttle.max_secs < self.auth_throttle.base_secs {
            problems.push("auth_throttle.max_secs: must be at least base_secs".into());
        }
        if self.store.timeout_ms == 0 {
            problems.push("store.timeout_ms: must be positive".into());
        }
        if !crate::store::is_memory(&self.store.url)
            && let Err(e) =
                crate::store::redis::validate_url(&self.store.url, self.store.password.as_ref())
        {
            problems.push(format!("store.url: {e}"));
        }
        if let Err(e) = crate::store::redis::tls_certificates(&self.store) {
            problems.extend(e);
        }
        if let Err(e) = crate::telemetry::parse_level(&self.log.level) {
            problems.push(format!("log.level: {e}"));
        }
        if let Some(k) = &self.signing.key_file
            && let Err(e) = crate::token::SigningKey::from_file(self.signing.algorithm, k)
        {
            problems.push(format!("signing.key_file: {e:#}"));
        }
        for (i, k) in self.signing.previous_key_files.iter().enumerate() {
            if let Err(e) = crate::token::SigningKey::from_file(self.signing.algorithm, k) {
                problems.push(format!("signing.previous_key_files[{i}]: {e:#}"));
            }
        }
        let mut seen = BTreeMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(j) = seen.insert(c.client_id.clone(), i) {
                problems.push(format!(
                    "clients[{i}].client_id: {:?} is also clients[{j}]",
                    c.client_id
                ));
            }
            if let Err(errs) = c.validate() {
                problems.extend(
                    errs.into_iter()
                        .map(|e| format!("clients[{i}] ({}): {e}", c.client_id)),
                );
            }
        }
        problems
    }
}

fn resolve(config_path: Option<&Path>, p: &Path) -> PathBuf {
    match config_path.and_then(Path::parent) {
        Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn load_clients_file(path: &Path) -> anyhow::Result<Vec<ClientConfig>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClientsFile {
        #[serde(default)]
        clients: Vec<ClientConfig>,
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("clients_file: cannot read {}", path.display()))?;
    let f: ClientsFile = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("clients_file {}: {}", path.display(), e.message()))?;
    Ok(f.clients)
}

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("TOKEND_") else {
            continue;
        };
        if RESERVED_ENV.contains(&name.as_str()) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        if TOP_LEVEL.contains(&lower.as_str()) {
            table.insert(lower, toml::Value::String(value));
            continue;
        }
        // Longest section name first: `rate_limit_per_sec` is [rate_limit] per_sec.
        let Some((section, key)) = SECTIONS
            .iter()
            .filter_map(|s| {
                let key = lower.strip_prefix(s)?.strip_prefix('_')?;
                Some((*s, key))
            })
            .max_by_key(|(s, _)| s.len())
        else {
            continue;
        };
        if is_service_link(key) {
            continue;
        }
        if key == "previous_key_files" {
            let files = value
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| toml::Value::String(s.trim().to_string()))
                .collect();
            section_table(table, section, &name)?
                .insert(key.to_string(), toml::Value::Array(files));
            continue;
        }
        section_table(table, section, &name)?.insert(key.to_string(), toml::Value::String(value));
    }
    Ok(())
}

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_...` for
/// every Service in the namespace; a Service named `tokend-http` would yield
/// `TOKEND_HTTP_SERVICE_HOST`. Those are not config overrides.
fn is_service_link(key: &str) -> bool {
    key.starts_with("service_") || key == "port" || key.starts_with("port_")
}

fn section_table<'a>(
    table: &'a mut toml::Table,
    section: &str,
    var: &str,
) -> anyhow::Result<&'a mut toml::Table> {
    match table
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
    {
        toml::Value::Table(t) => Ok(t),
        _ => bail!("{var}: [{section}] in the config file is not a table"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_scalars_and_unknown_keys_are_named() {
        let cfg = Config::load(
            None,
            env(&[
                ("TOKEND_HTTP_LISTEN", "0.0.0.0:9000"),
                ("TOKEND_TOKENS_ACCESS_TTL_SECS", "60"),
                ("TOKEND_ISSUER", "https://auth.example"),
                ("TOKEND_STORE_PASSWORD", "hunter2"),
                ("TOKEND_BIN", "/usr/bin/tokend"),
                ("TOKEND_HTTP_SERVICE_HOST", "10.0.0.1"),
                ("TOKEND_HTTP_PORT", "tcp://10.0.0.1:8080"),
                ("TOKEND_STORE_PORT_6379_TCP_ADDR", "10.0.0.2"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.http.listen, "0.0.0.0:9000");
        assert_eq!(cfg.tokens.access_ttl_secs, 60);
        assert_eq!(cfg.issuer, "https://auth.example");
        {
            use secrecy::ExposeSecret;
            let pw = cfg.store.password.as_ref().expect("password from env");
            assert_eq!(pw.expose_secret(), "hunter2");
            assert!(!format!("{cfg:?}").contains("hunter2"), "Debug hides it");
        }

        let err = Config::load(None, env(&[("TOKEND_HTTP_LISTN", "x")])).unwrap_err();
        assert!(format!("{err:#}").contains("listn"), "{err:#}");
        let cfg = Config::load(
            None,
            env(&[("TOKEND_STORE_URL", "redis+cluster://:hunter2@a:1/5")]),
        )
        .unwrap();
        let problems = cfg.validate().join("\n");
        assert!(problems.contains("store.url:"), "{problems}");
        assert!(!problems.contains("hunter2"), "{problems}");
        let err =
            Config::load(None, env(&[("TOKEND_TOKENS_ACCESS_TTL_SECS", "soon")])).unwrap_err();
        assert!(format!("{err:#}").contains("access_ttl_secs"), "{err:#}");
    }

    #[test]
    fn authorization_section_is_checked_and_overridable() {
        let dir = std::env::temp_dir().join(format!("tokend-cfg-authz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            r#"
[[clients]]
client_id = "web"
token_endpoint_auth_method = "none"
grant_types = ["authorization_code"]
redirect_uris = ["https://app.example/cb"]
"#,
        )
        .unwrap();
        let cfg = Config::load(Some(&p), Vec::new()).unwrap();
        assert_eq!(cfg.authorization.challenge_ttl_secs, 600);
        let problems = cfg.validate();
        assert!(
            problems
                .iter()
                .any(|e| e.starts_with("authorization.login_url:")),
            "{problems:?}"
        );
        let login_url = ("TOKEND_AUTHORIZATION_LOGIN_URL", "https://login.example/in");
        // login_url without the login app's secret hash is refused...
        let no_secret = Config::load(Some(&p), env(&[login_url])).unwrap();
        assert!(
            no_secret.validate()[0].starts_with("authorization.login_app_token_hash: required"),
            "{:?}",
            no_secret.validate()
        );
        let hash = crate::oauth::client::SecretHash::sha256_of("login-app-secret");
        let cfg = Config::load(
            Some(&p),
            env(&[
                login_url,
                ("TOKEND_AUTHORIZATION_CHALLENGE_TTL_SECS", "30"),
                ("TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH", &hash),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.validate(), Vec::<String>::new());
        assert_eq!(cfg.authorization.challenge_ttl_secs, 30);
        assert_eq!(
            cfg.authorization.login_app_token_hash.as_deref(),
            Some(hash.as_str())
        );
        // ...and so is a hash in the wrong form (the secret itself, say).
        let clear = Config::load(
            Some(&p),
            env(&[
                login_url,
                ("TOKEND_AUTHORIZATION_LOGIN_APP_TOKEN_HASH", "hunter2"),
            ]),
        )
        .unwrap();
        assert!(clear.validate()[0].starts_with("authorization.login_app_token_hash: must be"));
        let bad = Config::load(
            Some(&p),
            env(&[("TOKEND_AUTHORIZATION_LOGIN_URL", "login.example#x")]),
        )
        .unwrap();
        assert!(
            bad.validate()
                .iter()
                .any(|p| p.starts_with("authorization.login_url:"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_tls_files_resolve_override_and_are_checked() {
        let dir = std::env::temp_dir().join(format!("tokend-cfg-store-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("client.pem"), &ca_pem).unwrap();
        std::fs::write(dir.join("client.key"), ca_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("junk.key"), "hunter2-not-a-key").unwrap();
        let p = dir.join("c.toml");
        std::fs::write(
            &p,
            "[store]\nurl = \"rediss://h:6380/0\"\ntls_ca_file = \"ca.pem\"\n",
        )
        .unwrap();

        let cfg = Config::load(Some(&p), Vec::new()).unwrap();
        assert_eq!(cfg.store.tls_ca_file, Some(dir.join("ca.pem")));
        assert_eq!(cfg.validate(), Vec::<String>::new());
        let tls = crate::store::redis::tls_certificates(&cfg.store)
            .unwrap()
            .expect("CA set");
        assert_eq!(tls.root_cert.as_deref(), Some(ca_pem.as_bytes()));
        assert!(tls.client_tls.is_none());

        // Env overrides (relative to the config file too) and a client pair.
        let cfg = Config::load(
            Some(&p),
            env(&[
                ("TOKEND_STORE_TLS_CERT_FILE", "client.pem"),
                ("TOKEND_STORE_TLS_KEY_FILE", "client.key"),
                ("TOKEND_STORE_URL", "rediss+cluster://a:1,b:2"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.store.tls_key_file, Some(dir.join("client.key")));
        assert_eq!(cfg.validate(), Vec::<String>::new());

        let problems = |pairs: &[(&str, &str)]| {
            Config::load(Some(&p), env(pairs))
                .unwrap()
                .validate()
                .join("\n")
        };
        let e = problems(&[("TOKEND_STORE_TLS_CA_FILE", "missing.pem")]);
        assert!(e.starts_with("store.tls_ca_file: cannot read"), "{e}");
        let e = problems(&[("TOKEND_STORE_TLS_CA_FILE", "junk.key")]);
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = problems(&[("TOKEND_STORE_URL", "redis://h:1/0")]);
        assert!(e.contains("store.tls_ca_file: only for a rediss://"), "{e}");
        let e = problems(&[("TOKEND_STORE_URL", "memory://")]);
        assert!(e.contains("store.tls_ca_file: only for a rediss://"), "{e}");
        let e = problems(&[("TOKEND_STORE_TLS_CERT_FILE", "client.pem")]);
        assert!(e.contains("store.tls_key_file: required"), "{e}");
        let e = problems(&[
            ("TOKEND_STORE_TLS_CERT_FILE", "client.pem"),
            ("TOKEND_STORE_TLS_KEY_FILE", "junk.key"),
        ]);
        assert!(e.contains("store.tls_key_file:"), "{e}");
        assert!(!e.contains("hunter2"), "never quotes the key file: {e}");
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        std::fs::write(dir.join("other.key"), other).unwrap();
        let e = problems(&[
            ("TOKEND_STORE_TLS_CERT_FILE", "client.pem"),
            ("TOKEND_STORE_TLS_KEY_FILE", "other.key"),
        ]);
        assert!(
            e.starts_with("store.tls_key_file: does not go with store.tls_cert_file"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tokend.toml");
        let cfg = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(cfg.validate(), Vec::<String>::new());
        assert_eq!(cfg.clients[0].client_id, "demo-client");
    }
}
