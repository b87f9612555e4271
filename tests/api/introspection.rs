//! Introspection (RFC 7662) and revocation (RFC 7009) over HTTP, including
//! forged, expired and tampered tokens built with an independent JWT library.

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;

use tempfile::TempDir;

use crate::common::config::key_file;
use crate::common::grpc::introspect_request;
use crate::common::http::{error_of, jwt_parts};
use crate::common::{ConfigBuilder, SECRET, TestApp};

#[tokio::test]
async fn active_token_introspects_with_its_claims() {
    let app = TestApp::default_memory().await;
    let t = app
        .token("orders-service", &[("scope", "orders:write")])
        .await;
    let token = t["access_token"].as_str().unwrap();
    let i = app.introspect(token).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["scope"], "orders:write");
    assert_eq!(i["client_id"], "orders-service");
    assert_eq!(i["sub"], "orders-service");
    assert_eq!(i["iss"], "https://tokend.test");
    assert_eq!(i["token_type"], "Bearer");
    assert_eq!(i["organisation_id"], 74);
    assert!(i["exp"].is_i64() && i["iat"].is_i64() && i["nbf"].is_i64() && i["jti"].is_string());

    // Introspection requires an authenticated caller.
    let r = app
        .post_form(
            "/oauth/introspect",
            Some(("resource-server", "bad")),
            &[("token", token)],
        )
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .post_form("/oauth/introspect", None, &[("token", token)])
        .await;
    assert_eq!(r.status(), 401);
    // Missing token parameter.
    let r = app
        .post_form("/oauth/introspect", Some(("resource-server", SECRET)), &[])
        .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn revoke_then_introspect_is_inactive() {
    let app = TestApp::default_memory().await;
    let token = app.access_token("orders-service").await;
    let other = app.access_token("orders-service").await;
    // Only the client the token was issued to may revoke it; another client
    // gets exactly what garbage gets (issue 14, item 8: no validity oracle).
    let by_other = |t: String| {
        let app = &app;
        async move {
            let r = app
                .post_form("/oauth/revoke", Some(("partner", SECRET)), &[("token", &t)])
                .await;
            let status = r.status();
            let headers = r.headers().clone();
            (
                status,
                headers.get("content-type").cloned(),
                r.bytes().await.unwrap(),
            )
        }
    };
    let valid = by_other(token.clone()).await;
    let garbage = by_other("not-a-token".into()).await;
    assert_eq!(valid.0, 200);
    assert_eq!(valid, garbage);
    assert_eq!(app.introspect(&token).await["active"], true);

    let r = app
        .post_form(
            "/oauth/revoke",
            Some(("orders-service", SECRET)),
            &[("token", &token), ("token_type_hint", "access_token")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.introspect(&token).await, json!({"active": false}));
    assert_eq!(
        app.introspect(&other).await["active"],
        true,
        "only that token"
    );
    // Revoking again, or revoking garbage, is still 200 (RFC 7009 2.2).
    for t in [token.as_str(), "garbage", "a.b.c"] {
        let r = app
            .post_form(
                "/oauth/revoke",
                Some(("orders-service", SECRET)),
                &[("token", t)],
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = app
        .post_form(
            "/oauth/revoke",
            Some(("orders-service", SECRET)),
            &[("token", &other), ("token_type_hint", "id_token")],
        )
        .await;
    assert_eq!(error_of(r).await, (400, "unsupported_token_type".into()));
}

/// Starts tokend with a key file, returning the app and the PEM.
async fn app_with_key(alg: tokend::token::Algorithm) -> (TestApp, String, TempDir) {
    let dir = TempDir::new().unwrap();
    let key = key_file(dir.path(), "key.pem", alg);
    let pem = std::fs::read_to_string(&key).unwrap();
    let config = ConfigBuilder::memory().signing_key(alg.as_str(), &key);
    (TestApp::start(&config).await, pem, dir)
}

#[tokio::test]
async fn forged_expired_and_tampered_tokens_are_inactive() {
    let (app, pem, _dir) = app_with_key(tokend::token::Algorithm::RS256).await;
    let good = app.access_token("orders-service").await;
    let (header, claims) = jwt_parts(&good);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let sign = |h: &Header, c: &serde_json::Value| encode(h, c, &key).unwrap();
    let mut h = Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(kid.clone());
    h.typ = Some("at+jwt".into());
    let now = claims["iat"].as_i64().unwrap();

    // Control: a token we forge the same way as tokend IS active, so the
    // negative cases below fail for the reason they name.
    assert_eq!(app.introspect(&sign(&h, &claims)).await["active"], true);

    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let expired = with("exp", json!(now - 3600));
    let future = with("nbf", json!(now + 3600));
    let wrong_iss = with("iss", json!("https://evil.test"));
    let mut cases = vec![
        ("expired", sign(&h, &expired)),
        ("nbf in the future", sign(&h, &future)),
        ("wrong issuer", sign(&h, &wrong_iss)),
    ];
    let mut no_typ = h.clone();
    no_typ.typ = Some("JWT".into());
    cases.push(("typ JWT", sign(&no_typ, &claims)));
    let mut no_kid = h.clone();
    no_kid.kid = None;
    cases.push(("no kid", sign(&no_kid, &claims)));
    let mut other_kid = h.clone();
    other_kid.kid = Some("not-a-key".into());
    cases.push(("unknown kid", sign(&other_kid, &claims)));
    // Algorithm confusion: HS256 keyed with the public key material.
    let jwks = app.get_json("/.well-known/jwks.json").await;
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    let mut hs = Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    hs.typ = Some("at+jwt".into());
    for secret in [n.as_bytes(), pem.as_bytes()] {
        cases.push((
            "HS256 with public material",
            encode(&hs, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap(),
        ));
    }
    // alg: none.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none_header = b64.encode(format!(r#"{{"alg":"none","kid":"{kid}","typ":"at+jwt"}}"#));
    let payload = b64.encode(serde_json::to_vec(&claims).unwrap());
    cases.push(("alg none", format!("{none_header}.{payload}.")));
    // Tampered payload with the original signature.
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64.encode(serde_json::to_vec(&with("scope", json!("orders:write"))).unwrap());
    cases.push((
        "tampered payload",
        format!("{}.{evil}.{}", parts[0], parts[2]),
    ));
    cases.push(("truncated", good[..good.len() - 10].to_owned()));
    cases.push(("garbage", "not a token".into()));
    cases.push(("oversized", "a".repeat(20_000)));
    cases.push(("non-base64", "@@@.@@@.@@@".into()));
    // Within the documented clock-skew leeway (30 s) a just-expired or
    // not-yet-valid token is still accepted; beyond it, it is not.
    let leeway_ok = [
        ("expired 10 s ago", with("exp", json!(now - 10))),
        ("valid in 10 s", with("nbf", json!(now + 10))),
    ];
    for (name, c) in leeway_ok {
        assert_eq!(
            app.introspect(&sign(&h, &c)).await["active"],
            true,
            "{name}"
        );
    }
    cases.push(("expired 40 s ago", sign(&h, &with("exp", json!(now - 40)))));
    cases.push(("valid in 40 s", sign(&h, &with("nbf", json!(now + 40)))));

    let mut grpc = app.grpc_client().await;
    for (name, token) in cases {
        assert_eq!(
            app.introspect(&token).await,
            json!({"active": false}),
            "{name}"
        );
        let r = grpc
            .introspect(introspect_request(&token, SECRET))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.active, "gRPC: {name}");
    }
}
