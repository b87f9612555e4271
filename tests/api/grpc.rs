//! The gRPC API: Issue, Introspect, Revoke, status codes with ErrorInfo,
//! health and reflection.

use tokend::pb::IssueRequest;
use tonic::Code;

use crate::common::grpc::{
    error_reason, introspect_request, issue_request as issue, revoke_request,
};
use crate::common::http::jwt_parts;
use crate::common::{SECRET, TestApp};

#[tokio::test]
async fn issue_introspect_revoke_over_grpc() {
    let app = TestApp::default_memory().await;
    let mut c = app.grpc_client().await;
    let mut req = issue("orders-service", SECRET);
    req.scope = vec!["orders:read".into(), "orders:write".into()];
    req.audience = vec!["orders-api".into()];
    let t = c.issue(req).await.unwrap().into_inner();
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.expires_in, 3600);
    assert_eq!(t.scope, vec!["orders:read", "orders:write"]);
    assert!(t.refresh_token.is_empty());
    assert_eq!(jwt_parts(&t.access_token).1["aud"], "orders-api");

    let introspect = |token: String| introspect_request(&token, SECRET);
    let i = c
        .introspect(introspect(t.access_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(i.active);
    assert_eq!(i.client_id, "orders-service");
    assert_eq!(i.sub, "orders-service");
    assert_eq!(i.aud, vec!["orders-api"]);
    assert_eq!(i.scope, vec!["orders:read", "orders:write"]);
    assert_eq!(i.iss, "https://tokend.test");
    assert_eq!(i.token_type, "Bearer");
    let claims = tokend::transport::grpc::struct_to_json(i.claims.unwrap());
    assert_eq!(claims["organisation_id"], 74);
    assert_eq!(claims["roles"], serde_json::json!(["ADMIN", "DOCTOR"]));

    // The same token is seen identically over HTTP.
    let http = app.introspect(&t.access_token).await;
    assert_eq!(http["jti"], i.jti.as_str());

    c.revoke(revoke_request("orders-service", &t.access_token))
        .await
        .unwrap();
    let i = c
        .introspect(introspect(t.access_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(!i.active);
    assert_eq!(
        i,
        tokend::pb::IntrospectResponse::default(),
        "inactive carries nothing"
    );
    assert_eq!(app.introspect(&t.access_token).await["active"], false);

    // claims_in_response clients get the claims in the response Struct.
    let t = c
        .issue(issue("partner", SECRET))
        .await
        .unwrap()
        .into_inner();
    let claims = tokend::transport::grpc::struct_to_json(t.claims.unwrap());
    assert_eq!(claims["partner_id"], "f31120ee");
}

#[tokio::test]
async fn errors_map_to_status_codes_with_error_info() {
    let app = TestApp::default_memory().await;
    let mut c = app.grpc_client().await;
    let mut cases: Vec<(IssueRequest, Code, &str)> = vec![
        (
            issue("orders-service", "wrong"),
            Code::Unauthenticated,
            "invalid_client",
        ),
        (
            issue("nobody", SECRET),
            Code::Unauthenticated,
            "invalid_client",
        ),
        (
            issue("orders-service", ""),
            Code::Unauthenticated,
            "invalid_client",
        ),
    ];
    let mut r = issue("orders-service", SECRET);
    r.grant_type = "password".into();
    cases.push((r, Code::InvalidArgument, "unsupported_grant_type"));
    let mut r = issue("orders-service", SECRET);
    r.grant_type = String::new();
    cases.push((r, Code::InvalidArgument, "invalid_request"));
    let mut r = issue("orders-service", SECRET);
    r.scope = vec!["admin".into()];
    cases.push((r, Code::InvalidArgument, "invalid_scope"));
    let mut r = issue("orders-service", SECRET);
    r.audience = vec!["elsewhere".into()];
    cases.push((r, Code::InvalidArgument, "invalid_target"));
    let mut r = issue("orders-service", SECRET);
    r.grant_type = "refresh_token".into();
    r.refresh_token = "x".into();
    cases.push((r, Code::PermissionDenied, "unauthorized_client"));
    for (req, code, reason) in cases {
        let err = c.issue(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}");
        assert_eq!(error_reason(&err), reason, "{req:?}");
    }
    let err = c
        .introspect(introspect_request("x", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(error_reason(&err), "invalid_client");
    // Unknown tokens: revocation succeeds silently.
    c.revoke(revoke_request("orders-service", "garbage"))
        .await
        .unwrap();
}

#[tokio::test]
async fn health_and_reflection() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let app = TestApp::default_memory().await;
    let mut h = HealthClient::new(app.grpc_channel().await);
    for service in ["", "tokend.v1.TokenService", "liveness"] {
        let r = h
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "SERVING for {service:?}");
    }

    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut r = ServerReflectionClient::new(app.grpc_channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"tokend.v1.TokenService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    // The admin API is not served here, so it is not advertised either.
    assert!(
        !names.iter().any(|n| n.contains("ClientAdmin")),
        "{names:?}"
    );
}
