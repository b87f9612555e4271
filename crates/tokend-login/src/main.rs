//! `tokend-login serve --config examples/login.toml`: the login app.
//! `tokend-login demo-client`: the demo OAuth client.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokend_login::config::Settings;
use tokend_login::demo_client::DemoSettings;

#[derive(Parser)]
#[command(
    name = "tokend-login",
    version,
    about = "Reference login app for tokend (and a demo client)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the login app. The bearer secret for tokend comes from the
    /// config's `app_token_file` or the TOKEND_LOGIN_APP_TOKEN environment
    /// variable (never from the command line).
    Serve {
        #[arg(long, short, env = "TOKEND_LOGIN_CONFIG")]
        config: PathBuf,
    },
    /// Run the demo OAuth client (a public client using PKCE).
    DemoClient {
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: SocketAddr,
        /// tokend's HTTP base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        tokend_url: String,
        #[arg(long, default_value = "demo-spa")]
        client_id: String,
        /// Registered for the client; default: http://<listen>/callback.
        #[arg(long)]
        redirect_uri: Option<String>,
        #[arg(long, default_value = "orders:read")]
        scope: String,
    },
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Serve { config } => {
            let settings = Settings::load(&config)?;
            let listener = tokio::net::TcpListener::bind(settings.listen).await?;
            tracing::info!(
                "login app listening on http://{} (tokend gRPC {})",
                listener.local_addr()?,
                settings.tokend_grpc_url
            );
            tokend_login::serve_login(listener, settings, shutdown_signal()).await
        }
        Command::DemoClient {
            listen,
            tokend_url,
            client_id,
            redirect_uri,
            scope,
        } => {
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            let settings = DemoSettings {
                listen: addr,
                tokend_url,
                client_id,
                redirect_uri: redirect_uri.unwrap_or_else(|| format!("http://{addr}/callback")),
                scope,
            };
            tracing::info!("demo client listening on http://{addr}/");
            tokend_login::serve_demo_client(listener, settings, shutdown_signal()).await
        }
    }
}
