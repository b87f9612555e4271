//! The authorization-code flow as a browser, the login app and a client
//! drive it: /oauth/authorize read by hand (no redirect is followed), the
//! login app's AuthorizationService over gRPC, and the token endpoint.

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokend::pb::authorization_service_client::AuthorizationServiceClient;
use tokend::pb::{AcceptAuthorizationRequest, RejectAuthorizationRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::SECRET;
use super::api::Api;

pub const WEB_CB: &str = "https://app.example/callback";
pub const MOBILE_CB: &str = "http://127.0.0.1:7777/cb";
pub const LOGIN_URL: &str = "https://login.example/login";
/// The login app's bearer secret (`[authorization] login_app_token_hash`).
pub const LOGIN_APP_TOKEN: &str = "login-app-secret-0123456789abcdef";

/// The login app's gRPC client: every call carries its bearer secret.
pub type LoginClient = AuthorizationServiceClient<
    InterceptedService<
        Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

fn login_app_auth(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {LOGIN_APP_TOKEN}").parse().unwrap(),
    );
    Ok(req)
}

pub async fn login_client(api: &Api) -> LoginClient {
    AuthorizationServiceClient::with_interceptor(api.grpc_channel().await, login_app_auth as _)
}

/// A fresh PKCE pair: (verifier, S256 challenge).
pub fn pkce() -> (String, String) {
    let verifier = tokend::token::opaque::generate("v-");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> Vec<(String, String)> {
    let q = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

pub fn param(url: &str, name: &str) -> Option<String> {
    query_of(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// GET /oauth/authorize with `params`; never follows the redirect.
pub async fn authorize(api: &Api, params: &[(&str, &str)]) -> reqwest::Response {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        q.append_pair(k, v);
    }
    api.http_client
        .get(format!("{}?{}", api.url("/oauth/authorize"), q.finish()))
        .send()
        .await
        .unwrap()
}

/// The `Location` of a 302.
pub fn location(r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 302, "expected a redirect");
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Runs /authorize with `params` and returns the login challenge.
pub async fn challenge_for(api: &Api, params: &[(&str, &str)]) -> String {
    let r = authorize(api, params).await;
    let loc = location(&r);
    assert!(loc.starts_with(&format!("{LOGIN_URL}?")), "{loc}");
    param(&loc, "login_challenge").expect("login_challenge")
}

pub async fn accept(
    login: &mut LoginClient,
    challenge: &str,
    subject: &str,
    scope: &[&str],
) -> Result<String, tonic::Status> {
    login
        .accept_authorization(AcceptAuthorizationRequest {
            login_challenge: challenge.into(),
            subject: subject.into(),
            granted_scope: scope.iter().map(|s| s.to_string()).collect(),
            claims: None,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().redirect_to)
}

/// The login app rejects `challenge` with no error of its own; returns the
/// redirect it answers with.
pub async fn reject(login: &mut LoginClient, challenge: &str) -> String {
    login
        .reject_authorization(RejectAuthorizationRequest {
            login_challenge: challenge.into(),
            error: String::new(),
            error_description: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .redirect_to
}

/// Browser + login app for web-app with PKCE; returns (code, verifier).
pub async fn web_code(api: &Api, scope: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let ch = challenge_for(
        api,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("scope", scope),
            ("state", "st"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let mut login = login_client(api).await;
    let to = accept(&mut login, &ch, "user-42", &[]).await.unwrap();
    (param(&to, "code").unwrap(), verifier)
}

/// POST /oauth/token for web-app with Basic auth.
pub async fn redeem(api: &Api, code: &str, verifier: &str) -> reqwest::Response {
    redeem_as(api, "web-app", code, WEB_CB, verifier).await
}

/// POST /oauth/token redeeming `code` as `client_id` (Basic auth, the test
/// secret) with `redirect_uri` and `code_verifier`.
pub async fn redeem_as(
    api: &Api,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> reqwest::Response {
    api.post_form(
        "/oauth/token",
        Some((client_id, SECRET)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

pub async fn refresh(api: &Api, token: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    form.extend_from_slice(extra);
    api.post_form("/oauth/token", Some(("web-app", SECRET)), &form)
        .await
}

/// A full web-app grant: the token response JSON.
pub async fn web_tokens(api: &Api, scope: &str) -> Value {
    let (code, verifier) = web_code(api, scope).await;
    let r = redeem(api, &code, &verifier).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// A JSON string value, owned.
pub fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}
