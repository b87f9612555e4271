//! `tokend serve` as a real child process: no credential in the logs at
//! `trace`, and graceful shutdown on SIGTERM during a burst.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use tokend::pb::token_service_client::TokenServiceClient;
use tokend::pb::{IntrospectRequest, IssueRequest, RevokeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{SECRET, basic_header, config_toml, free_port, tempdir::TempDir};

struct Proc {
    child: Child,
    /// Drains stderr from the start: a full pipe would block tokend's logging.
    stderr: std::thread::JoinHandle<String>,
    http: String,
    grpc: String,
    _dir: TempDir,
}

impl Proc {
    /// Starts `tokend serve` with the standard test clients and `extra`
    /// appended to the config; stderr is captured.
    async fn start(log: &str) -> Self {
        let dir = TempDir::new();
        let (hp, gp) = (free_port(), free_port());
        let toml = config_toml("memory://", "", "")
            .replace(
                "listen = \"127.0.0.1:0\"\n[grpc]",
                &format!("listen = \"127.0.0.1:{hp}\"\n[grpc]"),
            )
            .replace(
                "[grpc]\nlisten = \"127.0.0.1:0\"",
                &format!("[grpc]\nlisten = \"127.0.0.1:{gp}\""),
            );
        let toml = format!("{toml}\n[log]\n{log}\n");
        let path = dir.path().join("tokend.toml");
        std::fs::write(&path, toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            use std::io::Read;
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        });
        let p = Self {
            child,
            stderr,
            http: format!("http://127.0.0.1:{hp}"),
            grpc: format!("http://127.0.0.1:{gp}"),
            _dir: dir,
        };
        let c = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = c.get(format!("{}/readyz", p.http)).send().await
                && r.status() == 200
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("tokend serve did not become ready");
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for exit (bounded) and returns (exit code, stderr).
    fn wait(mut self) -> (Option<i32>, String) {
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.stderr.join().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("tokend did not exit within 10 s of SIGTERM");
    }
}

#[tokio::test]
async fn no_secret_token_or_credential_reaches_the_logs_at_trace() {
    let p = Proc::start("level = \"trace\"\nformat = \"json\"").await;
    let http = reqwest::Client::new();
    let wrong = "planted-wrong-secret-0x5eed";
    let pasted_id = "planted-secret-as-client-id-0xfeed";
    let post = |path: &str, auth: Option<String>, form: Vec<(&str, String)>| {
        let mut r = http.post(format!("{}{path}", p.http)).form(&form);
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
        .post(format!("{}/oauth/token", p.http))
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
    assert_eq!(r.status(), 400, "another client's token");

    // gRPC.
    let mut g = TokenServiceClient::connect(p.grpc.clone()).await.unwrap();
    let issue = |secret: &str| IssueRequest {
        grant_type: "client_credentials".into(),
        client_id: "orders-service".into(),
        client_secret: secret.into(),
        ..Default::default()
    };
    let grpc_access = g
        .issue(issue(SECRET))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert!(g.issue(issue(wrong)).await.is_err());
    let introspect = |token: &str, secret: &str| IntrospectRequest {
        client_id: "resource-server".into(),
        client_secret: secret.into(),
        token: token.into(),
        token_type_hint: String::new(),
    };
    g.introspect(introspect(&grpc_access, SECRET))
        .await
        .unwrap();
    assert!(g.introspect(introspect(&grpc_access, wrong)).await.is_err());
    g.revoke(RevokeRequest {
        client_id: "orders-service".into(),
        client_secret: SECRET.into(),
        token: grpc_access.clone(),
        token_type_hint: String::new(),
    })
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
    let (code, logs) = p.wait();
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
    let mut planted = vec![
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
    for t in [&access, &grpc_access] {
        planted.extend(t.split('.').skip(1).map(str::to_owned));
    }
    for v in planted {
        assert!(
            !logs.contains(&v),
            "a planted credential appears in the logs: {v}"
        );
    }
}

#[tokio::test]
async fn sigterm_during_a_burst_drains_and_exits_zero() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let p = Proc::start("level = \"info\"").await;
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
        let url = format!("{}/oauth/token", p.http);
        let grpc = p.grpc.clone();
        let answered = answered.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..2000 {
                let (got_response, correct) = if w % 4 == 0 {
                    let Ok(mut g) = TokenServiceClient::connect(grpc.clone()).await else {
                        return Ok(());
                    };
                    match g
                        .issue(IssueRequest {
                            grant_type: "client_credentials".into(),
                            client_id: "orders-service".into(),
                            client_secret: SECRET.into(),
                            ..Default::default()
                        })
                        .await
                    {
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
    for _ in 0..400 {
        if answered.load(Ordering::Relaxed) >= 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = answered.load(Ordering::Relaxed);
    assert!(
        before >= 40,
        "the burst did not get going ({before} answers)"
    );
    // One request is in flight for sure: its body is only half sent.
    let addr = p.http.trim_start_matches("http://").to_owned();
    let mut held = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let auth = basic_header("orders-service", SECRET);
    held.write_all(
        format!(
            "POST /oauth/token HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\r\ngrant_type="
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    p.sigterm();
    for w in workers {
        w.await.unwrap().unwrap();
    }
    // New connections are refused now, and the held request still finishes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "the listener still accepts after SIGTERM"
    );
    held.write_all(b"client_credentials").await.unwrap();
    let mut response = String::new();
    held.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("access_token"), "{response}");
    let (code, logs) = p.wait();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(logs.contains("stopped"), "drained within the grace: {logs}");
}
