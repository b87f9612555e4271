//! The OAuth core: every protocol rule lives here, and nothing here knows
//! about gRPC or HTTP. Transports turn wire requests into the plain types of
//! this module ([`TokenRequest`], [`client::Credentials`]) and turn results or
//! [`OAuthError`]s back into wire responses.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub mod assertion;
pub mod authorize;
pub mod client;
pub mod endpoints;
pub mod error;
pub mod exchange;
pub mod federation;
pub mod grant;
pub mod introspect;
pub mod lifecycle;
pub mod limits;
pub mod mtls;
pub mod oob;
pub mod params;
pub mod refresh;
pub mod scope;

pub use authorize::AuthorizationInfo;
pub use client::{Client, Credentials, PresentedVia, Registry};
pub use error::OAuthError;
pub use grant::{TokenRequest, TokenResponse};
pub use introspect::{ActiveToken, Introspection, RefreshInfo};
pub use lifecycle::{AdminError, ClientState, DisabledClients};

use crate::store::SharedStore;
use client::GrantType;
use tokend_token::KeySet;
use tokend_token::cache::VerifiedCache;

/// Token lifetimes, issuer and the login app's page: fixed for the life of the
/// process (a change needs a restart). The limits that apply live are in
/// [`limits::LimitPolicy`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub access_ttl: Duration,
    /// `None` means refresh tokens never expire.
    pub refresh_ttl: Option<Duration>,
    pub code_ttl: Duration,
    pub leeway_secs: i64,
    /// `[client_assertion] max_lifetime_secs`: the longest-lived client
    /// assertion accepted.
    pub assertion_max_lifetime_secs: i64,
    /// `[authorization] login_url`: where the browser meets the login app.
    pub login_url: Option<String>,
    /// How long a login challenge waits for the login app.
    pub challenge_ttl: Duration,
    /// `scopes_supported` in the metadata; empty leaves it out.
    pub scopes_supported: Vec<String>,
    /// `[http] path_prefix`: the OAuth endpoints are served (and advertised)
    /// under it. Empty, or `/a/b` without a trailing `/`.
    pub path_prefix: String,
    /// `[revocation_feed]`: the revocation log's bounds and the watchers'.
    pub feed: crate::feed::FeedSettings,
    /// TLS client certificates (RFC 8705), as discovery advertises them.
    pub mtls: mtls::MtlsSettings,
}

impl Settings {
    /// The public URL of the HTTP endpoint `path` (one of [`endpoints`]).
    pub fn endpoint_url(&self, path: &str) -> String {
        format!(
            "{}{}{path}",
            self.issuer.trim_end_matches('/'),
            self.path_prefix
        )
    }

    /// The mTLS alias of the HTTP endpoint `path`, when
    /// `[discovery] mtls_endpoint_base_url` is set.
    pub fn mtls_endpoint_url(&self, path: &str) -> Option<String> {
        let base = self.mtls.endpoint_base.as_deref()?;
        Some(format!(
            "{}{}{path}",
            base.trim_end_matches('/'),
            self.path_prefix
        ))
    }
}

/// The token service core, shared by both transports. Clients and keys sit
/// behind `ArcSwap` so a reload replaces them atomically: a request sees either
/// the old set or the new one, never a mix.
pub struct Core {
    settings: Settings,
    /// Rate limits and the secret-guessing back-off, replaced on reload.
    limits: ArcSwap<limits::LimitPolicy>,
    clients: ArcSwap<Registry>,
    keys: ArcSwap<KeySet>,
    store: SharedStore,
    /// Per-replica copy of the store's disabled flags, for the token path
    /// (see [`lifecycle`]).
    disabled: DisabledClients,
    /// Tokens already verified, so repeated introspection skips the
    /// signature check (revocation is still asked of the store every time).
    verified: VerifiedCache,
    /// Per-replica memory of established callers, so their authentications
    /// skip the secret-guessing defence's store read (see [`limits`]).
    known_callers: limits::KnownCallers,
    guess_locks: limits::GuessLocks,
    /// Wakes this replica's feed hub after a local append.
    pub(crate) feed_poke: Arc<tokio::sync::Notify>,
}

impl Core {
    pub fn new(
        settings: Settings,
        limits: limits::LimitPolicy,
        clients: Registry,
        keys: KeySet,
        store: SharedStore,
    ) -> Self {
        Self {
            settings,
            limits: ArcSwap::from_pointee(limits),
            clients: ArcSwap::from_pointee(clients),
            keys: ArcSwap::from_pointee(keys),
            store,
            disabled: DisabledClients::default(),
            verified: VerifiedCache::default(),
            known_callers: limits::KnownCallers::default(),
            guess_locks: limits::GuessLocks::default(),
            feed_poke: Arc::default(),
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

    /// The limits in force.
    pub fn limits(&self) -> Arc<limits::LimitPolicy> {
        self.limits.load_full()
    }

    /// Replaces the rate limits and the secret-guessing back-off (hot reload).
    pub fn replace_limits(&self, limits: limits::LimitPolicy) {
        self.limits.store(Arc::new(limits));
    }

    /// Replaces the client registry (hot reload).
    pub fn replace_clients(&self, clients: Registry) {
        self.clients.store(Arc::new(clients));
    }

    /// Replaces the key set (hot reload / rotation).
    pub fn replace_keys(&self, keys: KeySet) {
        self.keys.store(Arc::new(keys));
        // A dropped key must stop verifying at once, cached tokens included.
        self.verified.clear();
    }

    /// RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> serde_json::Value {
        let url = |path| self.settings.endpoint_url(path);
        let mut auth_methods = vec![
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ];
        // RFC 8705 2.3: the certificate methods, when a listener takes
        // client certificates of that kind.
        let mtls = &self.settings.mtls;
        if mtls.chain_validated {
            auth_methods.push("tls_client_auth");
        }
        if mtls.self_signed {
            auth_methods.push("self_signed_tls_client_auth");
        }
        // Public clients (`none`) authenticate at the token and revocation
        // endpoints by client_id alone; introspection needs a secret or a key.
        let mut public_methods = auth_methods.clone();
        public_methods.push("none");
        let assertion_algs: Vec<&str> = tokend_token::assertion::AssertionAlg::ALL
            .iter()
            .map(|a| a.as_str())
            .collect();
        let grant_types: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
        let mut meta = serde_json::json!({
            "issuer": self.settings.issuer,
            "authorization_endpoint": url(endpoints::AUTHORIZE),
            "token_endpoint": url(endpoints::TOKEN),
            "introspection_endpoint": url(endpoints::INTROSPECT),
            "revocation_endpoint": url(endpoints::REVOKE),
            "jwks_uri": url(endpoints::JWKS),
            "grant_types_supported": grant_types,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            // RFC 9207: every authorization response names its issuer.
            "authorization_response_iss_parameter_supported": true,
            "token_endpoint_auth_methods_supported": public_methods,
            "introspection_endpoint_auth_methods_supported": auth_methods,
            "revocation_endpoint_auth_methods_supported": public_methods,
            // RFC 8414: the JWS algorithms of private_key_jwt assertions.
            "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
            "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
            "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
            // Not registered by RFC 8414; names the JWS algorithms of the
            // access tokens so verifiers can pin them.
            "access_token_signing_alg_values_supported": self.keys().algorithms(),
        });
        // Only what the operator chose to publish ([discovery]): listing
        // every client's scopes would tell anyone what the clients may do.
        if !self.settings.scopes_supported.is_empty() {
            meta["scopes_supported"] = serde_json::json!(self.settings.scopes_supported);
        }
        if mtls.enabled() {
            // RFC 8705 3.3: any client may ask for bound tokens
            // (`tls_client_certificate_bound_access_tokens` per client).
            meta["tls_client_certificate_bound_access_tokens"] = true.into();
        }
        if mtls.endpoint_base.is_some() {
            // RFC 8705 5: the endpoints that take client certificates, on
            // the host that asks for them.
            let alias = |path| self.settings.mtls_endpoint_url(path);
            meta["mtls_endpoint_aliases"] = serde_json::json!({
                "token_endpoint": alias(endpoints::TOKEN),
                "introspection_endpoint": alias(endpoints::INTROSPECT),
                "revocation_endpoint": alias(endpoints::REVOKE),
            });
        }
        meta
    }
}

/// Milliseconds since the Unix epoch.
/// Notes on the current span (a request's, when the service traces it) which
/// kind of token a request presents, by its shape: `refresh_token` or
/// `access_token` (docs/tracing.md). Never the token itself.
pub(crate) fn note_token_type(token: &str) {
    if token.is_empty() {
        return;
    }
    let kind = if refresh::refresh_gid(token).is_some() {
        "refresh_token"
    } else {
        "access_token"
    };
    tracing::Span::current().record("oauth.token_type", kind);
}

pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
