//! gRPC adapter for `tokend.v1.ClientAdmin`, the operator API, and its own
//! authentication: a bearer secret whose SHA-256 is configured as
//! `[admin] token_hash`, checked in constant time by an interceptor before
//! any handler runs. Every action writes one audit event (target
//! `tokend::audit`): who (the admin identity and peer address), what, which
//! client or subject, when, and the outcome; never a secret.
//!
//! The service is returned as an axum [`Router`] so the admin listener can
//! carry other operator endpoints (e.g. `/metrics`) on the same port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::oauth::{AdminError, ClientState, Core, now_unix_ms};
use crate::pb;
use crate::pb::client_admin_server::{ClientAdmin as ClientAdminApi, ClientAdminServer};
use crate::transport::grpc::{ERROR_DOMAIN, json_to_struct};

/// The identity every bearer-authenticated admin call is audited under.
pub const ADMIN_TOKEN_IDENTITY: &str = "admin-token";

fn status(code: Code, reason: &str, message: &str) -> Status {
    let details =
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new());
    Status::with_error_details(code, message, details)
}

/// The one conversion of an admin error to a gRPC status.
fn admin_status(e: AdminError) -> Status {
    {
        match &e {
            AdminError::UnknownClient => status(Code::NotFound, "unknown_client", &e.to_string()),
            AdminError::InvalidRequest(m) => status(Code::InvalidArgument, "invalid_request", m),
            AdminError::Store(err) => {
                tracing::warn!(error = %err, "admin call: store unavailable");
                status(
                    Code::Unavailable,
                    "temporarily_unavailable",
                    "the store cannot answer",
                )
            }
        }
    }
}

/// Checks `authorization: Bearer <secret>` against the configured hash.
#[derive(Clone)]
pub struct AdminAuth {
    expected: [u8; 32],
    who: &'static str,
}

impl AdminAuth {
    /// The admin API's bearer check.
    pub fn new(expected_sha256: [u8; 32]) -> Self {
        Self {
            expected: expected_sha256,
            who: "admin",
        }
    }

    /// The login app's bearer check (`tokend.v1.AuthorizationService`).
    pub fn login_app(expected_sha256: [u8; 32]) -> Self {
        Self {
            expected: expected_sha256,
            who: "login app",
        }
    }

    /// Lets the call through when it carries `authorization: Bearer <secret>`
    /// whose SHA-256 is the expected one; else UNAUTHENTICATED, audited.
    pub fn check(&self, req: &Request<()>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty());
        // Hash even when nothing was sent, so both failures cost the same.
        let digest: [u8; 32] = Sha256::digest(presented.unwrap_or("").as_bytes()).into();
        let ok = bool::from(digest.ct_eq(&self.expected)) && presented.is_some();
        if ok {
            return Ok(());
        }
        tracing::warn!(
            target: "tokend::audit",
            peer = %peer(req.extensions()),
            action = "authenticate",
            outcome = "denied",
            at_ms = now_unix_ms(),
            who = self.who,
            "call refused: missing or wrong bearer secret"
        );
        super::access::RequestRecord::of(req.extensions()).set_outcome("unauthenticated");
        Err(status(
            Code::Unauthenticated,
            "unauthenticated",
            match self.who {
                "admin" => "admin authentication required",
                _ => "login app authentication required",
            },
        ))
    }
}

fn peer(ext: &http::Extensions) -> String {
    ext.get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .or_else(|| {
            ext.get::<super::listen::ConnInfo>()
                .map(|c| c.remote.to_string())
        })
        .or_else(|| {
            ext.get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|c| c.remote_addr())
                .map(|a| a.to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The `ClientAdmin` implementation.
#[derive(Clone)]
pub struct ClientAdmin {
    core: Arc<Core>,
}

/// Writes the audit event for one admin action.
fn audit<T>(
    ext: &http::Extensions,
    action: &'static str,
    target_kind: &'static str,
    target: &str,
    result: Result<T, AdminError>,
) -> Result<T, Status> {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(AdminError::UnknownClient) => "unknown_client",
        Err(AdminError::InvalidRequest(_)) => "invalid_request",
        Err(AdminError::Store(_)) => "store_unavailable",
    };
    let peer = peer(ext);
    let at_ms = now_unix_ms();
    // Two shapes so the field is named for what it is (`client_id` or
    // `subject`); `target` would clash with the log record's own target.
    if target_kind == "subject" {
        tracing::info!(
            target: "tokend::audit",
            actor = ADMIN_TOKEN_IDENTITY,
            %peer,
            action,
            subject = target,
            outcome,
            at_ms,
            "admin action"
        );
    } else {
        tracing::info!(
            target: "tokend::audit",
            actor = ADMIN_TOKEN_IDENTITY,
            %peer,
            action,
            client_id = target,
            outcome,
            at_ms,
            "admin action"
        );
    }
    result.map_err(admin_status)
}

fn info(s: ClientState) -> pb::ClientInfo {
    let c = &s.client;
    let mut grants: Vec<String> = c
        .grant_types
        .iter()
        .map(|g| g.as_str().to_string())
        .collect();
    grants.sort();
    pb::ClientInfo {
        client_id: c.id.clone(),
        disabled: s.disabled,
        tokens_not_before_ms: s.tokens_not_before_ms.unwrap_or(0),
        secret_count: u32::try_from(c.secret_hashes.len()).unwrap_or(u32::MAX),
        token_endpoint_auth_method: c.auth_method.as_str().into(),
        grant_types: grants,
        scopes: c.scopes.clone(),
        default_scopes: c.default_scopes.clone(),
        audience: c.audience.clone(),
        access_ttl_secs: c.access_ttl_secs.unwrap_or(0),
        redirect_uris: c.redirect_uris.clone(),
        claims: (!c.claims.is_empty()).then(|| json_to_struct(c.claims.clone())),
        claims_in_response: c.claims_in_response,
        client_name: c.name.clone(),
        subject: c.subject.clone(),
        introspection: c.introspection.as_str().into(),
        out_of_band: c.out_of_band,
        revocation_feed: c.revocation_feed,
    }
}

impl ClientAdmin {
    async fn one(&self, id: &str) -> Result<pb::ClientInfo, AdminError> {
        let mut v = self.core.client_states(Some(id)).await?;
        v.pop().map(info).ok_or(AdminError::UnknownClient)
    }

    async fn set_disabled(
        &self,
        req: Request<pb::ClientRef>,
        disabled: bool,
    ) -> Result<Response<pb::ClientInfo>, Status> {
        let (_, ext, r) = req.into_parts();
        let result = self.core.set_client_disabled(&r.client_id, disabled).await;
        let action = if disabled {
            "disable_client"
        } else {
            "enable_client"
        };
        audit(&ext, action, "client", &r.client_id, result)?;
        Ok(Response::new(
            self.one(&r.client_id).await.map_err(admin_status)?,
        ))
    }
}

#[tonic::async_trait]
impl ClientAdminApi for ClientAdmin {
    async fn revoke_client_tokens(
        &self,
        req: Request<pb::RevokeClientTokensRequest>,
    ) -> Result<Response<pb::RevokeClientTokensResponse>, Status> {
        let (_, ext, r) = req.into_parts();
        let result = self.core.revoke_client_tokens(&r.client_id).await;
        let result = audit(&ext, "revoke_client_tokens", "client", &r.client_id, result);
        Ok(Response::new(pb::RevokeClientTokensResponse {
            not_before_ms: result?,
        }))
    }

    async fn disable_client(
        &self,
        req: Request<pb::ClientRef>,
    ) -> Result<Response<pb::ClientInfo>, Status> {
        self.set_disabled(req, true).await
    }

    async fn enable_client(
        &self,
        req: Request<pb::ClientRef>,
    ) -> Result<Response<pb::ClientInfo>, Status> {
        self.set_disabled(req, false).await
    }

    async fn list_clients(
        &self,
        req: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let (_, ext, _) = req.into_parts();
        let result = self.core.client_states(None).await;
        let result = audit(&ext, "list_clients", "client", "*", result);
        Ok(Response::new(pb::ListClientsResponse {
            clients: result?.into_iter().map(info).collect(),
        }))
    }

    async fn get_client(
        &self,
        req: Request<pb::ClientRef>,
    ) -> Result<Response<pb::ClientInfo>, Status> {
        let (_, ext, r) = req.into_parts();
        let result = self.one(&r.client_id).await;
        let result = audit(&ext, "get_client", "client", &r.client_id, result);
        Ok(Response::new(result?))
    }

    async fn revoke_subject_tokens(
        &self,
        req: Request<pb::RevokeSubjectTokensRequest>,
    ) -> Result<Response<pb::RevokeSubjectTokensResponse>, Status> {
        let (_, ext, r) = req.into_parts();
        let result = self.core.revoke_subject_tokens(&r.subject).await;
        let result = audit(&ext, "revoke_subject_tokens", "subject", &r.subject, result);
        Ok(Response::new(pb::RevokeSubjectTokensResponse {
            not_before_ms: result?,
        }))
    }
}

/// The admin gRPC service (authenticated) plus server reflection, as an axum
/// router for the admin listener.
pub fn router(core: Arc<Core>, auth: AdminAuth, max_message: usize) -> anyhow::Result<Router> {
    let svc = tonic::service::interceptor::InterceptedService::new(
        ClientAdminServer::new(ClientAdmin { core })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
        move |req: Request<()>| auth.check(&req).map(|()| req),
    );
    let (reflection_v1, reflection_v1alpha) =
        super::grpc::reflection(&["tokend.v1.ClientAdmin"], false, max_message)?;
    Ok(tonic::service::Routes::new(svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router())
}
