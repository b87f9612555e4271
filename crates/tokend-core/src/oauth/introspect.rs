//! RFC 7662 introspection and RFC 7009 revocation.
//!
//! Revocation keeps no row per token forever: a revoked `jti` is stored with a
//! TTL reaching just past the token's `exp` (plus the clock-skew leeway that
//! introspection grants), after which the token is dead anyway.
//!
//! Introspection fails closed: when the store cannot say whether a token was
//! revoked, the answer is `temporarily_unavailable`, never `active: true`.

use std::sync::Arc;
use std::time::Duration;

use super::client::{Client, Credentials, IntrospectionPolicy};
use super::error::OAuthError;
use super::refresh::{refresh_gid, revoked_gid_key};
use super::{Core, lifecycle, now_unix};
use crate::feed::FeedEvent;
use tokend_token::cache::TokenKey;
use tokend_token::{AccessClaims, jwt};

pub use super::refresh::RefreshInfo;

/// An introspection answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Introspection {
    Inactive,
    /// A live access or refresh token.
    Active(Box<ActiveToken>),
}

/// What introspection discloses about a live token: this struct *is* the
/// allow-list. The RFC 7662 members tokend answers, plus the client's
/// partner claims; nothing internal (grant ids, issue milliseconds, store
/// state) can reach an answer unless a field is added here. Both transports
/// encode this one value.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveToken {
    /// `Bearer` for access tokens, `refresh_token` for refresh tokens.
    pub token_type: &'static str,
    pub scope: Vec<String>,
    pub client_id: String,
    pub sub: String,
    pub aud: Vec<String>,
    /// Empty for refresh tokens.
    pub iss: String,
    /// Empty for refresh tokens.
    pub jti: String,
    /// `None` for a refresh token that never expires.
    pub exp: Option<i64>,
    pub iat: Option<i64>,
    pub nbf: Option<i64>,
    /// The client's configured (partner) claims and the login app's claims.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// RFC 8693 `act` of an exchanged token.
    pub act: Option<serde_json::Value>,
    /// RFC 8705 3.2: the certificate a bound token is bound to.
    pub cnf: Option<tokend_token::jwt::Confirmation>,
}

impl ActiveToken {
    fn access(c: &AccessClaims) -> Self {
        Self {
            token_type: "Bearer",
            scope: super::scope::split(&c.scope),
            client_id: c.client_id.clone(),
            sub: c.sub.clone(),
            aud: c.aud.clone(),
            iss: c.iss.clone(),
            jti: c.jti.clone(),
            exp: Some(c.exp),
            iat: Some(c.iat),
            nbf: Some(c.nbf),
            claims: c.extra.clone(),
            act: c.act.clone(),
            cnf: c.cnf.clone(),
        }
    }

    fn refresh(r: RefreshInfo) -> Self {
        Self {
            token_type: "refresh_token",
            scope: r.scope,
            client_id: r.client_id,
            sub: r.sub,
            aud: Vec::new(),
            iss: String::new(),
            jti: String::new(),
            exp: r.exp,
            iat: None,
            nbf: None,
            claims: r
                .username
                .map(|u| {
                    let mut m = serde_json::Map::new();
                    m.insert(super::authorize::USERNAME_CLAIM.into(), u.into());
                    m
                })
                .unwrap_or_default(),
            act: None,
            cnf: None,
        }
    }

    /// The RFC 7662 JSON object (`active: true` included). Partner claims
    /// come first so a standard member always wins a name clash.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut o = self.claims.clone();
        o.insert("active".into(), Value::Bool(true));
        o.insert("token_type".into(), self.token_type.into());
        o.insert("client_id".into(), self.client_id.clone().into());
        o.insert("sub".into(), self.sub.clone().into());
        if !self.scope.is_empty() {
            o.insert("scope".into(), self.scope.join(" ").into());
        }
        match self.aud.as_slice() {
            [] => {}
            [one] => {
                o.insert("aud".into(), one.clone().into());
            }
            many => {
                o.insert("aud".into(), many.to_vec().into());
            }
        }
        for (k, v) in [("iss", &self.iss), ("jti", &self.jti)] {
            if !v.is_empty() {
                o.insert(k.into(), v.clone().into());
            }
        }
        for (k, v) in [("exp", self.exp), ("iat", self.iat), ("nbf", self.nbf)] {
            if let Some(v) = v {
                o.insert(k.into(), v.into());
            }
        }
        if let Some(act) = &self.act {
            o.insert("act".into(), act.clone());
        }
        if let Some(cnf) = &self.cnf {
            o.insert(
                "cnf".into(),
                serde_json::to_value(cnf).unwrap_or(Value::Null),
            );
        }
        o
    }
}

/// Whether `caller` may see `claims` under its `introspection` policy.
fn may_introspect(caller: &Client, claims: &AccessClaims) -> bool {
    match caller.introspection {
        IntrospectionPolicy::Any => true,
        IntrospectionPolicy::Own => claims.client_id == caller.id,
        IntrospectionPolicy::Audience => {
            claims.client_id == caller.id || claims.aud.iter().any(|a| caller.audience.contains(a))
        }
    }
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
        let caller = self.authenticate_caller(creds).await?;
        if caller.is_public() {
            // A public client proves nothing by its client_id; letting it
            // introspect would open the endpoint to anyone (RFC 7662 2.1).
            return Err(OAuthError::unauthorized_client(
                "public clients may not introspect",
            ));
        }
        // The hint is only an optimisation (RFC 7662 2.1): the token's shape
        // says which kind it is.
        super::note_token_type(token);
        if token.is_empty() || refresh_gid(token).is_some() {
            self.enforce_rate_limit(&caller).await?;
            if token.is_empty() {
                return Err(OAuthError::invalid_request("token is required"));
            }
            // A refresh token is a credential of the client it was issued
            // to, not something a resource server accepts: to any other
            // caller it is inactive (a resource server checking only
            // `active` and `scope` would otherwise take a 30-day refresh
            // token for an access token; issue 14, item 10).
            return Ok(match self.introspect_refresh(token).await? {
                Some(info) if info.client_id == caller.id => {
                    Introspection::Active(Box::new(ActiveToken::refresh(info)))
                }
                _ => Introspection::Inactive,
            });
        }
        let claims = match self.verify_cached(token) {
            Ok(c) => c,
            Err(e) => {
                self.enforce_rate_limit(&caller).await?;
                tracing::debug!(reason = %e, "introspected token is not valid");
                return Ok(Introspection::Inactive);
            }
        };
        if !may_introspect(&caller, &claims) {
            // Answered exactly like a dead token: a different error would
            // tell the caller that the token is valid (issue 18, item 3).
            self.enforce_rate_limit(&caller).await?;
            tracing::debug!(client_id = %caller.id, "token outside the caller's introspection policy");
            return Ok(Introspection::Inactive);
        }
        // The rate limit's store call and the revocation read go out
        // together: on Redis both ride the same multiplexed connection in
        // one write, so introspection costs one round trip with or without
        // rate limits. (A refused caller has had its token verified: CPU
        // only, and only for an authenticated client.)
        let (limited, revoked) =
            tokio::join!(self.enforce_rate_limit(&caller), self.is_revoked(&claims));
        limited?;
        if revoked? {
            return Ok(Introspection::Inactive);
        }
        Ok(Introspection::Active(Box::new(ActiveToken::access(
            &claims,
        ))))
    }

    /// Verifies `token`, or finds it already verified in the bounded cache
    /// (expiry is re-checked on every hit; see `token::cache`).
    pub(crate) fn verify_cached(&self, token: &str) -> Result<Arc<AccessClaims>, jwt::VerifyError> {
        let (now, leeway) = (now_unix(), self.settings.leeway_secs);
        let key = TokenKey::of(token);
        let hit = self.verified.get(&key, now, leeway);
        tracing::Span::current().record("tokend.cache_hit", hit.is_some());
        if let Some(c) = hit {
            return Ok(c);
        }
        let keys = self.keys();
        let claims = Arc::new(jwt::verify(
            &keys,
            token,
            &self.settings.issuer,
            now,
            leeway,
        )?);
        self.verified.insert(key, claims.clone(), now, leeway);
        Ok(claims)
    }

    /// Whether a validly signed token has been revoked: its `jti` one by one,
    /// its grant family, or in bulk by its client (disabled, or a "not before"
    /// mark) or its subject ("not before" mark); for an exchanged token, the
    /// same for every ancestor in its `chain`. One store round trip, so
    /// bulk revocation is immediate on every replica sharing the store.
    pub(crate) async fn is_revoked(&self, claims: &AccessClaims) -> Result<bool, OAuthError> {
        // (jti, client_id, grant family, issued ms) of the token, then of
        // each ancestor.
        let issued = claims.issued_at_ms();
        let mut links = vec![(&claims.jti, &claims.client_id, claims.sid.as_ref(), issued)];
        for l in &claims.chain {
            // An ancestor is older than its descendant: when its jti gives
            // no time, the descendant's is a safe (later) bound.
            links.push((
                &l.jti,
                &l.client_id,
                l.sid.as_ref(),
                l.issued_at_ms().unwrap_or(issued),
            ));
        }
        let first_issued = links.iter().map(|l| l.3).min().unwrap_or(issued);
        let mut keys = Vec::with_capacity(1 + links.len() * 4);
        keys.push(lifecycle::subject_not_before_key(&claims.sub));
        for (jti, client_id, sid, _) in &links {
            keys.push(revoked_jti_key(jti));
            keys.push(lifecycle::client_disabled_key(client_id));
            keys.push(lifecycle::client_not_before_key(client_id));
            if let Some(gid) = sid {
                keys.push(revoked_gid_key(gid));
            }
        }
        let found = self.store.get_many(&keys).await?;
        if found.len() != keys.len() {
            return Err(OAuthError::ServerError(
                "store answered the wrong number of keys".into(),
            ));
        }
        if lifecycle::issued_before(found[0].as_deref(), first_issued) {
            return Ok(true);
        }
        let mut at = 1;
        for (_, _, sid, link_issued) in &links {
            let n = if sid.is_some() { 4 } else { 3 };
            let [jti, disabled, client_nbf, family @ ..] = &found[at..at + n] else {
                unreachable!("three or four keys per link");
            };
            at += n;
            if jti.is_some()
                || disabled.is_some()
                || family.iter().any(Option::is_some)
                || lifecycle::issued_before(client_nbf.as_deref(), *link_issued)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Revokes `token` for the client it was issued to. Unknown, malformed and
    /// expired tokens succeed silently (RFC 7009 2.2), and so does another
    /// client's token (left untouched), so the answer never tells whether a
    /// token is valid.
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
        super::note_token_type(token);
        if refresh_gid(token).is_some() {
            return self.revoke_refresh(&client, token).await;
        }
        let keys = self.keys();
        let Ok(claims) = jwt::verify_signature(&keys, token) else {
            return Ok(());
        };
        if claims.iss != self.settings.issuer {
            return Ok(());
        }
        if claims.client_id != client.id {
            // Answered exactly like garbage: a refusal here would tell the
            // caller that another client's token is valid (issue 14, item 8).
            tracing::info!(client_id = %client.id, "revocation of another client's token ignored");
            return Ok(());
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
        let key = revoked_jti_key(&claims.jti);
        // The event first: a revocation is never stored without it.
        let event = FeedEvent::token_revoked(&claims.jti, &claims.client_id, ttl);
        self.publish(&key, &event, true).await?;
        self.store.put(&key, b"1", Some(ttl)).await?;
        tracing::info!(client_id = %client.id, jti = %claims.jti, "token revoked");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_disclose_the_allow_list_and_partner_claims_only() {
        let mut extra = serde_json::Map::new();
        extra.insert("organisation_id".into(), 74.into());
        // A partner claim can never shadow a standard member.
        extra.insert("active".into(), false.into());
        let claims = AccessClaims {
            iss: "https://issuer".into(),
            sub: "svc".into(),
            aud: vec!["api".into()],
            exp: 100,
            iat: 40,
            nbf: 40,
            jti: tokend_token::opaque::time_ordered_id(40_123),
            client_id: "svc".into(),
            scope: "a b".into(),
            sid: Some("family".into()),
            legacy_iat_ms: Some(40_123),
            act: None,
            chain: Vec::new(),
            cnf: None,
            extra,
        };
        let json = ActiveToken::access(&claims).to_json();
        let mut keys: Vec<&str> = json.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "active",
                "aud",
                "client_id",
                "exp",
                "iat",
                "iss",
                "jti",
                "nbf",
                "organisation_id",
                "scope",
                "sub",
                "token_type"
            ]
        );
        assert_eq!(json["active"], true);
        assert_eq!(json["aud"], "api");
        assert_eq!(json["scope"], "a b");
        let refresh = ActiveToken::refresh(RefreshInfo {
            client_id: "web".into(),
            sub: "alice".into(),
            scope: vec![],
            exp: None,
            username: None,
        })
        .to_json();
        let mut keys: Vec<&str> = refresh.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["active", "client_id", "sub", "token_type"]);
    }
}
