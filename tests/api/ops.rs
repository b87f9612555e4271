//! Operations over real sockets: rate limits, the secret-guessing back-off,
//! Prometheus metrics, request ids, timeouts and the concurrency limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::common::grpc::{error_reason, grpc_issue, introspect_request, issue_request as issue};
use crate::common::http::{basic_header, client_from, error_of, held_token_request, token_from};
use crate::common::http::{metrics_text, sample};
use crate::common::{ConfigBuilder, RedisServer, SECRET, TestApp, eventually};

/// The value of the sample of `name` carrying all `labels`, if any.

#[tokio::test]
async fn per_client_rate_limits_answer_429_and_resource_exhausted() {
    // Default: 2 at once, then one per 100 s; resource-server overrides to
    // unlimited.
    let app = TestApp::start(
        &ConfigBuilder::memory()
            .set("rate_limit.per_sec", 0.01)
            .set("rate_limit.burst", 2)
            .client_set("resource-server", "rate_limit_per_sec", 0),
    )
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
    let app = TestApp::start(
        &ConfigBuilder::memory()
            .set("auth_throttle.threshold", 3)
            .set("auth_throttle.base_secs", 1)
            .set("auth_throttle.max_secs", 2)
            .set("auth_throttle.reset_secs", 60),
    )
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
    let err = grpc_issue(&mut app.grpc_client().await, "orders-service")
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
    // The sleep is the behaviour under test: it waits out the real 1 s
    // back-off (polling would send requests that the back-off counts).
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
    // ...and an address that proved the secret earlier has no standing left
    // once a wrong secret comes from it: behind a shared address (a proxy,
    // a NAT) the guesser would otherwise share the partner's exemption.
    let r = token_from(&app, &attacker, "partner", SECRET).await;
    assert_eq!(r.status(), 429);
    // The established caller elsewhere still goes on.
    assert_eq!(
        token_from(&app, &known, "partner", SECRET).await.status(),
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
    // The standard process metrics, read at the scrape.
    has("process_resident_memory_bytes", &[]);
    // (a counter of whole seconds: 0 in a short test)
    assert!(
        sample(&m, "process_cpu_seconds_total", &[]).is_some(),
        "{m}"
    );
    has("process_open_fds", &[]);
    // Caller-chosen client ids never become label values.
    assert!(!m.contains("no-such-client-4711"), "{m}");
}

#[tokio::test]
async fn admin_listener_serves_metrics_instead_of_the_http_port_and_the_probes() {
    let app = TestApp::start(&ConfigBuilder::memory().admin(None)).await;
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

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let app =
        TestApp::start(&ConfigBuilder::memory().set("server.header_read_timeout_secs", 1)).await;
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
    let app = TestApp::start(&one_slot_one_second()).await;
    // One request holds the only slot (its handler is reading a body that
    // never completes)...
    let mut held = held_token_request(app.http, None).await.stream;
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
    let _held = held_token_request(app.http, None).await;
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
    let app = TestApp::start(&one_slot_one_second()).await;
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

    // Once the held call has the slot (nothing outside shows when: poll),
    // the next call is refused at once.
    let mut client = app.grpc_client().await;
    let refused = std::sync::Mutex::new(None);
    let (refusal, poller) = (&refused, client.clone());
    let held_the_slot = eventually(Duration::from_secs(5), move || {
        let mut client = poller.clone();
        async move {
            let answer = client.issue(issue("partner", SECRET)).await;
            let err = answer.err();
            let done = err.is_some();
            *refusal.lock().unwrap() = err;
            done
        }
    })
    .await;
    assert!(held_the_slot, "the held call never took the only slot");
    let err = refused.into_inner().unwrap().unwrap();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(error_reason(&err), "temporarily_unavailable");

    // The held call is ended by the request timeout, with the same error.
    let res = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("answered")
        .unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    // And the slot is free again.
    client.issue(issue("partner", SECRET)).await.unwrap();
}

#[tokio::test]
async fn with_redis_rate_limits_and_back_off_are_shared_by_replicas() {
    let redis = RedisServer::start().await;
    let config = ConfigBuilder::on_store(&redis.url())
        .set("rate_limit.per_sec", 0.01)
        .set("rate_limit.burst", 2)
        .set("auth_throttle.threshold", 3)
        .set("auth_throttle.base_secs", 60)
        .set("auth_throttle.max_secs", 60);
    let a = TestApp::start(&config).await;
    let b = TestApp::start(&config).await;
    // Two tokens from replica A, the third from replica B is over the limit.
    a.token("orders-service", &[]).await;
    a.token("orders-service", &[]).await;
    let r = b.token_response("orders-service", SECRET).await;
    assert_eq!(error_of(r).await, (429, "rate_limited".into()));
    let err = grpc_issue(&mut b.grpc_client().await, "orders-service")
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
    let app = TestApp::start(&ConfigBuilder::memory().set("server.drain_delay_secs", 2)).await;
    app.shutdown.cancel();
    // Readiness turns off at once...
    assert!(
        eventually(Duration::from_secs(1), || async {
            app.get("/readyz").await.status() == 503
        })
        .await,
        "readiness did not turn off"
    );
    // ...while new connections and requests are still served during the delay.
    let fresh = reqwest::Client::new();
    let r = fresh
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header("orders-service", SECRET))
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
    let redis = RedisServer::start().await;
    let app = TestApp::start(
        &ConfigBuilder::on_store(&redis.url())
            .set("rate_limit.per_sec", 0.01)
            .set("rate_limit.burst", 3),
    )
    .await;
    let token = app.access_token("orders-service").await;
    // Burst 3: two valid introspections and one of garbage pass...
    for t in [token.clone(), token.clone(), "garbage".to_owned()] {
        let r = app.introspect_response(&t).await;
        assert_eq!(r.status(), 200);
    }
    // ...then both kinds are refused.
    for t in [token.clone(), "garbage".to_owned()] {
        let r = app.introspect_response(&t).await;
        assert_eq!(error_of(r).await, (429, "rate_limited".into()));
    }
    let err = app
        .grpc_client()
        .await
        .introspect(introspect_request(&token, SECRET))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

/// One request at a time, each cut after 1 s.
fn one_slot_one_second() -> ConfigBuilder {
    ConfigBuilder::memory()
        .set("server.max_concurrent_requests", 1)
        .set("server.request_timeout_secs", 1)
}
