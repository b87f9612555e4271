//! The authorization-code flow up to the code: the authorization endpoint
//! (RFC 6749 4.1.1, PKCE per RFC 7636), the login-app API that accepts or
//! rejects a pending request, and the `authorization_code` grant that redeems
//! the code.
//!
//! tokend is headless: it owns no users. A valid authorization request is
//! parked under a random `login_challenge` and the browser goes to the
//! operator's login app, which decides who the user is and what they consent
//! to, then calls `AcceptAuthorization` / `RejectAuthorization` over gRPC and
//! sends the browser wherever tokend answers.
//!
//! Challenges and codes are 256-bit random handles stored only under their
//! SHA-256, each with a short TTL. A code is redeemed with the store's atomic
//! `take`, so of any number of concurrent redemptions exactly one succeeds.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::client::{Client, GrantType};
use super::error::OAuthError;
use super::grant::{Grant, TokenRequest, TokenResponse};
use super::params::Params;
use super::{Core, scope};
use tokend_token::jwt::RESERVED_CLAIMS;
use tokend_token::opaque;

/// Largest `state` kept (it is stored and echoed; browsers cap URLs anyway).
const MAX_STATE_LEN: usize = 2048;
/// Longest `subject` the login app may set.
const MAX_SUBJECT_LEN: usize = 255;

/// A validated authorization request waiting for the login app.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    client_id: String,
    redirect_uri: String,
    /// Whether the request named `redirect_uri` (then the token request must
    /// repeat it, RFC 6749 4.1.3).
    redirect_uri_sent: bool,
    scope: Vec<String>,
    state: Option<String>,
    /// S256 challenge, base64url.
    code_challenge: Option<String>,
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
    pub requested_scope: Vec<String>,
    pub redirect_uri: String,
}

fn challenge_key(challenge: &str) -> String {
    format!("chal:{}", opaque::digest(challenge))
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

/// The error redirect of RFC 6749 4.1.2.1, echoing `state` unchanged.
fn error_redirect(uri: &str, code: &str, description: &str, state: Option<&str>) -> String {
    let mut params = vec![("error", code), ("error_description", description)];
    if let Some(s) = state {
        params.push(("state", s));
    }
    with_query(uri, &params)
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
const REJECT_ERRORS: &[&str] = &[
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
    /// `GET /oauth/authorize`. `query` holds the decoded query pairs in order.
    ///
    /// `Ok` is always a redirect target: the login app when the request is
    /// valid, otherwise the client's redirect URI carrying the error and the
    /// original `state`. `Err` means the client or its redirect URI cannot be
    /// trusted, so the error is shown to the user and never redirected
    /// (RFC 6749 4.1.2.1).
    pub async fn authorize(&self, query: Vec<(String, String)>) -> Result<String, OAuthError> {
        let query = Params::lenient(query)?;
        let count = |name: &str| query.count(name);
        let get = |name: &str| query.get(name);
        if count("client_id") > 1 || count("redirect_uri") > 1 {
            return Err(OAuthError::invalid_request(
                "client_id or redirect_uri is repeated",
            ));
        }
        let registry = self.clients();
        let Some(client) = get("client_id").and_then(|id| registry.get(id)) else {
            return Err(OAuthError::invalid_request("unknown or missing client_id"));
        };
        // Exact string comparison: no prefix, suffix, case or port games.
        let redirect_uri = match get("redirect_uri") {
            Some(u) => match client.redirect_uris.iter().find(|r| r.as_str() == u) {
                Some(r) => r.clone(),
                None => {
                    return Err(OAuthError::invalid_request(
                        "redirect_uri is not registered for this client",
                    ));
                }
            },
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(OAuthError::invalid_request("redirect_uri is required")),
        };
        let state = match count("state") {
            1 => get("state").filter(|s| s.len() <= MAX_STATE_LEN),
            _ => None,
        };
        let pending = match self.check_authorize(client, &query, &redirect_uri, state) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(client_id = %client.id, error = e.code(), "authorization request refused");
                return Ok(error_redirect(
                    &redirect_uri,
                    e.code(),
                    &e.description(),
                    state,
                ));
            }
        };
        let Some(login_url) = &self.settings.login_url else {
            // Config validation prevents this; answer like any server error.
            return Ok(error_redirect(
                &redirect_uri,
                "server_error",
                "no login app is configured",
                state,
            ));
        };
        let challenge = opaque::generate("");
        let stored = match to_json(&pending) {
            Ok(v) => v,
            Err(e) => {
                return Ok(error_redirect(
                    &redirect_uri,
                    e.code(),
                    &e.description(),
                    state,
                ));
            }
        };
        if let Err(e) = self
            .store
            .put(
                &challenge_key(&challenge),
                &stored,
                Some(self.settings.challenge_ttl),
            )
            .await
        {
            let e = OAuthError::from(e);
            return Ok(error_redirect(
                &redirect_uri,
                e.code(),
                &e.description(),
                state,
            ));
        }
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
        if get("state").is_some_and(|s| s.len() > MAX_STATE_LEN) {
            return Err(OAuthError::invalid_request("state is too long"));
        }
        match get("response_type") {
            None => return Err(OAuthError::invalid_request("response_type is required")),
            Some("code") => {}
            Some(_) => return Err(OAuthError::UnsupportedResponseType),
        }
        if !client.allows(GrantType::AuthorizationCode) {
            return Err(OAuthError::unauthorized_client(
                "this client may not use the authorization code grant",
            ));
        }
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
        })
    }

    async fn pending(&self, challenge: &str) -> Result<Pending, OAuthError> {
        if challenge.is_empty() {
            return Err(OAuthError::invalid_request("login_challenge is required"));
        }
        match self.store.get(&challenge_key(challenge)).await? {
            Some(raw) => parse_json(&raw, "login challenge"),
            None => Err(OAuthError::invalid_request(
                "unknown, expired or already answered login_challenge",
            )),
        }
    }

    /// Consumes a challenge: of concurrent answers, only one proceeds.
    async fn consume_challenge(&self, challenge: &str) -> Result<(), OAuthError> {
        match self.store.take(&challenge_key(challenge)).await? {
            Some(_) => Ok(()),
            None => Err(OAuthError::invalid_request(
                "unknown, expired or already answered login_challenge",
            )),
        }
    }

    /// Login app: what is being asked, to show a consent screen.
    pub async fn get_authorization(
        &self,
        challenge: &str,
    ) -> Result<AuthorizationInfo, OAuthError> {
        let p = self.pending(challenge).await?;
        Ok(AuthorizationInfo {
            client_id: p.client_id,
            requested_scope: p.scope,
            redirect_uri: p.redirect_uri,
        })
    }

    /// Login app: the user `subject` consents to `granted_scope` (a subset of
    /// the requested scope; empty = all of it). `claims` are added to the
    /// access tokens. Returns where to send the browser: the client's
    /// redirect URI with `code` and `state`. A challenge is answered once.
    pub async fn accept_authorization(
        &self,
        challenge: &str,
        subject: &str,
        granted_scope: &[String],
        claims: Map<String, Value>,
    ) -> Result<String, OAuthError> {
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
        self.consume_challenge(challenge).await?;
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
        let mut params = vec![("code", code.as_str())];
        if let Some(s) = &p.state {
            params.push(("state", s));
        }
        Ok(with_query(&p.redirect_uri, &params))
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
        self.consume_challenge(challenge).await?;
        let description = if description.is_empty() {
            "the resource owner or the login app denied the request"
        } else {
            description
        };
        Ok(error_redirect(
            &p.redirect_uri,
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
    fn redirects_keep_existing_query_and_encode_state() {
        assert_eq!(
            error_redirect("https://a/cb?x=1", "access_denied", "no", Some("a b&c")),
            "https://a/cb?x=1&error=access_denied&error_description=no&state=a+b%26c"
        );
        assert_eq!(
            with_query("https://a/cb", &[("code", "k")]),
            "https://a/cb?code=k"
        );
    }
}
