//! The OAuth core: every protocol rule lives here, and nothing here knows
//! about gRPC or HTTP. Transports turn wire requests into the plain types of
//! this module ([`TokenRequest`], [`client::Credentials`]) and turn results or
//! [`OAuthError`]s back into wire responses.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub mod client;
pub mod error;
pub mod grant;
pub mod introspect;
pub mod limits;
pub mod scope;

pub use client::{Client, Credentials, PresentedVia, Registry};
pub use error::OAuthError;
pub use grant::{TokenRequest, TokenResponse};
pub use introspect::Introspection;

use crate::store::SharedStore;
use crate::token::KeySet;

/// Token lifetimes and issuer, from `[tokens]` and `issuer`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub access_ttl: Duration,
    /// `None` means refresh tokens never expire.
    pub refresh_ttl: Option<Duration>,
    pub code_ttl: Duration,
    pub leeway_secs: i64,
    /// Default per-client rate limit (`[rate_limit]`).
    pub rate_limit: limits::RateLimit,
    /// Secret-guessing back-off (`[auth_throttle]`).
    pub throttle: limits::ThrottlePolicy,
}

impl Settings {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            issuer: cfg.issuer.clone(),
            access_ttl: Duration::from_secs(cfg.tokens.access_ttl_secs),
            refresh_ttl: match cfg.tokens.refresh_ttl_secs {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            code_ttl: Duration::from_secs(cfg.tokens.code_ttl_secs),
            leeway_secs: i64::try_from(cfg.tokens.leeway_secs).unwrap_or(i64::MAX),
            rate_limit: limits::RateLimit {
                per_sec: cfg.rate_limit.per_sec,
                burst: u32::try_from(cfg.rate_limit.burst).unwrap_or(u32::MAX),
            },
            throttle: limits::ThrottlePolicy {
                enabled: cfg.auth_throttle.enabled,
                threshold: u32::try_from(cfg.auth_throttle.threshold).unwrap_or(u32::MAX),
                base: Duration::from_secs(cfg.auth_throttle.base_secs),
                max: Duration::from_secs(cfg.auth_throttle.max_secs),
                reset: Duration::from_secs(cfg.auth_throttle.reset_secs),
            },
        }
    }
}

/// The token service core, shared by both transports. Clients and keys sit
/// behind `ArcSwap` so a reload replaces them atomically: a request sees either
/// the old set or the new one, never a mix.
pub struct Core {
    settings: Settings,
    clients: ArcSwap<Registry>,
    keys: ArcSwap<KeySet>,
    store: SharedStore,
}

impl Core {
    pub fn new(settings: Settings, clients: Registry, keys: KeySet, store: SharedStore) -> Self {
        Self {
            settings,
            clients: ArcSwap::from_pointee(clients),
            keys: ArcSwap::from_pointee(keys),
            store,
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub fn clients(&self) -> Arc<Registry> {
        self.clients.load_full()
    }

    /// Replaces the client registry (hot reload).
    pub fn replace_clients(&self, clients: Registry) {
        self.clients.store(Arc::new(clients));
    }

    /// Replaces the key set (hot reload / rotation).
    pub fn replace_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
    }

    /// RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> serde_json::Value {
        let iss = self.settings.issuer.trim_end_matches('/');
        let registry = self.clients();
        let mut scopes: Vec<&str> = registry
            .all()
            .flat_map(|c| c.scopes.iter().map(String::as_str))
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        let auth_methods = ["client_secret_basic", "client_secret_post"];
        serde_json::json!({
            "issuer": self.settings.issuer,
            "token_endpoint": format!("{iss}/oauth/token"),
            "introspection_endpoint": format!("{iss}/oauth/introspect"),
            "revocation_endpoint": format!("{iss}/oauth/revoke"),
            "jwks_uri": format!("{iss}/.well-known/jwks.json"),
            "grant_types_supported": ["client_credentials"],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": auth_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": auth_methods,
            "scopes_supported": scopes,
            // Not registered by RFC 8414; names the JWS algorithms of the
            // access tokens so verifiers can pin them.
            "access_token_signing_alg_values_supported": self.keys().algorithms(),
        })
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
