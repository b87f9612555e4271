//! RFC 7523 2.2 `private_key_jwt` client authentication: the rules that need
//! the service (the client registry, the audiences tokend answers to, the
//! store for single use); the JWT itself is checked by
//! [`tokend_token::assertion::verify_assertion`], which does no I/O.
//!
//! Cost of an unauthenticated caller: an assertion naming no registered
//! `private_key_jwt` client fails before any signature check (the registry
//! lookup is all it costs, whatever the id); one naming such a client costs
//! at most [`MAX_KEYS_TRIED`](tokend_token::assertion::MAX_KEYS_TRIED)
//! signature checks, and its failures count in the secret-guessing defence
//! (`limits`) like wrong secrets. A `jti` is recorded only after the
//! signature and claims verified, so the store holds nothing an
//! unauthenticated caller chose.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use tokend_token::assertion::{
    AssertionClaims, AssertionKeys, Expected, peek_issuer_subject, peek_kid, verify_assertion,
};

use super::client::{AuthMethod, Client, Credentials};
use super::error::OAuthError;
use super::federation::TrustedIssuer;
use super::{Core, endpoints, now_unix};

/// Why [`Core::verify_assertion_once`] refused an assertion.
#[derive(Debug)]
pub enum AssertionFailure {
    /// The assertion itself (signature, claims, or a second use).
    Refused(&'static str),
    /// The store could not record the `jti`: fail closed, but say so.
    Store(String),
}

/// `[client_assertion] max_lifetime_secs` default: authlib signs assertions
/// valid for exactly one hour.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 3600;

impl Core {
    /// What an assertion's `aud` may name: the issuer, or the URL of an
    /// endpoint that authenticates clients (token, introspection,
    /// revocation). gRPC callers use the issuer.
    pub fn assertion_audiences(&self) -> Vec<String> {
        let s = self.settings();
        let mut out = vec![s.issuer.clone()];
        let trimmed = s.issuer.trim_end_matches('/');
        if trimmed != s.issuer {
            out.push(trimmed.to_owned());
        }
        for path in [endpoints::TOKEN, endpoints::INTROSPECT, endpoints::REVOKE] {
            out.push(s.endpoint_url(path));
            out.extend(s.mtls_endpoint_url(path));
        }
        out
    }

    /// Verifies an assertion against `keys` and `expected`, then, when
    /// `expected.require_jti` (single use), records its `jti` (scoped by
    /// `scope`, e.g. the client id or a trusted issuer) until it expires, so
    /// a second use is refused on every replica sharing the store. Reusable
    /// by any caller that authenticates with an assertion: a client's own
    /// keys (`private_key_jwt`) or a trusted issuer's (federation).
    pub async fn verify_assertion_once(
        &self,
        scope: &str,
        keys: &AssertionKeys,
        token: &str,
        expected: &Expected<'_>,
    ) -> Result<AssertionClaims, AssertionFailure> {
        let claims = verify_assertion(keys, token, expected)
            .map_err(|e| AssertionFailure::Refused(e.as_str()))?;
        let Some(jti) = claims.jti.as_deref().filter(|_| expected.require_jti) else {
            return Ok(claims);
        };
        let key = format!(
            "assertion:{}",
            tokend_token::opaque::hex(&Sha256::digest(format!("{scope}|{jti}").as_bytes()))
        );
        let ttl_secs = claims
            .exp
            .saturating_add(expected.leeway)
            .saturating_sub(expected.now)
            .max(1);
        let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(1));
        match self.store().put_new(&key, b"1", Some(ttl)).await {
            Ok(true) => Ok(claims),
            Ok(false) => Err(AssertionFailure::Refused("replayed jti")),
            Err(e) => Err(AssertionFailure::Store(e.to_string())),
        }
    }

    /// The client a federated assertion without `client_id` acts as: the
    /// one whose `federated_identities` list its `(iss, sub)` (read
    /// unverified, only to choose the client; verification checks both).
    /// `None` when the credentials need no resolving or nothing maps.
    pub(crate) fn resolve_federated_client(&self, creds: &Credentials) -> Option<Credentials> {
        if !creds.client_id.is_empty() {
            return None;
        }
        let token = creds.assertion.as_ref()?;
        let (iss, sub) = peek_issuer_subject(token.expose_secret())?;
        let registry = self.clients();
        let client = registry.federated_client(&iss, &sub)?;
        Some(Credentials {
            client_id: client.id.clone(),
            ..creds.clone()
        })
    }

    /// Authenticates a caller that presented a client assertion: signed by
    /// the client's own key (`private_key_jwt`, `iss` = `sub` = client_id)
    /// or by a trusted issuer for one of the client's
    /// `federated_identities`.
    pub(crate) async fn authenticate_assertion(
        &self,
        creds: &Credentials,
    ) -> Result<Arc<Client>, OAuthError> {
        let fail = OAuthError::InvalidClient;
        let Some(token) = &creds.assertion else {
            return Err(fail);
        };
        // A secret beside the assertion is two methods at once.
        if creds.secret.is_some() || creds.secret_alt.is_some() {
            return Err(fail);
        }
        let token = token.expose_secret();
        // Unknown ids, clients of other methods, unknown issuers and
        // unmapped subjects all fail here, before any signature check (or
        // any JWKS fetch), alike.
        let registry = self.clients();
        let Some(client) = registry
            .get(&creds.client_id)
            .filter(|c| c.auth_method == AuthMethod::PrivateKeyJwt)
            .cloned()
        else {
            return Err(fail);
        };
        let verified = match peek_issuer_subject(token) {
            Some((iss, sub)) if iss != client.id => {
                let Some(issuer) = registry.issuers().get(&iss).cloned() else {
                    tracing::info!(reason = "untrusted issuer", "client assertion refused");
                    return Err(fail);
                };
                if !client
                    .federated_identities
                    .iter()
                    .any(|f| f.issuer == iss && f.subject == sub)
                {
                    tracing::info!(reason = "unmapped subject", "client assertion refused");
                    return Err(fail);
                }
                drop(registry);
                self.verify_federated(&issuer, &sub, token).await
            }
            _ => {
                let audiences = self.assertion_audiences();
                let expected = Expected {
                    issuer: &client.id,
                    subject: &client.id,
                    audiences: &audiences,
                    now: now_unix(),
                    leeway: self.settings().leeway_secs,
                    max_lifetime: self.settings().assertion_max_lifetime_secs,
                    require_jti: true,
                };
                self.verify_assertion_once(&client.id, &client.assertion_keys, token, &expected)
                    .await
            }
        };
        match verified {
            Ok(_) => Ok(client),
            Err(AssertionFailure::Refused(why)) => {
                // The reason only; never the assertion.
                tracing::info!(reason = why, "client assertion refused");
                Err(fail)
            }
            Err(AssertionFailure::Store(e)) => {
                tracing::warn!(error = %e, "client assertion: the store could not record its jti");
                Err(OAuthError::TemporarilyUnavailable(
                    "client authentication is unavailable; retry later".into(),
                ))
            }
        }
    }

    /// A trusted issuer's token: its keys (refetched once, rate-limited,
    /// when the token names a `kid` they lack), its audiences, lifetime and
    /// replay policy.
    async fn verify_federated(
        &self,
        issuer: &TrustedIssuer,
        subject: &str,
        token: &str,
    ) -> Result<AssertionClaims, AssertionFailure> {
        let policy = &issuer.policy;
        let mut keys = issuer.keys.current();
        let unknown = match peek_kid(token) {
            Some(kid) => !keys.has_kid(&kid),
            None => keys.is_empty(),
        };
        if unknown && issuer.keys.refresh_for_unknown_kid().await {
            keys = issuer.keys.current();
        }
        let expected = Expected {
            issuer: &policy.issuer,
            subject,
            audiences: &policy.audiences,
            now: now_unix(),
            leeway: self.settings().leeway_secs,
            max_lifetime: policy.max_lifetime_secs,
            require_jti: policy.single_use_jti,
        };
        self.verify_assertion_once(&policy.issuer, &keys, token, &expected)
            .await
    }
}
