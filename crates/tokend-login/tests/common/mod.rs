//! The test stack: a real tokend in-process (memory store) on loopback
//! sockets, the login app and the demo client on their own sockets, and a
//! client callback the test serves itself. Everything stops on drop.

#![allow(dead_code)]

pub mod webdriver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use tokend_login::config::{Settings, load_users};
use tokend_login::demo_client::DemoSettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The login app's bearer secret in the tests.
pub const APP_TOKEN: &str = "test-login-app-secret";
/// The client the tests log in to: public, PKCE.
pub const CLIENT_ID: &str = "test-shop";
pub const CLIENT_NAME: &str = "Test Shop";
/// A confidential client that may introspect.
pub const INTROSPECTOR: &str = "resource-server";
pub const INTROSPECTOR_SECRET: &str = "introspector-secret";
/// The demo user of examples/users.toml.
pub const DEMO_USER: &str = "demo";
pub const DEMO_PASSWORD: &str = "demo-password";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub struct Stack {
    /// tokend's HTTP base URL.
    pub tokend: String,
    /// tokend's gRPC URL.
    pub tokend_grpc: String,
    /// The login app's base URL.
    pub login: String,
    /// The demo client's base URL.
    pub demo: String,
    /// The test client's redirect URI (served by the test: it answers a page
    /// saying "callback").
    pub callback: String,
    /// The demo user's subject (from examples/users.toml).
    pub demo_subject: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// Starts everything; `remember_consent` as given.
    pub async fn start_with(remember_consent: bool) -> Self {
        let dir = TempDir::with_prefix("tokend-login-").unwrap();
        let shutdown = CancellationToken::new();
        let (login_l, login_a) = bind().await;
        let (demo_l, demo_a) = bind().await;
        let (cb_l, cb_a) = bind().await;
        let login = format!("http://{login_a}");
        let demo = format!("http://{demo_a}");
        let callback = format!("http://{cb_a}/cb");
        let demo_callback = format!("{demo}/callback");

        // tokend, configured through its TOML file like in production.
        let app_hash = tokend::oauth::client::SecretHash::sha256_of(APP_TOKEN);
        let intro_hash = tokend::oauth::client::SecretHash::sha256_of(INTROSPECTOR_SECRET);
        let login_url = format!("{login}/login");
        let cfg = toml::toml! {
            issuer = "http://tokend.test"
            [http]
            listen = "127.0.0.1:0"
            [grpc]
            listen = "127.0.0.1:0"
            [store]
            url = "memory://"
            [server]
            shutdown_grace_secs = 1
            [authorization]
            login_url = (login_url.as_str())
            login_app_token_hash = (app_hash.as_str())
            [[clients]]
            client_id = (CLIENT_ID)
            client_name = (CLIENT_NAME)
            token_endpoint_auth_method = "none"
            grant_types = ["authorization_code", "refresh_token"]
            scopes = ["orders:read", "profile"]
            redirect_uris = [(callback.as_str())]
            [[clients]]
            client_id = "demo-spa"
            token_endpoint_auth_method = "none"
            grant_types = ["authorization_code", "refresh_token"]
            scopes = ["orders:read"]
            default_scopes = ["orders:read"]
            redirect_uris = [(demo_callback.as_str())]
            [[clients]]
            client_id = (INTROSPECTOR)
            secret_hashes = [(intro_hash.as_str())]
            grant_types = ["client_credentials"]
            introspection = "any"
        };
        let path = dir.path().join("tokend.toml");
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let cfg = tokend::config::Config::load(Some(&path), std::iter::empty()).unwrap();
        let server = tokend::server::Server::build(cfg.parse().expect("the test config parses"))
            .await
            .expect("tokend builds");
        let tokend_http = format!("http://{}", server.http_addr());
        let tokend_grpc = format!("http://{}", server.grpc_addr());
        tokio::spawn(server.run(shutdown.clone()));

        // The login app, with the checked-in demo users.
        let users = load_users(&repo_root().join("examples/users.toml")).unwrap();
        let demo_subject = users
            .iter()
            .find(|u| u.username == DEMO_USER)
            .expect("examples/users.toml has the demo user")
            .subject
            .clone();
        let settings = Settings {
            listen: login_a,
            tokend_grpc_url: tokend_grpc.clone(),
            tokend_ca_pem: None,
            app_token: APP_TOKEN.into(),
            users,
            cookie_secure: false,
            remember_consent,
            max_concurrent_verifications: 2,
        };
        let stop = shutdown.clone();
        tokio::spawn(tokend_login::serve_login(login_l, settings, async move {
            stop.cancelled().await
        }));

        // The demo client.
        let stop = shutdown.clone();
        tokio::spawn(tokend_login::serve_demo_client(
            demo_l,
            DemoSettings {
                listen: demo_a,
                tokend_url: tokend_http.clone(),
                client_id: "demo-spa".into(),
                redirect_uri: demo_callback,
                scope: "orders:read".into(),
            },
            async move { stop.cancelled().await },
        ));

        // The test client's redirect URI: a page that says where it is.
        let cb = axum::Router::new().route(
            "/cb",
            axum::routing::get(|| async {
                axum::response::Html(
                    "<!DOCTYPE html><html lang=\"en\"><title>callback</title><h1 id=\"callback\">client callback</h1></html>",
                )
            }),
        );
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(cb_l, cb)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let stack = Self {
            tokend: tokend_http,
            tokend_grpc,
            login,
            demo,
            callback,
            demo_subject,
            http,
            shutdown,
            _dir: dir,
        };
        stack.wait_ready().await;
        stack
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            let ok = self
                .http
                .get(format!("{}/readyz", self.tokend))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tokend did not become ready");
    }

    /// The authorize URL of the test client, with PKCE (S256) and `state`;
    /// returns it with the verifier.
    pub fn authorize_url(&self, state: &str) -> (String, String) {
        self.authorize_url_for(state, "orders:read profile")
    }

    /// [`Self::authorize_url`] asking for `scope`.
    pub fn authorize_url_for(&self, state: &str, scope: &str) -> (String, String) {
        use base64::Engine;
        use sha2::Digest;
        let verifier = tokend_login::security::random_token(32);
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT_ID)
            .append_pair("redirect_uri", &self.callback)
            .append_pair("scope", scope)
            .append_pair("state", state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        (format!("{}/oauth/authorize?{q}", self.tokend), verifier)
    }

    /// A fresh login challenge, as tokend's redirect to the login app gives it.
    pub async fn login_challenge(&self) -> String {
        self.login_challenge_for("orders:read profile").await
    }

    /// A fresh login challenge for a request asking for `scope`.
    pub async fn login_challenge_for(&self, scope: &str) -> String {
        let (url, _) = self.authorize_url_for("st", scope);
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 302);
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(loc.starts_with(&format!("{}/login?", self.login)), "{loc}");
        query_param(&loc, "login_challenge").unwrap()
    }

    /// Redeems `code` at tokend's token endpoint as the test client.
    pub async fn redeem(&self, code: &str, verifier: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/oauth/token", self.tokend))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("code", code),
                ("redirect_uri", &self.callback),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .unwrap()
    }

    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        self.http
            .post(format!("{}/oauth/introspect", self.tokend))
            .basic_auth(INTROSPECTOR, Some(INTROSPECTOR_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The decoded value of query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A JWT's payload claims (not verified).
pub fn jwt_claims(jwt: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Where the screenshots go: `$SCREENSHOT_DIR`, else `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/screenshots"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
