//! Client lifecycle over the real admin gRPC API: bulk revocation per client
//! and per subject, disable/enable, the effective-client view, and the admin
//! listener's own authentication. Effects are checked over both public
//! transports (HTTP and gRPC).

use std::time::Duration;

use tempfile::TempDir;
use tokend::pb;
use tokend::pb::client_admin_client::ClientAdminClient;
use tokend::pb::token_service_client::TokenServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::config::key_file;
use crate::common::grpc::{
    ADMIN_SECRET, admin_client, error_reason, grpc_issue, introspect_request,
};
use crate::common::wait::next_ms;
use crate::common::{Api, ConfigBuilder, RedisServer, SECRET, TestApp, eventually};

/// The standard clients with an ES256 key and the admin API.
fn with_admin(store_url: &str) -> ConfigBuilder {
    ConfigBuilder::on_store(store_url)
        .algorithm("ES256")
        .admin(Some(ADMIN_SECRET))
}

async fn app_with_admin(store_url: &str) -> TestApp {
    TestApp::start(&with_admin(store_url)).await
}

async fn grpc_active(c: &mut TokenServiceClient<Channel>, token: &str) -> bool {
    c.introspect(introspect_request(token, SECRET))
        .await
        .unwrap()
        .into_inner()
        .active
}

/// Both transports agree on whether `token` is active; returns that.
async fn active(api: &Api, token: &str) -> bool {
    let mut g = api.grpc_client().await;
    let over_grpc = grpc_active(&mut g, token).await;
    let over_http = api.introspect(token).await["active"] == true;
    assert_eq!(over_grpc, over_http, "gRPC and HTTP disagree");
    over_http
}

#[tokio::test]
async fn admin_api_requires_its_bearer_secret_and_is_not_on_the_public_listener() {
    let app = app_with_admin("memory://").await;
    for token in [None, Some("wrong"), Some("")] {
        let mut admin = admin_client(&app, token).await;
        let err = admin.disable("partner").await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
        assert_eq!(error_reason(&err), "unauthenticated");
        assert!(!err.message().contains("admin-secret"));
    }
    // Refused calls changed nothing.
    app.token("partner", &[]).await;

    // The public gRPC listener does not serve ClientAdmin at all.
    let mut public = ClientAdminClient::new(app.grpc_channel().await);
    let err = public
        .list_clients(pb::ListClientsRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // Off by default: no [admin] section, no admin listener.
    let plain = TestApp::default_memory().await;
    assert!(plain.admin.is_none());
}

#[tokio::test]
async fn revoke_client_tokens_kills_earlier_tokens_only() {
    let app = app_with_admin("memory://").await;
    let mut g = app.grpc_client().await;
    let before_http = app.access_token("partner").await;
    let before_grpc = grpc_issue(&mut g, "partner").await.unwrap();
    let other = app.access_token("orders-service").await;
    assert!(active(&app, &before_http).await);
    next_ms().await;

    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let mark = admin.revoke_client("partner").await.unwrap().not_before_ms;
    assert!(mark > 0);
    next_ms().await;

    assert!(!active(&app, &before_http).await);
    assert!(!active(&app, &before_grpc).await);
    assert!(active(&app, &other).await, "other clients are untouched");
    // Issued after the revocation (same second, later millisecond): valid.
    let after = grpc_issue(&mut g, "partner").await.unwrap();
    assert!(active(&app, &after).await);
    let after_http = app.access_token("partner").await;
    assert!(active(&app, &after_http).await);

    let info = admin.get("partner").await.unwrap();
    assert_eq!(info.tokens_not_before_ms, mark);

    // Unknown and empty ids are documented errors.
    let err = admin.revoke_client("nobody").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(error_reason(&err), "unknown_client");
    let err = admin.revoke_client("").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&err), "invalid_request");
}

#[tokio::test]
async fn disabled_client_cannot_authenticate_and_its_tokens_are_inactive() {
    let app = app_with_admin("memory://").await;
    let mut g = app.grpc_client().await;
    let token = app.access_token("partner").await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let info = admin.disable("partner").await.unwrap();
    assert!(info.disabled);

    // Token endpoint: the same invalid_client as a wrong secret, on both transports.
    let r = app.token_response("partner", SECRET).await;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    let err = grpc_issue(&mut g, "partner").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&err), "invalid_client");
    // Its tokens introspect inactive; it cannot introspect or revoke either.
    assert!(!active(&app, &token).await);
    let r = app
        .post_form(
            "/oauth/revoke",
            Some(("partner", SECRET)),
            &[("token", token.as_str())],
        )
        .await;
    assert_eq!(r.status(), 401);
    // Other clients are untouched.
    app.token("orders-service", &[]).await;

    let listed = admin.list().await.unwrap();
    let partner = listed.iter().find(|c| c.client_id == "partner").unwrap();
    assert!(partner.disabled);
    assert!(
        listed
            .iter()
            .filter(|c| c.client_id != "partner")
            .all(|c| !c.disabled)
    );

    let info = admin.enable("partner").await.unwrap();
    assert!(!info.disabled);
    grpc_issue(&mut g, "partner").await.unwrap();
    // Enabling alone brings old tokens back: cutting a client off for good is
    // disable + revoke (README, "Client lifecycle").
    assert!(active(&app, &token).await);
}

#[tokio::test]
async fn revoke_subject_tokens_logs_a_subject_out_everywhere() {
    let app = app_with_admin("memory://").await;
    // client_credentials tokens have the client as subject.
    let orders = app.access_token("orders-service").await;
    let partner = app.access_token("partner").await;
    next_ms().await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let mark = admin
        .revoke_subject("orders-service")
        .await
        .unwrap()
        .not_before_ms;
    assert!(mark > 0);
    next_ms().await;
    assert!(!active(&app, &orders).await);
    assert!(active(&app, &partner).await);
    let fresh = app.access_token("orders-service").await;
    assert!(active(&app, &fresh).await);

    let err = admin.revoke_subject("").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&err), "invalid_request");
}

#[tokio::test]
async fn effective_clients_never_show_secret_hashes() {
    let app = app_with_admin("memory://").await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let listed = admin.list().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(
        ids,
        ["basic-only", "orders-service", "partner", "resource-server"]
    );
    let text = format!("{listed:?}");
    let hash = tokend::oauth::client::SecretHash::sha256_of(SECRET);
    assert!(!text.contains(&hash[7..]), "a hash leaked: {text}");
    let orders = admin.get("orders-service").await.unwrap();
    assert_eq!(orders.secret_count, 1);
    assert_eq!(orders.scopes, ["orders:read", "orders:write"]);
    assert_eq!(orders.audience, ["orders-api", "billing-api"]);
    assert_eq!(orders.access_ttl_secs, 3600);
    assert!(!orders.disabled);
    assert_eq!(orders.tokens_not_before_ms, 0);
    let err = admin.get("nobody").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// Two replicas sharing a real Redis and one signing key: every store-backed
/// effect of an admin call on one replica holds on the other, and on a
/// replica started afterwards (restart).
#[tokio::test]
async fn two_replicas_on_redis_share_disable_and_revocation() {
    let redis = RedisServer::start().await;
    let dir = TempDir::new().unwrap();
    let key = key_file(dir.path(), "signing.pem", tokend::token::Algorithm::ES256);
    let config = with_admin(&redis.url()).signing_key("ES256", &key);
    let a = TestApp::start(&config).await;
    let b = TestApp::start(&config).await;
    let mut admin_b = admin_client(&b, Some(ADMIN_SECRET)).await;
    let mut admin_a = admin_client(&a, Some(ADMIN_SECRET)).await;
    let token = a.access_token("partner").await;
    assert!(active(&b, &token).await);

    // Disable on B: introspection on A is inactive at once; A's token endpoint
    // refuses within its ~1 s refresh (bounded wait, not a speed assertion).
    admin_b.disable("partner").await.unwrap();
    assert!(!active(&a, &token).await);
    let refused = eventually(Duration::from_secs(5), || async {
        a.token_response("partner", SECRET).await.status() == 401
    })
    .await;
    assert!(refused, "replica A kept issuing to a disabled client");
    let mut ga = a.grpc_client().await;
    assert_eq!(
        grpc_issue(&mut ga, "partner").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // A replica started later (a restart) knows from its first request.
    let c = TestApp::start(&config).await;
    assert_eq!(c.token_response("partner", SECRET).await.status(), 401);
    let seen_on_a = admin_a.get("partner").await.unwrap();
    assert!(seen_on_a.disabled);

    // Enable on A, revoke on A: B sees both.
    admin_a.enable("partner").await.unwrap();
    assert!(active(&b, &token).await);
    next_ms().await;
    admin_a.revoke_client("partner").await.unwrap();
    next_ms().await;
    assert!(!active(&b, &token).await);
    assert!(!active(&c, &token).await);

    // Subject revocation on B holds on A.
    let orders = a.access_token("orders-service").await;
    next_ms().await;
    admin_b.revoke_subject("orders-service").await.unwrap();
    next_ms().await;
    assert!(!active(&a, &orders).await);
    let fresh = b.access_token("orders-service").await;
    assert!(active(&a, &fresh).await);
}
