//! HTTP bridge protocol details: content types, body limits, discovery,
//! health, and never a 500.

use crate::common::http::{basic_header, error_of};
use crate::common::{ConfigBuilder, SECRET, TestApp};

#[tokio::test]
async fn wrong_content_type_is_415_and_oversized_body_is_413() {
    let app = TestApp::default_memory().await;
    for ct in [
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut req = app
            .http_client
            .post(app.url("/oauth/token"))
            .header("Authorization", basic_header("orders-service", SECRET))
            .body("grant_type=client_credentials");
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let r = req.send().await.unwrap();
        assert_eq!(error_of(r).await, (415, "invalid_request".into()), "{ct:?}");
    }
    // Charset parameter is fine.
    let r = app
        .http_client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header("orders-service", SECRET))
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let big = format!(
        "grant_type=client_credentials&pad={}",
        "a".repeat(70 * 1024)
    );
    for path in ["/oauth/token", "/oauth/introspect", "/oauth/revoke"] {
        let r = app
            .http_client
            .post(app.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(error_of(r).await, (413, "invalid_request".into()), "{path}");
    }
}

#[tokio::test]
async fn malformed_bodies_and_headers_never_500() {
    let app = TestApp::default_memory().await;
    let bodies: &[(&str, &[u8])] = &[
        ("application/json", b"{"),
        ("application/json", b"[]"),
        ("application/json", br#"{"grant_type":["a"]}"#),
        ("application/json", br#"{"grant_type":{"x":1}}"#),
        ("application/json", b"\xff\xfe"),
        ("application/x-www-form-urlencoded", b"%%%%&&&==="),
        ("application/x-www-form-urlencoded", b"grant_type=%FF%FE"),
        ("application/x-www-form-urlencoded", b"\x00\x01\x02"),
    ];
    for (ct, body) in bodies {
        let r = app
            .http_client
            .post(app.url("/oauth/token"))
            .header("Content-Type", *ct)
            .header("Authorization", basic_header("orders-service", SECRET))
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(status == 400 || status == 401, "{ct} {body:?}: {status}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["error"].is_string());
    }
    for auth in [
        "Basic !!!",
        "Basic",
        "Bearer abc",
        "Basic YWJj",
        "basic \u{7f}",
    ] {
        let r = app
            .http_client
            .post(app.url("/oauth/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Authorization", auth)
            .body("grant_type=client_credentials")
            .send()
            .await;
        let Ok(r) = r else { continue }; // reqwest may refuse the header itself
        assert_eq!(r.status(), 401, "{auth}");
        assert!(r.headers().contains_key("www-authenticate"));
    }
}

#[tokio::test]
async fn discovery_jwks_and_health() {
    let app = TestApp::default_memory().await;
    let m = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(m["issuer"], "https://tokend.test");
    assert_eq!(m["token_endpoint"], "https://tokend.test/oauth/token");
    assert_eq!(
        m["introspection_endpoint"],
        "https://tokend.test/oauth/introspect"
    );
    assert_eq!(m["revocation_endpoint"], "https://tokend.test/oauth/revoke");
    assert_eq!(m["jwks_uri"], "https://tokend.test/.well-known/jwks.json");
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"client_credentials".into())
    );
    // Issue 14, item 10: the clients' scopes are not published unless the
    // operator lists what to publish.
    assert!(m.get("scopes_supported").is_none(), "{m}");
    let published = TestApp::start(
        &ConfigBuilder::memory().set("discovery.scopes_supported", vec!["orders:read"]),
    )
    .await
    .get_json("/.well-known/oauth-authorization-server")
    .await;
    assert_eq!(
        published["scopes_supported"],
        serde_json::json!(["orders:read"])
    );
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none"
        ])
    );
    assert_eq!(
        m["access_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );

    let jwks = app.get_json("/.well-known/jwks.json").await;
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert!(key.get("d").is_none(), "no private material in the JWKS");

    let r = app.get("/healthz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let r = app.get("/oauth/token").await;
    assert_eq!(r.status(), 405);
}
