//! gRPC adapter: `tokend.v1.TokenService` and the login app's
//! `tokend.v1.AuthorizationService` onto the OAuth core, and the single
//! conversion from [`OAuthError`] to `tonic::Status` (status code by OAuth
//! error, always with a `google.rpc.ErrorInfo` whose reason is the OAuth code).

use crate::oauth::authorize::USERNAME_CLAIM;
use std::collections::HashMap;
use std::sync::Arc;

use secrecy::SecretString;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::access::RequestRecord;
use crate::oauth::{Core, Credentials, Introspection, OAuthError, PresentedVia, TokenRequest};
use crate::pb;

/// ErrorInfo domain for every tokend error.
pub const ERROR_DOMAIN: &str = "tokend";

/// The one conversion of an OAuth error to a gRPC status.
pub fn status(e: OAuthError) -> Status {
    {
        let code = match &e {
            OAuthError::InvalidRequest(_)
            | OAuthError::InvalidGrant(_)
            | OAuthError::InvalidScope(_)
            | OAuthError::InvalidTarget(_)
            | OAuthError::UnsupportedGrantType
            | OAuthError::UnsupportedTokenType
            | OAuthError::UnsupportedResponseType => Code::InvalidArgument,
            OAuthError::InvalidClient => Code::Unauthenticated,
            OAuthError::UnauthorizedClient(_) | OAuthError::AccessDenied(_) => {
                Code::PermissionDenied
            }
            OAuthError::RateLimited { .. } | OAuthError::RequestTooLarge(_) => {
                Code::ResourceExhausted
            }
            OAuthError::TemporarilyUnavailable(_) => Code::Unavailable,
            OAuthError::ServerError(_) => Code::Internal,
        };
        let mut details =
            ErrorDetails::with_error_info(e.code(), ERROR_DOMAIN, HashMap::<String, String>::new());
        if let OAuthError::RateLimited { retry_after } = &e {
            details.set_retry_info(Some(*retry_after));
        }
        Status::with_error_details(code, e.description(), details)
    }
}

/// Records an RPC's outcome in the access log and metrics, and converts its
/// error: every RPC answers through here, so the error-to-outcome mapping
/// is written once.
pub fn reply<T>(rec: &RequestRecord, r: Result<T, OAuthError>) -> Result<T, Status> {
    rec.outcome(&r);
    r.map_err(status)
}

/// The server reflection services (v1 and v1alpha) of one listener,
/// advertising exactly the services it serves (plus health where served):
/// the public port does not list the admin API, the admin port not the
/// token API.
pub fn reflection(
    services: &[&str],
    with_health: bool,
    max_message: usize,
) -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET);
        if with_health {
            b = b
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
        }
        for s in services {
            b = b.with_service_name(*s);
        }
        b
    };
    Ok((
        builder().build_v1()?.max_decoding_message_size(max_message),
        builder()
            .build_v1alpha()?
            .max_decoding_message_size(max_message),
    ))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A request's client credentials: the id and secret fields, or an RFC
/// 7523 client assertion (`client_assertion_type`, `client_assertion`),
/// never both.
pub(crate) struct RpcCredentials {
    pub client_id: String,
    pub client_secret: String,
    pub client_assertion_type: String,
    pub client_assertion: String,
}

pub(crate) fn credentials(
    c: RpcCredentials,
    rec: &RequestRecord,
) -> Result<Credentials, OAuthError> {
    let peer = rec.peer_ip();
    let cert = rec.client_cert();
    let assertion = Credentials::from_assertion(
        Some(&c.client_id),
        Some(&c.client_assertion_type),
        Some(&c.client_assertion),
        PresentedVia::Grpc,
    );
    let assertion = match assertion {
        Ok(a) => a,
        Err(e) => {
            rec.client(&c.client_id);
            return Err(e);
        }
    };
    if let Some(mut creds) = assertion {
        rec.client(&creds.client_id);
        if !c.client_secret.is_empty() {
            return Err(OAuthError::InvalidClient);
        }
        creds.peer = peer;
        creds.cert = cert;
        return Ok(creds);
    }
    rec.client(&c.client_id);
    Ok(Credentials {
        client_id: c.client_id,
        secret: non_empty(c.client_secret).map(SecretString::from),
        secret_alt: None,
        via: PresentedVia::Grpc,
        assertion: None,
        peer,
        cert,
    })
}

/// The credential fields every authenticated request message carries.
macro_rules! rpc_credentials {
    ($r:expr) => {
        $crate::transport::grpc::RpcCredentials {
            client_id: std::mem::take(&mut $r.client_id),
            client_secret: std::mem::take(&mut $r.client_secret),
            client_assertion_type: std::mem::take(&mut $r.client_assertion_type),
            client_assertion: std::mem::take(&mut $r.client_assertion),
        }
    };
}
pub(crate) use rpc_credentials;

/// The `TokenService` implementation.
#[derive(Clone)]
pub struct TokenService {
    core: Arc<Core>,
}

impl TokenService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for TokenService {
    async fn issue(
        &self,
        request: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueResponse>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let mut r = request.into_inner();
        rec.grant_type(&r.grant_type);
        let creds = reply(&rec, credentials(rpc_credentials!(r), &rec))?;
        let req = TokenRequest {
            grant_type: r.grant_type,
            // Each repeated entry may itself be space-delimited, as on HTTP.
            scope: r
                .scope
                .iter()
                .flat_map(|s| crate::oauth::scope::split(s))
                .collect(),
            audience: r
                .audience
                .into_iter()
                .chain(r.resource)
                .filter(|a| !a.is_empty())
                .collect(),
            code: non_empty(r.code),
            redirect_uri: non_empty(r.redirect_uri),
            code_verifier: non_empty(r.code_verifier),
            refresh_token: non_empty(r.refresh_token),
            subject_token: non_empty(r.subject_token),
            subject_token_type: non_empty(r.subject_token_type),
            actor_token: non_empty(r.actor_token),
            actor_token_type: non_empty(r.actor_token_type),
            requested_token_type: non_empty(r.requested_token_type),
        };
        let t = reply(&rec, self.core.token(&creds, req).await)?;
        Ok(Response::new(pb::IssueResponse {
            access_token: t.access_token,
            token_type: t.token_type.to_string(),
            expires_in: i64::try_from(t.expires_in).unwrap_or(i64::MAX),
            scope: t.scope,
            refresh_token: t.refresh_token.unwrap_or_default(),
            claims: (!t.extra.is_empty()).then(|| json_to_struct(t.extra)),
            issued_token_type: t.issued_token_type.unwrap_or_default().to_owned(),
        }))
    }

    async fn introspect(
        &self,
        request: Request<pb::IntrospectRequest>,
    ) -> Result<Response<pb::IntrospectResponse>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let mut r = request.into_inner();
        let creds = reply(&rec, credentials(rpc_credentials!(r), &rec))?;
        let hint = non_empty(r.token_type_hint);
        let answer = reply(
            &rec,
            self.core
                .introspect(&creds, &r.token, hint.as_deref())
                .await,
        )?;
        Ok(Response::new(match answer {
            Introspection::Inactive => pb::IntrospectResponse::default(),
            Introspection::Active(t) => {
                let t = *t;
                let username = match t.claims.get(USERNAME_CLAIM) {
                    Some(serde_json::Value::String(u)) => u.clone(),
                    _ => String::new(),
                };
                let act = match &t.act {
                    Some(serde_json::Value::Object(m)) => Some(json_to_struct(m.clone())),
                    _ => None,
                };
                pb::IntrospectResponse {
                    active: true,
                    username,
                    act,
                    scope: t.scope,
                    client_id: t.client_id,
                    sub: t.sub,
                    aud: t.aud,
                    iss: t.iss,
                    jti: t.jti,
                    exp: t.exp.unwrap_or(0),
                    iat: t.iat.unwrap_or(0),
                    nbf: t.nbf.unwrap_or(0),
                    token_type: t.token_type.into(),
                    claims: (!t.claims.is_empty()).then(|| json_to_struct(t.claims)),
                    cnf: t.cnf.map(|c| pb::Confirmation {
                        x5t_s256: c.x5t_s256.unwrap_or_default(),
                    }),
                }
            }
        }))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let mut r = request.into_inner();
        let creds = reply(&rec, credentials(rpc_credentials!(r), &rec))?;
        let hint = non_empty(r.token_type_hint);
        reply(
            &rec,
            self.core.revoke(&creds, &r.token, hint.as_deref()).await,
        )?;
        Ok(Response::new(pb::RevokeResponse {}))
    }
}

/// The login app's `AuthorizationService` implementation.
#[derive(Clone)]
pub struct AuthorizationService {
    core: Arc<Core>,
}

impl AuthorizationService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl pb::authorization_service_server::AuthorizationService for AuthorizationService {
    async fn get_authorization(
        &self,
        request: Request<pb::GetAuthorizationRequest>,
    ) -> Result<Response<pb::GetAuthorizationResponse>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let r = request.into_inner();
        let info = reply(&rec, self.core.get_authorization(&r.login_challenge).await)?;
        Ok(Response::new(pb::GetAuthorizationResponse {
            client_id: info.client_id,
            client_name: info.client_name,
            requested_scope: info.requested_scope,
            redirect_uri: info.redirect_uri,
        }))
    }

    async fn accept_authorization(
        &self,
        request: Request<pb::AcceptAuthorizationRequest>,
    ) -> Result<Response<pb::AcceptAuthorizationResponse>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let r = request.into_inner();
        let granted: Vec<String> = r
            .granted_scope
            .iter()
            .flat_map(|s| crate::oauth::scope::split(s))
            .collect();
        let claims = r.claims.map(struct_to_json).unwrap_or_default();
        let redirect_to = reply(
            &rec,
            self.core
                .accept_authorization(
                    &r.login_challenge,
                    &r.subject,
                    &r.username,
                    &granted,
                    claims,
                )
                .await,
        )?;
        Ok(Response::new(pb::AcceptAuthorizationResponse {
            redirect_to,
        }))
    }

    async fn reject_authorization(
        &self,
        request: Request<pb::RejectAuthorizationRequest>,
    ) -> Result<Response<pb::RejectAuthorizationResponse>, Status> {
        let rec = RequestRecord::of(request.extensions());
        let r = request.into_inner();
        let redirect_to = reply(
            &rec,
            self.core
                .reject_authorization(&r.login_challenge, &r.error, &r.error_description)
                .await,
        )?;
        Ok(Response::new(pb::RejectAuthorizationResponse {
            redirect_to,
        }))
    }
}

/// JSON object to `google.protobuf.Struct`.
pub fn json_to_struct(map: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(k, v)| (k, json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// `google.protobuf.Struct` to a JSON object (login-app claims).
pub fn struct_to_json(s: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::NumberValue(n)) => {
            // Whole numbers stay integers, as partners' claims (ids) are.
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                serde_json::Value::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into)
            }
        }
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::ListValue(l)) => l.values.into_iter().map(value_to_json).collect(),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
    }
}
