//! A tiny public OAuth client, to see the whole flow in a browser: its index
//! page links to tokend's `/oauth/authorize` with PKCE (S256) and `state`;
//! `/callback` checks `state`, redeems the code at `/oauth/token` and shows
//! what it received. In-memory, single process: a demo, not a client library.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::security;
use crate::web::{error_page, hardened, page, style};

const STATE_COOKIE: &str = "demo_client_state";
/// Pending authorizations kept at most (then forgotten all at once).
const MAX_PENDING: usize = 10_000;

#[derive(Clone, Debug)]
pub struct DemoSettings {
    pub listen: SocketAddr,
    /// tokend's HTTP base URL, e.g. `http://127.0.0.1:8080`.
    pub tokend_url: String,
    pub client_id: String,
    /// Must be registered for the client: this app's `/callback`.
    pub redirect_uri: String,
    pub scope: String,
}

pub struct Demo {
    settings: DemoSettings,
    /// state -> PKCE verifier.
    pending: Mutex<HashMap<String, String>>,
    http: reqwest::Client,
}

#[derive(Template)]
#[template(path = "demo_index.html")]
struct Index<'a> {
    client_id: &'a str,
    authorize_url: &'a str,
}

#[derive(Template)]
#[template(path = "demo_result.html")]
struct Result_<'a> {
    title: &'a str,
    error: Option<&'a str>,
    claims: Option<&'a str>,
    token_type: &'a str,
    scope: &'a str,
    expires_in: &'a str,
    has_refresh: bool,
}

pub fn router(settings: DemoSettings) -> Router {
    let demo = Arc::new(Demo {
        settings,
        pending: Mutex::new(HashMap::new()),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .expect("an HTTP client"),
    });
    Router::new()
        .route("/", get(index))
        .route("/callback", get(callback))
        .route("/static/style.css", get(style))
        .with_state(demo)
        .layer(axum::middleware::map_response(hardened))
}

/// A fresh PKCE pair and state per page view; the state also goes into a
/// cookie, so only the browser that started the flow can finish it.
async fn index(State(demo): State<Arc<Demo>>) -> Response {
    let s = &demo.settings;
    let verifier = security::random_token(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = security::random_token(16);
    {
        let mut p = demo.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= MAX_PENDING {
            p.clear();
        }
        p.insert(state.clone(), verifier);
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.client_id)
        .append_pair("redirect_uri", &s.redirect_uri)
        .append_pair("scope", &s.scope)
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let url = format!(
        "{}/oauth/authorize?{query}",
        s.tokend_url.trim_end_matches('/')
    );
    let mut res = page(
        StatusCode::OK,
        &Index {
            client_id: &s.client_id,
            authorize_url: &url,
        },
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={state}; HttpOnly; SameSite=Lax; Path=/"
    )) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    expires_in: u64,
    refresh_token: Option<String>,
}

fn result_error(status: StatusCode, msg: &str) -> Response {
    page(
        status,
        &Result_ {
            title: "Sign-in did not complete",
            error: Some(msg),
            claims: None,
            token_type: "",
            scope: "",
            expires_in: "",
            has_refresh: false,
        },
    )
}

async fn callback(
    State(demo): State<Arc<Demo>>,
    headers: HeaderMap,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(cb)) = query else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The callback could not be read.",
        );
    };
    let cookie_state = security::cookie(&headers, STATE_COOKIE);
    let state_ok = match (&cb.state, &cookie_state) {
        (Some(a), Some(b)) => security::eq(a, b),
        _ => false,
    };
    let verifier = state_ok
        .then(|| {
            demo.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(cb.state.as_deref().unwrap_or_default())
        })
        .flatten();
    let Some(verifier) = verifier else {
        return result_error(
            StatusCode::BAD_REQUEST,
            "The state does not match a sign-in this browser started.",
        );
    };
    if let Some(error) = cb.error {
        return result_error(StatusCode::OK, &format!("tokend answered error={error}"));
    }
    let Some(code) = cb.code else {
        return result_error(StatusCode::BAD_REQUEST, "The callback has no code.");
    };
    let s = &demo.settings;
    let sent = demo
        .http
        .post(format!(
            "{}/oauth/token",
            s.tokend_url.trim_end_matches('/')
        ))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", s.client_id.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", s.redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await;
    let res = match sent {
        Ok(r) => r,
        Err(_) => {
            return result_error(
                StatusCode::BAD_GATEWAY,
                "tokend's token endpoint could not be reached.",
            );
        }
    };
    if !res.status().is_success() {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return result_error(
            StatusCode::BAD_GATEWAY,
            &format!("The token endpoint answered {status}: {body}"),
        );
    }
    let tokens: TokenResponse = match res.json().await {
        Ok(t) => t,
        Err(_) => {
            return result_error(
                StatusCode::BAD_GATEWAY,
                "The token response could not be read.",
            );
        }
    };
    let claims = jwt_claims(&tokens.access_token).unwrap_or_else(|| "(not a JWT)".into());
    page(
        StatusCode::OK,
        &Result_ {
            title: "Signed in: tokens received",
            error: None,
            claims: Some(&claims),
            token_type: &tokens.token_type,
            scope: &tokens.scope,
            expires_in: &tokens.expires_in.to_string(),
            has_refresh: tokens.refresh_token.is_some(),
        },
    )
}

/// A JWT's payload, pretty-printed (not verified: for display).
fn jwt_claims(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    serde_json::to_string_pretty(&v).ok()
}
