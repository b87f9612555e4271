//! One tokend over both transports for load and fault tests: issue,
//! introspect and revoke with a bound on every request, each answer sorted
//! into what the tests assert on ([`Answer`]), whichever transport gave it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokend::pb::IntrospectRequest;
use tokend::pb::token_service_client::TokenServiceClient;
use tonic::transport::Channel;

use super::SECRET;
use super::api::Api;
use super::grpc::{introspect_request, issue_request, reason, revoke_request};

/// Bound on any one request: a hang is a failure, never a wait.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Which public API a request goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

pub const BOTH: [Transport; 2] = [Transport::Http, Transport::Grpc];

/// An introspection answer, whichever transport gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Active,
    Inactive,
    /// HTTP 503 / gRPC UNAVAILABLE with `temporarily_unavailable`.
    Unavailable,
    /// Anything else (an error, a transport failure): never expected.
    Other(String),
}

/// Clients for one tokend over both transports, cheap to clone into tasks.
#[derive(Clone)]
pub struct Target {
    http: SocketAddr,
    client: reqwest::Client,
    grpc: TokenServiceClient<Channel>,
}

impl Target {
    pub async fn new(api: &Api) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", api.grpc))
            .unwrap()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .unwrap();
        Self {
            http: api.http,
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            grpc: TokenServiceClient::new(channel),
        }
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<(u16, Value), String> {
        let r = self
            .client
            .post(format!("http://{}{path}", self.http))
            .form(form)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = r.status().as_u16();
        let body = r.bytes().await.map_err(|e| format!("POST {path}: {e}"))?;
        let json = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .map_err(|_| format!("POST {path}: {status} {}", String::from_utf8_lossy(&body)))?
        };
        Ok((status, json))
    }

    /// client_credentials for `client_id`; the access token or what went wrong.
    pub async fn issue(&self, via: Transport, client_id: &str) -> Result<String, String> {
        match via {
            Transport::Http => {
                let (status, body) = self
                    .post(
                        "/oauth/token",
                        &[
                            ("grant_type", "client_credentials"),
                            ("client_id", client_id),
                            ("client_secret", SECRET),
                        ],
                    )
                    .await?;
                match body["access_token"].as_str() {
                    Some(t) if status == 200 => Ok(t.to_owned()),
                    _ => Err(format!("HTTP issue: {status} {body}")),
                }
            }
            Transport::Grpc => self
                .grpc
                .clone()
                .issue(issue_request(client_id, SECRET))
                .await
                .map(|r| r.into_inner().access_token)
                .map_err(|s| format!("gRPC issue: {s:?}")),
        }
    }

    /// Introspection by `resource-server`.
    pub async fn introspect(&self, via: Transport, token: &str) -> Answer {
        self.introspect_as(via, "resource-server", token).await
    }

    /// Introspection by `client_id` (a refresh token is active only to the
    /// client it was issued to).
    pub async fn introspect_as(&self, via: Transport, client_id: &str, token: &str) -> Answer {
        match via {
            Transport::Http => {
                let (status, body) = match self
                    .post(
                        "/oauth/introspect",
                        &[
                            ("token", token),
                            ("client_id", client_id),
                            ("client_secret", SECRET),
                        ],
                    )
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return Answer::Other(e),
                };
                match (status, &body["active"]) {
                    (200, Value::Bool(true)) => Answer::Active,
                    (200, Value::Bool(false)) => Answer::Inactive,
                    (503, _) if body["error"] == "temporarily_unavailable" => Answer::Unavailable,
                    _ => Answer::Other(format!("HTTP introspect: {status} {body}")),
                }
            }
            Transport::Grpc => {
                let r = self
                    .grpc
                    .clone()
                    .introspect(IntrospectRequest {
                        client_id: client_id.into(),
                        ..introspect_request(token, SECRET)
                    })
                    .await;
                match r {
                    Ok(r) if r.get_ref().active => Answer::Active,
                    Ok(_) => Answer::Inactive,
                    Err(s)
                        if s.code() == tonic::Code::Unavailable
                            && reason(&s).as_deref() == Some("temporarily_unavailable") =>
                    {
                        Answer::Unavailable
                    }
                    Err(s) => Answer::Other(format!("gRPC introspect: {s:?}")),
                }
            }
        }
    }

    /// Revocation by `client_id` (the client the token was issued to).
    pub async fn revoke(&self, via: Transport, client_id: &str, token: &str) -> Result<(), String> {
        match via {
            Transport::Http => {
                let (status, body) = self
                    .post(
                        "/oauth/revoke",
                        &[
                            ("token", token),
                            ("client_id", client_id),
                            ("client_secret", SECRET),
                        ],
                    )
                    .await?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("HTTP revoke: {status} {body}"))
                }
            }
            Transport::Grpc => self
                .grpc
                .clone()
                .revoke(revoke_request(client_id, token))
                .await
                .map(|_| ())
                .map_err(|s| format!("gRPC revoke: {s:?}")),
        }
    }
}
