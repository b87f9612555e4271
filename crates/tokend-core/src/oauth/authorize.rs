//! The authorization-code flow up to the code: the authorization endpoint
//! (RFC 6749 4.1.1, PKCE per RFC 7636), the login-app API that accepts or
//! rejects a pending request, and the `authorization_code` grant that redeems
//! the code.
//!
//! tokend is headless: it owns no users. A valid authorization request is
//! sealed into a `login_challenge` and the browser goes to the operator's
//! login app, which decides who the user is and what they consent to, then
//! calls `AcceptAuthorization` / `RejectAuthorization` over gRPC and sends the
//! browser wherever tokend answers.
//!
//! The authorization endpoint is unauthenticated, so it writes nothing: the
//! challenge is the pending request itself (with its expiry), encrypted and
//! authenticated with a key derived from the signing keys
//! ([`tokend_token::sealed`]); any replica opens it. Only the login app's
//! answer, which is authenticated, writes: a small `chalused:` marker
//! (`put_new`, living as long as the challenge would) makes a challenge
//! answerable once. Before issue 14 each call parked ~2.7 KB in the store for
//! 600 s, and a flood made an evicting Redis drop revocation keys.
//!
//! Codes are 256-bit random handles stored only under their SHA-256, with a
//! short TTL. A code is redeemed with the store's atomic `take`, so of any
//! number of concurrent redemptions exactly one succeeds.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

use super::client::{Client, GrantType, OOB_REDIRECT_URI};
use super::error::OAuthError;
use super::grant::{Grant, TokenRequest, TokenResponse};
use super::params::{self, Params};
use super::{Core, oob, scope};
use tokend_token::jwt::Confirmation;
use tokend_token::jwt::RESERVED_CLAIMS;
use tokend_token::opaque;

/// Largest `state` accepted, in bytes as sent (percent-encoded): it travels
/// inside the sealed challenge, which bounds the challenge's size.
const MAX_STATE_LEN: usize = 512;
/// Longest `subject` (and `username`) the login app may set.
const MAX_SUBJECT_LEN: usize = 255;
/// The claim carrying the login app's `username` (RFC 7662 names it so).
pub const USERNAME_CLAIM: &str = "username";

/// A validated authorization request waiting for the login app.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    client_id: String,
    redirect_uri: String,
    /// Whether the request named `redirect_uri` (then the token request must
    /// repeat it, RFC 6749 4.1.3).
    redirect_uri_sent: bool,
    scope: Vec<String>,
    /// As the client sent it (still percent-encoded), echoed byte for byte.
    state: Option<String>,
    /// S256 challenge, base64url.
    code_challenge: Option<String>,
    /// When the challenge expires (Unix ms).
    exp_ms: i64,
}

/// What an authorization code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    redirect_uri_sent: bool,
    scope: Vec<String>,
    subject: String,
    claims: Map<String, Value>,
    code_challenge: Option<String>,
}

/// What the login app is shown about a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationInfo {
    pub client_id: String,
    /// The client's display name (empty when unset).
    pub client_name: String,
    pub requested_scope: Vec<String>,
    pub redirect_uri: String,
}

/// Marks an answered login challenge (a challenge has exactly one encoding:
/// the base64url decoder refuses non-canonical text).
fn answered_key(challenge: &str) -> String {
    format!("chalused:{}", opaque::digest(challenge))
}

/// The one answer for a challenge that is not (or no longer) pending:
/// malformed, forged, tampered with or expired (as for an unknown one
/// before challenges were sealed).
fn unknown_challenge() -> OAuthError {
    OAuthError::invalid_request("unknown, expired or already answered login_challenge")
}

/// A genuine, unexpired challenge that was accepted or rejected already.
/// Only the authenticated login app ever sees this.
fn answered_challenge() -> OAuthError {
    OAuthError::invalid_request("login_challenge was already answered")
}

fn code_key(code: &str) -> String {
    format!("code:{}", opaque::digest(code))
}

/// Marks a redeemed code, holding the grant family id so a replay can revoke
/// what the first redemption issued.
fn code_used_key(code: &str) -> String {
    format!("code:used:{}", opaque::digest(code))
}

/// Appends query parameters to a registered redirect URI (which has no
/// fragment: registration refuses them).
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", ser.finish())
}

/// An authorization response to the client's redirect URI: `params`
/// (encoded), then `state` exactly as the client sent it ([`echo_state`]),
/// then `iss` (RFC 9207), like every authorization response.
fn response_redirect(uri: &str, params: &[(&str, &str)], state: Option<&str>, iss: &str) -> String {
    let mut out = with_query(uri, params);
    if let Some(s) = state {
        out.push_str("&state=");
        out.push_str(&echo_state(s));
    }
    out.push_str("&iss=");
    out.extend(form_urlencoded::byte_serialize(iss.as_bytes()));
    out
}

/// The error response of RFC 6749 4.1.2.1, echoing `state` unchanged.
fn error_redirect(
    uri: &str,
    iss: &str,
    code: &str,
    description: &str,
    state: Option<&str>,
) -> String {
    response_redirect(
        uri,
        &[("error", code), ("error_description", description)],
        state,
        iss,
    )
}

/// `state` as sent, for the response's query. It came from a request URI,
/// so it is already valid query text; a byte the URI grammar does not allow
/// in a query (a lenient client's raw `"` or space) is percent-encoded, the
/// only change ever made, so the client decodes the same value.
fn echo_state(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
                    | b'?'
                    | b'%'
            );
        if keep {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 7636 4.2: an S256 challenge is the base64url SHA-256 of the verifier,
/// always 43 characters.
fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 4.1: 43 to 128 unreserved characters.
fn is_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `verifier` hashes to `challenge` (constant-time compare).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = B64.encode(Sha256::digest(verifier.as_bytes()));
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// RFC 6749 `error_description` characters: printable ASCII except `"` and `\`.
fn is_description(s: &str) -> bool {
    s.len() <= 1024
        && s.bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Error codes the login app may pass to `RejectAuthorization` (RFC 6749 4.1.2.1).
pub(crate) const REJECT_ERRORS: &[&str] = &[
    "access_denied",
    "invalid_request",
    "invalid_scope",
    "unauthorized_client",
    "server_error",
    "temporarily_unavailable",
];

fn parse_json<T: for<'de> Deserialize<'de>>(raw: &[u8], what: &str) -> Result<T, OAuthError> {
    serde_json::from_slice(raw).map_err(|e| {
        tracing::error!(error = %e, what, "undecodable store record");
        OAuthError::ServerError("a stored record could not be decoded".into())
    })
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, OAuthError> {
    serde_json::to_vec(v).map_err(|_| OAuthError::ServerError("could not encode a record".into()))
}

impl Core {
    /// `GET /oauth/authorize`. `raw_query` is the query string as received
    /// (without `?`).
    ///
    /// `Ok` is always a redirect target: the login app when the request is
    /// valid, otherwise the client's redirect URI carrying the error and the
    /// original `state`. `Err` means the client or its redirect URI cannot be
    /// trusted, so the error is shown to the user and never redirected
    /// (RFC 6749 4.1.2.1). Nothing is written to the store.
    pub async fn authorize(&self, raw_query: &str) -> Result<String, OAuthError> {
        let parsed = params::parse_query(raw_query)?;
        // The raw `state`, when sent once with a value (RFC 6749 3.1: empty
        // is omitted; a repeated one is an error, reported without it).
        let mut states = parsed
            .iter()
            .filter(|p| p.name == "state" && !p.value.is_empty());
        let raw_state = match (states.next(), states.next()) {
            (Some(p), None) => Some(p.raw_value.clone()),
            _ => None,
        };
        let query = Params::lenient(parsed.into_iter().map(|p| (p.name, p.value)).collect())?;
        let count = |name: &str| query.count(name);
        let get = |name: &str| query.get(name);
        if count("client_id") > 1 || count("redirect_uri") > 1 {
            return Err(OAuthError::invalid_request(
                "client_id or redirect_uri is repeated",
            ));
        }
        let registry = self.clients();
        // An unknown client and a known one that may not use this endpoint
        // get the same answer: it is unauthenticated, so it must not tell
        // which client ids exist (issue 14).
        let Some(client) = get("client_id")
            .and_then(|id| registry.get(id))
            .filter(|c| c.allows(GrantType::AuthorizationCode))
        else {
            return Err(OAuthError::invalid_request(
                "unknown or missing client_id, or a client that may not use this endpoint",
            ));
        };
        // Exact string comparison: no prefix, suffix, case or port games.
        let redirect_uri = match get("redirect_uri") {
            Some(u) if client.out_of_band && oob::is_oob(u) => OOB_REDIRECT_URI.to_owned(),
            Some(u) => match client.redirect_uris.iter().find(|r| r.as_str() == u) {
                Some(r) => r.clone(),
                None => {
                    return Err(OAuthError::invalid_request(
                        "redirect_uri is not registered for this client",
                    ));
                }
            },
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None if client.redirect_uris.is_empty() && client.out_of_band => {
                OOB_REDIRECT_URI.to_owned()
            }
            None => return Err(OAuthError::invalid_request("redirect_uri is required")),
        };
        let state = raw_state.as_deref().filter(|s| s.len() <= MAX_STATE_LEN);
        if oob::is_oob(&redirect_uri) {
            // No redirect URI to carry an error: it is shown to the user.
            if raw_state
                .as_deref()
                .is_some_and(|s| s.len() > MAX_STATE_LEN)
            {
                return Err(OAuthError::invalid_request(format!(
                    "state is too long (at most {MAX_STATE_LEN} bytes as sent)"
                )));
            }
            let pending = self.check_authorize(client, &query, &redirect_uri, state)?;
            return self.login_redirect(&pending);
        }
        let refuse = |e: OAuthError| {
            tracing::debug!(client_id = %client.id, error = e.code(), "authorization request refused");
            error_redirect(
                &redirect_uri,
                &self.settings.issuer,
                e.code(),
                &e.description(),
                state,
            )
        };
        if raw_state
            .as_deref()
            .is_some_and(|s| s.len() > MAX_STATE_LEN)
        {
            return Ok(refuse(OAuthError::invalid_request(format!(
                "state is too long (at most {MAX_STATE_LEN} bytes as sent)"
            ))));
        }
        let pending = match self.check_authorize(client, &query, &redirect_uri, state) {
            Ok(p) => p,
            Err(e) => return Ok(refuse(e)),
        };
        match self.login_redirect(&pending) {
            Ok(to) => Ok(to),
            Err(e) => Ok(refuse(e)),
        }
    }

    /// The login app's URL carrying `pending` sealed as the challenge.
    fn login_redirect(&self, pending: &Pending) -> Result<String, OAuthError> {
        let Some(login_url) = &self.settings.login_url else {
            // Config validation prevents this; answer like any server error.
            return Err(OAuthError::ServerError("no login app is configured".into()));
        };
        let challenge = to_json(pending).and_then(|plain| {
            self.keys()
                .seal(&plain)
                .ok_or_else(|| OAuthError::ServerError("could not seal the login challenge".into()))
        })?;
        Ok(with_query(login_url, &[("login_challenge", &challenge)]))
    }

    /// The checks made once the redirect URI is trusted; failures are
    /// redirected to the client.
    fn check_authorize(
        &self,
        client: &Client,
        query: &Params,
        redirect_uri: &str,
        state: Option<&str>,
    ) -> Result<Pending, OAuthError> {
        query.check_repeats()?;
        let get = |name: &str| query.get(name);
        match get("response_type") {
            None => return Err(OAuthError::invalid_request("response_type is required")),
            Some("code") => {}
            Some(_) => return Err(OAuthError::UnsupportedResponseType),
        }
        // A client without the authorization_code grant never gets here: it
        // is refused like an unknown one (see `authorize`).
        let scope = scope::grant(
            &client.scopes,
            &client.default_scopes,
            &get("scope").map(scope::split).unwrap_or_default(),
        )?;
        let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
            (None, None) => None,
            (Some(c), Some("S256")) if is_s256_challenge(c) => Some(c.to_owned()),
            (Some(_), Some("S256")) => {
                return Err(OAuthError::invalid_request(
                    "code_challenge must be 43 base64url characters (S256)",
                ));
            }
            (_, Some("plain")) => {
                return Err(OAuthError::invalid_request(
                    "code_challenge_method plain is not supported; use S256",
                ));
            }
            (Some(_), None) => {
                // RFC 7636 would default to plain, which is refused.
                return Err(OAuthError::invalid_request(
                    "code_challenge_method=S256 is required with code_challenge",
                ));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "code_challenge_method without code_challenge",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "unsupported code_challenge_method; use S256",
                ));
            }
        };
        if client.is_public() && code_challenge.is_none() {
            return Err(OAuthError::invalid_request(
                "PKCE (code_challenge with code_challenge_method=S256) is required for public clients",
            ));
        }
        Ok(Pending {
            client_id: client.id.clone(),
            redirect_uri: redirect_uri.to_owned(),
            redirect_uri_sent: get("redirect_uri").is_some(),
            scope,
            state: state.map(str::to_owned),
            code_challenge,
            exp_ms: super::now_unix_ms().saturating_add(
                i64::try_from(self.settings.challenge_ttl.as_millis()).unwrap_or(i64::MAX),
            ),
        })
    }

    /// Opens a challenge that is still pending: sealed by this key set, not
    /// expired, not answered. Anything else is [`unknown_challenge`].
    async fn pending(&self, challenge: &str) -> Result<Pending, OAuthError> {
        if challenge.is_empty() {
            return Err(OAuthError::invalid_request("login_challenge is required"));
        }
        let Some(plain) = self.keys().open(challenge) else {
            return Err(unknown_challenge());
        };
        let p: Pending = serde_json::from_slice(&plain).map_err(|e| {
            // Sealed by tokend, so only a format change between versions.
            tracing::warn!(error = %e, "a sealed login challenge could not be decoded");
            unknown_challenge()
        })?;
        if p.exp_ms <= super::now_unix_ms() {
            return Err(unknown_challenge());
        }
        if self.store.get(&answered_key(challenge)).await?.is_some() {
            return Err(answered_challenge());
        }
        Ok(p)
    }

    /// Answers a challenge: of concurrent answers, only one proceeds. The
    /// marker lives as long as the challenge would have, so the store holds
    /// at most one per challenge the login app answered in that window.
    async fn consume_challenge(&self, challenge: &str, p: &Pending) -> Result<(), OAuthError> {
        let left_ms = p.exp_ms.saturating_sub(super::now_unix_ms());
        let Ok(left_ms @ 1..) = u64::try_from(left_ms) else {
            return Err(unknown_challenge());
        };
        if self
            .store
            .put_new(
                &answered_key(challenge),
                b"1",
                Some(Duration::from_millis(left_ms)),
            )
            .await?
        {
            Ok(())
        } else {
            Err(answered_challenge())
        }
    }

    /// Login app: what is being asked, to show a consent screen.
    pub async fn get_authorization(
        &self,
        challenge: &str,
    ) -> Result<AuthorizationInfo, OAuthError> {
        let p = self.pending(challenge).await?;
        let client_name = self
            .clients()
            .get(&p.client_id)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        Ok(AuthorizationInfo {
            client_id: p.client_id,
            client_name,
            requested_scope: p.scope,
            redirect_uri: p.redirect_uri,
        })
    }

    /// Login app: the user `subject` consents to `granted_scope` (a subset of
    /// the requested scope; empty = all of it). `claims` are added to the
    /// access tokens, and a non-empty `username` (the name the user logged in
    /// with) becomes their `username` claim, which introspection returns as
    /// RFC 7662 `username`. Returns where to send the browser: the client's
    /// redirect URI with `code` and `state`. A challenge is answered once.
    pub async fn accept_authorization(
        &self,
        challenge: &str,
        subject: &str,
        username: &str,
        granted_scope: &[String],
        mut claims: Map<String, Value>,
    ) -> Result<String, OAuthError> {
        if !username.is_empty() {
            if username.len() > MAX_SUBJECT_LEN || username.chars().any(char::is_control) {
                return Err(OAuthError::invalid_request(
                    "username must be at most 255 characters without control characters",
                ));
            }
            if claims.contains_key(USERNAME_CLAIM) {
                return Err(OAuthError::invalid_request(
                    "give the username in `username` or in `claims`, not both",
                ));
            }
            claims.insert(USERNAME_CLAIM.into(), Value::String(username.to_owned()));
        }
        if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
            return Err(OAuthError::invalid_request(
                "subject must be 1 to 255 characters",
            ));
        }
        if subject.chars().any(char::is_control) {
            return Err(OAuthError::invalid_request(
                "subject must not contain control characters",
            ));
        }
        if let Some(k) = claims
            .keys()
            .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
        {
            return Err(OAuthError::invalid_request(format!(
                "claim {:?} is set by tokend and cannot be given",
                k.chars().take(40).collect::<String>()
            )));
        }
        // Validate before consuming, so a login app bug can be retried.
        let p = self.pending(challenge).await?;
        let scope = if granted_scope.is_empty() {
            p.scope.clone()
        } else {
            scope::narrow(&p.scope, granted_scope)?
        };
        self.consume_challenge(challenge, &p).await?;
        let code = opaque::generate("");
        let grant = CodeGrant {
            client_id: p.client_id,
            redirect_uri: p.redirect_uri.clone(),
            redirect_uri_sent: p.redirect_uri_sent,
            scope,
            subject: subject.to_owned(),
            claims,
            code_challenge: p.code_challenge,
        };
        self.store
            .put(
                &code_key(&code),
                &to_json(&grant)?,
                Some(self.settings.code_ttl),
            )
            .await?;
        if oob::is_oob(&p.redirect_uri) {
            return self.oob_ticket(&code, &grant.client_id).await;
        }
        // RFC 9207: the client can tell which server answered (mix-up).
        Ok(response_redirect(
            &p.redirect_uri,
            &[("code", code.as_str())],
            p.state.as_deref(),
            &self.settings.issuer,
        ))
    }

    /// Login app: the user (or the app) refused. `error` defaults to
    /// `access_denied`. Returns the client's redirect URI with the error and
    /// `state`.
    pub async fn reject_authorization(
        &self,
        challenge: &str,
        error: &str,
        description: &str,
    ) -> Result<String, OAuthError> {
        let error = if error.is_empty() {
            "access_denied"
        } else {
            error
        };
        if !REJECT_ERRORS.contains(&error) {
            return Err(OAuthError::invalid_request(format!(
                "error must be one of {}",
                REJECT_ERRORS.join(", ")
            )));
        }
        if !is_description(description) {
            return Err(OAuthError::invalid_request(
                "error_description must be printable ASCII without '\"' or '\\\\', at most 1024 characters",
            ));
        }
        let p = self.pending(challenge).await?;
        self.consume_challenge(challenge, &p).await?;
        let description = if description.is_empty() {
            "the resource owner or the login app denied the request"
        } else {
            description
        };
        if oob::is_oob(&p.redirect_uri) {
            return Ok(self.oob_refused(error));
        }
        Ok(error_redirect(
            &p.redirect_uri,
            &self.settings.issuer,
            error,
            description,
            p.state.as_deref(),
        ))
    }

    /// The `authorization_code` grant (RFC 6749 4.1.3, RFC 7636 4.6).
    pub(crate) async fn authorization_code(
        &self,
        client: &Client,
        req: TokenRequest,
        cnf: Option<Confirmation>,
    ) -> Result<TokenResponse, OAuthError> {
        if req.refresh_token.is_some() {
            return Err(OAuthError::invalid_request(
                "authorization_code takes no refresh_token",
            ));
        }
        let Some(code) = req.code.as_deref() else {
            return Err(OAuthError::invalid_request("code is required"));
        };
        // Any redemption attempt consumes the code, successful or not: a
        // stolen code cannot be retried against the verifier.
        let Some(raw) = self.store.take(&code_key(code)).await? else {
            // A replay only finds the mark once the first redemption has
            // finished issuing; one racing with it still fails, just without
            // revoking (the first redemption's tokens are not issued yet).
            if let Some(gid) = self.store.get(&code_used_key(code)).await? {
                let gid = String::from_utf8_lossy(&gid).into_owned();
                self.revoke_family(&gid).await?;
                tracing::warn!(client_id = %client.id, gid = %gid,
                    "authorization code replayed: every token issued from it is revoked");
                return Err(OAuthError::invalid_grant(
                    "the code was already used; the tokens issued from it are revoked",
                ));
            }
            return Err(OAuthError::invalid_grant("invalid or expired code"));
        };
        let g: CodeGrant = parse_json(&raw, "authorization code")?;
        if g.client_id != client.id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        let redirect_ok = match req.redirect_uri.as_deref() {
            Some(r) => r == g.redirect_uri,
            None => !g.redirect_uri_sent,
        };
        if !redirect_ok {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&g.code_challenge, req.code_verifier.as_deref()) {
            (Some(c), Some(v)) => {
                if !is_verifier(v) || !pkce_matches(v, c) {
                    return Err(OAuthError::invalid_grant(
                        "code_verifier does not match the code_challenge",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant("code_verifier is required"));
            }
            // RFC 9700 2.1.1: a verifier without a challenge is a downgrade.
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier given but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
        let scope = scope::narrow(&g.scope, &req.scope)?;
        let audience = scope::audience(&client.audience, &req.audience)?;
        let gid = opaque::random_id();
        let refresh_token = if client.allows(GrantType::RefreshToken) {
            Some(
                self.start_family(
                    client,
                    &gid,
                    &g.subject,
                    &g.scope,
                    &audience,
                    g.claims.clone(),
                )
                .await?,
            )
        } else {
            None
        };
        let mut extra = client.claims.clone();
        extra.extend(g.claims);
        let mut resp = self.mint(Grant {
            client,
            grant_type: GrantType::AuthorizationCode,
            subject: g.subject,
            scope,
            audience,
            gid: Some(gid.clone()),
            extra,
            cnf,
            exchange: None,
        })?;
        resp.refresh_token = refresh_token;
        // Only now is there a family for a replay to revoke.
        self.store
            .put(
                &code_used_key(code),
                gid.as_bytes(),
                Some(self.settings.code_ttl),
            )
            .await?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(is_verifier(verifier));
        assert!(is_s256_challenge(challenge));
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("x".repeat(43).as_str(), challenge));
        assert!(!is_verifier("short"));
    }

    #[test]
    fn redirects_keep_existing_query_and_echo_state_as_sent() {
        assert_eq!(
            error_redirect(
                "https://a/cb?x=1",
                "https://i",
                "access_denied",
                "no",
                Some("a+b%26c%7e~%2f")
            ),
            "https://a/cb?x=1&error=access_denied&error_description=no&state=a+b%26c%7e~%2f&iss=https%3A%2F%2Fi"
        );
        // Only bytes a query may not hold are encoded.
        assert_eq!(
            echo_state("a b\"<>^`{|}ü"),
            "a%20b%22%3C%3E%5E%60%7B%7C%7D%C3%BC"
        );
        assert_eq!(
            with_query("https://a/cb", &[("code", "k")]),
            "https://a/cb?code=k"
        );
    }
}
