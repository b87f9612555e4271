//! RFC 8693 token exchange: a service holding a token addressed to it gets a
//! narrower token for the next service, on behalf of the same subject, with
//! the delegation chain in `act`.
//!
//! Policy, per client (`[[clients]]`):
//! - the grant type URN in `grant_types`, and `token_exchange_audiences`
//!   (the audiences it may ask for; empty = no exchange rights:
//!   `unauthorized_client`);
//! - the subject token must be addressed to the client: its `aud` names one
//!   of the client's own `audience` values (the client received it as a
//!   resource server), else `invalid_grant`; `token_exchange_clients`, when
//!   set, also restricts whose tokens (their `client_id`) it may exchange;
//! - scope: the requested scope (default: all of the subject token's scope
//!   the client may hold) must lie within both the subject token's scope and
//!   the client's `scopes`, so an exchanged token is never wider
//!   (`invalid_scope`);
//! - lifetime: at most the subject token's remaining lifetime;
//! - a `may_act` claim in the subject token (RFC 8693 4.4) names who may act:
//!   its `sub` and/or `client_id` must match the actor;
//! - `token_exchange_claims` lists the subject token's extra claims carried
//!   over; the client's own configured claims are not added.
//!
//! Revocation follows the chain without a store write per exchanged token:
//! the exchanged token carries its ancestors (`chain`: jti, client_id, and
//! grant family of each), and introspection checks every ancestor's
//! revocation marks, client cut-off and grant family in the same single
//! store round trip it already makes. The chain is bounded ([`MAX_CHAIN`]).

use serde_json::{Map, Value};

use super::client::{Client, GrantType};
use super::error::OAuthError;
use super::grant::{Exchanged, Grant, TokenRequest, TokenResponse};
use super::{Core, now_unix, scope};
use tokend_token::AccessClaims;
use tokend_token::jwt::ChainLink;
use tokend_token::jwt::Confirmation;

/// RFC 8693 3: token type identifiers tokend accepts and issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Longest delegation chain (hops) an exchanged token may carry.
pub const MAX_CHAIN: usize = 8;

fn is_supported_type(t: &str) -> bool {
    t == ACCESS_TOKEN_TYPE || t == JWT_TOKEN_TYPE
}

/// A subject or actor token that is not a live tokend access token.
fn bad_token(which: &str) -> OAuthError {
    OAuthError::invalid_grant(format!(
        "{which} is not an active access token of this server"
    ))
}

impl Core {
    /// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
    pub(crate) async fn token_exchange(
        &self,
        client: &Client,
        req: TokenRequest,
        cnf: Option<Confirmation>,
    ) -> Result<TokenResponse, OAuthError> {
        if req.code.is_some() || req.refresh_token.is_some() || req.code_verifier.is_some() {
            return Err(OAuthError::invalid_request(
                "token exchange takes no code, code_verifier or refresh_token",
            ));
        }
        if client.token_exchange_audiences.is_empty() {
            return Err(OAuthError::unauthorized_client(
                "this client has no token exchange rights (token_exchange_audiences is empty)",
            ));
        }
        let (Some(subject_token), Some(subject_type)) = (
            req.subject_token.as_deref(),
            req.subject_token_type.as_deref(),
        ) else {
            return Err(OAuthError::invalid_request(
                "subject_token and subject_token_type are required",
            ));
        };
        if !is_supported_type(subject_type) {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}"
            )));
        }
        if let Some(t) = req.requested_token_type.as_deref()
            && !is_supported_type(t)
        {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}"
            )));
        }
        match (req.actor_token.as_deref(), req.actor_token_type.as_deref()) {
            (None, None) => {}
            (Some(_), Some(t)) if is_supported_type(t) => {}
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(format!(
                    "actor_token_type must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}"
                )));
            }
            _ => {
                return Err(OAuthError::invalid_request(
                    "actor_token and actor_token_type go together",
                ));
            }
        }
        if req.audience.is_empty() {
            return Err(OAuthError::invalid_request(
                "audience or resource is required: an exchanged token names the service it is for",
            ));
        }
        let audience =
            scope::audience(&client.token_exchange_audiences, &req.audience).map_err(|_| {
                OAuthError::invalid_target("this client may not exchange for that audience")
            })?;

        let subject = self.live_token(subject_token, "subject_token").await?;
        if !subject.aud.iter().any(|a| client.audience.contains(a)) {
            return Err(OAuthError::invalid_grant(
                "the subject_token is not addressed to this client",
            ));
        }
        if !client.token_exchange_clients.is_empty()
            && !client.token_exchange_clients.contains(&subject.client_id)
        {
            return Err(OAuthError::invalid_grant(
                "this client may not exchange tokens of the subject token's client",
            ));
        }
        if subject.chain.len() >= MAX_CHAIN {
            return Err(OAuthError::invalid_grant(format!(
                "the delegation chain is longer than {MAX_CHAIN} hops"
            )));
        }
        let actor_sub = match req.actor_token.as_deref() {
            Some(t) => {
                let actor = self.live_token(t, "actor_token").await?;
                if actor.client_id != client.id {
                    return Err(OAuthError::invalid_grant(
                        "the actor_token was not issued to this client",
                    ));
                }
                actor.sub.clone()
            }
            None => client.subject.clone(),
        };
        if let Some(may_act) = subject.extra.get("may_act") {
            let allowed = may_act.as_object().is_some_and(|m| {
                let sub_ok = m.get("sub").is_none_or(|s| s.as_str() == Some(&actor_sub));
                let client_ok = m
                    .get("client_id")
                    .is_none_or(|c| c.as_str() == Some(&client.id));
                sub_ok && client_ok && (m.contains_key("sub") || m.contains_key("client_id"))
            });
            if !allowed {
                return Err(OAuthError::invalid_grant(
                    "the subject_token's may_act does not name this actor",
                ));
            }
        }

        let subject_scope = scope::split(&subject.scope);
        let scope = if req.scope.is_empty() {
            subject_scope
                .iter()
                .filter(|s| client.scopes.contains(s))
                .cloned()
                .collect()
        } else {
            let within_subject = scope::narrow(&subject_scope, &req.scope).map_err(|_| {
                OAuthError::invalid_scope("the requested scope exceeds the subject token's")
            })?;
            scope::narrow(&client.scopes, &within_subject).map_err(|_| {
                OAuthError::invalid_scope("the requested scope exceeds the client's scopes")
            })?
        };
        let remaining = subject.exp.saturating_sub(now_unix());
        let Ok(max_ttl @ 1..) = u64::try_from(remaining) else {
            return Err(bad_token("subject_token"));
        };

        // RFC 8693 4.1: the current actor outermost, earlier ones nested.
        let mut act = Map::new();
        act.insert("sub".into(), Value::String(actor_sub));
        if let Some(prev) = &subject.act {
            act.insert("act".into(), prev.clone());
        }
        let mut chain = subject.chain.clone();
        chain.push(ChainLink {
            jti: subject.jti.clone(),
            client_id: subject.client_id.clone(),
            sid: subject.sid.clone(),
        });
        let extra: Map<String, Value> = client
            .token_exchange_claims
            .iter()
            .filter_map(|k| subject.extra.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        let mut resp = self.mint(Grant {
            client,
            grant_type: GrantType::TokenExchange,
            subject: subject.sub.clone(),
            scope,
            audience,
            gid: None,
            extra,
            cnf,
            exchange: Some(Exchanged {
                act: Value::Object(act),
                chain,
                max_ttl,
            }),
        })?;
        // Only configured claims are echoed (claims_in_response), never the
        // subject's.
        resp.extra = Map::new();
        resp.issued_token_type = Some(ACCESS_TOKEN_TYPE);
        Ok(resp)
    }

    /// A tokend access token that verifies and is not revoked (through its
    /// whole chain); `invalid_grant` otherwise. Refresh tokens are refused.
    async fn live_token(
        &self,
        token: &str,
        which: &str,
    ) -> Result<std::sync::Arc<AccessClaims>, OAuthError> {
        let claims = self.verify_cached(token).map_err(|e| {
            tracing::debug!(reason = %e, "{which} does not verify");
            bad_token(which)
        })?;
        if self.is_revoked(&claims).await? {
            return Err(bad_token(which));
        }
        Ok(claims)
    }
}
