//! `private_key_jwt` client authentication (RFC 7523 2.2) over real sockets:
//! assertions signed with real keys (RS256, ES256, EdDSA, PS256, by the
//! `jsonwebtoken` crate, as a partner's library would), at the token,
//! introspection and revocation endpoints over HTTP and gRPC; every way an
//! assertion can be wrong answers `invalid_client`; a replay is refused, also
//! by another replica on the same Redis; a `jwks_file` follows a reload.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokend::token::Algorithm;
use toml::Table;

use crate::common::assertion::{
    ClientKey, about_token_with, grpc_introspect, grpc_issue, grpc_revoke, token_with,
};
use crate::common::config::ISSUER;
use crate::common::grpc::reason;
use crate::common::http::error_of;
use crate::common::{ConfigBuilder, RedisServer, SECRET, TestApp};

const CLIENT: &str = "key-client";

fn now() -> i64 {
    tokend::oauth::now_unix()
}

/// authlib's claims: iss = sub = client, aud, iat, exp one hour on, a jti.
fn claims(aud: &str) -> Value {
    let now = now();
    json!({
        "iss": CLIENT, "sub": CLIENT, "aud": aud,
        "iat": now, "exp": now + 3600,
        "jti": tokend::token::opaque::random_id(),
    })
}

fn client_table(jwks: &Value) -> Table {
    let mut t = toml::toml! {
        client_id = (CLIENT)
        token_endpoint_auth_method = "private_key_jwt"
        grant_types = ["client_credentials"]
        scopes = ["orders:read"]
        introspection = "any"
    };
    t.insert("jwks".into(), toml::Value::try_from(jwks).unwrap());
    t
}

fn config(keys: &[&ClientKey]) -> ConfigBuilder {
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    ConfigBuilder::memory().client(client_table(&jwks))
}

fn token_url() -> String {
    format!("{ISSUER}/oauth/token")
}

async fn assert_invalid_client(r: reqwest::Response, what: &str) {
    let www = r.headers().get("www-authenticate").cloned();
    let (status, error) = error_of(r).await;
    assert_eq!((status, error.as_str()), (401, "invalid_client"), "{what}");
    assert_eq!(
        www.as_ref().and_then(|v| v.to_str().ok()),
        Some("Basic realm=\"tokend\", charset=\"UTF-8\""),
        "{what}: the challenge of every 401, as for a wrong secret"
    );
}

#[tokio::test]
async fn every_algorithm_gets_a_token_over_http_and_grpc_and_works_everywhere() {
    use jsonwebtoken::Algorithm as A;
    let keys: Vec<ClientKey> = [A::RS256, A::ES256, A::EdDSA, A::PS256]
        .into_iter()
        .map(ClientKey::new)
        .collect();
    let app = TestApp::start(&config(&keys.iter().collect::<Vec<_>>())).await;
    let meta = app
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("private_key_jwt")),
        "{meta}"
    );
    assert_eq!(
        meta["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS256", "ES256", "EdDSA", "PS256"])
    );
    let mut grpc = app.grpc_client().await;
    for key in &keys {
        for kid in [true, false] {
            // HTTP form, audience = token endpoint, no client_id (authlib).
            let r = token_with(&app, &key.sign(&claims(&token_url()), kid), &[]).await;
            assert_eq!(r.status(), 200, "{:?} kid={kid}", key.alg);
            let access: Value = r.json().await.unwrap();
            let access = access["access_token"].as_str().unwrap().to_owned();
            // With a matching client_id, audience = issuer.
            let r = token_with(
                &app,
                &key.sign(&claims(ISSUER), kid),
                &[("client_id", CLIENT)],
            )
            .await;
            assert_eq!(r.status(), 200, "{:?} kid={kid} issuer aud", key.alg);
            // gRPC, audience = issuer.
            let t = grpc
                .issue(grpc_issue(&key.sign(&claims(ISSUER), kid)))
                .await
                .unwrap_or_else(|s| panic!("{:?} kid={kid}: {s:?}", key.alg))
                .into_inner();
            // Introspection and revocation, HTTP (their own URLs) and gRPC.
            let url = format!("{ISSUER}/oauth/introspect");
            let r = about_token_with(
                &app,
                "/oauth/introspect",
                &access,
                &key.sign(&claims(&url), kid),
            )
            .await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
            let info = grpc
                .introspect(grpc_introspect(
                    &t.access_token,
                    &key.sign(&claims(ISSUER), kid),
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(info.active && info.client_id == CLIENT);
            grpc.revoke(grpc_revoke(
                &t.access_token,
                &key.sign(&claims(ISSUER), kid),
            ))
            .await
            .unwrap();
            let url = format!("{ISSUER}/oauth/revoke");
            let r = about_token_with(
                &app,
                "/oauth/revoke",
                &access,
                &key.sign(&claims(&url), kid),
            )
            .await;
            assert_eq!(r.status(), 200);
        }
    }
}

fn forge(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(sig)
    )
}

#[tokio::test]
async fn every_wrong_assertion_is_invalid_client() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let stranger = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let app = TestApp::start(&config(&[&key]).set("auth_throttle.enabled", false)).await;
    let aud = token_url();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&aud);
        f(&mut c);
        c
    };
    let now = now();
    let mut cases: Vec<(&str, String)> = vec![
        ("wrong key", stranger.sign(&claims(&aud), false)),
        ("wrong key, its kid", stranger.sign(&claims(&aud), true)),
        (
            "wrong iss",
            key.sign(&with(&|c| c["iss"] = "other".into()), true),
        ),
        (
            "wrong sub",
            key.sign(&with(&|c| c["sub"] = "other".into()), true),
        ),
        (
            "wrong aud",
            key.sign(&with(&|c| c["aud"] = "https://elsewhere".into()), true),
        ),
        (
            "expired",
            key.sign(
                &with(&|c| {
                    c["iat"] = (now - 4000).into();
                    c["exp"] = (now - 100).into();
                }),
                true,
            ),
        ),
        (
            "lifetime over max",
            key.sign(&with(&|c| c["exp"] = (now + 7200).into()), true),
        ),
        (
            "no iat, exp too far",
            key.sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("iat");
                    c["exp"] = (now + 7200).into();
                }),
                true,
            ),
        ),
        (
            "no exp",
            key.sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
                true,
            ),
        ),
        (
            "iat in the future",
            key.sign(
                &with(&|c| {
                    c["iat"] = (now + 600).into();
                    c["exp"] = (now + 900).into();
                }),
                true,
            ),
        ),
        (
            "nbf in the future",
            key.sign(&with(&|c| c["nbf"] = (now + 600).into()), true),
        ),
        (
            "missing jti",
            key.sign(
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
                true,
            ),
        ),
        (
            "alg none",
            forge(&json!({"alg": "none", "typ": "JWT"}), &claims(&aud), b""),
        ),
    ];
    // HS256 with the public key (its JWK text, and its n) as the secret.
    for secret in [
        key.jwk.to_string(),
        key.jwk["n"].as_str().unwrap().to_owned(),
    ] {
        let hs = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims(&aud),
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap();
        cases.push(("HS256 with the public key", hs));
    }
    let mut at = Header::new(jsonwebtoken::Algorithm::RS256);
    at.typ = Some("at+jwt".into());
    cases.push((
        "typ at+jwt",
        jsonwebtoken::encode(&at, &claims(&aud), &key.encoding_key()).unwrap(),
    ));
    let big = with(&|c| c["pad"] = "x".repeat(9000).into());
    cases.push(("oversized", key.sign(&big, true)));
    cases.push(("garbage", "a.b.c".into()));
    for (what, assertion) in &cases {
        assert_invalid_client(token_with(&app, assertion, &[]).await, what).await;
    }
    // client_id that differs from the assertion's.
    let r = token_with(
        &app,
        &key.sign(&claims(&aud), true),
        &[("client_id", "orders-service")],
    )
    .await;
    assert_invalid_client(r, "client_id mismatch").await;
    // A wrong assertion type.
    let r = app
        .post_form(
            "/oauth/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:other"),
                ("client_assertion", &key.sign(&claims(&aud), true)),
            ],
        )
        .await;
    assert_invalid_client(r, "wrong assertion type").await;
    // A secret-based client sending an assertion (signed with our key, named as it).
    let as_orders = with(&|c| {
        c["iss"] = "orders-service".into();
        c["sub"] = "orders-service".into();
    });
    let r = token_with(&app, &key.sign(&as_orders, true), &[]).await;
    assert_invalid_client(r, "a secret client sending an assertion").await;
    // The key client sending a secret, Basic or body.
    let r = app.token_response(CLIENT, SECRET).await;
    assert_eq!(error_of(r).await, (401, "invalid_client".into()));
    let r = app.token_in_body(CLIENT, SECRET, &[]).await;
    assert_eq!(error_of(r).await, (401, "invalid_client".into()));
    // An assertion plus a secret.
    let r = token_with(
        &app,
        &key.sign(&claims(&aud), true),
        &[("client_secret", SECRET)],
    )
    .await;
    assert_invalid_client(r, "assertion and secret").await;
    // gRPC: a wrong assertion is UNAUTHENTICATED with the ErrorInfo reason.
    let s = app
        .grpc_client()
        .await
        .issue(grpc_issue(&stranger.sign(&claims(ISSUER), false)))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    assert_eq!(reason(&s).as_deref(), Some("invalid_client"));
    // After all that, a good one still works (nothing was poisoned).
    assert_eq!(
        token_with(&app, &key.sign(&claims(&aud), false), &[])
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn failed_assertions_count_in_the_secret_guessing_defence() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let stranger = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let app = TestApp::start(
        &config(&[&key])
            .set("auth_throttle.threshold", 3)
            .set("auth_throttle.base_secs", 60)
            .set("auth_throttle.max_secs", 60),
    )
    .await;
    for _ in 0..3 {
        let r = token_with(&app, &stranger.sign(&claims(&token_url()), false), &[]).await;
        assert_eq!(r.status(), 401);
    }
    let r = token_with(&app, &key.sign(&claims(&token_url()), false), &[]).await;
    assert_eq!(r.status(), 429, "backing off: even a good assertion waits");
}

#[tokio::test]
async fn a_replayed_assertion_is_refused_and_an_hour_long_one_accepted() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::EdDSA);
    let app = TestApp::start(&config(&[&key])).await;
    let one_hour = key.sign(&claims(&token_url()), false);
    assert_eq!(token_with(&app, &one_hour, &[]).await.status(), 200);
    assert_invalid_client(token_with(&app, &one_hour, &[]).await, "replay").await;
}

#[tokio::test]
async fn a_replay_is_refused_by_another_replica_on_the_same_redis() {
    let redis = RedisServer::start().await;
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let jwks = json!({"keys": [key.jwk.clone()]});
    let config = ConfigBuilder::memory()
        .store(&redis.url())
        .client(client_table(&jwks));
    let (_dir, a, b) = TestApp::replicas(config, Algorithm::ES256).await;
    let assertion = key.sign(&claims(&token_url()), true);
    assert_eq!(token_with(&a, &assertion, &[]).await.status(), 200);
    assert_invalid_client(token_with(&b, &assertion, &[]).await, "replay on b").await;
    assert_invalid_client(token_with(&a, &assertion, &[]).await, "replay on a").await;
    // A fresh one works on b.
    let fresh = key.sign(&claims(&token_url()), true);
    assert_eq!(token_with(&b, &fresh, &[]).await.status(), 200);
}

#[tokio::test]
async fn a_jwks_file_is_picked_up_on_reload() {
    let old = ClientKey::new(jsonwebtoken::Algorithm::ES256);
    let new = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let dir = TempDir::new().unwrap();
    let write = |keys: &[&ClientKey]| {
        let doc = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        std::fs::write(dir.path().join("key-client.jwks.json"), doc.to_string()).unwrap();
    };
    write(&[&old]);
    let mut client = client_table(&json!({}));
    client.remove("jwks");
    client.insert("jwks_file".into(), "key-client.jwks.json".into());
    let builder = ConfigBuilder::memory().client(client);
    let cfg = builder.load_in(dir.path(), &[]);
    let app = TestApp::start_config(cfg.clone()).await;
    let mut reloader = crate::common::app::reloader(&app, cfg, dir.path());
    assert_eq!(
        token_with(&app, &old.sign(&claims(&token_url()), false), &[])
            .await
            .status(),
        200
    );
    assert_invalid_client(
        token_with(&app, &new.sign(&claims(&token_url()), false), &[]).await,
        "not yet",
    )
    .await;
    // Rotation: both keys listed, then the old one dropped.
    write(&[&old, &new]);
    reloader.reload().unwrap();
    for k in [&old, &new] {
        assert_eq!(
            token_with(&app, &k.sign(&claims(&token_url()), false), &[])
                .await
                .status(),
            200
        );
    }
    write(&[&new]);
    reloader.reload().unwrap();
    assert_invalid_client(
        token_with(&app, &old.sign(&claims(&token_url()), false), &[]).await,
        "dropped",
    )
    .await;
    // A broken file keeps the running keys.
    std::fs::write(dir.path().join("key-client.jwks.json"), "{").unwrap();
    assert!(reloader.reload().is_err());
    assert_eq!(
        token_with(&app, &new.sign(&claims(&token_url()), false), &[])
            .await
            .status(),
        200
    );
}

#[test]
fn check_config_rejects_secrets_and_bad_keys_on_a_key_client() {
    let key = ClientKey::new(jsonwebtoken::Algorithm::RS256);
    let dir = TempDir::new().unwrap();
    let problems = |t: Table| {
        ConfigBuilder::memory()
            .client(t)
            .load_in(dir.path(), &[])
            .validate()
            .join("\n")
    };
    let mut t = client_table(&json!({"keys": [key.jwk.clone()]}));
    t.insert(
        "secret_hashes".into(),
        toml::Value::Array(vec![crate::common::config::sha256(SECRET).into()]),
    );
    assert!(problems(t).contains("a private_key_jwt client authenticates with its keys"));
    let t = client_table(&json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
    assert!(problems(t).contains("symmetric keys are never accepted"));
    let mut t = client_table(&json!({}));
    t.remove("jwks");
    t.insert("jwks_file".into(), "missing.json".into());
    assert!(problems(t).contains("jwks_file: cannot read"));
    let mut t = client_table(&json!({}));
    t.remove("jwks");
    assert!(problems(t).contains("needs its public keys"));
}
