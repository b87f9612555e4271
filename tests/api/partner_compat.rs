//! Issue 18: partner compatibility (introspection policy, configurable
//! client_credentials subject, `username` in introspection).

use serde_json::{Value, json};

use crate::common::flows::{self, login_client, param, redeem, s};
use crate::common::grpc::introspect_request;
use crate::common::http::jwt_parts;
use crate::common::{ConfigBuilder, SECRET, TestApp};
use tokend::pb::AcceptAuthorizationRequest;

fn policy_config() -> ConfigBuilder {
    let hash = crate::common::config::sha256(SECRET);
    ConfigBuilder::memory()
        .client(toml::toml! {
            client_id = "orders-api"
            secret_hashes = [(hash.as_str())]
            audience = ["orders-api"]
        })
        .client(toml::toml! {
            client_id = "own-only"
            secret_hashes = [(hash.as_str())]
            introspection = "own"
            audience = ["orders-api"]
        })
        .client(toml::toml! {
            client_id = "booking-partner"
            secret_hashes = [(hash.as_str())]
            subject = "partner-booking-svc"
            audience = ["bookings-api"]
        })
}

#[tokio::test]
async fn introspection_policy_own_audience_any() {
    let app = TestApp::start(&policy_config()).await;
    // orders-service's tokens name orders-api and billing-api.
    let token = app.access_token("orders-service").await;
    let active = |v: &Value| v["active"] == true;
    // "any" (resource-server in the test config).
    assert!(active(&app.introspect_as("resource-server", &token).await));
    // "audience" (the default): a resource server named in `aud`.
    let i = app.introspect_as("orders-api", &token).await;
    assert!(active(&i), "{i}");
    assert_eq!(i["client_id"], "orders-service");
    // The issuing client always sees its own tokens.
    assert!(active(&app.introspect_as("orders-service", &token).await));
    // Outside the policy: exactly what a dead token gets, so the answer
    // never tells whether the token is valid.
    for outsider in ["partner", "basic-only", "own-only"] {
        let i = app.introspect_as(outsider, &token).await;
        assert_eq!(i, json!({"active": false}), "{outsider}");
    }
    // "own": its own tokens only, even when its audience matches.
    let own = app.access_token("own-only").await;
    assert!(active(&app.introspect_as("own-only", &own).await));
    assert_eq!(
        app.introspect_as("orders-api", &own).await["active"],
        true,
        "own-only's tokens name orders-api"
    );
    // The same over gRPC.
    let mut grpc = app.grpc_client().await;
    let ask = |client: &str| {
        let mut r = introspect_request(&token, SECRET);
        r.client_id = client.into();
        r
    };
    let r = grpc
        .introspect(ask("orders-api"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.active);
    assert_eq!(r.client_id, "orders-service");
    let r = grpc
        .introspect(ask("basic-only"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r, Default::default(), "inactive is the empty message");
    app.stop().await;
}

#[tokio::test]
async fn client_credentials_subject_is_configurable() {
    let app = TestApp::start(&policy_config()).await;
    let token = app.access_token("booking-partner").await;
    let (_, claims) = jwt_parts(&token);
    assert_eq!(claims["sub"], "partner-booking-svc");
    assert_eq!(claims["client_id"], "booking-partner");
    let i = app.introspect(&token).await;
    assert_eq!(i["sub"], "partner-booking-svc");
    // The default stays the client_id, never "".
    let (_, claims) = jwt_parts(&app.access_token("partner").await);
    assert_eq!(claims["sub"], "partner");
    app.stop().await;
}

#[tokio::test]
async fn username_reaches_introspection_of_access_and_refresh_tokens() {
    let app = TestApp::start(&ConfigBuilder::memory().code_flow()).await;
    let (verifier, challenge) = flows::pkce();
    let ch = flows::challenge_for(
        &app,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", flows::WEB_CB),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let mut login = login_client(&app).await;
    let accept = |username: &str| AcceptAuthorizationRequest {
        login_challenge: ch.clone(),
        subject: "user-7".into(),
        username: username.into(),
        ..Default::default()
    };
    // Bad usernames are refused before the challenge is used up.
    for bad in ["a\nb".to_owned(), "x".repeat(256)] {
        let err = login.accept_authorization(accept(&bad)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }
    let to = login
        .accept_authorization(accept("grace@example.com"))
        .await
        .unwrap()
        .into_inner()
        .redirect_to;
    let r = redeem(&app, &param(&to, "code").unwrap(), &verifier).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let i = app.introspect(&s(&t["access_token"])).await;
    assert_eq!(i["username"], "grace@example.com");
    assert_eq!(i["sub"], "user-7");
    let i = app.introspect_as("web-app", &s(&t["refresh_token"])).await;
    assert_eq!(i["token_type"], "refresh_token");
    assert_eq!(i["username"], "grace@example.com");
    let mut grpc = app.grpc_client().await;
    let r = grpc
        .introspect(introspect_request(&s(&t["access_token"]), SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.username, "grace@example.com");
    app.stop().await;
}
