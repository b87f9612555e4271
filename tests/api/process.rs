//! `tokend serve` as a real child process: no credential in the logs at
//! `trace`, and graceful shutdown on SIGTERM during a burst.

use std::time::Duration;

use base64::Engine;
use tokend::pb::token_service_client::TokenServiceClient;

use crate::common::grpc::{introspect_request, issue_request, revoke_request};
use crate::common::http::{basic_header, held_token_request};
use crate::common::{ConfigBuilder, SECRET, TokendProcess, eventually};

/// Bound on a graceful shutdown (drain included) after SIGTERM.
const EXIT: Duration = Duration::from_secs(10);

/// `tokend serve` with the standard test clients, logging at `level` in
/// `format` (`None`: the default text format).
async fn start(level: &str, format: Option<&str>) -> TokendProcess {
    let mut config = ConfigBuilder::memory().set("log.level", level);
    if let Some(format) = format {
        config = config.set("log.format", format);
    }
    TokendProcess::serve(&config).start().await
}

#[tokio::test]
async fn no_secret_token_or_credential_reaches_the_logs_at_trace() {
    let p = start("trace", Some("json")).await;
    let http = reqwest::Client::new();
    let wrong = "planted-wrong-secret-0x5eed";
    let pasted_id = "planted-secret-as-client-id-0xfeed";
    let post = |path: &str, auth: Option<String>, form: Vec<(&str, String)>| {
        let mut r = http.post(p.url(path)).form(&form);
        if let Some(a) = auth {
            r = r.header("Authorization", a);
        }
        r.send()
    };
    let cc = || vec![("grant_type", "client_credentials".to_string())];

    // Successful token requests: Basic, body credentials, JSON.
    let r = post(
        "/oauth/token",
        Some(basic_header("orders-service", SECRET)),
        cc(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let access: serde_json::Value = r.json().await.unwrap();
    let access = access["access_token"].as_str().unwrap().to_owned();
    let mut body = cc();
    body.push(("client_id", "partner".into()));
    body.push(("client_secret", SECRET.into()));
    assert_eq!(
        post("/oauth/token", None, body).await.unwrap().status(),
        200
    );
    let r = http
        .post(p.url("/oauth/token"))
        .json(&serde_json::json!({"grant_type":"client_credentials","client_id":"partner","client_secret":SECRET}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Failing paths.
    for (auth, mut form, status) in [
        (Some(basic_header("orders-service", wrong)), cc(), 401),
        (Some(basic_header(pasted_id, wrong)), cc(), 401),
        (
            None,
            vec![
                ("client_id", "partner".to_string()),
                ("client_secret", wrong.into()),
            ],
            401,
        ),
        (
            Some(basic_header("partner", SECRET)),
            vec![("client_secret", wrong.to_string())],
            400,
        ),
        (
            Some(basic_header("partner", SECRET)),
            vec![("grant_type", "password".to_string())],
            400,
        ),
    ] {
        if form.iter().all(|(k, _)| *k != "grant_type") {
            form.push(("grant_type", "client_credentials".into()));
        }
        let r = post("/oauth/token", auth, form).await.unwrap();
        assert_eq!(r.status(), status);
    }
    // Introspection and revocation, good and bad.
    let rs = || Some(basic_header("resource-server", SECRET));
    let r = post("/oauth/introspect", rs(), vec![("token", access.clone())])
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["active"], true);
    let forged = format!("{access}x");
    post("/oauth/introspect", rs(), vec![("token", forged.clone())])
        .await
        .unwrap();
    let r = post(
        "/oauth/introspect",
        Some(basic_header("resource-server", wrong)),
        vec![("token", access.clone())],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("/oauth/revoke", rs(), vec![("token", access.clone())])
        .await
        .unwrap();
    // Answered like garbage (no validity oracle), and logged as ignored.
    assert_eq!(r.status(), 200, "another client's token");

    // gRPC.
    let mut g = p.grpc_client().await;
    let issue = |secret: &str| issue_request("orders-service", secret);
    let grpc_access = g
        .issue(issue(SECRET))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert!(g.issue(issue(wrong)).await.is_err());
    let introspect = introspect_request;
    g.introspect(introspect(&grpc_access, SECRET))
        .await
        .unwrap();
    assert!(g.introspect(introspect(&grpc_access, wrong)).await.is_err());
    g.revoke(revoke_request("orders-service", &grpc_access))
        .await
        .unwrap();
    let r = post(
        "/oauth/revoke",
        Some(basic_header("orders-service", SECRET)),
        vec![("token", access.clone())],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    p.sigterm();
    let (code, logs) = p.wait_exit(EXIT).await;
    assert_eq!(code, Some(0), "{logs}");

    // The logs were really written at trace level and name the requests.
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""),
        "{logs}"
    );
    let access_lines = logs
        .lines()
        .filter(|l| l.contains("\"target\":\"tokend::access\""))
        .count();
    assert!(
        access_lines >= 15,
        "{access_lines} access events in\n{logs}"
    );
    assert!(logs.contains("\"outcome\":\"invalid_client\""), "{logs}");
    assert!(logs.contains("\"client_id\":\"orders-service\""), "{logs}");
    assert!(logs.contains("\"request_id\":"), "{logs}");

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let planted = vec![
        SECRET.to_string(),
        wrong.to_string(),
        pasted_id.to_string(),
        access.clone(),
        forged,
        grpc_access.clone(),
        b64(&format!("orders-service:{SECRET}")),
        b64(&format!("partner:{SECRET}")),
    ];
    // Token signatures and payloads on their own, too.
    crate::common::assert_not_logged(&logs, &planted, &[&access, &grpc_access]);
}

#[tokio::test]
async fn sigterm_during_a_burst_drains_and_exits_zero() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let p = start("info", None).await;
    // A fresh connection per request, so no request races the closing of
    // an idle keep-alive connection.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    // 16 workers send requests back to back until the server stops taking
    // them; every answer they get must be a correct token response.
    for w in 0..16 {
        let http = http.clone();
        let url = p.url("/oauth/token");
        let grpc = format!("http://{}", p.grpc);
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..2000 {
                let (got_response, correct) = if w % 4 == 0 {
                    let Ok(mut g) = TokenServiceClient::connect(grpc.clone()).await else {
                        return Ok(());
                    };
                    match g.issue(issue_request("orders-service", SECRET)).await {
                        Ok(r) => (true, r.into_inner().access_token.starts_with("eyJ")),
                        // Not served (the listener had closed or the
                        // connection was told to go away): fine, as long as
                        // it is not an answer from tokend (those carry an
                        // ErrorInfo).
                        Err(s) => {
                            use tonic_types::StatusExt;
                            (false, s.get_details_error_info().is_none())
                        }
                    }
                } else {
                    match http
                        .post(&url)
                        .header("Authorization", basic_header("orders-service", SECRET))
                        .form(&[("grant_type", "client_credentials")])
                        .send()
                        .await
                    {
                        Ok(r) => {
                            let ok = r.status() == 200;
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            (true, ok && body["access_token"].as_str().is_some())
                        }
                        // No response at all: the connection was not served.
                        Err(_) => (false, true),
                    }
                };
                if !correct {
                    return Err(format!("worker {w}: a wrong answer"));
                }
                if !got_response {
                    return Ok(());
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    eventually(Duration::from_secs(4), || async {
        answered.load(Ordering::Relaxed) >= 40
    })
    .await;
    let before = answered.load(Ordering::Relaxed);
    assert!(
        before >= 40,
        "the burst did not get going ({before} answers)"
    );
    // One request is in flight for sure: its handler is reading a body that
    // is only half sent.
    let addr = p.http;
    let held = held_token_request(addr, Some(("orders-service", SECRET))).await;
    p.sigterm();
    for result in futures::future::join_all(workers).await {
        result.unwrap().unwrap();
    }
    // New connections are refused now, and the held request still finishes.
    assert!(
        eventually(Duration::from_secs(2), || async {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await,
        "the listener still accepts after SIGTERM"
    );
    let response = held.finish().await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("access_token"), "{response}");
    let (code, logs) = p.wait_exit(EXIT).await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(logs.contains("stopped"), "drained within the grace: {logs}");
}
