//! Signing keys for JWT client assertions and workload tokens, as a
//! partner's library (or a workload's issuer) would sign them: real key
//! pairs, signed by the `jsonwebtoken` crate.

use jsonwebtoken::{EncodingKey, Header};
use serde_json::Value;
use tokend::pb::{IntrospectRequest, IssueRequest, RevokeRequest};
use tokend::token::{Algorithm, SigningKey};

use super::Api;

/// RFC 7523's `client_assertion_type`.
pub const TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's key pair: its private PEM (for jsonwebtoken) and public JWK.
pub struct ClientKey {
    pub pem: String,
    pub alg: jsonwebtoken::Algorithm,
    pub jwk: Value,
}

impl ClientKey {
    pub fn new(alg: jsonwebtoken::Algorithm) -> Self {
        let ours = match alg {
            jsonwebtoken::Algorithm::RS256 | jsonwebtoken::Algorithm::PS256 => Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256 => Algorithm::ES256,
            _ => Algorithm::EdDSA,
        };
        let pem = tokend::token::keys::generate_pem(ours).unwrap();
        let mut jwk = SigningKey::from_pem(ours, pem.as_bytes())
            .unwrap()
            .verify_key()
            .jwk
            .clone();
        if alg == jsonwebtoken::Algorithm::PS256 {
            jwk["alg"] = "PS256".into();
        }
        Self { pem, alg, jwk }
    }

    pub fn encoding_key(&self) -> EncodingKey {
        match self.alg {
            jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem.as_bytes()),
            jsonwebtoken::Algorithm::EdDSA => EncodingKey::from_ed_pem(self.pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(self.pem.as_bytes()),
        }
        .unwrap()
    }

    /// Signs `claims`, with the key's `kid` in the header when `kid`.
    pub fn sign(&self, claims: &Value, kid: bool) -> String {
        let mut header = Header::new(self.alg);
        if kid {
            header.kid = self.jwk["kid"].as_str().map(str::to_owned);
        }
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }
}

/// A client_credentials request at the token endpoint with `assertion` as
/// the client assertion, plus `extra` form fields.
pub async fn token_with(api: &Api, assertion: &str, extra: &[(&str, &str)]) -> reqwest::Response {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_assertion_type", TYPE),
        ("client_assertion", assertion),
    ];
    form.extend_from_slice(extra);
    api.post_form("/oauth/token", None, &form).await
}

/// `token` sent to `path` (introspection or revocation), the caller
/// authenticated by `assertion`.
pub async fn about_token_with(
    api: &Api,
    path: &str,
    token: &str,
    assertion: &str,
) -> reqwest::Response {
    api.post_form(
        path,
        None,
        &[
            ("token", token),
            ("client_assertion_type", TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

/// Whether `assertion` gets a token within `within` (polling: a key being
/// picked up by a reload or a refetch).
pub async fn accepted_within(api: &Api, assertion: &str, within: std::time::Duration) -> bool {
    super::eventually(within, || async {
        token_with(api, assertion, &[]).await.status() == 200
    })
    .await
}

/// gRPC requests authenticated by `assertion`.
pub fn grpc_issue(assertion: &str) -> IssueRequest {
    IssueRequest {
        grant_type: "client_credentials".into(),
        client_assertion_type: TYPE.into(),
        client_assertion: assertion.into(),
        ..Default::default()
    }
}

pub fn grpc_introspect(token: &str, assertion: &str) -> IntrospectRequest {
    IntrospectRequest {
        token: token.into(),
        client_assertion_type: TYPE.into(),
        client_assertion: assertion.into(),
        ..Default::default()
    }
}

pub fn grpc_revoke(token: &str, assertion: &str) -> RevokeRequest {
    RevokeRequest {
        token: token.into(),
        client_assertion_type: TYPE.into(),
        client_assertion: assertion.into(),
        ..Default::default()
    }
}
