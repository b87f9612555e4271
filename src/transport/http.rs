//! The HTTP bridge: RFC 6749 authorization and token endpoints, RFC 7662 introspection, RFC 7009
//! revocation, RFC 8414 discovery and the JWKS, onto the OAuth core; and the
//! single conversion from [`OAuthError`] to an HTTP response (RFC 6749 5.2).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::{Value, json};

use super::access::RequestRecord;
use super::routes;
use crate::health::Readiness;
use crate::oauth::oob::OobPage;
use crate::oauth::params::Params;
use crate::oauth::{
    Core, Credentials, Introspection, OAuthError, PresentedVia, TokenRequest, scope,
};

/// Shared state of the HTTP routes.
#[derive(Clone)]
pub struct HttpState {
    pub core: Arc<Core>,
    pub readiness: Readiness,
    pub max_body: usize,
}

/// The bridge's routes.
pub fn router(state: HttpState) -> Router {
    let probes = probes(state.readiness.clone());
    Router::new()
        .route(routes::AUTHORIZE, get(authorize))
        .route(routes::OOB, get(out_of_band))
        .route(routes::TOKEN, post(token))
        .route(routes::INTROSPECT, post(introspect))
        .route(routes::REVOKE, post(revoke))
        .route(routes::METADATA, get(metadata))
        .route(routes::JWKS, get(jwks))
        .with_state(state)
        .merge(probes)
}

/// Request rewriting applied before routing: the `[http] path_prefix` (when
/// the path starts with it) and one trailing `/` are removed, so
/// `/apis/v2/oauth/token/` is routed, labelled and logged as `/oauth/token`.
/// Partners integrate against fixed URLs, some with a trailing slash.
pub fn canonical_path(prefix: Arc<str>) -> impl Fn(Request) -> Request + Clone {
    move |mut req: Request| {
        let path = req.uri().path();
        let mut p = path;
        if !prefix.is_empty()
            && let Some(rest) = p.strip_prefix(&*prefix)
            && rest.starts_with('/')
        {
            p = rest;
        }
        if p.len() > 1 {
            p = p.strip_suffix('/').unwrap_or(p);
        }
        if p.len() != path.len() {
            let pq = match req.uri().query() {
                Some(q) => format!("{p}?{q}"),
                None => p.to_owned(),
            };
            let mut parts = req.uri().clone().into_parts();
            if let Ok(pq) = pq.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
        req
    }
}

/// `GET /healthz` (liveness: the process answers) and `GET /readyz`
/// (readiness: the store answers and the server is not draining), served on
/// the HTTP port and, when there is one, on the plain-HTTP admin port (so
/// kubelet can probe readiness even when the HTTP port demands client
/// certificates).
pub fn probes(readiness: Readiness) -> Router {
    Router::new()
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::READYZ, get(readyz))
        .with_state(readiness)
}

/// An OAuth error with the HTTP status the bridge answers it with. Most
/// statuses follow from the error code; 413 and 415 are transport-level
/// variants of `invalid_request`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    error: OAuthError,
}

impl From<OAuthError> for HttpError {
    fn from(error: OAuthError) -> Self {
        let status = match &error {
            OAuthError::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthError::AccessDenied(_) => StatusCode::FORBIDDEN,
            OAuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            OAuthError::RequestTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            OAuthError::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { status, error }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": self.error.code(),
            "error_description": self.error.description(),
        });
        let mut res = (self.status, axum::Json(body)).into_response();
        res.extensions_mut()
            .insert(super::access::Outcome(self.error.code()));
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match &self.error {
            OAuthError::InvalidClient => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tokend\", charset=\"UTF-8\""),
                );
            }
            OAuthError::RateLimited { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            OAuthError::TemporarilyUnavailable(_) => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        res
    }
}

/// The one conversion of an OAuth error to an HTTP response (also used by
/// the access layer for the rejections it makes itself).
pub fn error_response(e: OAuthError) -> Response {
    HttpError::from(e).into_response()
}

fn no_store(value: Value) -> Response {
    let mut res = axum::Json(value).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// Decodes an HTTP Basic `Authorization` value into (client_id, secret), both
/// form-urlencoded per RFC 6749 2.3.1.
pub fn decode_basic(value: &str) -> Option<(String, String)> {
    let b = basic_readings(value)?;
    Some((b.id, b.secret?))
}

/// What a Basic header says, read both ways: the client id and the secret
/// form-decoded (RFC 6749 2.3.1), and the secret as sent (RFC 7617, what
/// curl and most HTTP libraries send: `+` stays `+`).
pub struct BasicReadings {
    pub id: String,
    /// `None` when the secret is not valid form encoding (a stray `%`).
    pub secret: Option<String>,
    pub raw_secret: String,
}

pub fn basic_readings(value: &str) -> Option<BasicReadings> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    let decode = |s: &str| -> Option<String> {
        let plus_as_space = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some(BasicReadings {
        id: decode(id)?,
        secret: decode(secret),
        raw_secret: secret.to_owned(),
    })
}

/// Finds the client's credentials in the Basic header or the body.
fn credentials(
    headers: &HeaderMap,
    params: &Params,
    rec: &RequestRecord,
) -> Result<Credentials, OAuthError> {
    let mut creds = credentials_of(headers, params)?;
    creds.peer = rec.peer_ip();
    creds.cert = rec.client_cert();
    rec.client(&creds.client_id);
    Ok(creds)
}

fn credentials_of(headers: &HeaderMap, params: &Params) -> Result<Credentials, OAuthError> {
    let body_id = params.get("client_id");
    let body_secret = params.get("client_secret");
    let basic = headers.get(header::AUTHORIZATION).is_some();
    // RFC 7523 2.2: a client assertion in the body, and no other method.
    let via = if basic {
        PresentedVia::Basic
    } else {
        PresentedVia::Body
    };
    if let Some(creds) = Credentials::from_assertion(
        body_id,
        params.get("client_assertion_type"),
        params.get("client_assertion"),
        via,
    )? {
        if basic || body_secret.is_some() {
            return Err(OAuthError::InvalidClient);
        }
        return Ok(creds);
    }
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let fail = OAuthError::InvalidClient;
        let b = auth.to_str().ok().and_then(basic_readings).ok_or(fail)?;
        let id = b.id;
        // The RFC 6749 reading first, the raw one as the second reading when
        // it differs (see `Credentials::secret_alt`).
        let (secret, secret_alt) = match b.secret {
            Some(decoded) if decoded == b.raw_secret => (decoded, None),
            Some(decoded) => (decoded, Some(b.raw_secret)),
            None => (b.raw_secret, None),
        };
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "client credentials were sent both in the Authorization header and in the body",
            ));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the Authorization header",
            ));
        }
        return Ok(Credentials {
            client_id: id,
            secret: (!secret.is_empty()).then(|| SecretString::from(secret)),
            secret_alt: secret_alt.map(SecretString::from),
            via: PresentedVia::Basic,
            assertion: None,
            peer: None,
            cert: None,
        });
    }
    let Some(id) = body_id else {
        return Err(OAuthError::InvalidClient);
    };
    Ok(Credentials {
        client_id: id.to_owned(),
        secret: body_secret.map(SecretString::from),
        secret_alt: None,
        via: PresentedVia::Body,
        assertion: None,
        peer: None,
        cert: None,
    })
}

/// Reads and decodes the body of a POST to an OAuth endpoint: content type
/// check, size limit, then form or JSON parsing.
async fn read_params(req: Request, max_body: usize) -> Result<(HeaderMap, Params), HttpError> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let is_json = match content_type.as_str() {
        "application/x-www-form-urlencoded" => false,
        "application/json" => true,
        _ => {
            return Err(HttpError {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                error: OAuthError::invalid_request(
                    "Content-Type must be application/x-www-form-urlencoded or application/json",
                ),
            });
        }
    };
    let too_large = || {
        HttpError::from(OAuthError::RequestTooLarge(
            "the request body is too large".into(),
        ))
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(too_large());
    }
    let bytes = read_limited(body, max_body).await.map_err(|e| match e {
        BodyError::TooLarge => too_large(),
        BodyError::Read => OAuthError::invalid_request("the request body could not be read").into(),
    })?;
    let params = if is_json {
        Params::from_json(&bytes)?
    } else {
        Params::from_form(&bytes)?
    };
    Ok((parts.headers, params))
}

enum BodyError {
    TooLarge,
    Read,
}

async fn read_limited(mut body: Body, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// `GET /oauth/authorize`: a 302 to the login app or, for errors the client
/// may see, to its redirect URI; a 400 error body (no redirect) when the
/// client or redirect URI cannot be trusted.
async fn authorize(
    State(s): State<HttpState>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    // The core parses the query itself: it must see `state` as sent.
    let location = s.core.authorize(query.as_deref().unwrap_or("")).await?;
    let mut res = StatusCode::FOUND.into_response();
    let h = res.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location)
            .map_err(|_| HttpError::from(OAuthError::ServerError("unencodable redirect".into())))?,
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `GET /oauth/oob`: the out-of-band page (see `oauth::oob`). Plain HTML,
/// no scripts, styles or other resources, and a policy that allows none.
async fn out_of_band(
    State(s): State<HttpState>,
    RawQuery(query): RawQuery,
) -> Result<Response, HttpError> {
    let page = s
        .core
        .out_of_band_page(query.as_deref().unwrap_or(""))
        .await?;
    let (status, body) = match page {
        OobPage::Code {
            code,
            client_name,
            expires_in,
        } => (
            StatusCode::OK,
            format!(
                "<h1>Your authorization code</h1>\n<p>Copy this code into {}. It works once, within {expires_in} seconds, and this page will not show it again.</p>\n<p><output><code>{}</code></output></p>",
                html_escape(&client_name),
                html_escape(&code)
            ),
        ),
        OobPage::Refused { error } => (
            StatusCode::OK,
            format!(
                "<h1>Authorization refused</h1>\n<p>The request was not approved (<code>{error}</code>). You can close this page.</p>"
            ),
        ),
        OobPage::Gone => (
            StatusCode::BAD_REQUEST,
            "<h1>Nothing to show</h1>\n<p>This code was already shown, has expired, or never existed. Start again from your tool.</p>".to_owned(),
        ),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>tokend</title></head>\n<body>\n{body}\n</body>\n</html>\n"
    );
    let mut res = (status, html).into_response();
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    Ok(res)
}

/// Text for an HTML element's content or a quoted attribute.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn token(State(s): State<HttpState>, req: Request) -> Result<Response, HttpError> {
    let rec = RequestRecord::of(req.extensions());
    let (headers, params) = read_params(req, s.max_body).await?;
    rec.grant_type(params.get("grant_type").unwrap_or(""));
    let creds = credentials(&headers, &params, &rec)?;
    let mut audience: Vec<String> = params.get("audience").map(scope::split).unwrap_or_default();
    audience.extend(params.all("resource").map(str::to_owned));
    let req = TokenRequest {
        grant_type: params.owned("grant_type").unwrap_or_default(),
        scope: params.get("scope").map(scope::split).unwrap_or_default(),
        audience,
        code: params.owned("code"),
        redirect_uri: params.owned("redirect_uri"),
        code_verifier: params.owned("code_verifier"),
        refresh_token: params.owned("refresh_token"),
        subject_token: params.owned("subject_token"),
        subject_token_type: params.owned("subject_token_type"),
        actor_token: params.owned("actor_token"),
        actor_token_type: params.owned("actor_token_type"),
        requested_token_type: params.owned("requested_token_type"),
    };
    let t = s.core.token(&creds, req).await?;
    // Partner claims first, so the standard fields always win.
    let mut body = t.extra;
    body.insert("access_token".into(), t.access_token.into());
    body.insert("token_type".into(), t.token_type.into());
    body.insert("expires_in".into(), t.expires_in.into());
    if !t.scope.is_empty() {
        body.insert("scope".into(), t.scope.join(" ").into());
    }
    if let Some(rt) = t.refresh_token {
        body.insert("refresh_token".into(), rt.into());
    }
    if let Some(it) = t.issued_token_type {
        body.insert("issued_token_type".into(), it.into());
    }
    Ok(no_store(Value::Object(body)))
}

async fn introspect(State(s): State<HttpState>, req: Request) -> Result<Response, HttpError> {
    let rec = RequestRecord::of(req.extensions());
    let (headers, params) = read_params(req, s.max_body).await?;
    let creds = credentials(&headers, &params, &rec)?;
    let token = params.get("token").unwrap_or("");
    let answer = s
        .core
        .introspect(&creds, token, params.get("token_type_hint"))
        .await?;
    Ok(no_store(match answer {
        Introspection::Inactive => json!({"active": false}),
        Introspection::Active(t) => Value::Object(t.to_json()),
    }))
}

async fn revoke(State(s): State<HttpState>, req: Request) -> Result<Response, HttpError> {
    let rec = RequestRecord::of(req.extensions());
    let (headers, params) = read_params(req, s.max_body).await?;
    let creds = credentials(&headers, &params, &rec)?;
    let token = params.get("token").unwrap_or("");
    s.core
        .revoke(&creds, token, params.get("token_type_hint"))
        .await?;
    let mut res = StatusCode::OK.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

async fn metadata(State(s): State<HttpState>) -> Response {
    axum::Json(s.core.metadata()).into_response()
}

async fn jwks(State(s): State<HttpState>) -> Response {
    let keys = s.core.keys();
    let mut res = axum::Json(keys.jwks().clone()).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    res
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    if readiness.is_ready() {
        axum::Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_ready", "reason": readiness.reason()})),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let enc = base64::engine::general_purpose::STANDARD.encode("my%3Aclient:p%40ss+word");
        assert_eq!(
            decode_basic(&format!("Basic {enc}")),
            Some(("my:client".into(), "p@ss word".into()))
        );
        assert_eq!(decode_basic("Basic !!!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("abc");
        assert_eq!(decode_basic(&format!("Basic {no_colon}")), None);
        assert_eq!(decode_basic("Bearer abc"), None);
    }
}
