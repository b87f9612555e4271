//! Operations over real sockets: rate limits, the secret-guessing back-off,
//! Prometheus metrics, request ids, timeouts and the concurrency limit.

use std::net::IpAddr;
use std::time::Duration;

use tokend::pb::IssueRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::common::{SECRET, TestApp, basic_header, config_toml, error_reason};

fn issue(client: &str, secret: &str) -> IssueRequest {
    IssueRequest {
        grant_type: "client_credentials".into(),
        client_id: client.into(),
        client_secret: secret.into(),
        ..Default::default()
    }
}

/// An HTTP client whose connections come from `ip` (any 127/8 address
/// reaches the loopback listener), to act as different peers.
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse::<IpAddr>().unwrap()))
        .build()
        .unwrap()
}

async fn token_from(
    app: &TestApp,
    client: &reqwest::Client,
    id: &str,
    secret: &str,
) -> reqwest::Response {
    client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header(id, secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

async fn metrics_text(url: String) -> String {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    r.text().await.unwrap()
}

/// The value of the sample of `name` carrying all `labels`, if any.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|lb| l.contains(lb))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}

#[tokio::test]
async fn per_client_rate_limits_answer_429_and_resource_exhausted() {
    // Default: 2 at once, then one per 100 s; resource-server overrides to
    // unlimited.
    let app = TestApp::start(&config_toml(
        "memory://",
        "",
        "rate_limit_per_sec = 0\n\n[rate_limit]\nper_sec = 0.01\nburst = 2\n",
    ))
    .await;
    for _ in 0..2 {
        app.token("orders-service", &[]).await;
    }
    let r = app.token_response("orders-service", SECRET).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");

    let mut c = app.grpc_client().await;
    for _ in 0..2 {
        c.issue(issue("partner", SECRET)).await.unwrap();
    }
    let err = c.issue(issue("partner", SECRET)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(error_reason(&err), "rate_limited");

    // The per-client override (0 = unlimited) wins over the default.
    for _ in 0..5 {
        app.introspect("not-a-token").await;
    }

    let m = metrics_text(app.url("/metrics")).await;
    assert!(
        sample(
            &m,
            "tokend_rate_limited_total",
            &["client_id=\"orders-service\""]
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn failed_authentications_back_off_per_peer_and_per_client() {
    let app = TestApp::start(&config_toml(
        "memory://",
        "",
        "\n[auth_throttle]\nthreshold = 3\nbase_secs = 1\nmax_secs = 2\nreset_secs = 60\n",
    ))
    .await;
    let attacker = client_from("127.0.0.1");
    let known = client_from("127.0.0.3");
    let newcomer = client_from("127.0.0.2");

    // 127.0.0.3 is an established caller of `partner`.
    assert_eq!(
        token_from(&app, &known, "partner", SECRET).await.status(),
        200
    );

    for _ in 0..3 {
        let r = token_from(&app, &attacker, "partner", "guess").await;
        assert_eq!(r.status(), 401);
    }
    // The attacker's address is blocked, even with the right secret and on
    // the other transport (gRPC connects from 127.0.0.1 too).
    let r = token_from(&app, &attacker, "partner", SECRET).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let err = app
        .grpc_client()
        .await
        .issue(issue("orders-service", SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(error_reason(&err), "rate_limited");

    // The client id is blocked for addresses it does not know...
    let r = token_from(&app, &newcomer, "partner", SECRET).await;
    assert_eq!(r.status(), 429);
    // ...but other clients from there, and its established caller, go on.
    assert_eq!(
        token_from(&app, &newcomer, "orders-service", SECRET)
            .await
            .status(),
        200
    );
    assert_eq!(
        token_from(&app, &known, "partner", SECRET).await.status(),
        200
    );

    // Bounded: once the back-off has passed, the right secret works again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        token_from(&app, &attacker, "partner", SECRET)
            .await
            .status(),
        200
    );
    // Another failure doubles the client's back-off (capped at max_secs = 2)
    // for the addresses it does not know...
    assert_eq!(
        token_from(&app, &attacker, "partner", "guess")
            .await
            .status(),
        401
    );
    let r = token_from(&app, &newcomer, "partner", SECRET).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    // ...while an address that has proved it holds the secret is not locked
    // out of that client (a fleet mid-rotation behind one NAT address).
    assert_eq!(
        token_from(&app, &attacker, "partner", SECRET)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_are_served_with_the_documented_names() {
    let app = TestApp::default_memory().await;
    app.token("orders-service", &[]).await;
    let r = app.token_response("no-such-client-4711", "x").await;
    assert_eq!(r.status(), 401);
    let mut c = app.grpc_client().await;
    c.issue(issue("partner", SECRET)).await.unwrap();
    let err = c.issue(issue("partner", "wrong")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let m = metrics_text(app.url("/metrics")).await;
    let has = |name: &str, labels: &[&str]| {
        assert!(
            sample(&m, name, labels).is_some_and(|v| v >= 1.0),
            "{name} {labels:?} missing in\n{m}"
        )
    };
    has(
        "tokend_tokens_issued_total",
        &[
            "grant_type=\"client_credentials\"",
            "client_id=\"orders-service\"",
        ],
    );
    has("tokend_tokens_issued_total", &["client_id=\"partner\""]);
    has(
        "tokend_oauth_errors_total",
        &["error=\"invalid_client\"", "transport=\"http\""],
    );
    has(
        "tokend_oauth_errors_total",
        &["error=\"invalid_client\"", "transport=\"grpc\""],
    );
    has(
        "tokend_request_duration_seconds_count",
        &["endpoint=\"/oauth/token\"", "transport=\"http\""],
    );
    has(
        "tokend_request_duration_seconds_bucket",
        &[
            "endpoint=\"tokend.v1.TokenService/Issue\"",
            "transport=\"grpc\"",
            "le=\"+Inf\"",
        ],
    );
    has("tokend_store_duration_seconds_bucket", &["op=\"get_many\""]);
    has("tokend_store_up", &[]);
    let kid = app.core.keys().active().kid().to_owned();
    has(
        "tokend_signing_key_info",
        &[&format!("kid=\"{kid}\""), "alg=\"RS256\""],
    );
    has(
        "tokend_build_info",
        &[&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))],
    );
    // Caller-chosen client ids never become label values.
    assert!(!m.contains("no-such-client-4711"), "{m}");
}

#[tokio::test]
async fn admin_listener_serves_metrics_instead_of_the_http_port_and_the_probes() {
    let app = TestApp::start(&config_toml(
        "memory://",
        "",
        "\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    ))
    .await;
    let admin = app.admin.expect("admin listener");
    let m = metrics_text(format!("http://{admin}/metrics")).await;
    assert!(m.contains("tokend_build_info"), "{m}");
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 404);
    // The probes are on the (plain HTTP) admin port too, for kubelet when the
    // public port demands client certificates.
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = reqwest::get(format!("http://{admin}{path}")).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["status"], body, "{path}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_on_both_transports() {
    let app = TestApp::default_memory().await;
    let r = app
        .http_client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-42.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42.abc");
    let r = app
        .http_client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        generated.len() >= 16 && !generated.contains(' '),
        "{generated}"
    );
    let again = app.get("/healthz").await;
    assert_ne!(
        again.headers()["x-request-id"],
        generated.as_str(),
        "unique"
    );

    let mut c = app.grpc_client().await;
    let mut req = tonic::Request::new(issue("partner", SECRET));
    req.metadata_mut()
        .insert("x-request-id", "grpc-req-7".parse().unwrap());
    let res = c.issue(req).await.unwrap();
    assert_eq!(res.metadata().get("x-request-id").unwrap(), "grpc-req-7");
    let err = c.issue(issue("partner", "wrong")).await.unwrap_err();
    assert!(err.metadata().get("x-request-id").is_some());
}

/// The standard test config with extra `[server]` keys.
fn with_server(keys: &str) -> String {
    config_toml("memory://", "", "").replace(
        "shutdown_grace_secs = 5",
        &format!("shutdown_grace_secs = 5\n{keys}"),
    )
}

/// Starts a POST whose body never completes; returns the open stream.
async fn hanging_post(app: &TestApp) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(app.http).await.unwrap();
    s.write_all(
        b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app = TestApp::start(&with_server("header_read_timeout_secs = 1")).await;
    let mut s = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let request = b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut cut_off = false;
    // One byte every 100 ms: the whole header block would take ~9 s.
    for b in request {
        if s.write_all(&[*b]).await.is_err() {
            cut_off = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => {
                // hyper may answer 408 before closing.
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(text.starts_with("HTTP/1.1 408"), "{text}");
                cut_off = true;
                break;
            }
            Err(_) => {}
        }
    }
    assert!(cut_off, "the server kept a byte-by-byte header stream open");
    // The server is still healthy for everyone else.
    app.token("orders-service", &[]).await;
}

#[tokio::test]
async fn request_timeout_and_concurrency_limit_answer_at_once() {
    let app = TestApp::start(&with_server(
        "max_concurrent_requests = 1\nrequest_timeout_secs = 1",
    ))
    .await;
    // One request holds the only slot (its body never completes)...
    let mut held = hanging_post(&app).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...so the next one is refused with 503 temporarily_unavailable.
    let r = app.token_response("orders-service", SECRET).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    // The held request is cut by the request timeout with the same error.
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = held.read(&mut chunk).await.unwrap_or(0);
            buf.extend_from_slice(&chunk[..n]);
            if n == 0 || String::from_utf8_lossy(&buf).contains("temporarily_unavailable") {
                break;
            }
        }
    })
    .await
    .expect("the hanging request was answered");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    // With the slot free again, requests succeed.
    app.token("orders-service", &[]).await;
}

#[tokio::test]
async fn readiness_turns_not_serving_at_once_on_shutdown() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let app = TestApp::default_memory().await;
    let mut health = HealthClient::new(app.grpc_channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "tokend.v1.TokenService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    // An HTTP request in flight keeps the server draining meanwhile.
    let _held = hanging_post(&app).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.shutdown.cancel();
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .expect("health update")
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
}

#[tokio::test]
async fn grpc_concurrency_limit_and_request_timeout() {
    let app = TestApp::start(&with_server(
        "max_concurrent_requests = 1\nrequest_timeout_secs = 1",
    ))
    .await;
    // A raw HTTP/2 stream whose gRPC message never completes holds the slot.
    let tcp = tokio::net::TcpStream::connect(app.grpc).await.unwrap();
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut h2 = h2.ready().await.unwrap();
    let req = http::Request::post(format!("http://{}/tokend.v1.TokenService/Issue", app.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (held, mut body) = h2.send_request(req, false).unwrap();
    // A 5-byte gRPC frame header announcing 100 bytes, then nothing.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100]), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let err = app
        .grpc_client()
        .await
        .issue(issue("partner", SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(error_reason(&err), "temporarily_unavailable");

    // The held call is ended by the request timeout, with the same error.
    let res = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    // And the slot is free again.
    app.grpc_client()
        .await
        .issue(issue("partner", SECRET))
        .await
        .unwrap();
}

#[tokio::test]
async fn with_redis_rate_limits_and_back_off_are_shared_by_replicas() {
    let redis = crate::common::RedisServer::start();
    let extra = "\n[rate_limit]\nper_sec = 0.01\nburst = 2\n\n[auth_throttle]\nthreshold = 3\nbase_secs = 60\nmax_secs = 60\n";
    let a = TestApp::start(&config_toml(&redis.url(), "", extra)).await;
    let b = TestApp::start(&config_toml(&redis.url(), "", extra)).await;
    // Two tokens from replica A, the third from replica B is over the limit.
    a.token("orders-service", &[]).await;
    a.token("orders-service", &[]).await;
    let r = b.token_response("orders-service", SECRET).await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "rate_limited"
    );
    let err = b
        .grpc_client()
        .await
        .issue(issue("orders-service", SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);

    // Failures counted on A back the address off on B too.
    for _ in 0..3 {
        let r = a.token_response("partner", "guess").await;
        assert_eq!(r.status(), 401);
    }
    let r = b.token_response("partner", SECRET).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "60");
}

#[tokio::test]
async fn drain_delay_keeps_serving_while_not_ready() {
    let app = TestApp::start(&with_server("drain_delay_secs = 2")).await;
    app.shutdown.cancel();
    // Readiness turns off at once...
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let r = app.get("/readyz").await;
        if r.status() == 503 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness did not turn off"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while new connections and requests are still served during the delay.
    let fresh = reqwest::Client::new();
    let r = fresh
        .post(app.url("/oauth/token"))
        .header(
            "Authorization",
            crate::common::basic_header("orders-service", SECRET),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut grpc = app.grpc_client().await;
    grpc.issue(issue("orders-service", SECRET)).await.unwrap();
}

/// Introspection sends the rate limit's Redis call together with the
/// revocation read; the limit still holds, for valid and invalid tokens alike.
#[tokio::test]
async fn with_redis_introspection_is_rate_limited_too() {
    let redis = crate::common::RedisServer::start();
    let extra = "\n[rate_limit]\nper_sec = 0.01\nburst = 3\n";
    let app = TestApp::start(&config_toml(&redis.url(), "", extra)).await;
    let token = app.access_token("orders-service").await;
    let introspect = |t: String| {
        let app = &app;
        async move {
            app.post_form(
                "/oauth/introspect",
                Some(("resource-server", SECRET)),
                &[("token", t.as_str())],
            )
            .await
        }
    };
    // Burst 3: two valid introspections and one of garbage pass...
    for t in [token.clone(), token.clone(), "garbage".to_owned()] {
        let r = introspect(t).await;
        assert_eq!(r.status(), 200);
    }
    // ...then both kinds are refused.
    for t in [token.clone(), "garbage".to_owned()] {
        let r = introspect(t).await;
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["error"],
            "rate_limited"
        );
    }
    let err = app
        .grpc_client()
        .await
        .introspect(tokend::pb::IntrospectRequest {
            client_id: "resource-server".into(),
            client_secret: SECRET.into(),
            token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}
