//! Refresh tokens: rotation, reuse detection and grant families
//! (RFC 6749 6, RFC 9700 4.14.2).
//!
//! Every authorization code starts a grant family, named by a random `gid`
//! that its access tokens carry as a claim. The family's state is one store
//! record `fam:<gid>`: who it is for (client, subject, scope, audience, the
//! login app's claims), the SHA-256 of the one live refresh token, and the
//! hashes of the last [`MAX_PREVIOUS`] rotated ones. So memory is one record
//! per live grant, never one per rotation, even with `refresh_ttl_secs = 0`.
//!
//! A refresh token is `<gid>.<256 random bits>`: the gid finds the family in
//! one read. The gid is not secret (access tokens carry it as their `sid` claim), so a token whose
//! hash is neither current nor a remembered predecessor is merely invalid;
//! only a genuinely rotated token proves theft and revokes the family.
//!
//! Revoking a family writes `rev:gid:<gid>` (checked by introspection with the
//! `jti` mark, one round trip) for as long as any of its access tokens can
//! live, and deletes the family record, which kills its refresh token.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::client::{Client, GrantType};
use super::error::OAuthError;
use super::grant::{Grant, TokenRequest, TokenResponse};
use super::{Core, lifecycle, now_unix, scope};
use tokend_token::jwt::Confirmation;
use tokend_token::opaque;

/// Rotated refresh tokens remembered per family for reuse detection.
pub const MAX_PREVIOUS: usize = 32;

/// How long the "this token is being rotated" gate lives. It only has to
/// outlast one rotation's store calls; afterwards the family record itself
/// remembers the rotated token.
const ROTATION_GATE_TTL: Duration = Duration::from_secs(300);

/// A grant family, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Family {
    client_id: String,
    sub: String,
    /// The scope originally granted: refreshes may narrow, never widen.
    scope: Vec<String>,
    aud: Vec<String>,
    /// The login app's claims (the client's own are added at minting).
    claims: Map<String, Value>,
    /// Hex SHA-256 of the live refresh token.
    current: String,
    /// Hex SHA-256 of rotated tokens, oldest first.
    previous: Vec<String>,
    /// Expiry of the live refresh token; `None` = never.
    exp: Option<i64>,
    /// When the live refresh token was issued (Unix ms), compared with the
    /// client's and subject's "not before" marks.
    #[serde(default)]
    issued_ms: i64,
}

/// What introspection reports about a live refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshInfo {
    pub client_id: String,
    pub sub: String,
    pub scope: Vec<String>,
    pub exp: Option<i64>,
    /// The login app's `username`, when it gave one.
    pub username: Option<String>,
}

fn family_key(gid: &str) -> String {
    format!("fam:{gid}")
}

/// Store key marking a revoked grant family (its access tokens carry it as `sid`).
pub fn revoked_gid_key(gid: &str) -> String {
    format!("rev:gid:{gid}")
}

fn rotation_gate_key(digest: &str) -> String {
    format!("rt:rotating:{digest}")
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The family id of a well-formed refresh token, or `None` for anything else
/// (JWTs have two dots and never parse).
pub fn refresh_gid(token: &str) -> Option<&str> {
    let (gid, secret) = token.split_once('.')?;
    (gid.len() == 22 && secret.len() == 43 && is_b64url(gid) && is_b64url(secret)).then_some(gid)
}

fn new_refresh_token(gid: &str) -> String {
    format!("{gid}.{}", opaque::generate(""))
}

fn ct_eq(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl Core {
    fn refresh_expiry(&self) -> Option<i64> {
        self.settings
            .refresh_ttl
            .map(|t| now_unix().saturating_add(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)))
    }

    async fn load_family(&self, gid: &str) -> Result<(Option<Family>, bool), OAuthError> {
        let keys = [family_key(gid), revoked_gid_key(gid)];
        let found = self.store.get_many(&keys).await?;
        let revoked = found.get(1).is_some_and(Option::is_some);
        let family = match found.into_iter().next().flatten() {
            Some(raw) => Some(serde_json::from_slice::<Family>(&raw).map_err(|e| {
                tracing::error!(error = %e, "undecodable grant family");
                OAuthError::ServerError("a stored record could not be decoded".into())
            })?),
            None => None,
        };
        let revoked = revoked
            || match &family {
                Some(f) => self.revoked_in_bulk(f).await?,
                None => false,
            };
        Ok((family, revoked))
    }

    /// Whether the family's client is disabled or the client's or subject's
    /// "not before" mark postdates the live refresh token (admin API). A
    /// second round trip, on the refresh path only: the family names the
    /// client and subject.
    async fn revoked_in_bulk(&self, f: &Family) -> Result<bool, OAuthError> {
        let keys = [
            lifecycle::client_disabled_key(&f.client_id),
            lifecycle::client_not_before_key(&f.client_id),
            lifecycle::subject_not_before_key(&f.sub),
        ];
        let found = self.store.get_many(&keys).await?;
        let [disabled, client_nbf, subject_nbf] = found.as_slice() else {
            return Err(OAuthError::ServerError(
                "store answered the wrong number of keys".into(),
            ));
        };
        Ok(disabled.is_some()
            || lifecycle::issued_before(client_nbf.as_deref(), f.issued_ms)
            || lifecycle::issued_before(subject_nbf.as_deref(), f.issued_ms))
    }

    async fn save_family(&self, gid: &str, f: &Family) -> Result<(), OAuthError> {
        let raw = serde_json::to_vec(f)
            .map_err(|_| OAuthError::ServerError("could not encode a record".into()))?;
        self.store
            .put(&family_key(gid), &raw, self.settings.refresh_ttl)
            .await?;
        Ok(())
    }

    /// Creates a family for a redeemed code; returns its first refresh token.
    pub(crate) async fn start_family(
        &self,
        client: &Client,
        gid: &str,
        sub: &str,
        scope: &[String],
        aud: &[String],
        claims: Map<String, Value>,
    ) -> Result<String, OAuthError> {
        let token = new_refresh_token(gid);
        let family = Family {
            client_id: client.id.clone(),
            sub: sub.to_owned(),
            scope: scope.to_vec(),
            aud: aud.to_vec(),
            claims,
            current: opaque::digest(&token),
            previous: Vec::new(),
            exp: self.refresh_expiry(),
            issued_ms: super::now_unix_ms(),
        };
        self.save_family(gid, &family).await?;
        Ok(token)
    }

    /// Revokes a whole grant: its access tokens (by `gid` mark) and its
    /// refresh token (by deleting the family).
    pub(crate) async fn revoke_family(&self, gid: &str) -> Result<(), OAuthError> {
        // Long enough for the longest-lived access token any client can hold.
        let registry = self.clients();
        let longest = registry
            .all()
            .filter_map(|c| c.access_ttl_secs)
            .chain([self.settings.access_ttl.as_secs()])
            .max()
            .unwrap_or(0);
        let leeway = u64::try_from(self.settings.leeway_secs).unwrap_or(0);
        let ttl = Duration::from_secs(longest.saturating_add(leeway).saturating_add(1));
        // Mark first, then delete: a rotation racing with this checks the
        // mark after writing, so it cannot resurrect the family.
        let key = revoked_gid_key(gid);
        // The event first: a revocation is never stored without it.
        let event = crate::feed::FeedEvent::family_revoked(gid, ttl);
        self.publish(&key, &event, true).await?;
        self.store.put(&key, b"1", Some(ttl)).await?;
        self.store.delete(&family_key(gid)).await?;
        Ok(())
    }

    /// The `refresh_token` grant: rotate, or detect reuse and revoke.
    pub(crate) async fn refresh_token(
        &self,
        client: &Client,
        req: TokenRequest,
        cnf: Option<Confirmation>,
    ) -> Result<TokenResponse, OAuthError> {
        if req.code.is_some() || req.code_verifier.is_some() {
            return Err(OAuthError::invalid_request(
                "refresh_token takes no code or code_verifier",
            ));
        }
        let Some(token) = req.refresh_token.as_deref() else {
            return Err(OAuthError::invalid_request("refresh_token is required"));
        };
        let invalid = || OAuthError::invalid_grant("invalid, expired or revoked refresh token");
        let gid = refresh_gid(token).ok_or_else(invalid)?.to_owned();
        let (family, revoked) = self.load_family(&gid).await?;
        let Some(mut family) = family.filter(|_| !revoked) else {
            return Err(invalid());
        };
        if family.client_id != client.id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        let digest = opaque::digest(token);
        if !ct_eq(&family.current, &digest) {
            if family.previous.iter().any(|p| ct_eq(p, &digest)) {
                self.reuse_detected(client, &gid).await?;
                return Err(reuse_error());
            }
            return Err(invalid());
        }
        // Validate the request before the gate, so a mistake does not burn
        // the token.
        let scope = scope::narrow(&family.scope, &req.scope)?;
        let audience = scope::narrow_audience(&family.aud, &req.audience)?;
        // Exactly one caller may rotate a given token; a concurrent second
        // one is a replay like any other.
        let gate = rotation_gate_key(&digest);
        if !self
            .store
            .put_new(&gate, b"1", Some(ROTATION_GATE_TTL))
            .await?
        {
            self.reuse_detected(client, &gid).await?;
            return Err(reuse_error());
        }
        let rotated = self.rotate(&gid, &mut family, &digest).await;
        let new_token = match rotated {
            Ok(t) => t,
            Err(e) => {
                // Let the client retry with the same token after a store
                // hiccup instead of having it look like a replay.
                let _ = self.store.delete(&gate).await;
                return Err(e);
            }
        };
        let mut extra = client.claims.clone();
        extra.extend(family.claims);
        let mut resp = self.mint(Grant {
            client,
            grant_type: GrantType::RefreshToken,
            subject: family.sub,
            scope,
            audience,
            gid: Some(gid),
            extra,
            cnf,
            exchange: None,
        })?;
        resp.refresh_token = Some(new_token);
        Ok(resp)
    }

    async fn rotate(
        &self,
        gid: &str,
        family: &mut Family,
        old_digest: &str,
    ) -> Result<String, OAuthError> {
        let new_token = new_refresh_token(gid);
        family.previous.push(old_digest.to_owned());
        if family.previous.len() > MAX_PREVIOUS {
            let drop = family.previous.len() - MAX_PREVIOUS;
            family.previous.drain(..drop);
        }
        family.current = opaque::digest(&new_token);
        family.exp = self.refresh_expiry();
        family.issued_ms = super::now_unix_ms();
        self.save_family(gid, family).await?;
        if self.store.get(&revoked_gid_key(gid)).await?.is_some() {
            self.store.delete(&family_key(gid)).await?;
            return Err(OAuthError::invalid_grant(
                "invalid, expired or revoked refresh token",
            ));
        }
        Ok(new_token)
    }

    async fn reuse_detected(&self, client: &Client, gid: &str) -> Result<(), OAuthError> {
        self.revoke_family(gid).await?;
        tracing::warn!(client_id = %client.id, gid = %gid,
            "rotated refresh token presented again: the whole grant is revoked");
        Ok(())
    }

    /// Introspects a refresh token (already known to have the refresh shape).
    pub(crate) async fn introspect_refresh(
        &self,
        token: &str,
    ) -> Result<Option<RefreshInfo>, OAuthError> {
        let Some(gid) = refresh_gid(token) else {
            return Ok(None);
        };
        let (family, revoked) = self.load_family(gid).await?;
        let Some(f) = family.filter(|_| !revoked) else {
            return Ok(None);
        };
        if !ct_eq(&f.current, &opaque::digest(token)) || f.exp.is_some_and(|e| e <= now_unix()) {
            return Ok(None);
        }
        let username = match f.claims.get(super::authorize::USERNAME_CLAIM) {
            Some(Value::String(u)) => Some(u.clone()),
            _ => None,
        };
        Ok(Some(RefreshInfo {
            client_id: f.client_id,
            sub: f.sub,
            scope: f.scope,
            exp: f.exp,
            username,
        }))
    }

    /// Revokes a refresh token's whole grant for the client it was issued
    /// to (RFC 7009 2.1). Unknown tokens succeed silently.
    pub(crate) async fn revoke_refresh(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<(), OAuthError> {
        let Some(gid) = refresh_gid(token) else {
            return Ok(());
        };
        let (family, _) = self.load_family(gid).await?;
        let Some(f) = family else {
            return Ok(());
        };
        let digest = opaque::digest(token);
        let known = ct_eq(&f.current, &digest) || f.previous.iter().any(|p| ct_eq(p, &digest));
        if !known {
            return Ok(());
        }
        if f.client_id != client.id {
            // As for garbage: no validity oracle (see `Core::revoke`).
            tracing::info!(client_id = %client.id, "revocation of another client's token ignored");
            return Ok(());
        }
        self.revoke_family(gid).await?;
        tracing::info!(client_id = %client.id, gid = %gid, "refresh token revoked with its grant");
        Ok(())
    }
}

fn reuse_error() -> OAuthError {
    OAuthError::invalid_grant("the refresh token was already used; the whole grant is revoked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_parse_and_jwts_do_not() {
        let gid = opaque::random_id();
        let t = new_refresh_token(&gid);
        assert_eq!(refresh_gid(&t), Some(gid.as_str()));
        assert_eq!(refresh_gid("a.b.c"), None);
        assert_eq!(refresh_gid("x"), None);
        assert_eq!(refresh_gid(&format!("{gid}.short")), None);
    }
}
