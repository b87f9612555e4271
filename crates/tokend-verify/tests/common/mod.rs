//! The test stack: a real tokend in-process (memory store, loopback sockets)
//! serving the JWKS, tokens and revocation; a small JWKS server the tests
//! control (key rotation, failures, request counting); token minting with
//! keys the tests hold (claim-level forgeries); and helpers to poll. Every
//! server stops when its handle drops.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tempfile::TempDir;
use tokend_token::jwt::{self, AccessClaims};
use tokend_token::keys::{Algorithm, SigningKey};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const ISSUER: &str = "http://tokend.test";
pub const AUDIENCE: &str = "orders-api";
pub const CLIENT: &str = "shop";
pub const CLIENT_SECRET: &str = "shop-secret";
/// A client that may watch the revocation feed.
pub const WATCHER: &str = "orders-api";
pub const WATCHER_SECRET: &str = "orders-api-secret";

pub async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `f` until it returns `Some`, up to a generous deadline (a bound on
/// a failure, not a timing assertion).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the verifier's answer for `token` is `want` (Ok = accepted).
pub async fn until(
    v: &tokend_verify::Verifier,
    token: &str,
    want: Result<(), tokend_verify::RejectReason>,
) {
    eventually(&format!("{want:?}"), || async {
        let got = v.verify(token).await.map(|_| ()).map_err(|r| r.reason());
        (got == want).then_some(())
    })
    .await
}

/// A real tokend in-process.
pub struct Tokend {
    pub http: String,
    pub grpc: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

impl Drop for Tokend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Tokend {
    pub async fn start(alg: Algorithm) -> Self {
        Self::start_with(alg, true).await
    }

    /// `feed`: whether the watcher client gets `revocation_feed = true`.
    pub async fn start_with(alg: Algorithm, feed: bool) -> Self {
        let dir = TempDir::with_prefix("tokend-verify-").unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, tokend_token::keys::generate_pem(alg).unwrap()).unwrap();
        let shop = tokend::oauth::client::SecretHash::sha256_of(CLIENT_SECRET);
        let watcher = tokend::oauth::client::SecretHash::sha256_of(WATCHER_SECRET);
        let mut cfg = toml::toml! {
            issuer = (ISSUER)
            [http]
            listen = "127.0.0.1:0"
            [grpc]
            listen = "127.0.0.1:0"
            [store]
            url = "memory://"
            [server]
            shutdown_grace_secs = 1
            [signing]
            algorithm = (alg.as_str())
            key_file = (key.to_str().unwrap())
            [[clients]]
            client_id = (CLIENT)
            secret_hashes = [(shop.as_str())]
            grant_types = ["client_credentials"]
            scopes = ["orders:read", "orders:write"]
            audience = [(AUDIENCE), "billing-api"]
            [[clients]]
            client_id = (WATCHER)
            secret_hashes = [(watcher.as_str())]
            grant_types = ["client_credentials"]
        };
        if feed {
            let clients = cfg["clients"].as_array_mut().unwrap();
            clients[1]
                .as_table_mut()
                .unwrap()
                .insert("revocation_feed".into(), true.into());
        }
        let path = dir.path().join("tokend.toml");
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        let cfg = tokend::config::Config::load(Some(&path), std::iter::empty()).unwrap();
        let server = tokend::server::Server::build(cfg.parse().expect("the test config parses"))
            .await
            .expect("tokend builds");
        let http = format!("http://{}", server.http_addr());
        let grpc = format!("http://{}", server.grpc_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        let t = Self {
            http,
            grpc,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            shutdown,
            task: Some(task),
            _dir: dir,
        };
        let (c, url) = (t.client.clone(), format!("{}/readyz", t.http));
        eventually("tokend ready", || {
            let (c, url) = (c.clone(), url.clone());
            async move {
                let ok = c.get(url).send().await.ok()?.status() == 200;
                ok.then_some(())
            }
        })
        .await;
        t
    }

    /// Stops tokend and waits until it has.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.http)
    }

    pub async fn jwks(&self) -> serde_json::Value {
        self.client
            .get(self.jwks_url())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A client_credentials token for `shop` with `scope`, for `audience`.
    pub async fn token(&self, scope: &str, audience: &str) -> String {
        let resp: serde_json::Value = self
            .client
            .post(format!("{}/oauth/token", self.http))
            .basic_auth(CLIENT, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                ("audience", audience),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {resp}"))
            .to_owned()
    }

    /// RFC 7009 revocation by its client.
    pub async fn revoke(&self, token: &str) {
        let resp = self
            .client
            .post(format!("{}/oauth/revoke", self.http))
            .basic_auth(CLIENT, Some(CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    }

    pub async fn introspect_active(&self, token: &str) -> bool {
        let resp: serde_json::Value = self
            .client
            .post(format!("{}/oauth/introspect", self.http))
            .basic_auth(CLIENT, Some(CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["active"] == true
    }
}

/// A JWKS endpoint the test controls: the document it serves, a failure
/// mode, and a count of requests.
#[derive(Clone)]
pub struct JwksServer {
    pub url: String,
    state: Arc<JwksState>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(CancellationToken);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

struct JwksState {
    body: Mutex<(u16, String)>,
    requests: AtomicU64,
    /// The `traceparent` header of the last request (empty: none).
    traceparent: Mutex<String>,
}

impl JwksServer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let state = Arc::new(JwksState {
            body: Mutex::new((200, jwks_of(keys))),
            requests: AtomicU64::new(0),
            traceparent: Mutex::new(String::new()),
        });
        let (l, a) = bind().await;
        let s = state.clone();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let s = s.clone();
                async move {
                    *s.traceparent.lock() = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    s.requests.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = s.body.lock().clone();
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body,
                    )
                }
            }),
        );
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
        });
        Self {
            url: format!("http://{a}/jwks.json"),
            state,
            _stop: Arc::new(StopOnDrop(stop)),
        }
    }

    pub fn serve_keys(&self, keys: &[&SigningKey]) {
        *self.state.body.lock() = (200, jwks_of(keys));
    }

    pub fn serve_raw(&self, status: u16, body: impl Into<String>) {
        *self.state.body.lock() = (status, body.into());
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The `traceparent` of the last request ("" when it had none).
    pub fn last_traceparent(&self) -> String {
        self.state.traceparent.lock().clone()
    }
}

pub fn jwks_of(keys: &[&SigningKey]) -> String {
    serde_json::json!({"keys": keys.iter().map(|k| k.verify_key().jwk.clone()).collect::<Vec<_>>()})
        .to_string()
}

/// Claims like tokend's for `shop`, valid now.
pub fn claims() -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: ISSUER.into(),
        sub: CLIENT.into(),
        aud: vec![AUDIENCE.into()],
        exp: now + 300,
        iat: now,
        nbf: now,
        jti: tokend_token::opaque::time_ordered_id(now * 1000),
        client_id: CLIENT.into(),
        scope: "orders:read".into(),
        sid: None,
        legacy_iat_ms: None,
        act: None,
        chain: Vec::new(),
        cnf: None,
        extra: serde_json::Map::new(),
    }
}

pub fn mint(key: &SigningKey, claims: &AccessClaims) -> String {
    jwt::mint(key, claims).unwrap()
}

/// A compact JWS with an arbitrary header, signed by `sign` over the
/// signing input.
pub fn forge(
    header: serde_json::Value,
    claims: &AccessClaims,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}
