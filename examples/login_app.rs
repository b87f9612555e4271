//! A minimal login app for tokend's authorization-code flow: it shows what a
//! login challenge asks for, "logs in" the user named on the command line and
//! prints where to send the browser next (the client's redirect URI with
//! `code` and `state`). A real login app authenticates the user and asks for
//! consent between the two calls.
//!
//! Every call carries the login app's bearer secret (`TOKEND_LOGIN_APP_TOKEN`,
//! default: the demo secret of examples/tokend.toml), whose SHA-256 is tokend's
//! `[authorization] login_app_token_hash`.
//!
//! Usage: cargo run --example login_app -- <login_challenge> <subject> [grpc_url]

use tokend::pb::authorization_service_client::AuthorizationServiceClient;
use tokend::pb::{AcceptAuthorizationRequest, GetAuthorizationRequest};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(login_challenge), Some(subject)) = (args.next(), args.next()) else {
        eprintln!("usage: login_app <login_challenge> <subject> [grpc_url]");
        std::process::exit(2);
    };
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let secret =
        std::env::var("TOKEND_LOGIN_APP_TOKEN").unwrap_or_else(|_| "demo-login-app-secret".into());
    let bearer: MetadataValue<_> = format!("Bearer {secret}").parse()?;
    let channel = Channel::from_shared(url)?.connect().await?;
    let mut tokend =
        AuthorizationServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        });
    let asked = tokend
        .get_authorization(GetAuthorizationRequest {
            login_challenge: login_challenge.clone(),
        })
        .await?
        .into_inner();
    eprintln!("{} asks for {:?}", asked.client_id, asked.requested_scope);
    let answer = tokend
        .accept_authorization(AcceptAuthorizationRequest {
            login_challenge,
            subject,
            granted_scope: vec![], // empty: everything that was asked
            claims: None,
            username: String::new(),
        })
        .await?
        .into_inner();
    println!("{}", answer.redirect_to);
    Ok(())
}
