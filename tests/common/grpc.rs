//! gRPC-side helpers: request builders, the ErrorInfo reason of a status, and
//! the admin API's client with its bearer secret.

use tokend::pb;
use tokend::pb::client_admin_client::ClientAdminClient;
use tokend::pb::{IntrospectRequest, IssueRequest, RevokeRequest};
use tonic::Status;
use tonic::transport::Channel;

use super::SECRET;
use super::api::Api;

/// The admin API's bearer secret in configs made with
/// `ConfigBuilder::admin(Some(ADMIN_SECRET))`.
pub const ADMIN_SECRET: &str = "admin-secret-for-tests";

/// A client_credentials Issue request.
pub fn issue_request(client_id: &str, secret: &str) -> IssueRequest {
    IssueRequest {
        grant_type: "client_credentials".into(),
        client_id: client_id.into(),
        client_secret: secret.into(),
        ..Default::default()
    }
}

/// An Introspect request by `resource-server` with `secret`.
pub fn introspect_request(token: &str, secret: &str) -> IntrospectRequest {
    IntrospectRequest {
        client_id: "resource-server".into(),
        client_secret: secret.into(),
        token: token.into(),
        token_type_hint: String::new(),
        ..Default::default()
    }
}

/// A Revoke request for `token` by `client_id` with the test secret.
pub fn revoke_request(client_id: &str, token: &str) -> RevokeRequest {
    RevokeRequest {
        client_id: client_id.into(),
        client_secret: SECRET.into(),
        token: token.into(),
        token_type_hint: String::new(),
        ..Default::default()
    }
}

/// The ErrorInfo reason of a gRPC status, if it has one.
pub fn reason(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason)
}

/// The ErrorInfo reason of a gRPC status (which must have one).
pub fn error_reason(status: &tonic::Status) -> String {
    reason(status).unwrap_or_else(|| panic!("status without ErrorInfo: {status:?}"))
}

/// client_credentials over gRPC with the test secret; the access token.
pub async fn grpc_issue(
    c: &mut tokend::pb::token_service_client::TokenServiceClient<Channel>,
    client_id: &str,
) -> Result<String, tonic::Status> {
    c.issue(issue_request(client_id, SECRET))
        .await
        .map(|r| r.into_inner().access_token)
}

type AddBearer =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Admin = ClientAdminClient<tonic::service::interceptor::InterceptedService<Channel, AddBearer>>;

/// The ClientAdmin API as the tests call it: one method per call, taking
/// the id as a string and returning the response message or the status.
pub struct AdminClient(Admin);

impl AdminClient {
    /// RevokeClientTokens: every token of `client_id` issued until now.
    pub async fn revoke_client(
        &mut self,
        client_id: &str,
    ) -> Result<pb::RevokeClientTokensResponse, Status> {
        let req = pb::RevokeClientTokensRequest {
            client_id: client_id.into(),
        };
        Ok(self.0.revoke_client_tokens(req).await?.into_inner())
    }

    /// RevokeSubjectTokens: every token for `subject` issued until now.
    pub async fn revoke_subject(
        &mut self,
        subject: &str,
    ) -> Result<pb::RevokeSubjectTokensResponse, Status> {
        let req = pb::RevokeSubjectTokensRequest {
            subject: subject.into(),
        };
        Ok(self.0.revoke_subject_tokens(req).await?.into_inner())
    }

    pub async fn disable(&mut self, client_id: &str) -> Result<pb::ClientInfo, Status> {
        Ok(self
            .0
            .disable_client(client_ref(client_id))
            .await?
            .into_inner())
    }

    pub async fn enable(&mut self, client_id: &str) -> Result<pb::ClientInfo, Status> {
        Ok(self
            .0
            .enable_client(client_ref(client_id))
            .await?
            .into_inner())
    }

    pub async fn get(&mut self, client_id: &str) -> Result<pb::ClientInfo, Status> {
        Ok(self.0.get_client(client_ref(client_id)).await?.into_inner())
    }

    pub async fn list(&mut self) -> Result<Vec<pb::ClientInfo>, Status> {
        let req = pb::ListClientsRequest {};
        Ok(self.0.list_clients(req).await?.into_inner().clients)
    }
}

fn client_ref(client_id: &str) -> pb::ClientRef {
    pb::ClientRef {
        client_id: client_id.into(),
    }
}

/// An admin client on `api`'s admin listener sending `Bearer <token>` (or
/// nothing).
pub async fn admin_client(api: &Api, token: Option<&str>) -> AdminClient {
    let ch = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        api.admin.expect("admin listener")
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
        token.map(|t| format!("Bearer {t}").parse().unwrap());
    let f: AddBearer = Box::new(move |mut r: tonic::Request<()>| {
        if let Some(h) = &header {
            r.metadata_mut().insert("authorization", h.clone());
        }
        Ok(r)
    });
    AdminClient(ClientAdminClient::with_interceptor(ch, f))
}
