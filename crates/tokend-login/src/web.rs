//! The login app's pages: login, consent, errors.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tower_http::limit::RequestBodyLimitLayer;

use crate::config::{Settings, User};
use crate::security::{self, Keys, SESSION_COOKIE};
use crate::tokend::{Failure, Tokend};
use crate::users::{Users, Verdict};

/// Largest request body accepted (the forms are well under 1 KB plus the challenge).
pub const BODY_LIMIT: usize = 8 * 1024;
const MAX_CHALLENGE: usize = 4096;
const MAX_USERNAME: usize = 255;
const MAX_PASSWORD: usize = 1024;
const MAX_TOKEN: usize = 128;
/// Remembered consents kept at most (then forgotten all at once).
const MAX_REMEMBERED: usize = 100_000;

const STYLE: &str = include_str!("../static/style.css");

pub struct App {
    keys: Keys,
    tokend: Tokend,
    users: Users,
    cookie_secure: bool,
    remember_consent: bool,
    /// What each user allowed each client with "remember": (subject,
    /// client_id) to the scopes consented to ("" for a request naming none,
    /// that is the client's default access).
    remembered: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

impl App {
    pub fn new(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            keys: Keys::random(),
            tokend: Tokend::new(
                &settings.tokend_grpc_url,
                settings.tokend_ca_pem.as_deref(),
                &settings.app_token,
            )?,
            users: Users::new(
                settings.users.clone(),
                settings.max_concurrent_verifications,
            )?,
            cookie_secure: settings.cookie_secure,
            remember_consent: settings.remember_consent,
            remembered: Mutex::new(HashMap::new()),
        }))
    }
}

/// The login app's routes, with the body limits and the security headers.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/login", get(login_page).post(login_submit))
        .route("/consent", axum::routing::post(consent_submit))
        .route("/static/style.css", get(style))
        .fallback(not_found)
        .with_state(app)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(axum::middleware::map_response(hardened))
}

/// Adds the security headers to every response (errors and 413s included),
/// and gives the body limit's plain-text 413 the error page.
pub async fn hardened(res: Response) -> Response {
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let mut res = if res.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_html {
        error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The request was too large.",
        )
    } else {
        res
    };
    security::harden(res.headers_mut());
    res
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    client: &'a str,
    challenge: &'a str,
    csrf: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    client: &'a str,
    username: &'a str,
    scopes: &'a [String],
    challenge: &'a str,
    csrf: &'a str,
    expires: u64,
    proof: &'a str,
    remember_offered: bool,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

/// An HTML page from a template; a template failure is a plain 500.
pub fn page(status: StatusCode, t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(status, &ErrorPage { title, message })
}

fn failure_page(f: Failure) -> Response {
    match f {
        Failure::BadChallenge => error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in link is no longer valid",
            "The sign-in request is unknown, has expired or was already answered.",
        ),
        Failure::Upstream => error_page(
            StatusCode::BAD_GATEWAY,
            "Sign-in is unavailable",
            "The authorization server could not be reached. Please try again later.",
        ),
    }
}

fn forbidden() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "This form was not sent from this browser's sign-in page, or it has expired.",
    )
}

fn bad_form(r: FormRejection) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The request was too large.",
        )
    } else {
        error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
        )
    }
}

fn bad_request() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "Bad request",
        "The request is missing a field or has one that is too long.",
    )
}

fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => failure_page(Failure::Upstream),
    }
}

/// The client's display name: `client_name`, else `client_id`.
fn client_label(info: &crate::tokend::pb::GetAuthorizationResponse) -> &str {
    if info.client_name.is_empty() {
        &info.client_id
    } else {
        &info.client_name
    }
}

/// A page whose form may end in tokend's redirect to the client (see
/// [`security::csp_for_redirect`]).
fn client_page(info: &crate::tokend::pb::GetAuthorizationResponse, t: &impl Template) -> Response {
    let mut res = page(StatusCode::OK, t);
    res.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        security::csp_for_redirect(&info.redirect_uri),
    );
    res
}

fn valid_challenge(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= MAX_CHALLENGE
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Deserialize)]
struct LoginQuery {
    login_challenge: Option<String>,
}

/// `GET /login?login_challenge=…`: asks tokend what the challenge is for
/// (a forged or stale one ends here, on the error page) and shows the form.
async fn login_page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(challenge) = query.ok().and_then(|q| q.0.login_challenge) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Nothing to sign in to",
            "Open the application you want to use; it sends you here to sign in.",
        );
    };
    if !valid_challenge(&challenge) {
        return failure_page(Failure::BadChallenge);
    }
    let info = match app.tokend.get(&challenge).await {
        Ok(i) => i,
        Err(f) => return failure_page(f),
    };
    let (session, new) = match security::cookie(&headers, SESSION_COOKIE) {
        Some(s) => (s, false),
        None => (security::random_token(32), true),
    };
    let csrf = app.keys.csrf(&session, &challenge);
    let mut res = client_page(
        &info,
        &LoginPage {
            client: client_label(&info),
            challenge: &challenge,
            csrf: &csrf,
            username: "",
            error: None,
        },
    );
    if new {
        res.headers_mut().insert(
            header::SET_COOKIE,
            security::session_cookie(&session, app.cookie_secure),
        );
    }
    res
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    login_challenge: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The session of a POST whose CSRF token matches it, else `None`.
fn checked_session(app: &App, headers: &HeaderMap, challenge: &str, csrf: &str) -> Option<String> {
    let session = security::cookie(headers, SESSION_COOKIE)?;
    (csrf.len() <= MAX_TOKEN && app.keys.csrf_ok(&session, challenge, csrf)).then_some(session)
}

/// `POST /login`: the CSRF token, then the password; then the consent page,
/// or straight to tokend's answer when consent is remembered.
async fn login_submit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => return bad_form(r),
    };
    if !valid_challenge(&form.login_challenge)
        || form.username.chars().count() > MAX_USERNAME
        || form.password.len() > MAX_PASSWORD
    {
        return bad_request();
    }
    let Some(session) = checked_session(&app, &headers, &form.login_challenge, &form.csrf) else {
        return forbidden();
    };
    let challenge = form.login_challenge;
    let info = match app.tokend.get(&challenge).await {
        Ok(i) => i,
        Err(f) => return failure_page(f),
    };
    let user = match app.users.verify(&form.username, form.password).await {
        Verdict::Ok(u) => u,
        Verdict::Wrong => {
            tracing::info!(client_id = %info.client_id, "login failed");
            return client_page(
                &info,
                &LoginPage {
                    client: client_label(&info),
                    challenge: &challenge,
                    csrf: &form.csrf,
                    username: &form.username,
                    error: Some("The username or password is incorrect."),
                },
            );
        }
        Verdict::Busy => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too busy",
                "Too many sign-ins at once. Please try again in a moment.",
            );
        }
    };
    tracing::info!(subject = %user.subject, client_id = %info.client_id, "login succeeded");
    if app.remember_consent
        && app.is_remembered(&user.subject, &info.client_id, &info.requested_scope)
    {
        return accept(&app, &challenge, &user, info.requested_scope).await;
    }
    let expires = security::now_secs() + security::LOGIN_TTL_SECS;
    let proof = app
        .keys
        .login_proof(&session, &challenge, &user.username, expires);
    client_page(
        &info,
        &ConsentPage {
            client: client_label(&info),
            username: &user.username,
            scopes: &info.requested_scope,
            challenge: &challenge,
            csrf: &form.csrf,
            expires,
            proof: &proof,
            remember_offered: app.remember_consent,
        },
    )
}

#[derive(Deserialize)]
struct ConsentForm {
    #[serde(default)]
    login_challenge: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    expires: u64,
    #[serde(default)]
    proof: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    remember: Option<String>,
}

/// `POST /consent`: only after a login of this session for this challenge
/// (the signed proof); Allow accepts, Deny rejects, both 303 to tokend's
/// `redirect_to`.
async fn consent_submit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    form: Result<Form<ConsentForm>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(f)) => f,
        Err(r) => return bad_form(r),
    };
    if !valid_challenge(&form.login_challenge)
        || form.username.chars().count() > MAX_USERNAME
        || form.proof.len() > MAX_TOKEN
    {
        return bad_request();
    }
    let Some(session) = checked_session(&app, &headers, &form.login_challenge, &form.csrf) else {
        return forbidden();
    };
    if !app.keys.login_proof_ok(
        &session,
        &form.login_challenge,
        &form.username,
        form.expires,
        &form.proof,
    ) {
        return forbidden();
    }
    let Some(user) = app.users.get(&form.username).cloned() else {
        return forbidden();
    };
    match form.decision.as_str() {
        "allow" => {
            let info = match app.tokend.get(&form.login_challenge).await {
                Ok(i) => i,
                Err(f) => return failure_page(f),
            };
            if app.remember_consent && form.remember.as_deref() == Some("yes") {
                app.remember(&user.subject, &info.client_id, &info.requested_scope);
            }
            accept(&app, &form.login_challenge, &user, info.requested_scope).await
        }
        "deny" => match app.tokend.deny(&form.login_challenge).await {
            Ok(to) => {
                tracing::info!(subject = %user.subject, "consent denied");
                redirect(&to)
            }
            Err(f) => failure_page(f),
        },
        _ => bad_request(),
    }
}

/// Accepts for `user` with everything requested and 303s to tokend's answer.
async fn accept(app: &App, challenge: &str, user: &User, scope: Vec<String>) -> Response {
    match app
        .tokend
        .accept(
            challenge,
            &user.subject,
            &user.username,
            scope,
            user_claims(user),
        )
        .await
    {
        Ok(to) => {
            tracing::info!(subject = %user.subject, "consent given");
            redirect(&to)
        }
        Err(f) => failure_page(f),
    }
}

/// The user's optional `name` and `email`, as access token claims.
fn user_claims(user: &User) -> Option<prost_types::Struct> {
    use prost_types::value::Kind;
    let fields: std::collections::BTreeMap<String, prost_types::Value> =
        [("name", &user.name), ("email", &user.email)]
            .into_iter()
            .filter_map(|(k, v)| {
                v.as_ref().map(|v| {
                    (
                        k.to_owned(),
                        prost_types::Value {
                            kind: Some(Kind::StringValue(v.clone())),
                        },
                    )
                })
            })
            .collect();
    (!fields.is_empty()).then_some(prost_types::Struct { fields })
}

impl App {
    /// Whether the user already allowed this client everything it asks for
    /// now: a request for a scope never consented to shows the page again.
    fn is_remembered(&self, subject: &str, client_id: &str, requested: &[String]) -> bool {
        let map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&(subject.to_owned(), client_id.to_owned()))
            .is_some_and(|allowed| consented(requested).all(|s| allowed.contains(s)))
    }

    /// Adds what was allowed now to what the user allowed the client before.
    /// Bounded: tokend only passes scopes registered for the client.
    fn remember(&self, subject: &str, client_id: &str, requested: &[String]) {
        let mut map = self.remembered.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED {
            map.clear();
        }
        map.entry((subject.to_owned(), client_id.to_owned()))
            .or_default()
            .extend(consented(requested).map(str::to_owned));
    }
}

/// The scopes a consent covers; "" stands for a request naming none (the
/// client's default access).
fn consented(requested: &[String]) -> impl Iterator<Item = &str> {
    let none = requested.is_empty().then_some("");
    requested.iter().map(String::as_str).chain(none)
}
