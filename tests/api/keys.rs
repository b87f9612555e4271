//! Tokens verify against the served JWKS with an independent JWT library, for
//! each algorithm; keys rotate through `previous_key_files`.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode};
use tokend::token::Algorithm;

use tempfile::TempDir;

use crate::common::config::key_file;
use crate::common::http::jwt_parts;
use crate::common::{ConfigBuilder, TestApp};

async fn jwks(app: &TestApp) -> JwkSet {
    app.get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap()
}

fn verify_with(jwks: &JwkSet, token: &str, alg: jsonwebtoken::Algorithm) -> serde_json::Value {
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut v = Validation::new(alg);
    v.set_issuer(&["https://tokend.test"]);
    v.set_audience(&["orders-api"]);
    decode::<serde_json::Value>(token, &key, &v).unwrap().claims
}

#[tokio::test]
async fn every_algorithm_verifies_against_the_served_jwks() {
    for (alg, jalg) in [
        (Algorithm::RS256, jsonwebtoken::Algorithm::RS256),
        (Algorithm::ES256, jsonwebtoken::Algorithm::ES256),
        (Algorithm::EdDSA, jsonwebtoken::Algorithm::EdDSA),
    ] {
        let app = TestApp::start(&ConfigBuilder::memory().algorithm(alg.as_str())).await;
        let t = app.token("orders-service", &[]).await;
        let token = t["access_token"].as_str().unwrap();
        assert_eq!(jwt_parts(token).0["alg"], alg.as_str());
        let claims = verify_with(&jwks(&app).await, token, jalg);
        assert_eq!(claims["client_id"], "orders-service");
        assert_eq!(app.introspect(token).await["active"], true, "{alg}");
        app.stop().await;
    }
}

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_through_previous_key_files() {
    let dir = TempDir::new().unwrap();
    let old = key_file(dir.path(), "old.pem", Algorithm::ES256);
    let new = key_file(dir.path(), "new.pem", Algorithm::ES256);

    let before = TestApp::start(&ConfigBuilder::memory().signing_key("ES256", &old)).await;
    let old_token = before.access_token("orders-service").await;
    let old_kid = jwt_parts(&old_token).0["kid"].clone();
    before.stop().await;

    // Rotate: new key active, old key still verifies.
    let after = TestApp::start(
        &ConfigBuilder::memory()
            .signing_key("ES256", &new)
            .set("signing.previous_key_files", vec![old.to_str().unwrap()]),
    )
    .await;
    let new_token = after.access_token("orders-service").await;
    assert_ne!(
        jwt_parts(&new_token).0["kid"],
        old_kid,
        "new tokens use the new key"
    );
    let set = jwks(&after).await;
    assert_eq!(set.keys.len(), 2);
    verify_with(&set, &old_token, jsonwebtoken::Algorithm::ES256);
    verify_with(&set, &new_token, jsonwebtoken::Algorithm::ES256);
    assert_eq!(after.introspect(&old_token).await["active"], true);
    after.stop().await;

    // Once the old key is dropped, its tokens are no longer active.
    let dropped = TestApp::start(&ConfigBuilder::memory().signing_key("ES256", &new)).await;
    assert_eq!(dropped.introspect(&old_token).await["active"], false);
    assert_eq!(dropped.introspect(&new_token).await["active"], true);
}

/// Issue 18 item 5: moving from RS256 to ES256, the RS256 key stays a
/// previous key and its tokens keep verifying; the JWKS and discovery carry
/// both algorithms.
#[tokio::test]
async fn previous_keys_may_be_of_another_algorithm() {
    let dir = TempDir::new().unwrap();
    let rsa = key_file(dir.path(), "rsa.pem", Algorithm::RS256);
    let ec = key_file(dir.path(), "ec.pem", Algorithm::ES256);
    let ed = key_file(dir.path(), "ed.pem", Algorithm::EdDSA);
    let before = TestApp::start(&ConfigBuilder::memory().signing_key("RS256", &rsa)).await;
    let rs_token = before.access_token("orders-service").await;
    before.stop().await;

    let after = TestApp::start(&ConfigBuilder::memory().signing_key("ES256", &ec).set(
        "signing.previous_key_files",
        vec![rsa.to_str().unwrap(), ed.to_str().unwrap()],
    ))
    .await;
    let es_token = after.access_token("orders-service").await;
    assert_eq!(jwt_parts(&es_token).0["alg"], "ES256");
    let set = jwks(&after).await;
    assert_eq!(set.keys.len(), 3);
    verify_with(&set, &rs_token, jsonwebtoken::Algorithm::RS256);
    verify_with(&set, &es_token, jsonwebtoken::Algorithm::ES256);
    assert_eq!(after.introspect(&rs_token).await["active"], true);
    assert_eq!(after.introspect(&es_token).await["active"], true);
    let meta = after
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert_eq!(
        meta["access_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA", "RS256"])
    );
    // The RS256 token cannot be replayed under the new key's algorithm: the
    // key pins it (an ES256 header on the RSA kid is refused).
    let (mut header, _) = jwt_parts(&rs_token);
    header["alg"] = "ES256".into();
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let parts: Vec<&str> = rs_token.split('.').collect();
    let forged = format!("{}.{}.{}", b64(&header), parts[1], parts[2]);
    assert_eq!(after.introspect(&forged).await["active"], false);
    after.stop().await;
}
