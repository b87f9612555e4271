//! A resource server protected by tokend-verify: an axum HTTP API and a tonic
//! gRPC service behind the same `AuthLayer`, fed by tokend's JWKS and
//! RevocationFeed. docs/resource-servers.md walks through it, including
//! watching a revocation take effect.
//!
//! ```text
//! cargo run -p tokend-verify --example resource_server
//! ```
//!
//! Settings come from the environment (defaults: the demo tokend of
//! examples/tokend.toml on 127.0.0.1):
//!
//! | variable | default |
//! |---|---|
//! | `TOKEND_ISSUER` | `http://127.0.0.1:8080` |
//! | `TOKEND_JWKS_URL` | `$TOKEND_ISSUER/.well-known/jwks.json` |
//! | `TOKEND_GRPC_URL` | `http://127.0.0.1:50051` (the RevocationFeed) |
//! | `FEED_CLIENT_ID`, `FEED_CLIENT_SECRET` | `orders-api`, from `FEED_CLIENT_SECRET` (required) |
//! | `AUDIENCE` | `orders-api` |
//! | `FEED_POLICY` | `fail-closed` (or `fail-open`) |
//! | `HTTP_LISTEN`, `GRPC_LISTEN` | `127.0.0.1:7080`, `127.0.0.1:7051` |
//!
//! HTTP: `GET /orders` needs scope `orders:read`; `GET /readyz` (open)
//! answers 200 once the JWKS is loaded and the feed is live. gRPC:
//! `demo.v1.Orders/ListOrders` needs `orders:read` too.

use std::net::SocketAddr;

use axum::routing::get;
use axum::{Extension, Json};
use tokend_verify::{
    AuthLayer, FeedConfig, FeedPolicy, Require, VerifiedToken, Verifier, VerifierConfig,
    require_scope,
};

#[allow(clippy::all)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/full/demo.v1.rs"));
}

use pb::orders_server::{Orders, OrdersServer};
use pb::{ListOrdersRequest, ListOrdersResponse};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The gRPC service: the verified token is in the request's extensions.
struct OrdersService;

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn list_orders(
        &self,
        request: tonic::Request<ListOrdersRequest>,
    ) -> Result<tonic::Response<ListOrdersResponse>, tonic::Status> {
        let token = request
            .extensions()
            .get::<VerifiedToken>()
            .ok_or_else(|| tonic::Status::unauthenticated("no token"))?;
        // PERMISSION_DENIED without the scope.
        require_scope(token, "orders:read").map_err(|r| r.to_status())?;
        Ok(tonic::Response::new(ListOrdersResponse {
            subject: token.sub.clone(),
            client_id: token.client_id.clone(),
            orders: vec!["order-1".into(), "order-2".into()],
        }))
    }
}

/// The HTTP handler: the verified token is an axum extension.
async fn list_orders(Extension(token): Extension<VerifiedToken>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "subject": token.sub,
        "client_id": token.client_id,
        "orders": ["order-1", "order-2"],
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tokend_verify=debug".into()),
        )
        .init();
    let issuer = env("TOKEND_ISSUER", "http://127.0.0.1:8080");
    let jwks_url = env(
        "TOKEND_JWKS_URL",
        &format!("{issuer}/.well-known/jwks.json"),
    );
    let secret = std::env::var("FEED_CLIENT_SECRET")
        .map_err(|_| anyhow::anyhow!("set FEED_CLIENT_SECRET (the feed client's secret)"))?;
    let policy = match env("FEED_POLICY", "fail-closed").as_str() {
        "fail-open" => FeedPolicy::FailOpen,
        "fail-closed" => FeedPolicy::FailClosed,
        other => anyhow::bail!("FEED_POLICY is fail-closed or fail-open, not {other}"),
    };
    let feed = FeedConfig::new(
        env("TOKEND_GRPC_URL", "http://127.0.0.1:50051"),
        env("FEED_CLIENT_ID", "orders-api"),
        secret,
    )
    .policy(policy);
    let verifier = Verifier::start(
        VerifierConfig::new(&issuer, jwks_url, env("AUDIENCE", "orders-api")).feed(feed),
    )
    .await?;

    // HTTP: /orders behind the layer (and the scope), /readyz open.
    let ready = verifier.clone();
    let app = axum::Router::new()
        .route(
            "/orders",
            get(list_orders).route_layer(Require::scope("orders:read")),
        )
        .layer(AuthLayer::new(verifier.clone()))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.is_ready();
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    let http_addr: SocketAddr = env("HTTP_LISTEN", "127.0.0.1:7080").parse()?;
    let grpc_addr: SocketAddr = env("GRPC_LISTEN", "127.0.0.1:7051").parse()?;
    let http = tokio::net::TcpListener::bind(http_addr).await?;
    tracing::info!(%http_addr, %grpc_addr, "resource server listening");

    // gRPC: every service behind the layer.
    let grpc = tonic::transport::Server::builder()
        .layer(AuthLayer::new(verifier))
        .add_service(OrdersServer::new(OrdersService))
        .serve_with_shutdown(grpc_addr, shutdown());
    let http = axum::serve(http, app).with_graceful_shutdown(shutdown());
    let (g, h) = tokio::join!(grpc, http);
    g?;
    h?;
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
}
