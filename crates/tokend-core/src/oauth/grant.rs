//! The token endpoint: authenticate the client, check the grant, mint.

use std::sync::Arc;

use super::client::{Client, Credentials, GrantType};
use super::error::OAuthError;
use super::{Core, scope};
use tokend_token::jwt::Confirmation;
use tokend_token::{AccessClaims, jwt, opaque};

/// A token request, already decoded from the wire (form, JSON or protobuf).
/// Fields are the RFC 6749 parameter names; absent and empty are the same.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: String,
    pub scope: Vec<String>,
    pub audience: Vec<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    /// RFC 8693 token exchange parameters.
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
}

/// A successful token response (RFC 6749 5.1).
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: Vec<String>,
    pub refresh_token: Option<String>,
    /// Claims the client echoes as top-level response fields.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// RFC 8693 `issued_token_type` (token exchange only).
    pub issued_token_type: Option<&'static str>,
    /// For logs and metrics.
    pub client_id: String,
    pub grant_type: GrantType,
}

/// What a grant decided; minting is common to all grants.
pub(crate) struct Grant<'a> {
    pub client: &'a Client,
    pub grant_type: GrantType,
    pub subject: String,
    pub scope: Vec<String>,
    pub audience: Vec<String>,
    pub gid: Option<String>,
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// RFC 8705 3: the certificate the access token is bound to.
    pub cnf: Option<Confirmation>,
    /// Token exchange: the actor, the ancestors, and the subject token's
    /// remaining lifetime (the exchanged token never outlives it).
    pub exchange: Option<Exchanged>,
}

/// What token exchange adds to a minted token.
pub(crate) struct Exchanged {
    pub act: serde_json::Value,
    pub chain: Vec<tokend_token::jwt::ChainLink>,
    pub max_ttl: u64,
}

/// RFC 8705 3: what the access tokens of this request are bound to. A
/// client with `tls_client_certificate_bound_access_tokens` gets tokens
/// bound to the certificate of the connection it asks on, whatever the
/// grant (a refreshed or exchanged token is bound to the certificate
/// presented when it is minted, so a client can rotate its certificate
/// without losing its refresh token), and cannot get a token without one.
/// Other clients get bearer tokens.
fn certificate_binding(
    client: &Client,
    creds: &Credentials,
) -> Result<Option<Confirmation>, OAuthError> {
    if !client.certificate_bound_tokens {
        return Ok(None);
    }
    match &creds.cert {
        Some(cert) => Ok(Some(cert.confirmation())),
        None => Err(OAuthError::invalid_request(
            "this client's access tokens are bound to its TLS client certificate (RFC 8705): connect with one",
        )),
    }
}

impl Core {
    /// Handles a token request from either transport.
    pub async fn token(
        &self,
        creds: &Credentials,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        if req.grant_type.is_empty() {
            return Err(OAuthError::invalid_request("grant_type is required"));
        }
        let grant_type =
            GrantType::parse(&req.grant_type).ok_or(OAuthError::UnsupportedGrantType)?;
        let client: Arc<Client> = self.authenticate(creds).await?;
        if !client.allows(grant_type) {
            // A public client proved nothing by naming its id: answering
            // anything but what an unknown id gets would confirm that the id
            // exists (issue 14, item 6).
            if client.is_public() {
                return Err(OAuthError::InvalidClient);
            }
            return Err(OAuthError::unauthorized_client(
                "this client may not use this grant type",
            ));
        }
        // Decided before the grant runs, so a refused request consumes no
        // code or refresh token.
        let cnf = certificate_binding(&client, creds)?;
        let issued = match grant_type {
            GrantType::ClientCredentials => self.client_credentials(&client, req, cnf),
            GrantType::AuthorizationCode => self.authorization_code(&client, req, cnf).await,
            GrantType::RefreshToken => self.refresh_token(&client, req, cnf).await,
            GrantType::TokenExchange => self.token_exchange(&client, req, cnf).await,
        };
        if let Ok(r) = &issued {
            // For the request's span (docs/tracing.md): what was issued.
            let span = tracing::Span::current();
            span.record("oauth.token_type", "access_token");
            span.record("oauth.refresh_token_issued", r.refresh_token.is_some());
        }
        issued
    }

    fn client_credentials(
        &self,
        client: &Client,
        req: TokenRequest,
        cnf: Option<Confirmation>,
    ) -> Result<TokenResponse, OAuthError> {
        if req.code.is_some()
            || req.refresh_token.is_some()
            || req.code_verifier.is_some()
            || req.subject_token.is_some()
        {
            return Err(OAuthError::invalid_request(
                "client_credentials takes no code, code_verifier, refresh_token or subject_token",
            ));
        }
        let scope = scope::grant(&client.scopes, &client.default_scopes, &req.scope)?;
        let audience = scope::audience(&client.audience, &req.audience)?;
        self.mint(Grant {
            client,
            grant_type: GrantType::ClientCredentials,
            subject: client.subject.clone(),
            scope,
            audience,
            gid: None,
            extra: client.claims.clone(),
            cnf,
            exchange: None,
        })
    }

    /// Signs the access token for a decided grant.
    pub(crate) fn mint(&self, g: Grant<'_>) -> Result<TokenResponse, OAuthError> {
        let mut ttl = g
            .client
            .access_ttl_secs
            .unwrap_or(self.settings.access_ttl.as_secs());
        let (act, chain) = match g.exchange {
            Some(x) => {
                ttl = ttl.min(x.max_ttl);
                (Some(x.act), x.chain)
            }
            None => (None, Vec::new()),
        };
        let now_ms = super::now_unix_ms();
        let now = now_ms.div_euclid(1000);
        let claims = AccessClaims {
            iss: self.settings.issuer.clone(),
            sub: g.subject,
            aud: g.audience,
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            iat: now,
            nbf: now,
            jti: opaque::time_ordered_id(now_ms),
            client_id: g.client.id.clone(),
            scope: g.scope.join(" "),
            sid: g.gid,
            legacy_iat_ms: None,
            act,
            chain,
            cnf: g.cnf,
            extra: g.extra,
        };
        let keys = self.keys();
        let access_token = jwt::mint(keys.active(), &claims).map_err(|e| {
            tracing::error!(error = %e, "signing failed");
            OAuthError::ServerError("could not sign the token".into())
        })?;
        metrics::counter!(
            "tokend_tokens_issued_total",
            "grant_type" => g.grant_type.as_str(),
            "client_id" => g.client.id.clone()
        )
        .increment(1);
        let extra = if g.client.claims_in_response {
            g.client.claims.clone()
        } else {
            serde_json::Map::new()
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: g.scope,
            refresh_token: None,
            extra,
            issued_token_type: None,
            client_id: g.client.id.clone(),
            grant_type: g.grant_type,
        })
    }
}
