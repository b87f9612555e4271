//! Workload identity federation over real sockets: a test-owned issuer (a
//! JWKS served by the test over HTTP, or HTTPS with its own CA, and tokens
//! it signs, shaped like Kubernetes projected service-account tokens)
//! authenticates clients at the token, introspection and revocation
//! endpoints and RevocationFeed.Watch, HTTP and gRPC. Every wrong token
//! answers `invalid_client` like a wrong secret; the JWKS follows a
//! rotation on an unknown `kid`; an endpoint that is down, slow, enormous or
//! malformed keeps the last good keys, within bounded time; a flood of random
//! `kid`s costs the issuer at most the rate-limited fetches; the
//! Kubernetes-style fetch sends the bearer token file and trusts the CA file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokend::pb::WatchRequest;
use tokend::pb::revocation_feed_client::RevocationFeedClient;
use toml::Table;

use crate::common::assertion::{
    ClientKey, TYPE, about_token_with, accepted_within, grpc_introspect, grpc_issue, grpc_revoke,
    token_with,
};
use crate::common::config::ISSUER;
use crate::common::grpc::reason;
use crate::common::{ConfigBuilder, SECRET, TestApp, TokendProcess};

/// The test issuer's `iss` (a Kubernetes cluster's default).
const K8S: &str = "https://kubernetes.default.svc.cluster.local";
const SA: &str = "system:serviceaccount:payments:api";
const CLIENT: &str = "payments-api";

/// What the test's JWKS endpoint does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Serve,
    Down,
    /// Holds the request without answering.
    Slow,
    /// Streams 1 MiB of JSON without a length.
    Huge,
    Malformed,
}

struct IssuerState {
    jwks: Mutex<Value>,
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    authorization: Mutex<Vec<String>>,
}

/// The test's issuer: its JWKS endpoint on a real socket.
struct Issuer {
    state: Arc<IssuerState>,
    jwks_uri: String,
    _task: tokio::task::JoinHandle<()>,
}

async fn jwks(State(s): State<Arc<IssuerState>>, headers: HeaderMap) -> Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(a) = headers.get("authorization") {
        s.authorization
            .lock()
            .push(a.to_str().unwrap_or_default().to_owned());
    }
    let mode = *s.mode.lock();
    match mode {
        Mode::Serve => axum::Json(s.jwks.lock().clone()).into_response(),
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
        Mode::Huge => {
            let head = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(
                "{\"keys\": [], \"pad\": \"",
            ))]);
            let pad = futures::stream::iter(
                (0..64).map(|_| Ok(bytes::Bytes::from(vec![b'x'; 16 * 1024]))),
            );
            use futures::StreamExt;
            axum::body::Body::from_stream(head.chain(pad)).into_response()
        }
        Mode::Malformed => (
            [("content-type", "application/json")],
            "{\"keys\": [ {\"kty\": ",
        )
            .into_response(),
    }
}

impl Issuer {
    /// Serves `keys` over plain HTTP.
    async fn start(keys: &[&ClientKey]) -> Self {
        Self::serve(keys, None).await
    }

    /// Serves `keys`, over HTTPS when `tls` is given.
    async fn serve(keys: &[&ClientKey], tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let state = Arc::new(IssuerState {
            jwks: Mutex::new(jwks_of(keys)),
            mode: Mutex::new(Mode::Serve),
            hits: AtomicUsize::new(0),
            authorization: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/openid/v1/jwks", get(jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = if tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (app, tls) = (app.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let _ = match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(tcp).await else {
                                return;
                            };
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        None => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                                .await
                        }
                    };
                });
            }
        });
        Self {
            state,
            jwks_uri: format!("{scheme}://{host}:{}/openid/v1/jwks", addr.port()),
            _task: task,
        }
    }

    fn set_keys(&self, keys: &[&ClientKey]) {
        *self.state.jwks.lock() = jwks_of(keys);
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock() = mode;
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// A `[[trusted_issuers]]` entry for this issuer's `jwks_uri`.
    fn entry(&self) -> Table {
        let mut t = toml::toml! {
            issuer = (K8S)
            min_refetch_secs = 1
            fetch_timeout_ms = 1000
        };
        t.insert("jwks_uri".into(), self.jwks_uri.clone().into());
        t
    }
}

fn jwks_of(keys: &[&ClientKey]) -> Value {
    json!({"keys": keys.iter().map(|k| {
        let mut jwk = k.jwk.clone();
        // The API server's JWKS names use and alg.
        jwk["use"] = "sig".into();
        jwk
    }).collect::<Vec<_>>()})
}

fn now() -> i64 {
    tokend::oauth::now_unix()
}

/// A projected service-account token's claims (Kubernetes 1.30: iss, sub,
/// aud, iat, nbf, exp one hour on, a jti, the kubernetes.io claim).
fn sa_claims(sub: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": K8S, "sub": sub, "aud": [aud],
        "iat": now, "nbf": now, "exp": now + 3600,
        "jti": tokend::token::opaque::random_id(),
        "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api", "uid": "0d1f"}},
    })
}

fn federated_client() -> Table {
    toml::toml! {
        client_id = (CLIENT)
        token_endpoint_auth_method = "private_key_jwt"
        federated_identities = [{ issuer = (K8S), subject = (SA) }]
        grant_types = ["client_credentials"]
        scopes = ["payments:write"]
        introspection = "any"
        revocation_feed = true
    }
}

/// [`federated_client`], also acting for `SA` tokens of `other_issuer`.
fn client_also_of(other_issuer: &str) -> Table {
    let mut client = federated_client();
    client.insert(
        "federated_identities".into(),
        toml::Value::try_from(json!([
            {"issuer": K8S, "subject": SA},
            {"issuer": other_issuer, "subject": SA},
        ]))
        .unwrap(),
    );
    client
}

/// The standard clients, `client`, and `issuers`; the secret-guessing
/// defence off (tests that wait for a refetch fail on purpose meanwhile).
fn config_of(client: Table, issuers: Vec<Table>) -> ConfigBuilder {
    ConfigBuilder::memory()
        .set("auth_throttle.enabled", false)
        .client(client)
        .set(
            "trusted_issuers",
            toml::Value::Array(issuers.into_iter().map(toml::Value::Table).collect()),
        )
}

/// [`config_of`] the federated client.
fn config(issuers: Vec<Table>) -> ConfigBuilder {
    config_of(federated_client(), issuers)
}

/// The body of a wrong secret's answer: every refused federated token must
/// answer exactly this.
async fn wrong_secret_body(app: &TestApp) -> Value {
    let r = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "orders-service"),
                ("client_secret", "wrong"),
            ],
        )
        .await;
    assert_eq!(r.status(), 401);
    r.json().await.unwrap()
}

async fn assert_refused(app: &TestApp, r: reqwest::Response, what: &str) {
    let expected = wrong_secret_body(app).await;
    assert_eq!(r.status(), 401, "{what}");
    assert_eq!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"tokend\", charset=\"UTF-8\""),
        "{what}: the challenge of every 401, as for a wrong secret"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, expected, "{what}: the body of a wrong secret");
}

#[tokio::test]
async fn a_service_account_token_authenticates_everywhere_over_http_and_grpc() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let issuer = Issuer::start(&[&key]).await;
    let app = TestApp::start(&config(vec![issuer.entry()])).await;
    // One projected token, presented again and again (the kubelet reuses it
    // until it rotates it): no client_id, aud = tokend's issuer.
    let sa = key.sign(&sa_claims(SA, ISSUER), true);
    let mut access = String::new();
    for _ in 0..3 {
        let r = token_with(&app, &sa, &[]).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            crate::common::http::jwt_parts(body["access_token"].as_str().unwrap()).1["client_id"],
            CLIENT
        );
        access = body["access_token"].as_str().unwrap().to_owned();
    }
    // With the client_id, too.
    assert_eq!(
        token_with(&app, &sa, &[("client_id", CLIENT)])
            .await
            .status(),
        200
    );
    // Introspection and revocation over HTTP.
    let r = about_token_with(&app, "/oauth/introspect", &access, &sa).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    let r = about_token_with(&app, "/oauth/revoke", &access, &sa).await;
    assert_eq!(r.status(), 200);
    // gRPC: issue, introspect, revoke, and the revocation feed.
    let mut grpc = app.grpc_client().await;
    let t = grpc.issue(grpc_issue(&sa)).await.unwrap().into_inner();
    let info = grpc
        .introspect(grpc_introspect(&t.access_token, &sa))
        .await
        .unwrap()
        .into_inner();
    assert!(info.active && info.client_id == CLIENT);
    grpc.revoke(grpc_revoke(&t.access_token, &sa))
        .await
        .unwrap();
    let mut feed = RevocationFeedClient::new(app.grpc_channel().await);
    let mut stream = feed
        .watch(WatchRequest {
            client_assertion_type: TYPE.into(),
            client_assertion: sa.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some(), "a first event");
    let s = feed
        .watch(WatchRequest {
            client_assertion_type: TYPE.into(),
            client_assertion: key.sign(&sa_claims("system:serviceaccount:x:y", ISSUER), true),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&s).as_deref(), Some("invalid_client"));
    // Only the first request fetched the JWKS (the cache serves the rest).
    assert!(issuer.hits() <= 2, "{} fetches", issuer.hits());
}

#[tokio::test]
async fn every_wrong_federated_token_is_invalid_client_like_a_wrong_secret() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let ec = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let stranger = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let issuer = Issuer::start(&[&key, &ec]).await;
    let mut single = issuer.entry();
    single.insert("issuer".into(), "https://single.example".into());
    single.insert("single_use_jti".into(), true.into());
    single.insert("max_lifetime_secs".into(), 3600.into());
    let app = TestApp::start(&config_of(
        client_also_of("https://single.example"),
        vec![issuer.entry(), single],
    ))
    .await;
    let now = now();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = sa_claims(SA, ISSUER);
        f(&mut c);
        c
    };
    // The same RSA key, its kid, but PS256: the JWK pins RS256.
    let mut ps = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::PS256);
    ps.kid = key.jwk["kid"].as_str().map(str::to_owned);
    let ps256 = jsonwebtoken::encode(&ps, &sa_claims(SA, ISSUER), &key.encoding_key()).unwrap();
    // An Ed25519 key under the RSA key's kid: the issuer has no EdDSA key.
    let ed = ClientKey::new(jsonwebtoken::Algorithm::EdDSA);
    let mut forged = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    forged.kid = key.jwk["kid"].as_str().map(str::to_owned);
    let ed_as_rsa =
        jsonwebtoken::encode(&forged, &sa_claims(SA, ISSUER), &ed.encoding_key()).unwrap();
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &sa_claims(SA, ISSUER),
        &jsonwebtoken::EncodingKey::from_secret(key.jwk.to_string().as_bytes()).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "unmapped subject",
            key.sign(
                &sa_claims("system:serviceaccount:payments:other", ISSUER),
                true,
            ),
        ),
        (
            "wrong audience",
            key.sign(&sa_claims(SA, "https://kubernetes.default.svc"), true),
        ),
        (
            "expired",
            key.sign(
                &with(&|c| {
                    c["iat"] = (now - 4000).into();
                    c["nbf"] = (now - 4000).into();
                    c["exp"] = (now - 100).into();
                }),
                true,
            ),
        ),
        (
            "lifetime above the issuer's maximum",
            key.sign(&with(&|c| c["exp"] = (now + 2 * 86_400).into()), true),
        ),
        (
            "unknown issuer",
            key.sign(&with(&|c| c["iss"] = "https://evil.example".into()), true),
        ),
        (
            "unregistered key",
            stranger.sign(&sa_claims(SA, ISSUER), true),
        ),
        (
            "unregistered key, no kid",
            stranger.sign(&sa_claims(SA, ISSUER), false),
        ),
        ("alg mismatch (PS256 on an RS256 key)", ps256),
        ("alg mismatch (EdDSA under an RSA kid)", ed_as_rsa),
        ("HS256 with the public key", hs),
        (
            "no exp",
            key.sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                true,
            ),
        ),
        ("garbage", "a.b.c".into()),
    ];
    for (what, token) in &cases {
        assert_refused(&app, token_with(&app, token, &[]).await, what).await;
        assert_refused(
            &app,
            token_with(&app, token, &[("client_id", CLIENT)]).await,
            what,
        )
        .await;
    }
    let good = key.sign(&sa_claims(SA, ISSUER), true);
    // A client the identity is not mapped to, named by client_id.
    for other in ["orders-service", "nobody"] {
        let r = token_with(&app, &good, &[("client_id", other)]).await;
        assert_refused(&app, r, other).await;
    }
    // The federated client cannot use a secret, nor a secret beside the token.
    let r = app.token_in_body(CLIENT, SECRET, &[]).await;
    assert_refused(&app, r, "a federated client with a secret").await;
    let r = token_with(&app, &good, &[("client_secret", SECRET)]).await;
    assert_refused(&app, r, "a token and a secret").await;
    // gRPC answers UNAUTHENTICATED with the ErrorInfo reason.
    let mut grpc = app.grpc_client().await;
    for (what, token) in &cases {
        let s = grpc.issue(grpc_issue(token)).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{what}");
        assert_eq!(reason(&s).as_deref(), Some("invalid_client"), "{what}");
    }
    // The good token works, again and again (no single use by default).
    for _ in 0..2 {
        assert_eq!(token_with(&app, &good, &[]).await.status(), 200);
    }
    // An issuer with single_use_jti: the second use is refused.
    let once = key.sign(&with(&|c| c["iss"] = "https://single.example".into()), true);
    assert_eq!(token_with(&app, &once, &[]).await.status(), 200);
    assert_refused(&app, token_with(&app, &once, &[]).await, "replay").await;
    let no_jti = key.sign(
        &with(&|c| {
            c["iss"] = "https://single.example".into();
            c.as_object_mut().unwrap().remove("jti");
        }),
        true,
    );
    assert_refused(
        &app,
        token_with(&app, &no_jti, &[]).await,
        "single use, no jti",
    )
    .await;
}

#[tokio::test]
async fn failed_federated_tokens_count_in_the_secret_guessing_defence() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let stranger = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let issuer = Issuer::start(&[&key]).await;
    let app = TestApp::start(
        &config(vec![issuer.entry()])
            .set("auth_throttle.enabled", true)
            .set("auth_throttle.threshold", 3)
            .set("auth_throttle.base_secs", 60)
            .set("auth_throttle.max_secs", 60),
    )
    .await;
    for _ in 0..3 {
        let r = token_with(&app, &stranger.sign(&sa_claims(SA, ISSUER), false), &[]).await;
        assert_eq!(r.status(), 401);
    }
    let r = token_with(&app, &key.sign(&sa_claims(SA, ISSUER), true), &[]).await;
    assert_eq!(r.status(), 429, "backing off: even a good token waits");
}

#[tokio::test]
async fn a_rotated_jwks_is_picked_up_on_an_unknown_kid_and_the_old_key_stops() {
    let old = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let new = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let issuer = Issuer::start(&[&old]).await;
    let app = TestApp::start(&config(vec![issuer.entry()])).await;
    let old_token = old.sign(&sa_claims(SA, ISSUER), true);
    assert_eq!(token_with(&app, &old_token, &[]).await.status(), 200);
    // The cluster rotates its signing key: the JWKS now holds the new one only.
    issuer.set_keys(&[&new]);
    let new_token = new.sign(&sa_claims(SA, ISSUER), true);
    // Within a refetch interval (1 s here) of the last fetch, the new kid
    // triggers a fetch and works.
    assert!(
        accepted_within(&app, &new_token, Duration::from_secs(5)).await,
        "the new key is picked up"
    );
    // The old key is gone from the keys in hand.
    assert_refused(&app, token_with(&app, &old_token, &[]).await, "old key").await;
}

#[tokio::test]
async fn a_failing_jwks_endpoint_keeps_the_last_good_keys_within_bounded_time() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::EdDSA);
    let later = ClientKey::new(jsonwebtoken::Algorithm::EdDSA);
    let issuer = Issuer::start(&[&key]).await;
    let app =
        TestApp::start(&config(vec![issuer.entry()]).set("auth_throttle.enabled", false)).await;
    let good = key.sign(&sa_claims(SA, ISSUER), true);
    assert_eq!(token_with(&app, &good, &[]).await.status(), 200);
    // The issuer starts publishing `later`'s key, but its endpoint fails.
    issuer.set_keys(&[&key, &later]);
    let unknown = later.sign(&sa_claims(SA, ISSUER), true);
    for mode in [Mode::Down, Mode::Slow, Mode::Huge, Mode::Malformed] {
        issuer.set_mode(mode);
        // Past the refetch interval, so the unknown kid fetches.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let hits = issuer.hits();
        let started = Instant::now();
        let r = token_with(&app, &unknown, &[]).await;
        let took = started.elapsed();
        assert_refused(&app, r, &format!("{mode:?}")).await;
        assert!(issuer.hits() > hits, "{mode:?}: a fetch was tried");
        assert!(
            took < Duration::from_secs(3),
            "{mode:?}: bounded by fetch_timeout_ms, took {took:?}"
        );
        // The last good keys still verify.
        assert_eq!(
            token_with(&app, &good, &[]).await.status(),
            200,
            "{mode:?}: last good keys kept"
        );
    }
    // Back up: the next fetch brings the new key.
    issuer.set_mode(Mode::Serve);
    assert!(accepted_within(&app, &unknown, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn an_issuer_down_at_start_answers_invalid_client_then_recovers() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let issuer = Issuer::start(&[&key]).await;
    issuer.set_mode(Mode::Down);
    let app = TestApp::start(&config(vec![issuer.entry()])).await;
    let token = key.sign(&sa_claims(SA, ISSUER), true);
    assert_refused(&app, token_with(&app, &token, &[]).await, "no keys yet").await;
    issuer.set_mode(Mode::Serve);
    assert!(accepted_within(&app, &token, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_flood_of_random_kids_costs_the_issuer_only_the_rate_limited_fetches() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    // The flooder has no registered key: it signs with its own.
    let flooder = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let issuer = Issuer::start(&[&key]).await;
    let app = TestApp::start(
        &config(vec![issuer.entry()]).set("server.max_concurrent_requests_per_peer", 1024),
    )
    .await;
    assert_eq!(
        token_with(&app, &key.sign(&sa_claims(SA, ISSUER), true), &[])
            .await
            .status(),
        200
    );
    let before = issuer.hits();
    let started = Instant::now();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let mut refused = 0;
    for _round in 0..6 {
        let tokens: Vec<String> = (0..40)
            .map(|_| {
                header.kid = Some(tokend::token::opaque::random_id());
                jsonwebtoken::encode(&header, &sa_claims(SA, ISSUER), &flooder.encoding_key())
                    .unwrap()
            })
            .collect();
        let answers =
            futures::future::join_all(tokens.iter().map(|t| token_with(&app, t, &[]))).await;
        refused += answers.iter().filter(|r| r.status() == 401).count();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetches = issuer.hits() - before;
    // min_refetch_secs = 1: at most one per started second, plus one.
    let bound = elapsed.ceil() as usize + 1;
    assert_eq!(refused, 240, "every random kid is refused");
    assert!(
        (1..=bound).contains(&fetches),
        "{fetches} fetches in {elapsed:.1} s (bound {bound})"
    );
}

#[tokio::test]
async fn a_kubernetes_style_fetch_sends_the_bearer_token_file_and_trusts_the_ca_file() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let dir = TempDir::new().unwrap();
    let ca = crate::common::pki::ca("test cluster CA");
    let (cert, server_key, _) = crate::common::pki::leaf(&ca, "kubernetes");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "sa-token-one\n").unwrap();
    let tls = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    };
    let issuer = Issuer::serve(&[&key], Some(tls)).await;
    let mut entry = issuer.entry();
    entry.insert(
        "bearer_token_file".into(),
        token_file.to_str().unwrap().into(),
    );
    entry.insert("ca_file".into(), ca_file.to_str().unwrap().into());
    // Without the CA, the same endpoint is not trusted (system roots).
    let mut untrusted = issuer.entry();
    untrusted.insert("issuer".into(), "https://untrusted.example".into());
    let app = TestApp::start(&config_of(
        client_also_of("https://untrusted.example"),
        vec![entry, untrusted],
    ))
    .await;
    let token = key.sign(&sa_claims(SA, ISSUER), true);
    assert_eq!(token_with(&app, &token, &[]).await.status(), 200);
    assert!(
        issuer
            .state
            .authorization
            .lock()
            .iter()
            .all(|a| a == "Bearer sa-token-one"),
        "{:?}",
        issuer.state.authorization.lock()
    );
    let hits_with_ca = issuer.hits();
    let untrusted_token = key.sign(
        &{
            let mut c = sa_claims(SA, ISSUER);
            c["iss"] = "https://untrusted.example".into();
            c
        },
        true,
    );
    assert_refused(
        &app,
        token_with(&app, &untrusted_token, &[]).await,
        "an endpoint outside the system roots",
    )
    .await;
    assert_eq!(
        issuer.hits(),
        hits_with_ca,
        "the TLS handshake failed before any request"
    );
    // The kubelet rotates the pod's token: the next fetch reads the new one.
    std::fs::write(&token_file, "sa-token-two").unwrap();
    let rotated = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    issuer.set_keys(&[&key, &rotated]);
    let next = rotated.sign(&sa_claims(SA, ISSUER), true);
    assert!(accepted_within(&app, &next, Duration::from_secs(5)).await);
    assert_eq!(
        issuer.state.authorization.lock().last().map(String::as_str),
        Some("Bearer sa-token-two")
    );
}

#[test]
fn check_config_names_every_federation_mistake() {
    let dir = TempDir::new().unwrap();
    let problems = |b: ConfigBuilder| b.load_in(dir.path(), &[]).validate().join("\n");
    let entry = |extra: Value| {
        let mut t = toml::toml! { issuer = (K8S) jwks_uri = "https://kubernetes.default.svc/openid/v1/jwks" };
        for (k, v) in extra.as_object().unwrap() {
            t.insert(k.clone(), toml::Value::try_from(v).unwrap());
        }
        toml::Value::Table(t)
    };
    let with = |issuers: Vec<toml::Value>| {
        ConfigBuilder::memory()
            .client(federated_client())
            .set("trusted_issuers", toml::Value::Array(issuers))
    };
    assert_eq!(problems(with(vec![entry(json!({}))])), "");
    // The client names an issuer that is not trusted.
    assert!(
        problems(ConfigBuilder::memory().client(federated_client()))
            .contains("is not a [[trusted_issuers]] issuer")
    );
    let p = problems(with(vec![entry(json!({"jwks_file": "k.json"}))]));
    assert!(p.contains("jwks_file, jwks_uri: give exactly one"), "{p}");
    let p = problems(with(vec![entry(json!({"max_lifetime_secs": 0}))]));
    assert!(p.contains("max_lifetime_secs: must be 1 to"), "{p}");
    let p = problems(with(vec![entry(json!({"issuer": "kubernetes"}))]));
    assert!(p.contains("must be an absolute http(s) URL"), "{p}");
    let p = problems(with(vec![entry(json!({"ca_file": "missing.crt"}))]));
    assert!(p.contains("ca_file: cannot read"), "{p}");
    let p = problems(with(vec![entry(json!({})), entry(json!({}))]));
    assert!(p.contains("is also trusted_issuers[0]"), "{p}");
    // Two clients for one workload identity.
    let mut twin = federated_client();
    twin.insert("client_id".into(), "twin".into());
    let p = problems(with(vec![entry(json!({}))]).client(twin));
    assert!(p.contains("already acts as client"), "{p}");
    // A secret on a federated client, and federated_identities on a secret client.
    let p = problems(with(vec![entry(json!({}))]).client_set(
        CLIENT,
        "secret_hashes",
        toml::Value::Array(vec![crate::common::config::sha256(SECRET).into()]),
    ));
    assert!(p.contains("authenticates with its keys"), "{p}");
    let p = problems(
        with(vec![entry(json!({}))]).client_set(
            "orders-service",
            "federated_identities",
            toml::Value::try_from(json!([{"issuer": K8S, "subject": "system:serviceaccount:a:b"}]))
                .unwrap(),
        ),
    );
    assert!(p.contains("federated_identities: only for"), "{p}");
}

#[tokio::test]
async fn no_federated_token_or_bearer_token_reaches_the_logs_at_trace() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let stranger = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let issuer = Issuer::start(&[&key]).await;
    let dir = TempDir::new().unwrap();
    let bearer = "planted-bearer-0xbea7e2";
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, bearer).unwrap();
    let mut entry = issuer.entry();
    entry.insert(
        "bearer_token_file".into(),
        token_file.to_str().unwrap().into(),
    );
    let config = config(vec![entry])
        .set("log.level", "trace")
        .set("log.format", "json");
    let p = TokendProcess::serve(&config).start().await;
    let http = reqwest::Client::new();
    let good = key.sign(&sa_claims(SA, ISSUER), true);
    let bad = stranger.sign(&sa_claims(SA, ISSUER), true);
    let unmapped = key.sign(&sa_claims("system:serviceaccount:x:y", ISSUER), true);
    let mut access = String::new();
    for (assertion, status) in [(&good, 200), (&bad, 401), (&unmapped, 401)] {
        let r = http
            .post(p.url("/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", TYPE),
                ("client_assertion", assertion),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        if status == 200 {
            access = r.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    }
    p.sigterm();
    let (code, logs) = p.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("client assertion refused"), "{logs}");
    let planted = [bearer, &good, &bad, &unmapped, &access].map(str::to_owned);
    crate::common::assert_not_logged(&logs, &planted, &[&good, &bad, &unmapped, &access]);
}

#[tokio::test]
async fn trusted_issuers_reload_live_and_a_fetched_jwks_survives_the_reload() {
    let a = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let b = ClientKey::new(jsonwebtoken::Algorithm::EdDSA);
    let fetched = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let issuer = Issuer::start(&[&fetched]).await;
    let dir = TempDir::new().unwrap();
    let write = |keys: &[&ClientKey]| {
        std::fs::write(
            dir.path().join("issuer.jwks.json"),
            jwks_of(keys).to_string(),
        )
        .unwrap();
    };
    write(&[&a]);
    let file_issuer = toml::toml! {
        issuer = "https://file-issuer.example"
        jwks_file = "issuer.jwks.json"
    };
    let builder = config_of(
        client_also_of("https://file-issuer.example"),
        vec![issuer.entry(), file_issuer],
    );
    let cfg = builder.load_in(dir.path(), &[]);
    let app = TestApp::start_config(cfg.clone()).await;
    let mut reloader = crate::common::app::reloader(&app, cfg, dir.path())
        .with_federation(tokend::federation::Federation::default());
    let from_file = |k: &ClientKey| {
        let mut c = sa_claims(SA, ISSUER);
        c["iss"] = "https://file-issuer.example".into();
        k.sign(&c, true)
    };
    let via_uri = fetched.sign(&sa_claims(SA, ISSUER), true);
    assert_eq!(token_with(&app, &from_file(&a), &[]).await.status(), 200);
    assert_eq!(token_with(&app, &via_uri, &[]).await.status(), 200);
    assert_refused(
        &app,
        token_with(&app, &from_file(&b), &[]).await,
        "b not yet",
    )
    .await;
    // The issuer's JWK Set file rotates: a reload picks it up. (This
    // reloader has fetchers of its own: its first reload fetches the
    // jwks_uri once; later reloads keep that fetcher and its keys.)
    write(&[&b]);
    reloader.reload().unwrap();
    assert_eq!(token_with(&app, &from_file(&b), &[]).await.status(), 200);
    assert_refused(
        &app,
        token_with(&app, &from_file(&a), &[]).await,
        "a dropped",
    )
    .await;
    assert!(accepted_within(&app, &via_uri, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = issuer.hits();
    // The file issuer removed from the config: its tokens are refused at once.
    let without = config(vec![issuer.entry()]);
    without.write(&dir.path().join("tokend.toml"));
    reloader.reload().unwrap();
    assert_refused(
        &app,
        token_with(&app, &from_file(&b), &[]).await,
        "untrusted now",
    )
    .await;
    // The unchanged jwks_uri entry kept its fetcher: its cached keys verify
    // with no new fetch.
    assert_eq!(token_with(&app, &via_uri, &[]).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        issuer.hits(),
        hits,
        "no fetch after a reload that kept the entry"
    );
    // A broken file keeps the running issuers.
    std::fs::write(dir.path().join("tokend.toml"), "trusted_issuers = 5").unwrap();
    assert!(reloader.reload().is_err());
    assert_eq!(token_with(&app, &via_uri, &[]).await.status(), 200);
}
