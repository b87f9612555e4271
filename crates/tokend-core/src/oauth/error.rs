//! The one error type of the OAuth core. Every rule in `oauth/` fails with an
//! [`OAuthError`]; the transports convert it exactly once each (HTTP status and
//! RFC 6749 5.2 JSON body in `transport::http`, gRPC status with a
//! `google.rpc.ErrorInfo` in `transport::grpc`), so the two can never disagree.

use std::borrow::Cow;
use std::time::Duration;

/// An OAuth protocol error. `description` texts are safe to show to the caller:
/// they never contain a secret, a token or a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// Malformed request: missing or repeated parameter, bad encoding.
    #[error("invalid_request: {0}")]
    InvalidRequest(Cow<'static, str>),
    /// The request is larger than tokend accepts (a body or a gRPC message):
    /// `invalid_request` on the wire, with HTTP 413 / gRPC RESOURCE_EXHAUSTED.
    #[error("invalid_request: {0}")]
    RequestTooLarge(Cow<'static, str>),
    /// Client authentication failed, whatever the method: the same answer
    /// for every cause (on HTTP a 401 whose `WWW-Authenticate: Basic`
    /// challenge RFC 9110 15.5.2 requires on every 401, so no header tells
    /// one client-authentication method's failure from another's).
    #[error("invalid_client")]
    InvalidClient,
    /// Code, refresh token or other grant is invalid, expired, revoked or was
    /// issued to another client.
    #[error("invalid_grant: {0}")]
    InvalidGrant(Cow<'static, str>),
    /// The authenticated client may not use this grant or operation.
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(Cow<'static, str>),
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    #[error("unsupported_token_type")]
    UnsupportedTokenType,
    /// The authorization endpoint only answers `response_type=code`.
    #[error("unsupported_response_type")]
    UnsupportedResponseType,
    /// Scope beyond what the client may have, or malformed.
    #[error("invalid_scope: {0}")]
    InvalidScope(Cow<'static, str>),
    /// Audience/resource beyond what the client may have (RFC 8707).
    #[error("invalid_target: {0}")]
    InvalidTarget(Cow<'static, str>),
    /// The resource owner or the login app refused.
    #[error("access_denied: {0}")]
    AccessDenied(Cow<'static, str>),
    /// Too many requests for this client; retry after the given delay.
    #[error("rate_limited")]
    RateLimited { retry_after: Duration },
    /// A dependency (the store) could not answer; the caller may retry.
    #[error("temporarily_unavailable: {0}")]
    TemporarilyUnavailable(Cow<'static, str>),
    /// A bug or an impossible state; never caused by input alone.
    #[error("server_error: {0}")]
    ServerError(Cow<'static, str>),
}

impl OAuthError {
    /// The RFC 6749 / RFC 7009 error code, also used as gRPC ErrorInfo reason
    /// and metrics label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) | Self::RequestTooLarge(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::InvalidScope(_) => "invalid_scope",
            Self::InvalidTarget(_) => "invalid_target",
            Self::AccessDenied(_) => "access_denied",
            Self::RateLimited { .. } => "rate_limited",
            Self::TemporarilyUnavailable(_) => "temporarily_unavailable",
            Self::ServerError(_) => "server_error",
        }
    }

    /// Human-readable description for `error_description`.
    pub fn description(&self) -> Cow<'static, str> {
        match self {
            Self::InvalidRequest(d)
            | Self::RequestTooLarge(d)
            | Self::InvalidGrant(d)
            | Self::UnauthorizedClient(d)
            | Self::InvalidScope(d)
            | Self::InvalidTarget(d)
            | Self::AccessDenied(d)
            | Self::TemporarilyUnavailable(d)
            | Self::ServerError(d) => d.clone(),
            Self::InvalidClient => "client authentication failed".into(),
            Self::UnsupportedGrantType => "the grant type is not supported".into(),
            Self::UnsupportedTokenType => "the token type is not supported".into(),
            Self::UnsupportedResponseType => "only response_type=code is supported".into(),
            Self::RateLimited { .. } => "too many requests".into(),
        }
    }

    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidRequest(d.into())
    }
    pub fn invalid_grant(d: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidGrant(d.into())
    }
    pub fn invalid_scope(d: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidScope(d.into())
    }
    pub fn invalid_target(d: impl Into<Cow<'static, str>>) -> Self {
        Self::InvalidTarget(d.into())
    }
    pub fn unauthorized_client(d: impl Into<Cow<'static, str>>) -> Self {
        Self::UnauthorizedClient(d.into())
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        // The store error text names the operation, never a key's value.
        tracing::warn!(error = %e, "store unavailable");
        Self::TemporarilyUnavailable("the token store is unavailable; retry later".into())
    }
}
