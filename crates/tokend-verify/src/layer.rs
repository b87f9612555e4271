//! Tower layers for axum and tonic alike.
//!
//! [`AuthLayer`] reads `Authorization: Bearer <token>` (scheme matched
//! case-insensitively), verifies the token with a [`Verifier`] and puts the
//! [`VerifiedToken`] into the request extensions (axum: `Extension<VerifiedToken>`;
//! tonic: `request.extensions().get::<VerifiedToken>()`). A request it
//! refuses never reaches the service:
//! - over HTTP, 401 with `WWW-Authenticate: Bearer error="invalid_token"`
//!   (just `Bearer` when the request carried no token at all, RFC 6750 3.1);
//! - over gRPC (a `content-type` of `application/grpc...`), UNAUTHENTICATED,
//!   answered in the trailers-only form (HTTP 200, `grpc-status` in the
//!   headers) that every gRPC client reads.
//!
//! [`Require`] goes inside it and checks scopes and audiences: 403 with
//! `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."` over
//! HTTP, PERMISSION_DENIED over gRPC. [`require_scope`] and
//! [`require_audience`] do the same inside a handler.
//!
//! Certificate-bound tokens (RFC 8705 3): the layer passes the TLS client
//! certificate of the request's connection to [`Verifier::verify_bound`],
//! taken from a [`PeerCertificate`] request extension (put there by the
//! application's own TLS accept loop, e.g. axum served on tokio-rustls; see
//! docs/mtls.md) or, for a tonic server serving TLS itself, from tonic's
//! `TlsConnectInfo` (what `Request::peer_certs` reads).
//!
//! Why a token was refused is reported in metrics and logs, never to the
//! caller: the answer does not help anyone probe which tokens are revoked.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use tokend_token::AccessClaims;
use tower_layer::Layer;
use tower_service::Service;

use crate::Verifier;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The claims of a token the [`Verifier`] accepted (cheap to clone).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken(pub(crate) Arc<AccessClaims>);

impl Deref for VerifiedToken {
    type Target = AccessClaims;
    fn deref(&self) -> &AccessClaims {
        &self.0
    }
}

impl VerifiedToken {
    pub fn claims(&self) -> &Arc<AccessClaims> {
        &self.0
    }

    /// The granted scopes (the space-separated `scope` claim).
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.0.scope.split_ascii_whitespace()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    pub fn has_audience(&self, audience: &str) -> bool {
        self.0.aud.iter().any(|a| a == audience)
    }
}

/// Why a request was refused (metrics label and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// Not a compact JWS, or claims that do not parse; also several
    /// `Authorization` headers.
    Malformed,
    /// No key of the JWKS has the token's `kid` (after a refetch).
    UnknownKey,
    /// The header's `alg` is not the one pinned by the key (`none`, HMAC).
    WrongAlgorithm,
    /// `typ` is not `at+jwt`.
    WrongType,
    BadSignature,
    WrongIssuer,
    /// The token's `aud` names none of the verifier's audiences.
    WrongAudience,
    Expired,
    NotYetValid,
    /// Revoked, as the revocation feed reported.
    Revoked,
    /// The revocation feed is not live and the policy is fail-closed.
    FeedUnavailable,
    /// 403: a scope [`Require`]d is missing.
    InsufficientScope,
    /// 403: no audience [`Require`]d is in `aud`.
    InsufficientAudience,
    /// A certificate-bound token (`cnf.x5t#S256`) presented without the
    /// certificate it is bound to (another one, or none).
    CertificateMismatch,
    /// A bearer token where the verifier requires bound tokens
    /// ([`crate::VerifierConfig::require_certificate_binding`]).
    CertificateRequired,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::WrongAlgorithm => "wrong_algorithm",
            Self::WrongType => "wrong_type",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::FeedUnavailable => "feed_unavailable",
            Self::InsufficientScope => "insufficient_scope",
            Self::InsufficientAudience => "insufficient_audience",
            Self::CertificateMismatch => "certificate_mismatch",
            Self::CertificateRequired => "certificate_required",
        }
    }

    /// 403 rather than 401.
    pub fn is_forbidden(self) -> bool {
        matches!(self, Self::InsufficientScope | Self::InsufficientAudience)
    }

    /// A verification's outcome (rather than a missing token or a 403).
    pub(crate) fn counts_as_verification(self) -> bool {
        !self.is_forbidden() && self != Self::MissingToken
    }
}

impl From<tokend_token::VerifyError> for RejectReason {
    fn from(e: tokend_token::VerifyError) -> Self {
        use tokend_token::VerifyError as E;
        match e {
            E::Malformed => Self::Malformed,
            E::UnknownKey => Self::UnknownKey,
            E::WrongAlgorithm => Self::WrongAlgorithm,
            E::WrongType => Self::WrongType,
            E::BadSignature => Self::BadSignature,
            E::WrongIssuer => Self::WrongIssuer,
            E::Expired => Self::Expired,
            E::NotYetValid => Self::NotYetValid,
        }
    }
}

/// A refused request, rendered for HTTP or gRPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: RejectReason,
    /// For 403: the scopes that would have been enough.
    scope: Option<String>,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "token refused: {}", self.reason.as_str())
    }
}

impl std::error::Error for Rejection {}

impl From<RejectReason> for Rejection {
    fn from(reason: RejectReason) -> Self {
        Self {
            reason,
            scope: None,
        }
    }
}

impl Rejection {
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// 401, or 403 for a missing scope or audience.
    pub fn status(&self) -> StatusCode {
        if self.reason.is_forbidden() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        }
    }

    /// The RFC 6750 `WWW-Authenticate` challenge.
    pub fn www_authenticate(&self) -> String {
        match (self.reason, &self.scope) {
            (RejectReason::MissingToken, _) => "Bearer".into(),
            (r, Some(scope)) if r.is_forbidden() => {
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
            }
            (r, None) if r.is_forbidden() => "Bearer error=\"insufficient_scope\"".into(),
            _ => "Bearer error=\"invalid_token\"".into(),
        }
    }

    /// The gRPC status: UNAUTHENTICATED, or PERMISSION_DENIED for a missing
    /// scope or audience.
    pub fn to_status(&self) -> tonic::Status {
        match self.reason {
            RejectReason::MissingToken => tonic::Status::unauthenticated("missing bearer token"),
            r if r.is_forbidden() => tonic::Status::permission_denied("insufficient_scope"),
            _ => tonic::Status::unauthenticated("invalid_token"),
        }
    }

    /// The HTTP answer (empty body).
    pub fn http_response<B: Default>(&self) -> Response<B> {
        let mut resp = Response::new(B::default());
        *resp.status_mut() = self.status();
        let challenge = HeaderValue::from_str(&self.www_authenticate())
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// The gRPC answer, trailers-only (HTTP 200, `grpc-status` in the
    /// headers).
    pub fn grpc_response<B: Default>(&self) -> Response<B> {
        self.to_status().into_http()
    }

    /// [`Self::grpc_response`] for a gRPC request (by its content type), else
    /// [`Self::http_response`].
    pub fn response_for<B: Default>(&self, request_headers: &HeaderMap) -> Response<B> {
        if is_grpc(request_headers) {
            self.grpc_response()
        } else {
            self.http_response()
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The bearer token of a request: exactly one `Authorization` header with
/// the `Bearer` scheme (any case) and a non-empty token.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(RejectReason::MissingToken.into());
    };
    if values.next().is_some() {
        return Err(RejectReason::Malformed.into());
    }
    let value = value.to_str().map_err(|_| RejectReason::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(RejectReason::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic...) carries no bearer token.
        return Err(RejectReason::MissingToken.into());
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(RejectReason::Malformed.into());
    }
    Ok(token)
}

/// Verifies the bearer token of every request (see the module documentation).
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Verifier,
}

impl AuthLayer {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The TLS client certificate (DER, the leaf) of the connection a request
/// came on, as a request extension: what [`AuthLayer`] checks a bound
/// token's `cnf.x5t#S256` against. An application that terminates TLS itself
/// (axum on tokio-rustls) inserts it per connection; a tonic server serving
/// TLS needs nothing (the layer reads tonic's connection info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate(pub Arc<[u8]>);

impl PeerCertificate {
    pub fn new(der: impl Into<Arc<[u8]>>) -> Self {
        Self(der.into())
    }

    /// The certificate of a request, from a [`PeerCertificate`] extension
    /// or tonic's TLS connection info.
    pub fn of(ext: &http::Extensions) -> Option<Self> {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        if let Some(c) = ext.get::<Self>() {
            return Some(c.clone());
        }
        let certs = ext
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs)?;
        certs.first().map(|c| Self::new(c.as_ref()))
    }
}

/// The service [`AuthLayer`] makes.
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, B, RB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    RB: Default + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was made ready goes into the future (tower's
        // readiness contract); a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let verified = match bearer_token(req.headers()) {
                Ok(token) => {
                    let cert = PeerCertificate::of(req.extensions());
                    verifier
                        .verify_bound(token, cert.as_ref().map(|c| &*c.0))
                        .await
                }
                Err(r) => {
                    verifier.count_rejection(r.reason());
                    Err(r)
                }
            };
            match verified {
                Ok(token) => {
                    req.extensions_mut().insert(token);
                    inner.call(req).await
                }
                Err(r) => Ok(r.response_for(req.headers())),
            }
        })
    }
}

/// Scopes and audiences a route requires, checked after [`AuthLayer`]:
/// every scope listed must be granted, and `aud` must name one of the
/// audiences listed (when any is).
#[derive(Debug, Clone, Default)]
pub struct Require {
    scopes: Arc<[String]>,
    audiences: Arc<[String]>,
}

impl Require {
    /// Requires `scope`.
    pub fn scope(scope: impl Into<String>) -> Self {
        Self::default().and_scope(scope)
    }

    /// Requires one of `audiences`... (see [`Self::and_audience`]).
    pub fn audience(audience: impl Into<String>) -> Self {
        Self::default().and_audience(audience)
    }

    /// Requires `scope` as well.
    pub fn and_scope(self, scope: impl Into<String>) -> Self {
        let mut scopes = self.scopes.to_vec();
        scopes.push(scope.into());
        Self {
            scopes: scopes.into(),
            ..self
        }
    }

    /// Accepts `audience` as well (any one of the listed audiences is
    /// enough).
    pub fn and_audience(self, audience: impl Into<String>) -> Self {
        let mut audiences = self.audiences.to_vec();
        audiences.push(audience.into());
        Self {
            audiences: audiences.into(),
            ..self
        }
    }

    /// Checks a verified token.
    pub fn check(&self, token: &VerifiedToken) -> Result<(), Rejection> {
        if !self.scopes.iter().all(|s| token.has_scope(s)) {
            return Err(Rejection {
                reason: RejectReason::InsufficientScope,
                scope: Some(self.scopes.join(" ")),
            });
        }
        if !self.audiences.is_empty() && !self.audiences.iter().any(|a| token.has_audience(a)) {
            return Err(RejectReason::InsufficientAudience.into());
        }
        Ok(())
    }
}

/// Requires `scope` of a verified token, inside a handler.
pub fn require_scope(token: &VerifiedToken, scope: &str) -> Result<(), Rejection> {
    Require::scope(scope).check(token)
}

/// Requires `audience` in a verified token's `aud`, inside a handler.
pub fn require_audience(token: &VerifiedToken, audience: &str) -> Result<(), Rejection> {
    Require::audience(audience).check(token)
}

impl<S> Layer<S> for Require {
    type Service = RequireService<S>;
    fn layer(&self, inner: S) -> RequireService<S> {
        RequireService {
            inner,
            require: self.clone(),
        }
    }
}

/// The service [`Require`] makes.
#[derive(Clone)]
pub struct RequireService<S> {
    inner: S,
    require: Require,
}

impl<S, B, RB> Service<Request<B>> for RequireService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verdict = match req.extensions().get::<VerifiedToken>() {
            Some(token) => self.require.check(token),
            // Require outside AuthLayer: nothing was verified.
            None => Err(RejectReason::MissingToken.into()),
        };
        match verdict {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(r) => {
                crate::metrics::rejected(r.reason());
                let resp = r.response_for(req.headers());
                Box::pin(std::future::ready(Ok(resp)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bEaReR  abc "])), Ok("abc"));
        let reason = |v: &[&str]| bearer_token(&headers(v)).unwrap_err().reason();
        assert_eq!(reason(&[]), RejectReason::MissingToken);
        assert_eq!(reason(&["Basic YTpi"]), RejectReason::MissingToken);
        assert_eq!(reason(&["Bearer"]), RejectReason::MissingToken);
        assert_eq!(reason(&["Bearer  "]), RejectReason::Malformed);
        assert_eq!(reason(&["Bearer a", "Bearer b"]), RejectReason::Malformed);
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let r = |reason: RejectReason| Rejection::from(reason).www_authenticate();
        assert_eq!(r(RejectReason::MissingToken), "Bearer");
        assert_eq!(r(RejectReason::Revoked), "Bearer error=\"invalid_token\"");
        let scope = Require::scope("orders:read").and_scope("orders:write");
        let token = VerifiedToken(Arc::new(
            serde_json::from_str(
                r#"{"iss":"i","sub":"s","aud":"api","exp":9,"iat":1,"nbf":1,"jti":"j","client_id":"c","scope":"orders:read"}"#,
            )
            .unwrap(),
        ));
        let rej = scope.check(&token).unwrap_err();
        assert_eq!(rej.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            rej.www_authenticate(),
            "Bearer error=\"insufficient_scope\", scope=\"orders:read orders:write\""
        );
        assert_eq!(rej.to_status().code(), tonic::Code::PermissionDenied);
        assert!(require_scope(&token, "orders:read").is_ok());
        assert!(require_scope(&token, "orders").is_err());
        assert!(require_audience(&token, "api").is_ok());
        assert_eq!(
            require_audience(&token, "other").unwrap_err().reason(),
            RejectReason::InsufficientAudience
        );
    }
}
