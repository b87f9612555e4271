//! Registered clients and client authentication.
//!
//! Secrets are never held in clear. Server-generated secrets (256 random bits)
//! are stored as SHA-256: brute-forcing 2^256 is hopeless, so a slow hash would
//! only cost throughput. Human-chosen secrets may use argon2id; their
//! verification runs off the async threads and successes are cached (keyed by a
//! SHA-256 of the presented secret, never the secret) so they are not a
//! throughput cliff. Digests are compared in constant time, and an unknown
//! client does the same work as a known one, so responses do not reveal which
//! client ids exist.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::OAuthError;
use super::federation::{FederatedIdentity, TrustedIssuers};
use super::mtls::{CertKey, CertificateRule, ClientCertificate, TlsSubject};
use super::scope;
use tokend_token::assertion::{AssertionKeys, JWT_BEARER, peek_issuer_subject};
use tokend_token::jwt::RESERVED_CLAIMS;

/// Grant types a client may be allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    AuthorizationCode,
    RefreshToken,
    /// RFC 8693 token exchange.
    TokenExchange,
}

/// RFC 8693's grant type URN.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

impl GrantType {
    /// Every grant this build implements (discovery metadata lists them).
    pub const ALL: [GrantType; 4] = [
        Self::ClientCredentials,
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::TokenExchange,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_credentials" => Some(Self::ClientCredentials),
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            TOKEN_EXCHANGE => Some(Self::TokenExchange),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::TokenExchange => TOKEN_EXCHANGE,
        }
    }
}

/// How a client authenticates at the token endpoint (RFC 8414 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `client_secret_basic` or `client_secret_post`, whichever it sends.
    #[default]
    ClientSecret,
    ClientSecretBasic,
    ClientSecretPost,
    /// Public client: no secret (authorization code with PKCE only).
    None,
    /// RFC 7523 2.2: a JWT signed with one of the client's registered keys
    /// (`jwks` or `jwks_file`); no secret.
    PrivateKeyJwt,
    /// RFC 8705 2.1: a TLS client certificate that chains to the client CA
    /// and carries the registered subject DN or SAN; no secret.
    TlsClientAuth,
    /// RFC 8705 2.2: a TLS client certificate (not chain-validated) whose
    /// public key is one of the client's `jwks`; no secret.
    SelfSignedTlsClientAuth,
}

impl AuthMethod {
    /// The RFC 8414 name(s) of the method.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecret => "client_secret_basic client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::None => "none",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::TlsClientAuth => "tls_client_auth",
            Self::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the client proves itself with its TLS client certificate.
    pub fn is_certificate(self) -> bool {
        matches!(self, Self::TlsClientAuth | Self::SelfSignedTlsClientAuth)
    }
}

/// A `[[clients]]` block as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    #[serde(default)]
    pub secret_hashes: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// `private_key_jwt`: the client's public keys, a JWK Set written inline
    /// (`jwks = { keys = [...] }`).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// `private_key_jwt`: a JSON JWK Set file (relative to the config file),
    /// re-read on every reload.
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// `tls_client_auth` (RFC 8705 2.1.2): exactly one of these four, the
    /// value the client's certificate must carry.
    #[serde(default)]
    pub tls_client_auth_subject_dn: Option<String>,
    #[serde(default)]
    pub tls_client_auth_san_dns: Option<String>,
    /// A SPIFFE ID (`spiffe://trust-domain/path`) or any URI SAN.
    #[serde(default)]
    pub tls_client_auth_san_uri: Option<String>,
    #[serde(default)]
    pub tls_client_auth_san_ip: Option<String>,
    /// RFC 8705 3: this client's access tokens are bound to the TLS client
    /// certificate of the request that obtains them (`cnf.x5t#S256`).
    #[serde(default)]
    pub tls_client_certificate_bound_access_tokens: bool,
    /// What `jwks_file` held when the configuration was loaded (read by the
    /// service's config loader, which resolves the path): the text, or why it
    /// could not be read.
    #[serde(skip)]
    pub jwks_file_text: Option<Result<String, String>>,
    /// `private_key_jwt`: workloads whose tokens from a trusted issuer
    /// (`[[trusted_issuers]]`) authenticate as this client.
    #[serde(default)]
    pub federated_identities: Vec<FederatedIdentity>,
    #[serde(default = "default_grants")]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub default_scopes: Vec<String>,
    #[serde(default)]
    pub audience: Vec<String>,
    #[serde(default)]
    pub access_ttl_secs: Option<u64>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub claims_in_response: bool,
    /// Overrides `[rate_limit] per_sec` for this client (0 = unlimited).
    #[serde(default, deserialize_with = "de_opt_f64")]
    pub rate_limit_per_sec: Option<f64>,
    /// Overrides `[rate_limit] burst` for this client.
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// Display name a login app shows on its consent page.
    #[serde(default)]
    pub client_name: Option<String>,
    /// The `sub` of this client's client_credentials tokens (default: the
    /// client_id).
    #[serde(default)]
    pub subject: Option<String>,
    /// What this client may introspect: `"own"` (tokens issued to it),
    /// `"audience"` (its own, and tokens whose `aud` names one of its
    /// `audience` values; the default) or `"any"`.
    #[serde(default)]
    pub introspection: Option<String>,
    /// The authorization-code flow may end on tokend's out-of-band page
    /// (`redirect_uri=urn:ietf:wg:oauth:2.0:oob`), which shows the code to
    /// copy instead of redirecting: for command-line tools.
    #[serde(default)]
    pub out_of_band: bool,
    /// May watch `tokend.v1.RevocationFeed` (a resource server verifying
    /// tokens locally). Off by default: the feed names revoked tokens,
    /// clients and subjects.
    #[serde(default)]
    pub revocation_feed: bool,
    /// Token exchange (RFC 8693): the audiences this client may ask for.
    /// Empty: no exchange rights, even with the grant type.
    #[serde(default)]
    pub token_exchange_audiences: Vec<String>,
    /// Token exchange: the clients whose tokens this client may exchange
    /// (the `client_id` of the subject token). Empty: any client's, as long
    /// as the token is addressed to this client.
    #[serde(default)]
    pub token_exchange_clients: Vec<String>,
    /// Token exchange: the subject token's extra claims (partner claims,
    /// login-app claims) carried into the exchanged token. Default: none.
    #[serde(default)]
    pub token_exchange_claims: Vec<String>,
}

/// Which tokens a client may introspect (`introspection` in its block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntrospectionPolicy {
    /// Only tokens issued to the client itself.
    Own,
    /// Its own tokens, and tokens whose `aud` includes one of the client's
    /// `audience` values (a resource server): the default, because a token's
    /// audience already sees the token.
    #[default]
    Audience,
    /// Any token (tokend's behaviour before the setting existed).
    Any,
}

impl IntrospectionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Own => "own",
            Self::Audience => "audience",
            Self::Any => "any",
        }
    }
}

/// The `redirect_uri` of the out-of-band flow (the code is shown on a page).
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

fn de_opt_f64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    crate::de::de_f64(d).map(Some)
}

fn default_grants() -> Vec<String> {
    vec!["client_credentials".into()]
}

/// A parsed secret hash.
#[derive(Clone)]
pub enum SecretHash {
    Sha256([u8; 32]),
    Argon2(Arc<str>),
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sha256(_) => "SecretHash::Sha256(..)",
            Self::Argon2(_) => "SecretHash::Argon2(..)",
        })
    }
}

impl SecretHash {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            let bytes = decode_hex(hex)
                .filter(|b| b.len() == 32)
                .ok_or("a sha256: hash must be 64 hex digits")?;
            let mut a = [0; 32];
            a.copy_from_slice(&bytes);
            Ok(Self::Sha256(a))
        } else if s.starts_with("$argon2") {
            argon2::password_hash::phc::PasswordHash::new(s)
                .map_err(|e| format!("invalid argon2 hash: {e}"))?;
            Ok(Self::Argon2(s.into()))
        } else {
            Err("unknown hash format; expected sha256:<hex> or an argon2id PHC string (from `tokend hash-secret`)".into())
        }
    }

    /// A bearer secret's hash (`[admin] token_hash`, `[authorization]
    /// login_app_token_hash`): only the `sha256:` form is accepted there.
    pub fn parse_sha256(s: &str) -> Option<[u8; 32]> {
        match Self::parse(s) {
            Ok(Self::Sha256(d)) => Some(d),
            _ => None,
        }
    }

    /// The `sha256:` hash of a secret, as `tokend hash-secret` prints it.
    pub fn sha256_of(secret: &str) -> String {
        format!(
            "sha256:{}",
            tokend_token::opaque::hex(&Sha256::digest(secret.as_bytes()))
        )
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A validated client.
#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub secret_hashes: Vec<SecretHash>,
    pub auth_method: AuthMethod,
    pub grant_types: HashSet<GrantType>,
    pub scopes: Vec<String>,
    pub default_scopes: Vec<String>,
    pub audience: Vec<String>,
    pub access_ttl_secs: Option<u64>,
    pub redirect_uris: Vec<String>,
    /// `private_key_jwt`: the keys its assertions verify with (empty for
    /// every other method).
    pub assertion_keys: AssertionKeys,
    /// `private_key_jwt`: the `(issuer, subject)` pairs whose federated
    /// tokens authenticate as this client.
    pub federated_identities: Vec<FederatedIdentity>,
    /// `tls_client_auth` / `self_signed_tls_client_auth`: what its
    /// certificate must be (`None` for every other method).
    pub certificate: Option<CertificateRule>,
    /// RFC 8705 3: its access tokens carry `cnf.x5t#S256`.
    pub certificate_bound_tokens: bool,
    pub claims: serde_json::Map<String, serde_json::Value>,
    pub claims_in_response: bool,
    /// Per-client rate limit overrides; `None` uses the `[rate_limit]` default.
    pub rate_limit_per_sec: Option<f64>,
    pub rate_limit_burst: Option<u32>,
    /// Display name for login apps (empty when unset).
    pub name: String,
    /// `sub` of client_credentials tokens.
    pub subject: String,
    pub introspection: IntrospectionPolicy,
    pub out_of_band: bool,
    pub revocation_feed: bool,
    pub token_exchange_audiences: Vec<String>,
    pub token_exchange_clients: Vec<String>,
    pub token_exchange_claims: Vec<String>,
}

impl Client {
    pub fn is_public(&self) -> bool {
        self.auth_method == AuthMethod::None
    }
    pub fn allows(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }
}

impl ClientConfig {
    /// The registered keys of a `private_key_jwt` client (exactly one of
    /// `jwks` and `jwks_file`); any key on another client is an error.
    fn assertion_keys(
        &self,
        key_based: bool,
        errs: &mut Vec<String>,
    ) -> (AssertionKeys, Option<serde_json::Value>) {
        let none = || (AssertionKeys::default(), None);
        let doc = match (&self.jwks, &self.jwks_file, key_based) {
            (None, None, false) => return none(),
            // A federated client may have no keys of its own.
            (None, None, true) if !self.federated_identities.is_empty() => return none(),
            (_, _, false) => {
                errs.push(
                    "jwks, jwks_file: only for token_endpoint_auth_method = \"private_key_jwt\" or \"self_signed_tls_client_auth\""
                        .into(),
                );
                return none();
            }
            (Some(_), Some(_), true) => {
                errs.push("jwks, jwks_file: give one or the other, not both".into());
                return none();
            }
            (None, None, true) => {
                errs.push(
                    "jwks: a private_key_jwt client needs its public keys (jwks or jwks_file) or federated_identities, a self_signed_tls_client_auth client its public keys (jwks or jwks_file)"
                        .into(),
                );
                return none();
            }
            (Some(doc), None, true) => ("jwks", doc.clone()),
            (None, Some(path), true) => {
                let parsed = match &self.jwks_file_text {
                    None => Err(format!("{} was not read", path.display())),
                    Some(Err(e)) => Err(e.clone()),
                    Some(Ok(text)) => serde_json::from_str::<serde_json::Value>(text)
                        .map_err(|e| format!("{}: not JSON ({e})", path.display())),
                };
                match parsed {
                    Ok(doc) => ("jwks_file", doc),
                    Err(e) => {
                        errs.push(format!("jwks_file: {e}"));
                        return none();
                    }
                }
            }
        };
        let (key, doc) = doc;
        match AssertionKeys::from_jwks(&doc) {
            Ok(keys) => (keys, Some(doc)),
            Err(e) => {
                errs.extend(e.into_iter().map(|e| format!("{key}: {e}")));
                none()
            }
        }
    }

    /// The certificate rule of a `tls_client_auth` or
    /// `self_signed_tls_client_auth` client; the RFC 8705 metadata on any
    /// other client is an error.
    fn certificate_rule(
        &self,
        method: AuthMethod,
        keys: &AssertionKeys,
        doc: Option<&serde_json::Value>,
        errs: &mut Vec<String>,
    ) -> Option<CertificateRule> {
        let given: Vec<(&str, &String)> = TlsSubject::KEYS
            .iter()
            .zip([
                &self.tls_client_auth_subject_dn,
                &self.tls_client_auth_san_dns,
                &self.tls_client_auth_san_uri,
                &self.tls_client_auth_san_ip,
            ])
            .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
            .collect();
        let names = TlsSubject::KEYS.join(", ");
        match method {
            AuthMethod::TlsClientAuth => match given.as_slice() {
                [(key, value)] => match TlsSubject::parse(key, value) {
                    Ok(s) => Some(CertificateRule::Subject(s)),
                    Err(e) => {
                        errs.push(format!("{key}: {e}"));
                        None
                    }
                },
                [] => {
                    errs.push(format!(
                        "token_endpoint_auth_method: a tls_client_auth client needs exactly one of {names}"
                    ));
                    None
                }
                _ => {
                    errs.push(format!("{names}: give exactly one"));
                    None
                }
            },
            _ if !given.is_empty() => {
                errs.push(format!(
                    "{}: only for token_endpoint_auth_method = \"tls_client_auth\"",
                    given[0].0
                ));
                None
            }
            AuthMethod::SelfSignedTlsClientAuth => {
                let doc = doc?;
                match CertKey::from_jwks(doc, keys) {
                    Ok(keys) => Some(CertificateRule::Keys(keys)),
                    Err(e) => {
                        errs.push(format!("jwks: {e}"));
                        None
                    }
                }
            }
            _ => None,
        }
    }

    /// `federated_identities`: only on a `private_key_jwt` client (the
    /// assertion-based method, so such a client never has a secret), each
    /// pair once. Whether the issuer is trusted is checked against the
    /// `[[trusted_issuers]]` list by the service's config loader.
    fn check_federated_identities(&self, private_key_jwt: bool, errs: &mut Vec<String>) {
        if self.federated_identities.is_empty() {
            return;
        }
        if !private_key_jwt {
            errs.push(
                "federated_identities: only for token_endpoint_auth_method = \"private_key_jwt\""
                    .into(),
            );
        }
        let mut seen = HashSet::new();
        for (i, f) in self.federated_identities.iter().enumerate() {
            if f.subject.is_empty()
                || f.subject.len() > 255
                || f.subject.chars().any(char::is_control)
            {
                errs.push(format!(
                    "federated_identities[{i}].subject: must be 1 to 255 characters without control characters"
                ));
            }
            if !seen.insert(f) {
                errs.push(format!("federated_identities[{i}]: listed twice"));
            }
        }
    }

    /// Every problem with this block, each naming its key.
    pub fn validate(&self) -> Result<Client, Vec<String>> {
        let mut errs = Vec::new();
        if self.client_id.is_empty() || self.client_id.len() > 255 {
            errs.push("client_id: must be 1 to 255 characters".into());
        } else if self.client_id.chars().any(|c| c.is_control() || c == ':') {
            errs.push("client_id: must not contain control characters or ':'".into());
        }
        let auth_method = match self.token_endpoint_auth_method.as_deref() {
            None => AuthMethod::ClientSecret,
            Some("client_secret_basic") => AuthMethod::ClientSecretBasic,
            Some("client_secret_post") => AuthMethod::ClientSecretPost,
            Some("none") => AuthMethod::None,
            Some("private_key_jwt") => AuthMethod::PrivateKeyJwt,
            Some("tls_client_auth") => AuthMethod::TlsClientAuth,
            Some("self_signed_tls_client_auth") => AuthMethod::SelfSignedTlsClientAuth,
            Some(other) => {
                errs.push(format!(
                    "token_endpoint_auth_method: {other:?} is not one of client_secret_basic, client_secret_post, private_key_jwt, tls_client_auth, self_signed_tls_client_auth, none"
                ));
                AuthMethod::ClientSecret
            }
        };
        let mut secret_hashes = Vec::new();
        for (i, h) in self.secret_hashes.iter().enumerate() {
            match SecretHash::parse(h) {
                Ok(h) => secret_hashes.push(h),
                Err(e) => errs.push(format!("secret_hashes[{i}]: {e}")),
            }
        }
        if auth_method == AuthMethod::None && !self.secret_hashes.is_empty() {
            errs.push("secret_hashes: a public client (token_endpoint_auth_method = \"none\") has no secret".into());
        }
        let key_based = matches!(
            auth_method,
            AuthMethod::PrivateKeyJwt | AuthMethod::SelfSignedTlsClientAuth
        );
        let secretless = key_based || auth_method == AuthMethod::TlsClientAuth;
        if secretless && !self.secret_hashes.is_empty() {
            errs.push(match auth_method {
                AuthMethod::TlsClientAuth => "secret_hashes: a tls_client_auth client authenticates with its TLS client certificate, not a secret".into(),
                m => format!("secret_hashes: a {} client authenticates with its keys (jwks or jwks_file), not a secret", m.as_str()),
            });
        }
        if !secretless && auth_method != AuthMethod::None && self.secret_hashes.is_empty() {
            errs.push("secret_hashes: at least one hash is required (or token_endpoint_auth_method = \"none\", \"private_key_jwt\", \"tls_client_auth\" or \"self_signed_tls_client_auth\")".into());
        }
        let (keys, doc) = self.assertion_keys(key_based, &mut errs);
        self.check_federated_identities(auth_method == AuthMethod::PrivateKeyJwt, &mut errs);
        let certificate = self.certificate_rule(auth_method, &keys, doc.as_ref(), &mut errs);
        // A self-signed client's keys identify its certificate, never an
        // assertion.
        let assertion_keys = match auth_method {
            AuthMethod::PrivateKeyJwt => keys,
            _ => AssertionKeys::default(),
        };
        let mut grant_types = HashSet::new();
        for g in &self.grant_types {
            match GrantType::parse(g) {
                Some(g) => {
                    grant_types.insert(g);
                }
                None => errs.push(format!(
                    "grant_types: {g:?} is not one of client_credentials, authorization_code, refresh_token, {TOKEN_EXCHANGE}"
                )),
            }
        }
        if grant_types.is_empty() && errs.is_empty() {
            errs.push("grant_types: must not be empty".into());
        }
        if auth_method == AuthMethod::None && grant_types.contains(&GrantType::ClientCredentials) {
            errs.push("grant_types: a public client cannot use client_credentials".into());
        }
        if auth_method == AuthMethod::None && grant_types.contains(&GrantType::TokenExchange) {
            errs.push("grant_types: a public client cannot use token exchange".into());
        }
        let exchanges = grant_types.contains(&GrantType::TokenExchange);
        for (key, list) in [
            ("token_exchange_audiences", &self.token_exchange_audiences),
            ("token_exchange_clients", &self.token_exchange_clients),
            ("token_exchange_claims", &self.token_exchange_claims),
        ] {
            if !list.is_empty() && !exchanges {
                errs.push(format!("{key}: only with the {TOKEN_EXCHANGE} grant"));
            }
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() || v.len() > 255 || v.chars().any(|c| c.is_control() || c == ' ') {
                    errs.push(format!("{key}[{i}]: {v:?} is not valid"));
                }
            }
        }
        for c in &self.token_exchange_claims {
            if RESERVED_CLAIMS.contains(&c.as_str()) {
                errs.push(format!(
                    "token_exchange_claims: {c:?} is a registered claim tokend sets itself"
                ));
            }
        }
        if grant_types.contains(&GrantType::AuthorizationCode)
            && self.redirect_uris.is_empty()
            && !self.out_of_band
        {
            errs.push(
                "redirect_uris: required for the authorization_code grant (or out_of_band = true)"
                    .into(),
            );
        }
        if self.out_of_band && !grant_types.contains(&GrantType::AuthorizationCode) {
            errs.push("out_of_band: only for clients with the authorization_code grant".into());
        }
        let introspection = match self.introspection.as_deref() {
            None | Some("audience") => IntrospectionPolicy::Audience,
            Some("own") => IntrospectionPolicy::Own,
            Some("any") => IntrospectionPolicy::Any,
            Some(other) => {
                errs.push(format!(
                    "introspection: {other:?} is not one of own, audience, any"
                ));
                IntrospectionPolicy::Audience
            }
        };
        if let Some(n) = &self.client_name
            && (n.is_empty() || n.chars().count() > 100 || n.chars().any(char::is_control))
        {
            errs.push("client_name: must be 1 to 100 characters without control characters".into());
        }
        if let Some(s) = &self.subject {
            if s.is_empty() || s.len() > 255 || s.chars().any(char::is_control) {
                errs.push("subject: must be 1 to 255 characters without control characters".into());
            }
            if !grant_types.contains(&GrantType::ClientCredentials) {
                errs.push("subject: only for clients with the client_credentials grant".into());
            }
        }
        for (i, s) in self.scopes.iter().enumerate() {
            if !scope::is_scope_token(s) {
                errs.push(format!("scopes[{i}]: {s:?} is not a valid scope token"));
            }
        }
        for s in &self.default_scopes {
            if !self.scopes.contains(s) {
                errs.push(format!("default_scopes: {s:?} is not in scopes"));
            }
        }
        for (i, a) in self.audience.iter().enumerate() {
            if a.is_empty() || a.chars().any(|c| c.is_control() || c == ' ') {
                errs.push(format!("audience[{i}]: {a:?} is not a valid audience"));
            }
        }
        for (i, u) in self.redirect_uris.iter().enumerate() {
            if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains('#') {
                errs.push(format!(
                    "redirect_uris[{i}]: {u:?} must be an absolute http(s) URI without a fragment"
                ));
            }
        }
        if self.access_ttl_secs == Some(0) {
            errs.push("access_ttl_secs: must be positive".into());
        }
        for k in self.claims.keys() {
            if RESERVED_CLAIMS.contains(&k.as_str()) {
                errs.push(format!(
                    "claims.{k}: {k:?} is a registered claim tokend sets itself"
                ));
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Client {
            id: self.client_id.clone(),
            secret_hashes,
            auth_method,
            grant_types,
            scopes: self.scopes.clone(),
            default_scopes: self.default_scopes.clone(),
            audience: self.audience.clone(),
            access_ttl_secs: self.access_ttl_secs,
            redirect_uris: self.redirect_uris.clone(),
            assertion_keys,
            federated_identities: self.federated_identities.clone(),
            certificate,
            certificate_bound_tokens: self.tls_client_certificate_bound_access_tokens,
            claims: self.claims.clone(),
            claims_in_response: self.claims_in_response,
            rate_limit_per_sec: self.rate_limit_per_sec,
            rate_limit_burst: self.rate_limit_burst,
            name: self.client_name.clone().unwrap_or_default(),
            subject: self
                .subject
                .clone()
                .unwrap_or_else(|| self.client_id.clone()),
            introspection,
            out_of_band: self.out_of_band,
            revocation_feed: self.revocation_feed,
            token_exchange_audiences: self.token_exchange_audiences.clone(),
            token_exchange_clients: self.token_exchange_clients.clone(),
            token_exchange_claims: self.token_exchange_claims.clone(),
        })
    }
}

/// How the caller presented its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedVia {
    Basic,
    Body,
    /// gRPC request fields.
    Grpc,
}

/// Credentials as presented by a caller. `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub client_id: String,
    pub secret: Option<SecretString>,
    /// A second reading of the same secret, tried when `secret` does not
    /// match: HTTP Basic sent by most clients (curl, HTTP libraries) is RFC
    /// 7617, not form-encoded as RFC 6749 2.3.1 says, so a secret with `+`
    /// or `%` reaches tokend as its raw text. `None` when there is only one.
    pub secret_alt: Option<SecretString>,
    pub via: PresentedVia,
    /// An RFC 7523 client assertion (`client_assertion`, its type already
    /// checked by the transport). `client_id` is then the one sent, or the
    /// assertion's own `sub` when none was (see [`Credentials::assertion`]).
    pub assertion: Option<SecretString>,
    /// The caller's network address, as plain data for the secret-guessing
    /// defence; `None` when unknown.
    pub peer: Option<std::net::IpAddr>,
    /// The TLS client certificate of the caller's connection (RFC 8705):
    /// what `tls_client_auth` and `self_signed_tls_client_auth` clients
    /// authenticate with, and what bound tokens are bound to.
    pub cert: Option<Arc<ClientCertificate>>,
}

impl Credentials {
    /// The credentials of an RFC 7523 client assertion, from the request's
    /// `client_id`, `client_assertion_type` and `client_assertion` (both
    /// transports call this). `Ok(None)` when the request carries no
    /// assertion; `invalid_client` for an assertion of another type or a
    /// type without an assertion. Without a `client_id`, the client is the
    /// assertion's `sub` when it equals its `iss` (read unverified, only to
    /// find the keys: verification checks both against the client); for a
    /// federated token (`iss` a trusted issuer) it stays empty here and the
    /// core resolves it from the `(iss, sub)` mapping of the clients'
    /// `federated_identities`.
    pub fn from_assertion(
        client_id: Option<&str>,
        assertion_type: Option<&str>,
        assertion: Option<&str>,
        via: PresentedVia,
    ) -> Result<Option<Self>, OAuthError> {
        let fail = OAuthError::InvalidClient;
        let client_id = client_id.filter(|c| !c.is_empty());
        let assertion_type = assertion_type.filter(|c| !c.is_empty());
        let assertion = assertion.filter(|c| !c.is_empty());
        let assertion = match (assertion_type, assertion) {
            (None, None) => return Ok(None),
            (Some(JWT_BEARER), Some(a)) => a,
            _ => return Err(fail),
        };
        let client_id = match client_id {
            Some(id) => id.to_owned(),
            None => peek_issuer_subject(assertion)
                .filter(|(iss, sub)| iss == sub)
                .map(|(_, sub)| sub)
                .unwrap_or_default(),
        };
        Ok(Some(Self {
            client_id,
            secret: None,
            secret_alt: None,
            via,
            assertion: Some(SecretString::from(assertion)),
            peer: None,
            cert: None,
        }))
    }
}

/// Bounded cache of argon2 successes: (client id, SHA-256 of secret).
const ARGON2_CACHE_MAX: usize = 10_000;

/// At most this many argon2 verifications run at once in the process
/// (whatever the reloads): each costs the hash's memory (19 MiB with the
/// defaults of `tokend hash-secret --argon2`), so 4 keep the peak near
/// 80 MiB above the base. A wrong secret costs a full verification, so this
/// is what keeps a flood of guesses from taking the memory of the pod.
pub const ARGON2_CONCURRENCY: usize = 4;

/// How long a verification waits for a slot before the caller is told to
/// retry (`temporarily_unavailable`, HTTP 503 / gRPC UNAVAILABLE).
pub const ARGON2_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ARGON2_CONCURRENCY);

/// All clients, by id. Immutable once built; a reload builds a new one.
pub struct Registry {
    clients: HashMap<String, Arc<Client>>,
    /// `(issuer, subject)` of a federated identity → the one client it acts
    /// as (a pair listed by two clients is a configuration error).
    federated: HashMap<(String, String), String>,
    /// `[[trusted_issuers]]` with their keys; swapped with the clients so a
    /// request sees one consistent pair.
    issuers: TrustedIssuers,
    argon2_ok: Mutex<HashSet<(String, [u8; 32])>>,
}

/// Compared against when the client is unknown, so that path does the same
/// hashing and comparison work as a wrong secret.
const DUMMY_DIGEST: [u8; 32] = [0x5a; 32];

impl Registry {
    pub fn new(configs: &[ClientConfig]) -> Result<Self, Vec<String>> {
        let mut clients = HashMap::new();
        let mut federated = HashMap::new();
        let mut errs = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            match c.validate() {
                Ok(client) => {
                    for f in &client.federated_identities {
                        if let Some(other) = federated
                            .insert((f.issuer.clone(), f.subject.clone()), client.id.clone())
                            && other != client.id
                        {
                            errs.push(format!(
                                "clients[{i}] ({}): federated_identities: issuer {:?} subject {:?} already acts as client {other:?}; a workload identity maps to one client",
                                c.client_id, f.issuer, f.subject
                            ));
                        }
                    }
                    if clients
                        .insert(client.id.clone(), Arc::new(client))
                        .is_some()
                    {
                        errs.push(format!(
                            "clients[{i}].client_id: duplicate {:?}",
                            c.client_id
                        ));
                    }
                }
                Err(e) => errs.extend(
                    e.into_iter()
                        .map(|e| format!("clients[{i}] ({}): {e}", c.client_id)),
                ),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Self {
            clients,
            federated,
            issuers: TrustedIssuers::default(),
            argon2_ok: Mutex::new(HashSet::new()),
        })
    }

    /// Attaches the trusted issuers (with their keys) to this registry,
    /// before it goes live.
    pub fn with_issuers(mut self, issuers: TrustedIssuers) -> Self {
        self.issuers = issuers;
        self
    }

    pub fn issuers(&self) -> &TrustedIssuers {
        &self.issuers
    }

    /// The client a federated `(issuer, subject)` acts as.
    pub fn federated_client(&self, issuer: &str, subject: &str) -> Option<&Arc<Client>> {
        self.federated
            .get(&(issuer.to_owned(), subject.to_owned()))
            .and_then(|id| self.clients.get(id))
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Client>> {
        self.clients.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<Client>> {
        self.clients.values()
    }

    /// Authenticates a caller. Unknown client, wrong secret, missing secret and
    /// a secret sent to a public client are all the same `invalid_client`.
    pub async fn authenticate(&self, creds: &Credentials) -> Result<Arc<Client>, OAuthError> {
        let fail = OAuthError::InvalidClient;
        // Every reading of the secret costs the same work, known client or
        // not, so the number of readings reveals nothing about the client.
        let readings: Vec<(&SecretString, [u8; 32])> = creds
            .secret
            .iter()
            .chain(creds.secret_alt.iter())
            .map(|s| (s, Sha256::digest(s.expose_secret().as_bytes()).into()))
            .collect();
        let Some(client) = self.clients.get(&creds.client_id) else {
            for (_, d) in &readings {
                let _ = bool::from(d.as_slice().ct_eq(&DUMMY_DIGEST));
            }
            return Err(fail);
        };
        // Assertions are checked by the core (`oauth::assertion`), which has
        // the store for their `jti`; a key-based client has no secret.
        if creds.assertion.is_some() || client.auth_method == AuthMethod::PrivateKeyJwt {
            return Err(fail);
        }
        // RFC 8705: the certificate alone, never with a secret; and a
        // certificate alone never authenticates a secret client (below: no
        // reading, no success).
        if let Some(rule) = &client.certificate {
            return match (&creds.cert, readings.is_empty()) {
                (Some(cert), true) if rule.accepts(cert) => Ok(client.clone()),
                _ => Err(fail),
            };
        }
        if client.is_public() {
            // A public client proves nothing at the token endpoint; PKCE does.
            return match readings.is_empty() {
                true => Ok(client.clone()),
                false => Err(fail),
            };
        }
        if readings.is_empty() {
            return Err(fail);
        }
        match (client.auth_method, creds.via) {
            (AuthMethod::ClientSecretBasic, PresentedVia::Body)
            | (AuthMethod::ClientSecretPost, PresentedVia::Basic) => return Err(fail),
            _ => {}
        }
        // Check every SHA-256 hash against every reading without early exit.
        let mut ok = subtle::Choice::from(0);
        let mut argon = Vec::new();
        for h in &client.secret_hashes {
            match h {
                SecretHash::Sha256(expected) => {
                    for (_, digest) in &readings {
                        ok |= digest.ct_eq(expected);
                    }
                }
                SecretHash::Argon2(phc) => argon.push(phc.clone()),
            }
        }
        if bool::from(ok) {
            return Ok(client.clone());
        }
        if argon.is_empty() {
            return Err(fail);
        }
        for (secret, digest) in readings {
            if self
                .argon2_check(&client.id, secret, digest, &argon)
                .await?
            {
                return Ok(client.clone());
            }
        }
        Err(fail)
    }

    /// One reading against the client's argon2 hashes: the success cache
    /// first, then a verification on a bounded slot.
    async fn argon2_check(
        &self,
        client_id: &str,
        secret: &SecretString,
        digest: [u8; 32],
        argon: &[Arc<str>],
    ) -> Result<bool, OAuthError> {
        let cache_key = (client_id.to_owned(), digest);
        if self.argon2_ok.lock().contains(&cache_key) {
            return Ok(true);
        }
        let (secret, argon) = (secret.clone(), argon.to_vec());
        // A free slot is taken at once (no timer); else wait a little.
        let slot = match ARGON2_SLOTS.try_acquire() {
            Ok(slot) => Ok(slot),
            Err(_) => tokio::time::timeout(ARGON2_QUEUE_WAIT, ARGON2_SLOTS.acquire())
                .await
                .map_err(|_| ())
                .and_then(|r| r.map_err(|_| ())),
        };
        let Ok(slot) = slot else {
            metrics::counter!("tokend_argon2_overloaded_total").increment(1);
            return Err(OAuthError::TemporarilyUnavailable(
                "too many secret verifications in progress; retry later".into(),
            ));
        };
        let verified = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            use argon2::PasswordVerifier;
            let a = argon2::Argon2::default();
            argon.iter().any(|phc| {
                PasswordVerifier::<str>::verify_password(&a, secret.expose_secret().as_bytes(), phc)
                    .is_ok()
            })
        })
        .await
        .map_err(|_| OAuthError::ServerError("secret verification failed".into()))?;
        if !verified {
            return Ok(false);
        }
        let mut cache = self.argon2_ok.lock();
        if cache.len() >= ARGON2_CACHE_MAX {
            cache.clear();
        }
        cache.insert(cache_key);
        Ok(true)
    }
}

/// Hashes a human-chosen secret with argon2id (for `tokend hash-secret --argon2`).
pub fn argon2_hash(secret: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher;
    let h = PasswordHasher::<argon2::password_hash::phc::PasswordHash>::hash_password(
        &argon2::Argon2::default(),
        secret.as_bytes(),
    )
    .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))?;
    Ok(h.to_string())
}
