//! The tower layers over real sockets: an axum app and a tonic service
//! behind AuthLayer (and Require), called by reqwest and a tonic client.

mod common;

use axum::Extension;
use axum::routing::get;
use common::*;
use tokend_token::keys::{Algorithm, SigningKey};
use tokend_verify::{AuthLayer, Require, VerifiedToken, Verifier, VerifierConfig, require_scope};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

#[allow(clippy::all)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/full/demo.v1.rs"));
}

use pb::orders_client::OrdersClient;
use pb::orders_server::{Orders, OrdersServer};
use pb::{ListOrdersRequest, ListOrdersResponse};

struct Svc;

#[tonic::async_trait]
impl Orders for Svc {
    async fn list_orders(
        &self,
        request: tonic::Request<ListOrdersRequest>,
    ) -> Result<tonic::Response<ListOrdersResponse>, tonic::Status> {
        let token = request
            .extensions()
            .get::<VerifiedToken>()
            .ok_or_else(|| tonic::Status::internal("no verified token"))?;
        require_scope(token, "orders:read").map_err(|r| r.to_status())?;
        Ok(tonic::Response::new(ListOrdersResponse {
            subject: token.sub.clone(),
            client_id: token.client_id.clone(),
            orders: vec![],
        }))
    }
}

struct Stack {
    key: SigningKey,
    http: String,
    grpc: String,
    _jwks: JwksServer,
    stop: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Stack {
    async fn start() -> Self {
        let key = SigningKey::generate(Algorithm::ES256).unwrap();
        let jwks = JwksServer::start(&[&key]).await;
        let v = Verifier::start(VerifierConfig::new(ISSUER, &jwks.url, AUDIENCE))
            .await
            .unwrap();
        let stop = CancellationToken::new();

        let app = axum::Router::new()
            .route(
                "/orders",
                get(|Extension(t): Extension<VerifiedToken>| async move {
                    format!("{} {}", t.sub, t.client_id)
                })
                .route_layer(Require::scope("orders:read")),
            )
            .route(
                "/refunds",
                get(|| async { "refunded" })
                    .route_layer(Require::scope("orders:write").and_audience("billing-api")),
            )
            .route(
                "/whoami",
                get(|Extension(t): Extension<VerifiedToken>| async move { t.jti.clone() }),
            )
            .layer(AuthLayer::new(v.clone()));
        let (l, a) = bind().await;
        let s = stop.clone();
        tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await
        });

        let (gl, ga) = bind().await;
        let s = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .layer(AuthLayer::new(v))
                .add_service(OrdersServer::new(Svc))
                .serve_with_incoming_shutdown(TcpListenerStream::new(gl), async move {
                    s.cancelled().await
                }),
        );
        Self {
            key,
            http: format!("http://{a}"),
            grpc: format!("http://{ga}"),
            _jwks: jwks,
            stop,
        }
    }

    fn token(&self, scope: &str) -> String {
        let mut c = claims();
        c.scope = scope.into();
        mint(&self.key, &c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_401_and_403_with_rfc_6750_challenges() {
    let s = Stack::start().await;
    let http = reqwest::Client::new();
    let get = |path: &str, auth: Option<String>| {
        let mut r = http.get(format!("{}{path}", s.http));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };
    let challenge = |r: &reqwest::Response| {
        r.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let ok = get(
        "/orders",
        Some(format!("Bearer {}", s.token("orders:read"))),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.text().await.unwrap(),
        format!("{CLIENT} {CLIENT}"),
        "claims in extensions"
    );
    let lower = get("/whoami", Some(format!("bearer {}", s.token(""))))
        .await
        .unwrap();
    assert_eq!(lower.status(), 200, "the scheme is case-insensitive");

    let missing = get("/orders", None).await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(challenge(&missing).as_deref(), Some("Bearer"));
    let forged = SigningKey::generate(Algorithm::ES256).unwrap();
    for bad in [
        "Bearer not-a-token".to_owned(),
        format!("Bearer {}", mint(&forged, &claims())),
        format!("Bearer {}x", s.token("orders:read")),
    ] {
        let r = get("/orders", Some(bad)).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(
            challenge(&r).as_deref(),
            Some("Bearer error=\"invalid_token\"")
        );
    }

    let scoped = get(
        "/orders",
        Some(format!("Bearer {}", s.token("orders:write"))),
    )
    .await
    .unwrap();
    assert_eq!(scoped.status(), 403);
    assert_eq!(
        challenge(&scoped).as_deref(),
        Some("Bearer error=\"insufficient_scope\", scope=\"orders:read\"")
    );
    // The scope is there but not the audience Require asks for.
    let aud = get(
        "/refunds",
        Some(format!("Bearer {}", s.token("orders:write"))),
    )
    .await
    .unwrap();
    assert_eq!(aud.status(), 403);
    let mut c = claims();
    c.scope = "orders:write".into();
    c.aud = vec![AUDIENCE.into(), "billing-api".into()];
    let both = get("/refunds", Some(format!("Bearer {}", mint(&s.key, &c))))
        .await
        .unwrap();
    assert_eq!(both.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_unauthenticated_and_permission_denied() {
    let s = Stack::start().await;
    let mut client = OrdersClient::connect(s.grpc.clone()).await.unwrap();
    let call = |auth: Option<String>| {
        let mut req = tonic::Request::new(ListOrdersRequest {});
        if let Some(a) = auth {
            req.metadata_mut()
                .insert("authorization", a.parse().unwrap());
        }
        req
    };

    let ok = client
        .list_orders(call(Some(format!("Bearer {}", s.token("orders:read")))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ok.subject.as_str(), ok.client_id.as_str()),
        (CLIENT, CLIENT)
    );

    let missing = client.list_orders(call(None)).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::Unauthenticated);
    let expired = {
        let mut c = claims();
        c.exp = now() - 3600;
        mint(&s.key, &c)
    };
    let bad = client
        .list_orders(call(Some(format!("Bearer {expired}"))))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::Unauthenticated);
    assert_eq!(bad.message(), "invalid_token");
    let denied = client
        .list_orders(call(Some(format!("Bearer {}", s.token("orders:write")))))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // The channel survives rejections.
    assert!(
        client
            .list_orders(call(Some(format!("Bearer {}", s.token("orders:read")))))
            .await
            .is_ok()
    );
}
