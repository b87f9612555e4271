//! tokend's `AuthorizationService`, as the login app sees it: every call
//! carries the bearer secret; every failure becomes a [`Failure`] the pages
//! can show (no gRPC detail reaches the browser).

use std::time::Duration;

use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub mod pb {
    tonic::include_proto!("tokend.v1");
}

use pb::authorization_service_client::AuthorizationServiceClient;
use pb::{
    AcceptAuthorizationRequest, GetAuthorizationRequest, GetAuthorizationResponse,
    RejectAuthorizationRequest,
};

/// Adds `authorization: Bearer <secret>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// Why a call to tokend failed, as the user sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// tokend refused the challenge: unknown, forged, expired or already
    /// answered (`INVALID_ARGUMENT` / `invalid_request`). A 400 page.
    BadChallenge,
    /// tokend is unreachable, refused our secret, or failed. A 502 page.
    Upstream,
}

#[derive(Clone)]
pub struct Tokend {
    client: AuthorizationServiceClient<InterceptedService<Channel, Bearer>>,
}

impl Tokend {
    /// A lazily connecting client (the login app starts even while tokend is
    /// down; each call then fails with [`Failure::Upstream`]).
    /// `ca_pem`: the CA certificates to trust for an `https://` URL.
    pub fn new(url: &str, ca_pem: Option<&str>, secret: &str) -> anyhow::Result<Self> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10));
        if let Some(pem) = ca_pem {
            endpoint = endpoint.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            )?;
        }
        let channel = endpoint.connect_lazy();
        let bearer: MetadataValue<_> = format!("Bearer {secret}")
            .parse()
            .map_err(|_| anyhow::anyhow!("the login app secret is not a valid header value"))?;
        Ok(Self {
            client: AuthorizationServiceClient::with_interceptor(channel, Bearer(bearer)),
        })
    }

    pub async fn get(&self, login_challenge: &str) -> Result<GetAuthorizationResponse, Failure> {
        self.client
            .clone()
            .get_authorization(GetAuthorizationRequest {
                login_challenge: login_challenge.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(failure)
    }

    /// Accepts for `subject`; returns where to send the browser.
    pub async fn accept(
        &self,
        login_challenge: &str,
        subject: &str,
        username: &str,
        granted_scope: Vec<String>,
        claims: Option<prost_types::Struct>,
    ) -> Result<String, Failure> {
        self.client
            .clone()
            .accept_authorization(AcceptAuthorizationRequest {
                login_challenge: login_challenge.to_owned(),
                subject: subject.to_owned(),
                granted_scope,
                claims,
                username: username.to_owned(),
            })
            .await
            .map(|r| r.into_inner().redirect_to)
            .map_err(failure)
    }

    /// Refuses with `access_denied`; returns where to send the browser.
    pub async fn deny(&self, login_challenge: &str) -> Result<String, Failure> {
        self.client
            .clone()
            .reject_authorization(RejectAuthorizationRequest {
                login_challenge: login_challenge.to_owned(),
                error: "access_denied".into(),
                error_description: "the user denied the request".into(),
            })
            .await
            .map(|r| r.into_inner().redirect_to)
            .map_err(failure)
    }
}

/// tokend answers an unknown, expired or answered challenge with
/// `INVALID_ARGUMENT` (reason `invalid_request`); everything else (no
/// connection, `UNAUTHENTICATED` for a wrong secret, `UNAVAILABLE`, ...) is
/// tokend's or the deployment's problem, not the user's.
fn failure(status: tonic::Status) -> Failure {
    match status.code() {
        Code::InvalidArgument => Failure::BadChallenge,
        code => {
            tracing::warn!(?code, message = status.message(), "tokend call failed");
            Failure::Upstream
        }
    }
}
