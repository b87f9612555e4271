//! Tokens verify against the served JWKS with an independent JWT library, for
//! each algorithm; keys rotate through `previous_key_files`.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode};
use tokend::token::Algorithm;

use crate::common::{TestApp, config_toml, jwt_parts, tempdir::TempDir};

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
        let app = TestApp::start(&config_toml(
            "memory://",
            &format!("algorithm = \"{alg}\""),
            "",
        ))
        .await;
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
    let dir = TempDir::new();
    let old = dir.path().join("old.pem");
    let new = dir.path().join("new.pem");
    std::fs::write(
        &old,
        tokend::token::keys::generate_pem(Algorithm::ES256).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &new,
        tokend::token::keys::generate_pem(Algorithm::ES256).unwrap(),
    )
    .unwrap();

    let before = TestApp::start(&config_toml(
        "memory://",
        &format!("algorithm = \"ES256\"\nkey_file = \"{}\"", old.display()),
        "",
    ))
    .await;
    let old_token = before.access_token("orders-service").await;
    let old_kid = jwt_parts(&old_token).0["kid"].clone();
    before.stop().await;

    // Rotate: new key active, old key still verifies.
    let after = TestApp::start(&config_toml(
        "memory://",
        &format!(
            "algorithm = \"ES256\"\nkey_file = \"{}\"\nprevious_key_files = [\"{}\"]",
            new.display(),
            old.display()
        ),
        "",
    ))
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
    let dropped = TestApp::start(&config_toml(
        "memory://",
        &format!("algorithm = \"ES256\"\nkey_file = \"{}\"", new.display()),
        "",
    ))
    .await;
    assert_eq!(dropped.introspect(&old_token).await["active"], false);
    assert_eq!(dropped.introspect(&new_token).await["active"], true);
}
