//! A client's view of one running tokend, in-process ([`super::app`]) or a
//! child process ([`super::process`]): its listener addresses and request
//! helpers over both transports, including the two readiness probes.

use std::net::SocketAddr;

use tokend::pb::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::SECRET;
use super::http::basic_header;

/// Addresses and clients of one tokend.
#[derive(Clone, Debug)]
pub struct Api {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The admin listener, when the config sets `[admin] listen`.
    pub admin: Option<SocketAddr>,
    /// Never follows redirects: every `Location` is read by hand.
    pub http_client: reqwest::Client,
}

impl Api {
    pub fn new(http: SocketAddr, grpc: SocketAddr, admin: Option<SocketAddr>) -> Self {
        Self {
            http,
            grpc,
            admin,
            http_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// GET `path` on the HTTP listener.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http_client.get(self.url(path)).send().await.unwrap()
    }

    /// GET `path` on the HTTP listener; the JSON body.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// POSTs a form body with optional Basic credentials.
    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http_client.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.header("Authorization", basic_header(id, secret));
        }
        req.send().await.unwrap()
    }

    /// client_credentials over HTTP for a test client; returns the JSON.
    pub async fn token(&self, client_id: &str, extra: &[(&str, &str)]) -> serde_json::Value {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        let r = self
            .post_form("/oauth/token", Some((client_id, SECRET)), &form)
            .await;
        assert_eq!(r.status(), 200, "token request failed");
        r.json().await.unwrap()
    }

    /// client_credentials with the credentials in the form body
    /// (`client_secret_post`) and `extra` parameters; the raw response.
    pub async fn token_in_body(
        &self,
        client_id: &str,
        secret: &str,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ];
        form.extend_from_slice(extra);
        self.post_form("/oauth/token", None, &form).await
    }

    /// The raw response to a client_credentials request with Basic
    /// credentials (for the refusals: 401, 429, ...).
    pub async fn token_response(&self, client_id: &str, secret: &str) -> reqwest::Response {
        self.post_form(
            "/oauth/token",
            Some((client_id, secret)),
            &[("grant_type", "client_credentials")],
        )
        .await
    }

    /// A client_credentials access token for `client_id` (default scopes).
    pub async fn access_token(&self, client_id: &str) -> String {
        self.token(client_id, &[]).await["access_token"]
            .as_str()
            .expect("no access_token in the token response")
            .to_owned()
    }

    /// The raw introspection response for `token`, asked by `resource-server`.
    pub async fn introspect_response(&self, token: &str) -> reqwest::Response {
        self.post_form(
            "/oauth/introspect",
            Some(("resource-server", SECRET)),
            &[("token", token)],
        )
        .await
    }

    /// Introspection of `token` by `resource-server`; must answer 200.
    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        let r = self.introspect_response(token).await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Introspection of `token` by `client_id` (a refresh token is active
    /// only to the client it was issued to); must answer 200.
    pub async fn introspect_as(&self, client_id: &str, token: &str) -> serde_json::Value {
        let r = self
            .post_form(
                "/oauth/introspect",
                Some((client_id, SECRET)),
                &[("token", token)],
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Revocation of `token` by `client_id` (the client it was issued to).
    pub async fn revoke(&self, client_id: &str, token: &str) -> reqwest::Response {
        self.post_form(
            "/oauth/revoke",
            Some((client_id, SECRET)),
            &[("token", token)],
        )
        .await
    }

    pub async fn grpc_channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn grpc_client(&self) -> TokenServiceClient<Channel> {
        TokenServiceClient::new(self.grpc_channel().await)
    }

    /// HTTP status of `/readyz` (0 when the request fails).
    pub async fn readyz(&self) -> u16 {
        match self.http_client.get(self.url("/readyz")).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// gRPC health status of "" and of the token service (1 = SERVING,
    /// 2 = NOT_SERVING); `None` when the two disagree or the call fails.
    pub async fn grpc_health(&self) -> Option<i32> {
        let mut h = HealthClient::new(self.grpc_channel().await);
        let mut seen = Vec::new();
        for service in ["", "tokend.v1.TokenService"] {
            let r = h
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .ok()?
                .into_inner();
            seen.push(r.status);
        }
        (seen[0] == seen[1]).then_some(seen[0])
    }

    /// Ready on both probes: `/readyz` 200 and gRPC health SERVING.
    pub async fn is_ready(&self) -> bool {
        self.readyz().await == 200 && self.grpc_health().await == Some(1)
    }

    /// Not ready on both probes: `/readyz` 503 and gRPC health NOT_SERVING.
    pub async fn is_not_ready(&self) -> bool {
        self.readyz().await == 503 && self.grpc_health().await == Some(2)
    }
}
