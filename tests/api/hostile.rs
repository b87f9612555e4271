//! Hostile input over both transports: forged tokens over gRPC too, fields at
//! and beyond their limits, unicode and huge scopes. Every answer is a
//! documented OAuth error or `active: false`; never a 500, a panic or a hang.

use tokend::pb::IssueRequest;
use tonic::Code;

use crate::common::grpc::{error_reason, introspect_request};
use crate::common::http::{basic_header, error_of};
use crate::common::{SECRET, TestApp};

#[tokio::test]
async fn garbage_tokens_are_inactive_over_grpc() {
    let app = TestApp::default_memory().await;
    let mut c = app.grpc_client().await;
    let good = app.access_token("orders-service").await;
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
    let swapped_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        &parts[2][..parts[2].len() - 4]
    );
    for token in [
        String::new(),
        // Long, but within [grpc] max_message_bytes (64 KiB by default).
        "x".repeat(60_000),
        "🙂.🙂.🙂".into(),
        tampered,
        swapped_sig,
        format!("{good}.extra"),
    ] {
        let r = c.introspect(introspect_request(&token, SECRET)).await;
        match r {
            Ok(r) => assert!(!r.into_inner().active, "{:.40}", token),
            Err(s) => {
                // Only the empty token is a request error.
                assert!(token.is_empty(), "{s:?}");
                assert_eq!(s.code(), Code::InvalidArgument);
                assert_eq!(error_reason(&s), "invalid_request");
            }
        }
    }
}

#[tokio::test]
async fn oversized_and_unicode_fields_get_oauth_errors_on_both_transports() {
    let app = TestApp::default_memory().await;
    let mut c = app.grpc_client().await;
    // Long fields, within [grpc] max_message_bytes (64 KiB by default).
    let long_id = "c".repeat(60_000);
    let many_scopes: Vec<String> = (0..1000).map(|i| format!("s{i}")).collect();
    let cases: Vec<(IssueRequest, &str)> = vec![
        (
            IssueRequest {
                grant_type: "client_credentials".into(),
                client_id: long_id.clone(),
                client_secret: SECRET.into(),
                ..Default::default()
            },
            "invalid_client",
        ),
        (
            IssueRequest {
                grant_type: "client_credentials".into(),
                client_id: "orders-service".into(),
                client_secret: "s".repeat(60_000),
                ..Default::default()
            },
            "invalid_client",
        ),
        (
            IssueRequest {
                grant_type: "client_credentials".into(),
                client_id: "orders-service".into(),
                client_secret: SECRET.into(),
                scope: many_scopes.clone(),
                ..Default::default()
            },
            "invalid_scope",
        ),
        (
            IssueRequest {
                grant_type: "client_credentials".into(),
                client_id: "orders-service".into(),
                client_secret: SECRET.into(),
                scope: vec!["orders:réad".into(), "☃".into()],
                ..Default::default()
            },
            "invalid_scope",
        ),
        (
            IssueRequest {
                grant_type: "client_credentials\u{0}".into(),
                client_id: "orders-service".into(),
                client_secret: SECRET.into(),
                ..Default::default()
            },
            "unsupported_grant_type",
        ),
        (
            IssueRequest {
                grant_type: "client_credentials".into(),
                client_id: "orders-service".into(),
                client_secret: SECRET.into(),
                audience: vec!["a".repeat(10_000)],
                ..Default::default()
            },
            "invalid_target",
        ),
    ];
    for (req, reason) in cases {
        let err = c.issue(req).await.unwrap_err();
        assert_eq!(error_reason(&err), reason);
        assert_ne!(err.code(), Code::Internal);
    }

    // The same over HTTP (within the 64 KiB body limit).
    let scopes = many_scopes.join(" ");
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let http_cases: Vec<Case> = vec![
        (vec![("scope", scopes.as_str())], 400, "invalid_scope"),
        (vec![("scope", "orders:réad ☃")], 400, "invalid_scope"),
        (vec![("audience", "a b c d e f")], 400, "invalid_target"),
    ];
    for (extra, status, error) in http_cases {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(extra);
        let r = app
            .post_form("/oauth/token", Some(("orders-service", SECRET)), &form)
            .await;
        assert_eq!(error_of(r).await, (status, error.to_owned()));
    }
    let r = app
        .http_client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header(&"c".repeat(20_000), SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Many parameters.
    let body: String = (0..500).map(|i| format!("p{i}=v&")).collect();
    let r = app
        .http_client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header("orders-service", SECRET))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
