//! tokend-login: a reference login app for tokend's authorization-code flow,
//! and a tiny demo client. It knows tokend only through the public contract:
//! the gRPC `tokend.v1.AuthorizationService` (compiled from the proto file by
//! build.rs) and the OAuth HTTP endpoints. Copy it and adapt it: replace the
//! users file with your user store, the templates with your design.
//!
//! See docs/login-app.md.

pub mod config;
pub mod demo_client;
pub mod security;
pub mod tokend;
pub mod users;
pub mod web;

use std::future::Future;

use tokio::net::TcpListener;

/// Serves the login app on `listener` until `shutdown` completes.
pub async fn serve_login(
    listener: TcpListener,
    settings: config::Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = web::App::new(&settings)?;
    axum::serve(listener, web::router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Serves the demo client on `listener` until `shutdown` completes.
pub async fn serve_demo_client(
    listener: TcpListener,
    settings: demo_client::DemoSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, demo_client::router(settings))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
