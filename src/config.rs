//! The configuration file: read once, checked once, and turned into the typed
//! [`Settings`] the server runs on.
//!
//! [`load`] reads the TOML file, applies environment overrides
//! (`TOKEND_<SECTION>_<KEY>`, or `TOKEND_<KEY>` for top-level keys: every
//! scalar key can be overridden), and parses every section into what the
//! components need (addresses, the client registry, the key set, durations,
//! the store's TLS material, secret hashes), or returns every problem found,
//! each naming its key. `check-config`, `serve` and a reload share that path.
//!
//! Components own their sections ([`StoreSettings`], [`SigningSettings`],
//! [`LogSettings`], [`TlsSettings`]); this module only places them in the file
//! and depends on them, never the reverse. The parsed settings are split into
//! [`Live`] (swapped in by a reload) and [`Boot`] (bound at start): a reload
//! compares the file's boot sections key by key through exhaustive
//! destructuring (see [`restart_only_changes`]), so a new key cannot escape
//! that check without failing to compile.
//!
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokend_core::de::{de_bool, de_f64, de_num};
use tokend_core::oauth::client::{ClientConfig, SecretHash};
use tokend_core::oauth::federation::TrustedIssuerConfig;
use tokend_core::oauth::limits::{LimitPolicy, RateLimit, ThrottlePolicy};
use tokend_core::oauth::{self, Registry};
use tokend_core::store::{StoreConfig, StorePassword, StoreSettings};
use tokend_token::KeySet;

use crate::otel::{TelemetrySettings, TraceExport};
use crate::signing::SigningSettings;
use crate::telemetry::LogSettings;
use crate::transport::tls::{Tls, TlsSettings};
use tokend_core::feed::FeedConfig;

/// The whole file as written by the operator (paths resolved against the
/// file's folder).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub issuer: String,
    /// Extra TOML file holding only `[[clients]]` (e.g. mounted from a Secret).
    pub clients_file: Option<PathBuf>,
    pub http: HttpSettings,
    pub grpc: GrpcSettings,
    pub store: StoreSettings,
    pub tokens: TokenSettings,
    pub signing: SigningSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub server: ServerSettings,
    pub authorization: AuthorizationSettings,
    pub admin: AdminSettings,
    pub tls: TlsSettings,
    pub rate_limit: RateLimitSettings,
    pub auth_throttle: AuthThrottleSettings,
    pub discovery: DiscoverySettings,
    pub revocation_feed: FeedConfig,
    pub client_assertion: ClientAssertionSettings,
    /// `[[trusted_issuers]]`: workload identity federation.
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
    pub clients: Vec<ClientConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            clients_file: None,
            http: HttpSettings::default(),
            grpc: GrpcSettings::default(),
            store: StoreSettings::default(),
            tokens: TokenSettings::default(),
            signing: SigningSettings::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
            server: ServerSettings::default(),
            authorization: AuthorizationSettings::default(),
            admin: AdminSettings::default(),
            tls: TlsSettings::default(),
            rate_limit: RateLimitSettings::default(),
            auth_throttle: AuthThrottleSettings::default(),
            discovery: DiscoverySettings::default(),
            revocation_feed: FeedConfig::default(),
            client_assertion: ClientAssertionSettings::default(),
            trusted_issuers: Vec::new(),
            clients: Vec::new(),
        }
    }
}

/// `[http]`: the OAuth HTTP bridge's listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub listen: String,
    /// Largest request body accepted on the OAuth endpoints.
    #[serde(deserialize_with = "de_num")]
    pub max_body_bytes: u64,
    /// Serves the OAuth endpoints and the discovery documents under this
    /// path as well (`"/apis/v2"` → `/apis/v2/oauth/token`), and discovery
    /// advertises the prefixed URLs. Empty: none.
    pub path_prefix: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            path_prefix: String::new(),
        }
    }
}

/// `http.path_prefix`: empty, or `/segment[/segment...]` of URL-safe path
/// characters, without a trailing `/`, `.` or `..` segments.
fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let ok = prefix.len() <= 200
        && prefix.starts_with('/')
        && prefix[1..].split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "http.path_prefix: {prefix:?} must be empty or like \"/apis/v2\": starting with '/', no trailing '/', segments of letters, digits, '-', '.', '_', '~' (at most 200 characters)"
        ))
    }
}

/// `[grpc]`: the gRPC listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSettings {
    pub listen: String,
    /// Largest gRPC message tokend decodes or encodes, on every gRPC service
    /// (tonic's default, 4 MiB, would be buffered per unauthenticated
    /// stream); larger ones are refused with RESOURCE_EXHAUSTED. The API's
    /// messages are a few KiB.
    #[serde(deserialize_with = "de_num")]
    pub max_message_bytes: u64,
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            max_message_bytes: 64 * 1024,
        }
    }
}

/// `[tokens]`: lifetimes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    #[serde(deserialize_with = "de_num")]
    pub access_ttl_secs: u64,
    /// 0 means refresh tokens never expire.
    #[serde(deserialize_with = "de_num")]
    pub refresh_ttl_secs: u64,
    #[serde(deserialize_with = "de_num")]
    pub code_ttl_secs: u64,
    /// Clock skew tolerated on `exp`/`nbf` when introspecting.
    #[serde(deserialize_with = "de_num")]
    pub leeway_secs: u64,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            access_ttl_secs: 3600,
            refresh_ttl_secs: 30 * 24 * 3600,
            code_ttl_secs: 60,
            leeway_secs: 30,
        }
    }
}

/// `[server]`: lifecycle and connection limits of both listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(deserialize_with = "de_num")]
    pub shutdown_grace_secs: u64,
    /// After SIGTERM, how long tokend keeps accepting new requests while
    /// already reporting not ready, so load balancers and Kubernetes
    /// endpoints stop sending traffic before the listeners close. 0 = close
    /// at once.
    #[serde(deserialize_with = "de_num")]
    pub drain_delay_secs: u64,
    /// How often (seconds) `serve` checks the config, clients and key files
    /// for changes to hot-reload; 0 = only on SIGHUP.
    #[serde(deserialize_with = "de_num")]
    pub reload_poll_secs: u64,
    /// Time a client gets to send a complete set of HTTP/1 request headers
    /// (and, with TLS, to finish the handshake): the slow-loris bound.
    #[serde(deserialize_with = "de_num")]
    pub header_read_timeout_secs: u64,
    /// Bound on one request, body read included, on both listeners.
    #[serde(deserialize_with = "de_num")]
    pub request_timeout_secs: u64,
    /// Requests handled at once per listener; more are answered at once with
    /// `temporarily_unavailable` (HTTP 503, gRPC UNAVAILABLE).
    #[serde(deserialize_with = "de_num")]
    pub max_concurrent_requests: u64,
    /// Open connections per listener; beyond it, new connections wait in the
    /// kernel's accept queue until one closes.
    #[serde(deserialize_with = "de_num")]
    pub max_connections: u64,
    /// Requests in flight at once from one client address (its share of
    /// `max_concurrent_requests`); more are answered at once with
    /// `temporarily_unavailable`. Behind a proxy every caller shares the
    /// proxy's address: raise it there.
    #[serde(deserialize_with = "de_num")]
    pub max_concurrent_requests_per_peer: u64,
    /// Concurrent streams per HTTP/2 connection (gRPC and h2 HTTP), the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` tokend announces.
    #[serde(deserialize_with = "de_num")]
    pub max_concurrent_streams: u64,
    /// Time a request body (or gRPC request message) has to arrive whole
    /// after its headers.
    #[serde(deserialize_with = "de_num")]
    pub body_read_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            shutdown_grace_secs: 20,
            drain_delay_secs: 0,
            reload_poll_secs: 1,
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_concurrent_requests: 1024,
            max_connections: 10_000,
            max_concurrent_requests_per_peer: 256,
            max_concurrent_streams: 100,
            body_read_timeout_secs: 5,
        }
    }
}

/// `[rate_limit]`: the default per-client token bucket (a client's
/// `rate_limit_per_sec` / `rate_limit_burst` override it). `per_sec = 0`
/// turns rate limiting off. Applies live on reload.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    #[serde(deserialize_with = "de_f64")]
    pub per_sec: f64,
    /// Requests allowed at once on top of the sustained rate; 0 = `per_sec`.
    #[serde(deserialize_with = "de_num")]
    pub burst: u64,
}

/// `[client_assertion]`: RFC 7523 client assertions (`private_key_jwt`).
/// Restart-only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAssertionSettings {
    /// The longest-lived assertion accepted (`exp - iat`, or `exp - now`
    /// without `iat`; the leeway applies). authlib signs one-hour assertions.
    #[serde(deserialize_with = "de_num")]
    pub max_lifetime_secs: u64,
}

impl Default for ClientAssertionSettings {
    fn default() -> Self {
        Self {
            max_lifetime_secs: tokend_core::oauth::assertion::DEFAULT_MAX_LIFETIME_SECS,
        }
    }
}

/// `[auth_throttle]`: back-off after failed client authentications. Applies
/// live on reload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthThrottleSettings {
    #[serde(deserialize_with = "de_bool")]
    pub enabled: bool,
    /// Failures (per client id, per peer address) before back-off starts.
    #[serde(deserialize_with = "de_num")]
    pub threshold: u64,
    /// First back-off; it doubles with every further failure.
    #[serde(deserialize_with = "de_num")]
    pub base_secs: u64,
    /// Longest back-off.
    #[serde(deserialize_with = "de_num")]
    pub max_secs: u64,
    /// Failures are forgotten this long after the last one.
    #[serde(deserialize_with = "de_num")]
    pub reset_secs: u64,
}

impl Default for AuthThrottleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 10,
            base_secs: 1,
            max_secs: 60,
            reset_secs: 900,
        }
    }
}

/// `[authorization]`: the authorization-code flow's delegated login.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationSettings {
    /// The login app's page; the browser is sent there with `login_challenge`.
    pub login_url: Option<String>,
    /// How long the login app has to accept or reject a request.
    #[serde(deserialize_with = "de_num")]
    pub challenge_ttl_secs: u64,
    /// `sha256:<64 hex>` of the login app's bearer secret (`tokend
    /// hash-secret`): `tokend.v1.AuthorizationService` answers only callers
    /// presenting it, since whoever accepts a login chooses the user a token
    /// is issued for. Required with `login_url`.
    pub login_app_token_hash: Option<String>,
}

impl Default for AuthorizationSettings {
    fn default() -> Self {
        Self {
            login_url: None,
            challenge_ttl_secs: 600,
            login_app_token_hash: None,
        }
    }
}

/// `[discovery]`: what the RFC 8414 metadata document advertises beyond
/// what tokend derives itself.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// `scopes_supported`, as the operator chooses to publish it; empty (the
    /// default) leaves it out, so the metadata does not list every client's
    /// scopes to anyone who asks.
    pub scopes_supported: Vec<String>,
    /// RFC 8705 5: the base URL (`https://mtls.auth.example`) of a host
    /// that serves the token, introspection and revocation endpoints with
    /// client certificates, when it is not the issuer's host; discovery then
    /// lists `mtls_endpoint_aliases`. Unset when one listener serves both.
    pub mtls_endpoint_base_url: Option<String>,
}

/// `[admin]`: the operator listener (off unless `listen` is set) and the
/// SHA-256 hash of its bearer secret.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    pub listen: Option<String>,
    /// `sha256:<64 hex>` of the admin bearer secret (`tokend hash-secret`).
    pub token_hash: Option<String>,
}

/// The configuration, parsed: what a running tokend is built from.
pub struct Settings {
    /// The file as written (paths resolved), kept to compare with the next
    /// reload and to know which files to watch.
    pub file: Config,
    pub boot: Boot,
    pub live: Live,
}

/// What is bound at start; a change needs a restart.
pub struct Boot {
    pub oauth: oauth::Settings,
    pub http_listen: SocketAddr,
    pub max_body_bytes: usize,
    pub grpc_listen: SocketAddr,
    pub grpc_max_message_bytes: usize,
    pub admin: Option<Admin>,
    /// The login app's bearer secret (`[authorization] login_app_token_hash`).
    pub login_app_token: Option<[u8; 32]>,
    pub store: StoreConfig,
    pub tls: Option<Tls>,
    pub tls_reload_check: Duration,
    pub server: ServerLimits,
    pub log: LogSettings,
    /// `[telemetry]`: trace export, when on.
    pub telemetry: Option<TraceExport>,
}

/// `[admin]`, parsed.
pub struct Admin {
    pub listen: SocketAddr,
    /// Without it the admin listener serves `/metrics` and probes only.
    pub token: Option<[u8; 32]>,
}

/// `[server]`, parsed.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    pub shutdown_grace: Duration,
    pub drain_delay: Duration,
    /// `None`: reload on SIGHUP only.
    pub reload_poll: Option<Duration>,
    pub header_read_timeout: Duration,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub max_connections: usize,
    pub max_concurrent_requests_per_peer: usize,
    pub max_concurrent_streams: u32,
    pub body_read_timeout: Duration,
}

/// What a reload swaps into the running core.
pub struct Live {
    pub clients: Registry,
    /// `None`: no `[signing] key_file`, so the server makes an ephemeral key
    /// (and a reload keeps the running one).
    pub keys: Option<KeySet>,
    pub limits: LimitPolicy,
    /// `[[trusted_issuers]]`, validated; [`crate::federation::Federation`]
    /// attaches their keys to `clients`.
    pub trusted_issuers: Vec<crate::federation::IssuerSpec>,
}

/// Reads, overrides and parses the configuration: [`Config::load`] then
/// [`Config::parse`]. The error lists every problem, each naming its key.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, Problems> {
    let cfg = Config::load(path, env).map_err(|e| Problems(vec![format!("{e:#}")]))?;
    cfg.parse()
}

/// Every problem found in a configuration, each naming its key.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid configuration:")?;
        for p in &self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn size(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn listen_addr(key: &str, addr: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    addr.parse()
        .map_err(|_| problems.push(format!("{key}: {addr:?} is not an IP:port address")))
        .ok()
}

/// A bearer secret's `sha256:` hash, as its SHA-256 digest.
fn secret_hash(key: &str, hash: Option<&str>, problems: &mut Vec<String>) -> Option<[u8; 32]> {
    let h = hash?;
    let parsed = SecretHash::parse_sha256(h);
    if parsed.is_none() {
        problems.push(format!("{key}: must be sha256:<64 hex digits>"));
    }
    parsed
}

/// An absolute `http(s)` URL with a host and no query or fragment.
fn check_url(key: &str, url: &str, allow_path: bool) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        let host = r.split('/').next().unwrap_or("");
        !host.is_empty()
            && !r.contains('#')
            && (allow_path || !r.contains('?'))
            && !r.chars().any(|c| c.is_whitespace() || c.is_control())
    });
    if ok {
        Ok(())
    } else if allow_path {
        Err(format!(
            "{key}: {url:?} must be an absolute http(s) URL without a fragment"
        ))
    } else {
        Err(format!(
            "{key}: {url:?} must be an absolute http(s) URL without a query or fragment"
        ))
    }
}

/// Sections whose scalar keys env variables may override.
const SECTIONS: &[&str] = &[
    "http",
    "grpc",
    "store",
    "tokens",
    "signing",
    "log",
    "telemetry",
    "server",
    "authorization",
    "admin",
    "tls",
    "rate_limit",
    "auth_throttle",
    "revocation_feed",
    "client_assertion",
];
const TOP_LEVEL: &[&str] = &["issuer", "clients_file"];
/// Env variables read elsewhere (secrets), never mapped onto the file.
/// (`TOKEND_ADMIN_ADDR`/`TOKEND_ADMIN_TOKEN` belong to the `tokend admin` CLI.)
const RESERVED_ENV: &[&str] = &[
    "TOKEND_CONFIG",
    "TOKEND_STORE_PASSWORD",
    "TOKEND_STORE_SENTINEL_PASSWORD",
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
        let secret_env = |name: &str| {
            env.iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| StorePassword(secrecy::SecretString::from(v.clone())))
        };
        let otel_env: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| k.starts_with("OTEL_"))
            .cloned()
            .collect();
        let store_password = secret_env("TOKEND_STORE_PASSWORD");
        let sentinel_password = secret_env("TOKEND_STORE_SENTINEL_PASSWORD");
        apply_env(&mut table, env)?;
        let mut cfg: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                anyhow::anyhow!("{origin}: {path}: {}", inner.message())
            })?;
        cfg.store.password = store_password;
        cfg.store.sentinel_password = sentinel_password;
        cfg.telemetry.apply_otel_env(&otel_env);
        if let Some(extra) = cfg.clients_file.clone() {
            let extra = resolve(path, &extra);
            cfg.clients.extend(load_clients_file(&extra)?);
            cfg.clients_file = Some(extra);
        }
        // A client's (or trusted issuer's) JWK Set file is read with the rest
        // (and again on every reload); an unreadable one is reported by
        // check-config.
        for c in &mut cfg.clients {
            read_jwks_file_of(path, &mut c.jwks_file, &mut c.jwks_file_text);
        }
        for t in &mut cfg.trusted_issuers {
            read_jwks_file_of(path, &mut t.jwks_file, &mut t.jwks_file_text);
            for f in [&mut t.bearer_token_file, &mut t.ca_file] {
                if let Some(p) = f.take() {
                    *f = Some(resolve(path, &p));
                }
            }
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

    /// Checks everything that can be checked without binding ports, or
    /// returns every problem found (not just the first).
    pub fn validate(&self) -> Vec<String> {
        match self.clone().parse() {
            Ok(_) => Vec::new(),
            Err(Problems(p)) => p,
        }
    }

    /// Parses every section into the typed settings, reading the files the
    /// configuration names (keys, TLS material, the store's certificates)
    /// exactly once.
    pub fn parse(self) -> Result<Settings, Problems> {
        let mut problems = Vec::new();
        let p = &mut problems;
        if let Err(e) = check_url("issuer", &self.issuer, false) {
            p.push(e);
        }
        let http_listen = listen_addr("http.listen", &self.http.listen, p);
        if let Err(e) = check_path_prefix(&self.http.path_prefix) {
            p.push(e);
        }
        let grpc_listen = listen_addr("grpc.listen", &self.grpc.listen, p);
        let admin = match &self.admin.listen {
            Some(addr) => {
                let listen = listen_addr("admin.listen", addr, p);
                let token = secret_hash("admin.token_hash", self.admin.token_hash.as_deref(), p);
                listen.map(|listen| Admin { listen, token })
            }
            None => {
                if self.admin.token_hash.is_some() {
                    p.push("admin.token_hash: needs admin.listen (the admin API is served on the admin listener only)".into());
                }
                None
            }
        };
        for (key, v) in [
            ("http.max_body_bytes", self.http.max_body_bytes),
            ("grpc.max_message_bytes", self.grpc.max_message_bytes),
            ("tokens.access_ttl_secs", self.tokens.access_ttl_secs),
            ("tokens.code_ttl_secs", self.tokens.code_ttl_secs),
            (
                "authorization.challenge_ttl_secs",
                self.authorization.challenge_ttl_secs,
            ),
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
            (
                "server.max_concurrent_requests_per_peer",
                self.server.max_concurrent_requests_per_peer,
            ),
            (
                "server.max_concurrent_streams",
                self.server.max_concurrent_streams,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
            ),
        ] {
            if v == 0 {
                p.push(format!("{key}: must be positive"));
            }
        }
        let login_app_token = secret_hash(
            "authorization.login_app_token_hash",
            self.authorization.login_app_token_hash.as_deref(),
            p,
        );
        match &self.authorization.login_url {
            Some(u) => {
                if let Err(e) = check_url("authorization.login_url", u, true) {
                    p.push(e);
                }
                if self.authorization.login_app_token_hash.is_none() {
                    p.push(
                        "authorization.login_app_token_hash: required with login_url (the login app's \
                         bearer secret for tokend.v1.AuthorizationService; hash it with `tokend hash-secret`)"
                            .into(),
                    );
                }
            }
            None => {
                if self
                    .clients
                    .iter()
                    .any(|c| c.grant_types.iter().any(|g| g == "authorization_code"))
                {
                    p.push(
                        "authorization.login_url: required when a client has the authorization_code grant"
                            .into(),
                    );
                }
            }
        }
        if self.auth_throttle.enabled && self.auth_throttle.threshold == 0 {
            p.push("auth_throttle.threshold: must be positive".into());
        }
        if let Some(u) = &self.discovery.mtls_endpoint_base_url
            && (!u.starts_with("https://") || u.contains(['?', '#', ' ']))
        {
            p.push(
                "discovery.mtls_endpoint_base_url: must be an https:// URL without query or fragment"
                    .into(),
            );
        }
        if self.client_assertion.max_lifetime_secs == 0 {
            p.push("client_assertion.max_lifetime_secs: must be positive".into());
        }
        if self.auth_throttle.max_secs < self.auth_throttle.base_secs {
            p.push("auth_throttle.max_secs: must be at least base_secs".into());
        }
        let store = self.store.parse().map_err(|e| p.extend(e)).ok();
        let tls = self.tls.load().map_err(|e| p.extend(e)).ok().flatten();
        if let Err(e) = self.log.check() {
            p.push(e);
        }
        p.extend(self.revocation_feed.check());
        let telemetry = self.telemetry.parse().map_err(|e| p.extend(e)).ok();
        let keys = self.signing.load().map_err(|e| p.extend(e)).ok();
        let mut seen = BTreeMap::new();
        for (i, c) in self.clients.iter().enumerate() {
            if let Some(j) = seen.insert(c.client_id.clone(), i) {
                p.push(format!(
                    "clients[{i}].client_id: {:?} is also clients[{j}]",
                    c.client_id
                ));
            }
            if let Err(errs) = c.validate() {
                p.extend(
                    errs.into_iter()
                        .map(|e| format!("clients[{i}] ({}): {e}", c.client_id)),
                );
            }
        }
        let trusted_issuers = self.trusted_issuers(p);
        let clients = if problems.is_empty() {
            Registry::new(&self.clients)
                .map_err(|e| problems.extend(e))
                .ok()
        } else {
            None
        };
        let (
            Some(http_listen),
            Some(grpc_listen),
            Some(store),
            Some(keys),
            Some(clients),
            Some(telemetry),
            true,
        ) = (
            http_listen,
            grpc_listen,
            store,
            keys,
            clients,
            telemetry,
            problems.is_empty(),
        )
        else {
            return Err(Problems(problems));
        };
        let s = &self.server;
        let boot = Boot {
            oauth: oauth::Settings {
                issuer: self.issuer.clone(),
                access_ttl: secs(self.tokens.access_ttl_secs),
                refresh_ttl: match self.tokens.refresh_ttl_secs {
                    0 => None,
                    s => Some(secs(s)),
                },
                code_ttl: secs(self.tokens.code_ttl_secs),
                leeway_secs: i64::try_from(self.tokens.leeway_secs).unwrap_or(i64::MAX),
                assertion_max_lifetime_secs: i64::try_from(self.client_assertion.max_lifetime_secs)
                    .unwrap_or(i64::MAX),
                login_url: self.authorization.login_url.clone(),
                challenge_ttl: secs(self.authorization.challenge_ttl_secs),
                scopes_supported: self.discovery.scopes_supported.clone(),
                mtls: tokend_core::oauth::mtls::MtlsSettings {
                    endpoint_base: self
                        .discovery
                        .mtls_endpoint_base_url
                        .as_ref()
                        .map(|u| u.trim_end_matches('/').to_owned()),
                    ..self.tls.mtls()
                },
                path_prefix: self.http.path_prefix.clone(),
                feed: self.revocation_feed.parse(),
            },
            http_listen,
            max_body_bytes: size(self.http.max_body_bytes),
            grpc_listen,
            grpc_max_message_bytes: size(self.grpc.max_message_bytes),
            admin,
            login_app_token,
            store,
            tls,
            tls_reload_check: secs(self.tls.reload_check_secs.max(1)),
            server: ServerLimits {
                shutdown_grace: secs(s.shutdown_grace_secs),
                drain_delay: secs(s.drain_delay_secs),
                reload_poll: (s.reload_poll_secs > 0).then(|| secs(s.reload_poll_secs)),
                header_read_timeout: secs(s.header_read_timeout_secs),
                request_timeout: secs(s.request_timeout_secs),
                max_concurrent_requests: size(s.max_concurrent_requests),
                max_connections: size(s.max_connections),
                max_concurrent_requests_per_peer: size(s.max_concurrent_requests_per_peer),
                max_concurrent_streams: u32::try_from(s.max_concurrent_streams).unwrap_or(u32::MAX),
                body_read_timeout: secs(s.body_read_timeout_secs),
            },
            log: self.log.clone(),
            telemetry,
        };
        let live = Live {
            clients,
            keys,
            limits: self.limits(),
            trusted_issuers,
        };
        Ok(Settings {
            file: self,
            boot,
            live,
        })
    }

    /// `[[trusted_issuers]]`, each checked, and every client's
    /// `federated_identities` naming one of them.
    fn trusted_issuers(&self, p: &mut Vec<String>) -> Vec<crate::federation::IssuerSpec> {
        p.extend(tokend_core::oauth::federation::check_unique(
            &self.trusted_issuers,
        ));
        let mut out = Vec::new();
        for (i, t) in self.trusted_issuers.iter().enumerate() {
            match crate::federation::IssuerSpec::new(t, &self.issuer) {
                Ok(spec) => out.push(spec),
                Err(errs) => p.extend(
                    errs.into_iter()
                        .map(|e| format!("trusted_issuers[{i}] ({}): {e}", t.issuer)),
                ),
            }
        }
        for (i, c) in self.clients.iter().enumerate() {
            for (j, f) in c.federated_identities.iter().enumerate() {
                if !self.trusted_issuers.iter().any(|t| t.issuer == f.issuer) {
                    p.push(format!(
                        "clients[{i}] ({}): federated_identities[{j}].issuer: {:?} is not a [[trusted_issuers]] issuer",
                        c.client_id, f.issuer
                    ));
                }
            }
        }
        out
    }

    /// `[rate_limit]` and `[auth_throttle]` as the core applies them.
    fn limits(&self) -> LimitPolicy {
        let t = &self.auth_throttle;
        LimitPolicy {
            rate_limit: RateLimit {
                per_sec: self.rate_limit.per_sec,
                burst: u32::try_from(self.rate_limit.burst).unwrap_or(u32::MAX),
            },
            throttle: ThrottlePolicy {
                enabled: t.enabled,
                threshold: u32::try_from(t.threshold).unwrap_or(u32::MAX),
                base: secs(t.base_secs),
                max: secs(t.max_secs),
                reset: secs(t.reset_secs),
            },
        }
    }
}

/// Names of the restart-only keys whose value differs between the running
/// file and `new`. Every section is destructured without `..`: a key added to
/// a section fails to compile here until it is either listed as restart-only
/// or marked live (and applied by the reload).
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    macro_rules! section {
        ($prefix:literal, $old:expr, $new:expr, $Ty:ident { $($f:ident),* $(,)? }) => {{
            let $Ty { $($f),* } = $new;
            $( if $old.$f != *$f { out.push(concat!($prefix, stringify!($f))); } )*
        }};
    }
    let Config {
        issuer,
        clients_file: _, // live: the registry is rebuilt
        http,
        grpc,
        store,
        tokens,
        signing,
        log,
        telemetry,
        server,
        authorization,
        admin,
        tls,
        rate_limit: _,    // live: Core::replace_limits
        auth_throttle: _, // live: Core::replace_limits
        discovery,
        revocation_feed,
        client_assertion,
        trusted_issuers: _, // live: rebuilt with the clients (JWKS caches kept)
        clients: _,         // live: Core::replace_clients
    } = new;
    section!(
        "client_assertion.",
        old.client_assertion,
        client_assertion,
        ClientAssertionSettings { max_lifetime_secs }
    );
    if old.revocation_feed != *revocation_feed {
        out.push("revocation_feed");
    }
    if old.issuer != *issuer {
        out.push("issuer");
    }
    section!(
        "http.",
        old.http,
        http,
        HttpSettings {
            listen,
            max_body_bytes,
            path_prefix
        }
    );
    section!(
        "grpc.",
        old.grpc,
        grpc,
        GrpcSettings {
            listen,
            max_message_bytes
        }
    );
    section!(
        "store.",
        old.store,
        store,
        StoreSettings {
            url,
            key_prefix,
            timeout_ms,
            tls_ca_file,
            tls_cert_file,
            tls_key_file,
            password,
            sentinel_username,
            sentinel_password,
            replica_acks,
            replica_ack_timeout_ms,
            allow_eviction,
        }
    );
    section!(
        "tokens.",
        old.tokens,
        tokens,
        TokenSettings {
            access_ttl_secs,
            refresh_ttl_secs,
            code_ttl_secs,
            leeway_secs,
        }
    );
    out.extend(crate::signing::restart_only_changes(&old.signing, signing));
    section!("log.", old.log, log, LogSettings { format, level });
    section!(
        "telemetry.",
        old.telemetry,
        telemetry,
        TelemetrySettings {
            otlp_endpoint,
            sampling_ratio,
            service_name,
            resource_attributes,
            max_queue_size,
        }
    );
    section!(
        "server.",
        old.server,
        server,
        ServerSettings {
            shutdown_grace_secs,
            drain_delay_secs,
            reload_poll_secs,
            header_read_timeout_secs,
            request_timeout_secs,
            max_concurrent_requests,
            max_connections,
            max_concurrent_requests_per_peer,
            max_concurrent_streams,
            body_read_timeout_secs,
        }
    );
    section!(
        "authorization.",
        old.authorization,
        authorization,
        AuthorizationSettings {
            login_url,
            challenge_ttl_secs,
            login_app_token_hash,
        }
    );
    section!(
        "admin.",
        old.admin,
        admin,
        AdminSettings { listen, token_hash }
    );
    section!(
        "discovery.",
        old.discovery,
        discovery,
        DiscoverySettings {
            scopes_supported,
            mtls_endpoint_base_url,
        }
    );
    // The TLS files' content reloads on its own (transport::tls); which files,
    // and how often they are checked, is bound at start.
    section!(
        "tls.",
        old.tls,
        tls,
        TlsSettings {
            cert_file,
            key_file,
            client_ca_file,
            client_auth,
            self_signed_client_certs,
            reload_check_secs,
        }
    );
    out
}

fn resolve(config_path: Option<&Path>, p: &Path) -> PathBuf {
    match config_path.and_then(Path::parent) {
        Some(dir) if p.is_relative() && !dir.as_os_str().is_empty() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// A JWK Set is a few KiB at most; a larger file is a mistake, not keys.
const MAX_JWKS_FILE: u64 = 256 * 1024;

/// Resolves a `jwks_file` against the config file's folder and reads it
/// into `text` (or why it could not be read).
fn read_jwks_file_of(
    config_path: Option<&Path>,
    file: &mut Option<PathBuf>,
    text: &mut Option<Result<String, String>>,
) {
    if let Some(f) = file.take() {
        let f = resolve(config_path, &f);
        *text = Some(read_jwks_file(&f).map_err(|e| format!("cannot read {}: {e}", f.display())));
        *file = Some(f);
    }
}

fn read_jwks_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_JWKS_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_JWKS_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_JWKS_FILE} bytes"
        )));
    }
    Ok(text)
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
/// (Only `SERVICE_HOST` and `SERVICE_PORT[_NAME]`: `telemetry.service_name`
/// is a real key.)
fn is_service_link(key: &str) -> bool {
    key == "service_host"
        || key == "service_port"
        || key.starts_with("service_port_")
        || key == "port"
        || key.starts_with("port_")
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

    #[test]
    fn validation_gaps_are_closed() {
        let problems = |pairs: &[(&str, &str)]| Config::load(None, env(pairs)).unwrap().validate();
        for bad in [
            "notaurl",
            "ftp://x",
            "https://",
            "https://a b",
            "https://x/?q=1",
            "https://x/#f",
        ] {
            let p = problems(&[("TOKEND_ISSUER", bad)]);
            assert!(p.iter().any(|p| p.starts_with("issuer: ")), "{bad}: {p:?}");
        }
        assert!(problems(&[("TOKEND_ISSUER", "https://auth.example/tenant")]).is_empty());
        for bad in ["apis", "/apis/", "/a//b", "/a/../b", "/a b", "/a?x", "//x"] {
            let p = problems(&[("TOKEND_HTTP_PATH_PREFIX", bad)]);
            assert!(
                p.iter().any(|p| p.starts_with("http.path_prefix: ")),
                "{bad}: {p:?}"
            );
        }
        for good in ["", "/apis/v2", "/api", "/a.b/c-d_e~f"] {
            assert!(
                problems(&[("TOKEND_HTTP_PATH_PREFIX", good)]).is_empty(),
                "{good}"
            );
        }
        let hash = tokend_core::oauth::client::SecretHash::sha256_of("s");
        let p = problems(&[("TOKEND_ADMIN_TOKEN_HASH", hash.as_str())]);
        assert!(
            p[0].starts_with("admin.token_hash: needs admin.listen"),
            "{p:?}"
        );
        assert!(
            problems(&[
                ("TOKEND_ADMIN_TOKEN_HASH", hash.as_str()),
                ("TOKEND_ADMIN_LISTEN", "127.0.0.1:0"),
            ])
            .is_empty()
        );
        let p = problems(&[
            ("TOKEND_ADMIN_LISTEN", "127.0.0.1:0"),
            ("TOKEND_ADMIN_TOKEN_HASH", "x"),
        ]);
        assert_eq!(p, ["admin.token_hash: must be sha256:<64 hex digits>"]);
        for (var, key) in [
            (
                "TOKEND_SERVER_MAX_CONCURRENT_STREAMS",
                "server.max_concurrent_streams",
            ),
            (
                "TOKEND_SERVER_MAX_CONCURRENT_REQUESTS_PER_PEER",
                "server.max_concurrent_requests_per_peer",
            ),
            (
                "TOKEND_SERVER_BODY_READ_TIMEOUT_SECS",
                "server.body_read_timeout_secs",
            ),
        ] {
            assert_eq!(
                problems(&[(var, "0")]),
                [format!("{key}: must be positive")]
            );
        }
    }

    #[test]
    fn parse_errors_name_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[http]\nlisten = 5\n").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), Vec::new()).unwrap_err());
        assert_eq!(err.matches("bad.toml").count(), 1, "{err}");
        std::fs::write(&p, "not toml [").unwrap();
        let err = format!("{:#}", Config::load(Some(&p), Vec::new()).unwrap_err());
        assert_eq!(err.matches("bad.toml").count(), 1, "{err}");
    }

    #[test]
    fn every_scalar_key_takes_an_env_override() {
        let cfg = Config::load(
            None,
            env(&[
                ("TOKEND_AUTH_THROTTLE_ENABLED", "false"),
                ("TOKEND_RATE_LIMIT_PER_SEC", "2.5"),
                ("TOKEND_TLS_RELOAD_CHECK_SECS", "9"),
            ]),
        )
        .unwrap();
        assert!(!cfg.auth_throttle.enabled);
        assert_eq!(cfg.rate_limit.per_sec, 2.5);
        assert_eq!(cfg.tls.reload_check_secs, 9);
        let err = Config::load(None, env(&[("TOKEND_AUTH_THROTTLE_ENABLED", "no")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("auth_throttle.enabled"),
            "{err:#}"
        );
    }

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
            assert_eq!(pw.0.expose_secret(), "hunter2");
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
