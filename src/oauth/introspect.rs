//! RFC 7662 introspection and RFC 7009 revocation.
//!
//! Revocation keeps no row per token forever: a revoked `jti` is stored with a
//! TTL reaching just past the token's `exp` (plus the clock-skew leeway that
//! introspection grants), after which the token is dead anyway.
//!
//! Introspection fails closed: when the store cannot say whether a token was
//! revoked, the answer is `temporarily_unavailable`, never `active: true`.

use std::time::Duration;

use super::client::Credentials;
use super::error::OAuthError;
use super::{Core, now_unix};
use crate::token::{AccessClaims, jwt};

/// An introspection answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspection {
    Inactive,
    Active(Box<AccessClaims>),
}

/// Store key marking a revoked access token.
pub fn revoked_jti_key(jti: &str) -> String {
    format!("rev:jti:{jti}")
}

impl Core {
    /// Introspects `token` for an authenticated caller.
    pub async fn introspect(
        &self,
        creds: &Credentials,
        token: &str,
        _hint: Option<&str>,
    ) -> Result<Introspection, OAuthError> {
        self.authenticate(creds).await?;
        if token.is_empty() {
            return Err(OAuthError::invalid_request("token is required"));
        }
        let keys = self.keys();
        let claims = match jwt::verify(
            &keys,
            token,
            &self.settings.issuer,
            now_unix(),
            self.settings.leeway_secs,
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(reason = %e, "introspected token is not valid");
                return Ok(Introspection::Inactive);
            }
        };
        if self.is_revoked(&claims).await? {
            return Ok(Introspection::Inactive);
        }
        Ok(Introspection::Active(Box::new(claims)))
    }

    /// Whether a validly signed token has been revoked.
    async fn is_revoked(&self, claims: &AccessClaims) -> Result<bool, OAuthError> {
        let keys = [revoked_jti_key(&claims.jti)];
        let found = self.store.get_many(&keys).await?;
        Ok(found.iter().any(Option::is_some))
    }

    /// Revokes `token` for the client it was issued to. Unknown, malformed and
    /// expired tokens succeed silently (RFC 7009 2.2).
    pub async fn revoke(
        &self,
        creds: &Credentials,
        token: &str,
        hint: Option<&str>,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate(creds).await?;
        if token.is_empty() {
            return Err(OAuthError::invalid_request("token is required"));
        }
        match hint {
            None | Some("" | "access_token" | "refresh_token") => {}
            Some(_) => return Err(OAuthError::UnsupportedTokenType),
        }
        let keys = self.keys();
        let Ok(claims) = jwt::verify_signature(&keys, token) else {
            return Ok(());
        };
        if claims.iss != self.settings.issuer {
            return Ok(());
        }
        if claims.client_id != client.id {
            return Err(OAuthError::unauthorized_client(
                "the token was not issued to this client",
            ));
        }
        let remaining = claims
            .exp
            .saturating_add(self.settings.leeway_secs)
            .saturating_sub(now_unix());
        if remaining <= 0 {
            return Ok(());
        }
        // +1 s so the mark outlives the last second introspection accepts.
        let ttl = Duration::from_secs(u64::try_from(remaining).unwrap_or(u64::MAX / 2) + 1);
        self.store
            .put(&revoked_jti_key(&claims.jti), b"1", Some(ttl))
            .await?;
        tracing::info!(client_id = %client.id, jti = %claims.jti, "token revoked");
        Ok(())
    }
}
