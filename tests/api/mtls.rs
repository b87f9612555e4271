//! RFC 8705 over real TLS sockets, with certificates made by rcgen:
//! `tls_client_auth` by SAN URI (a SPIFFE ID), SAN DNS, subject DN and SAN
//! IP, and `self_signed_tls_client_auth`, at the token, introspection and
//! revocation endpoints over HTTP and at Issue, Introspect, Revoke and
//! RevocationFeed.Watch over gRPC; every refusal answers like a wrong
//! secret; certificate-bound tokens carry `cnf` in the JWT and in
//! introspection; secret clients without certificates keep working on the
//! same listener; hostile certificates end in a handshake failure or
//! `invalid_client`; certificates and tokens stay out of the log.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use sha2::Digest;
use tempfile::TempDir;
use tokend::pb::revocation_feed_client::RevocationFeedClient;
use tokend::pb::token_service_client::TokenServiceClient;
use tokend::pb::{IntrospectRequest, IssueRequest, RevokeRequest, WatchRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use toml::Table;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::common::grpc::reason;
use crate::common::http::jwt_parts;
use crate::common::pki::{Ca, ca, client_config, leaf};
use crate::common::{ConfigBuilder, SECRET, TestApp, TokendProcess};

const SPIFFE_ID: &str = "spiffe://example.org/ns/payments/sa/api";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A client's certificate and key.
#[derive(Clone)]
struct Id {
    cert: String,
    key: String,
    der: Vec<u8>,
}

impl Id {
    /// A certificate from `ca` (or self-signed) with what `f` sets.
    fn new(ca: Option<&Ca>, f: impl FnOnce(&mut CertificateParams)) -> Self {
        Self::with_key(ca, KeyPair::generate().unwrap(), f)
    }

    fn with_key(ca: Option<&Ca>, key: KeyPair, f: impl FnOnce(&mut CertificateParams)) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "client");
        f(&mut p);
        let cert = match ca {
            Some(ca) => p.signed_by(&key, ca).unwrap(),
            None => p.self_signed(&key).unwrap(),
        };
        Self {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn spiffe(ca: &Ca) -> Self {
        Self::new(Some(ca), |p| {
            p.subject_alt_names
                .push(SanType::URI(SPIFFE_ID.try_into().unwrap()))
        })
    }

    /// RFC 8705 3.1's `x5t#S256` of this certificate.
    fn thumbprint(&self) -> String {
        B64.encode(sha2::Sha256::digest(&self.der))
    }
}

/// A self-signed certificate and the public JWK of its key (P-256).
fn self_signed() -> (Id, Value) {
    let key = KeyPair::generate().unwrap();
    let raw = key.public_key_raw().to_vec();
    assert_eq!((raw.len(), raw[0]), (65, 4), "an uncompressed P-256 point");
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..]),
    });
    let id = Id::with_key(None, key, |p| {
        p.distinguished_name.push(DnType::CommonName, "self-signed");
    });
    (id, jwk)
}

/// The test's PKI: tokend's server certificate (from `server_ca`) and the
/// client CA, written into a folder.
struct Pki {
    dir: TempDir,
    server_ca: Ca,
    client_ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let server_ca = ca("server CA");
        let client_ca = ca("client CA");
        let (cert, key, _) = leaf(&server_ca, "tokend");
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        std::fs::write(dir.path().join("client-ca.pem"), client_ca.pem()).unwrap();
        Self {
            dir,
            server_ca,
            client_ca,
        }
    }

    fn ca_pem(&self) -> String {
        self.server_ca.pem()
    }

    /// TLS on both listeners, client certificates optional, validated
    /// against the client CA, self-signed ones admitted when `self_signed`.
    fn config(&self, self_signed: bool) -> ConfigBuilder {
        tls(self.dir.path(), self_signed)
    }
}

fn tls(dir: &Path, self_signed: bool) -> ConfigBuilder {
    ConfigBuilder::memory()
        .set_path("tls.cert_file", &dir.join("cert.pem"))
        .set_path("tls.key_file", &dir.join("key.pem"))
        .set_path("tls.client_ca_file", &dir.join("client-ca.pem"))
        .set("tls.client_auth", "optional")
        .set("tls.self_signed_client_certs", self_signed)
}

fn mtls_client(id: &str, key: &str, value: &str) -> Table {
    let mut t = toml::toml! {
        client_id = (id)
        token_endpoint_auth_method = "tls_client_auth"
        grant_types = ["client_credentials"]
        introspection = "any"
        revocation_feed = true
    };
    t.insert(key.into(), value.into());
    t
}

/// The four RFC 8705 names, one client each.
fn clients(b: ConfigBuilder) -> ConfigBuilder {
    b.client(mtls_client(
        "spiffe-client",
        "tls_client_auth_san_uri",
        SPIFFE_ID,
    ))
    .client(mtls_client(
        "dns-client",
        "tls_client_auth_san_dns",
        "orders.internal.example",
    ))
    .client(mtls_client(
        "dn-client",
        "tls_client_auth_subject_dn",
        "CN=Billing  Service,OU=payments,O=Example\\, Inc.,C=DE",
    ))
    .client(mtls_client(
        "ip-client",
        "tls_client_auth_san_ip",
        "10.1.2.3",
    ))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn tls_client(ca_pem: &str, id: Option<&Id>) -> rustls::ClientConfig {
    client_config(
        ca_pem,
        id.map(|id| (id.cert.as_str(), id.key.as_str())),
        &[b"http/1.1"],
    )
}

/// An HTTP answer: status, headers (lower-case text), JSON body (`Null`
/// when empty).
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    headers: String,
    body: Value,
}

/// A form POST over HTTPS/1.1 with `cfg`; `Err` when the connection fails.
async fn post_with(
    addr: SocketAddr,
    cfg: rustls::ClientConfig,
    path: &str,
    basic: Option<&str>,
    form: &[(&str, &str)],
) -> Result<Answer, String> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let auth = basic
        .map(|b| format!("Authorization: {b}\r\n"))
        .unwrap_or_default();
    tls.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or(text.clone())?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(text.clone())?;
    Ok(Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).map_err(|_| text.clone())?
        },
    })
}

async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    id: Option<&Id>,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer, String> {
    post_with(addr, tls_client(ca_pem, id), path, None, form).await
}

/// client_credentials for `client_id` with the certificate `id`.
async fn token(addr: SocketAddr, ca_pem: &str, id: Option<&Id>, client_id: &str) -> Answer {
    post(
        addr,
        ca_pem,
        id,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
        ],
    )
    .await
    .unwrap()
}

async fn access_token(addr: SocketAddr, ca_pem: &str, id: &Id, client_id: &str) -> String {
    let a = token(addr, ca_pem, Some(id), client_id).await;
    assert_eq!(a.status, 200, "{client_id}: {a:?}");
    a.body["access_token"].as_str().unwrap().to_owned()
}

async fn channel(addr: SocketAddr, ca_pem: &str, id: Option<&Id>) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = id {
        tls = tls.identity(tonic::transport::Identity::from_pem(&id.cert, &id.key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn grpc_issue(ch: &Channel, client_id: &str) -> Result<String, tonic::Status> {
    TokenServiceClient::new(ch.clone())
        .issue(IssueRequest {
            grant_type: "client_credentials".into(),
            client_id: client_id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().access_token)
}

/// `invalid_client` as a wrong secret in the body gets it.
async fn wrong_secret(addr: SocketAddr, ca_pem: &str) -> Answer {
    let a = post(
        addr,
        ca_pem,
        None,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "orders-service"),
            ("client_secret", "wrong"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    a
}

fn assert_unauthenticated(r: Result<String, tonic::Status>, what: &str) {
    let s = r.expect_err(what);
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{what}: {s:?}");
    assert_eq!(reason(&s).as_deref(), Some("invalid_client"), "{what}");
}

#[tokio::test]
async fn tls_client_auth_by_each_rfc8705_name_over_http_and_grpc() {
    let pki = Pki::new();
    // Many refusals from one address below: no back-off here.
    let config = clients(pki.config(false)).set("auth_throttle.enabled", false);
    let app = TestApp::start_unready(&config).await;
    let ca_pem = pki.ca_pem();
    let c = &pki.client_ca;
    let spiffe = Id::spiffe(c);
    let dns = Id::new(Some(c), |p| {
        p.subject_alt_names.push(SanType::DnsName(
            "Orders.Internal.Example".try_into().unwrap(),
        ))
    });
    // The DN as a certificate holds it: C, O, OU, CN (the string lists
    // them the other way round), in other spacing and case.
    let dn = Id::new(Some(c), |p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CountryName, "DE");
        p.distinguished_name
            .push(DnType::OrganizationName, "Example, Inc.");
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, "Payments");
        p.distinguished_name
            .push(DnType::CommonName, "billing service");
    });
    let ip = Id::new(Some(c), |p| {
        p.subject_alt_names
            .push(SanType::IpAddress("10.1.2.3".parse::<IpAddr>().unwrap()))
    });
    let cases = [
        ("spiffe-client", &spiffe),
        ("dns-client", &dns),
        ("dn-client", &dn),
        ("ip-client", &ip),
    ];
    let refused = wrong_secret(app.http, &ca_pem).await;
    for (client_id, id) in cases {
        let t = access_token(app.http, &ca_pem, id, client_id).await;
        let (_, claims) = jwt_parts(&t);
        assert_eq!(claims["client_id"], client_id);
        assert!(claims.get("cnf").is_none(), "not a bound client");
        let ch = channel(app.grpc, &ca_pem, Some(id)).await;
        let g = grpc_issue(&ch, client_id).await.unwrap();
        assert!(g.starts_with("eyJ"));
        // Another client's certificate is no one else's.
        for (other, _) in cases.iter().filter(|(o, _)| *o != client_id) {
            let a = token(app.http, &ca_pem, Some(id), other).await;
            assert_eq!(
                (a.status, &a.body),
                (refused.status, &refused.body),
                "{other} with {client_id}'s cert"
            );
            assert_unauthenticated(grpc_issue(&ch, other).await, other);
        }
    }

    // Introspection, revocation and the feed take the certificate too.
    let t = access_token(app.http, &ca_pem, &spiffe, "spiffe-client").await;
    let form = [("client_id", "spiffe-client"), ("token", t.as_str())];
    let a = post(app.http, &ca_pem, Some(&spiffe), "/oauth/introspect", &form)
        .await
        .unwrap();
    assert_eq!(a.body["active"], true, "{a:?}");
    let ch = channel(app.grpc, &ca_pem, Some(&spiffe)).await;
    let mut grpc = TokenServiceClient::new(ch.clone());
    let i = grpc
        .introspect(IntrospectRequest {
            client_id: "spiffe-client".into(),
            token: t.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(i.active);
    let mut feed = RevocationFeedClient::new(ch.clone());
    let mut stream = feed
        .watch(WatchRequest {
            client_id: "spiffe-client".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let a = post(app.http, &ca_pem, Some(&spiffe), "/oauth/revoke", &form)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let a = post(app.http, &ca_pem, Some(&spiffe), "/oauth/introspect", &form)
        .await
        .unwrap();
    assert_eq!(a.body, json!({"active": false}));
    let t2 = grpc_issue(&ch, "spiffe-client").await.unwrap();
    grpc.revoke(RevokeRequest {
        client_id: "spiffe-client".into(),
        token: t2,
        ..Default::default()
    })
    .await
    .unwrap();
    // Without its certificate, the client cannot watch.
    let plain = channel(app.grpc, &ca_pem, None).await;
    let s = RevocationFeedClient::new(plain.clone())
        .watch(WatchRequest {
            client_id: "spiffe-client".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);

    // A secret client without a certificate, on the same listeners.
    let a = post_with(
        app.http,
        tls_client(&ca_pem, None),
        "/oauth/token",
        Some(&crate::common::http::basic_header("orders-service", SECRET)),
        &[("grant_type", "client_credentials")],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let g = TokenServiceClient::new(plain)
        .issue(crate::common::grpc::issue_request("orders-service", SECRET))
        .await;
    assert!(g.is_ok(), "{g:?}");
    app.stop().await;
}

#[tokio::test]
async fn every_refusal_answers_like_a_wrong_secret_and_counts_as_one() {
    let pki = Pki::new();
    let config = clients(pki.config(true))
        .set("auth_throttle.threshold", 5)
        .set("auth_throttle.base_secs", 60);
    let app = TestApp::start_unready(&config).await;
    let ca_pem = pki.ca_pem();
    let spiffe = Id::spiffe(&pki.client_ca);
    let refused = wrong_secret(app.http, &ca_pem).await;
    let same = |a: Answer, what: &str| {
        assert_eq!(
            (a.status, &a.body, a.headers.contains("www-authenticate")),
            (refused.status, &refused.body, true),
            "{what}"
        );
    };
    // No certificate.
    same(
        token(app.http, &ca_pem, None, "spiffe-client").await,
        "no cert",
    );
    // The same SPIFFE ID from a CA tokend does not trust (admitted to the
    // handshake only as a self-signed certificate would be).
    let stranger = Id::spiffe(&ca("stranger CA"));
    same(
        token(app.http, &ca_pem, Some(&stranger), "spiffe-client").await,
        "untrusted CA",
    );
    // A self-signed certificate that says the right thing.
    let forged = Id::new(None, |p| {
        p.subject_alt_names
            .push(SanType::URI(SPIFFE_ID.try_into().unwrap()))
    });
    same(
        token(app.http, &ca_pem, Some(&forged), "spiffe-client").await,
        "self-signed",
    );
    // A secret beside the certificate.
    let a = post(
        app.http,
        &ca_pem,
        Some(&spiffe),
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "spiffe-client"),
            ("client_secret", SECRET),
        ],
    )
    .await
    .unwrap();
    same(a, "secret on an mTLS client");
    // The over-the-threshold client is backing off now, even with the
    // right certificate: the failures counted.
    let a = token(app.http, &ca_pem, Some(&spiffe), "spiffe-client").await;
    assert_eq!(a.status, 429, "{a:?}");

    // A certificate alone never authenticates a secret client.
    let app2 = TestApp::start_unready(&clients(pki.config(true))).await;
    let a = token(app2.http, &ca_pem, Some(&spiffe), "orders-service").await;
    same(a, "cert only on a secret client");
    let ch = channel(app2.grpc, &ca_pem, Some(&spiffe)).await;
    assert_unauthenticated(grpc_issue(&ch, "orders-service").await, "gRPC");
    let ch = channel(app2.grpc, &ca_pem, None).await;
    assert_unauthenticated(grpc_issue(&ch, "spiffe-client").await, "no cert");
    app.stop().await;
    app2.stop().await;
}

#[tokio::test]
async fn without_self_signed_certificates_an_untrusted_one_fails_the_handshake() {
    let pki = Pki::new();
    let app = TestApp::start_unready(&clients(pki.config(false))).await;
    let ca_pem = pki.ca_pem();
    let stranger = Id::spiffe(&ca("stranger CA"));
    let r = post(
        app.http,
        &ca_pem,
        Some(&stranger),
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "spiffe-client"),
        ],
    )
    .await;
    assert!(r.is_err(), "{r:?}");
    // `optional`: no certificate is fine for the handshake.
    let a = token(app.http, &ca_pem, None, "spiffe-client").await;
    assert_eq!(a.status, 401);
    let meta = metadata(app.http, &ca_pem).await;
    let methods = meta["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("\"tls_client_auth\""), "{methods}");
    assert!(!methods.contains("self_signed"), "{methods}");
    assert!(meta.get("mtls_endpoint_aliases").is_none());
    app.stop().await;
}

/// `GET path` over HTTPS without a client certificate: the whole answer.
async fn get(addr: SocketAddr, ca_pem: &str, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(tls_client(ca_pem, None)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tls.read_to_string(&mut out).await.unwrap();
    out
}

/// The discovery document over HTTPS.
async fn metadata(addr: SocketAddr, ca_pem: &str) -> Value {
    let out = get(addr, ca_pem, "/.well-known/oauth-authorization-server").await;
    serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap()
}

#[tokio::test]
async fn self_signed_tls_client_auth_matches_a_registered_key() {
    let pki = Pki::new();
    let (id, jwk) = self_signed();
    let (with_x5c, mut jwk2) = self_signed();
    jwk2["x5c"] = json!([STANDARD.encode(&with_x5c.der)]);
    let mut client = toml::toml! {
        client_id = "self-signed"
        token_endpoint_auth_method = "self_signed_tls_client_auth"
        grant_types = ["client_credentials"]
    };
    client.insert(
        "jwks".into(),
        toml::Value::try_from(json!({"keys": [jwk, jwk2]})).unwrap(),
    );
    let config = clients(pki.config(true)).client(client).set(
        "discovery.mtls_endpoint_base_url",
        "https://mtls.tokend.test",
    );
    let app = TestApp::start_unready(&config).await;
    let ca_pem = pki.ca_pem();
    for key in [&id, &with_x5c] {
        access_token(app.http, &ca_pem, key, "self-signed").await;
        let ch = channel(app.grpc, &ca_pem, Some(key)).await;
        grpc_issue(&ch, "self-signed").await.unwrap();
    }
    // Another key, even in a certificate from the trusted CA, is refused.
    let (other, _) = self_signed();
    let spiffe = Id::spiffe(&pki.client_ca);
    for cert in [&other, &spiffe] {
        let a = token(app.http, &ca_pem, Some(cert), "self-signed").await;
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (401, Some("invalid_client"))
        );
    }
    // The trusted CA's clients still get in beside them.
    access_token(app.http, &ca_pem, &spiffe, "spiffe-client").await;

    let meta = metadata(app.http, &ca_pem).await;
    let methods = meta["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("\"tls_client_auth\""), "{methods}");
    assert!(
        methods.contains("\"self_signed_tls_client_auth\""),
        "{methods}"
    );
    assert_eq!(meta["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(
        meta["mtls_endpoint_aliases"]["token_endpoint"],
        "https://mtls.tokend.test/oauth/token"
    );
    assert_eq!(
        meta["mtls_endpoint_aliases"]["introspection_endpoint"],
        "https://mtls.tokend.test/oauth/introspect"
    );
    app.stop().await;
}

#[tokio::test]
async fn bound_tokens_carry_the_thumbprint_in_the_jwt_and_in_introspection() {
    let pki = Pki::new();
    let hash = crate::common::config::sha256(SECRET);
    let config = clients(pki.config(false))
        .client_set(
            "spiffe-client",
            "tls_client_certificate_bound_access_tokens",
            true,
        )
        .client(toml::toml! {
            client_id = "bound-secret"
            secret_hashes = [(hash.as_str())]
            grant_types = ["client_credentials"]
            tls_client_certificate_bound_access_tokens = true
        });
    let app = TestApp::start_unready(&config).await;
    let ca_pem = pki.ca_pem();
    let spiffe = Id::spiffe(&pki.client_ca);
    let t = access_token(app.http, &ca_pem, &spiffe, "spiffe-client").await;
    let cnf = json!({"x5t#S256": spiffe.thumbprint()});
    assert_eq!(jwt_parts(&t).1["cnf"], cnf);
    // Introspection by a resource server without a certificate.
    let a = post_with(
        app.http,
        tls_client(&ca_pem, None),
        "/oauth/introspect",
        Some(&crate::common::http::basic_header(
            "resource-server",
            SECRET,
        )),
        &[("token", &t)],
    )
    .await
    .unwrap();
    assert_eq!(a.body["cnf"], cnf, "{a:?}");
    let ch = channel(app.grpc, &ca_pem, None).await;
    let i = TokenServiceClient::new(ch.clone())
        .introspect(crate::common::grpc::introspect_request(&t, SECRET))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(i.cnf.unwrap().x5t_s256, spiffe.thumbprint());
    // Over gRPC, the token is bound to the gRPC connection's certificate.
    let ch_cert = channel(app.grpc, &ca_pem, Some(&spiffe)).await;
    let g = grpc_issue(&ch_cert, "spiffe-client").await.unwrap();
    assert_eq!(jwt_parts(&g).1["cnf"], cnf);

    // A secret client with bound tokens: bound to whatever certificate it
    // connects with, and told clearly when it has none.
    let basic = crate::common::http::basic_header("bound-secret", SECRET);
    let http = app.http;
    let with_secret = |id: Option<&Id>| {
        let cfg = tls_client(&ca_pem, id);
        let basic = basic.clone();
        async move {
            let form = [("grant_type", "client_credentials")];
            post_with(http, cfg, "/oauth/token", Some(&basic), &form)
                .await
                .unwrap()
        }
    };
    let a = with_secret(None).await;
    assert_eq!(a.status, 400, "{a:?}");
    assert_eq!(a.body["error"], "invalid_request");
    assert!(
        a.body["error_description"]
            .as_str()
            .unwrap()
            .contains("certificate")
    );
    let other = Id::new(Some(&pki.client_ca), |_| {});
    let a = with_secret(Some(&other)).await;
    assert_eq!(a.status, 200, "{a:?}");
    let t = a.body["access_token"].as_str().unwrap();
    assert_eq!(
        jwt_parts(t).1["cnf"],
        json!({"x5t#S256": other.thumbprint()})
    );
    // Unbound tokens stay bearer tokens in introspection.
    let plain =
        crate::common::grpc::grpc_issue(&mut TokenServiceClient::new(ch.clone()), "orders-service")
            .await
            .unwrap();
    let i = TokenServiceClient::new(ch)
        .introspect(crate::common::grpc::introspect_request(&plain, SECRET))
        .await
        .unwrap()
        .into_inner();
    assert!(i.active && i.cnf.is_none());
    app.stop().await;
}

/// A client certificate resolver that sends whatever chain it is given,
/// with a real key (so the handshake gets as far as the server's checks).
#[derive(Debug)]
struct RawChain(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for RawChain {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn raw_chain_client(ca_pem: &str, chain: Vec<Vec<u8>>, key_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap())
        .unwrap();
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(RawChain(Arc::new(
            rustls::sign::CertifiedKey::new(chain, key),
        ))));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg
}

#[tokio::test]
async fn enormous_chains_and_garbage_certificates_are_refused_in_bounded_time() {
    let pki = Pki::new();
    for self_signed in [false, true] {
        let app = TestApp::start_unready(&clients(pki.config(self_signed))).await;
        let ca_pem = pki.ca_pem();
        let spiffe = Id::spiffe(&pki.client_ca);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "spiffe-client"),
        ];
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("300 intermediates", vec![spiffe.der.clone(); 300]),
            ("garbage", vec![vec![0x30, 0x82, 0x01, 0x00, 0xde, 0xad]]),
            (
                "random bytes",
                vec![(0..4000u32).map(|i| (i * 7) as u8).collect()],
            ),
            ("an empty certificate", vec![Vec::new()]),
        ];
        for (what, chain) in cases {
            let start = Instant::now();
            let cfg = raw_chain_client(&ca_pem, chain, &spiffe.key);
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                post_with(app.http, cfg, "/oauth/token", None, &form),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer"));
            match r {
                Err(_) => {}
                Ok(a) => assert_eq!(
                    (a.status, a.body["error"].as_str()),
                    (401, Some("invalid_client")),
                    "{what}"
                ),
            }
            assert!(start.elapsed() < Duration::from_secs(5), "{what}");
        }
        // The listener still serves.
        access_token(app.http, &ca_pem, &spiffe, "spiffe-client").await;
        app.stop().await;
    }
}

#[tokio::test]
async fn certificates_and_tokens_never_reach_the_log() {
    let pki = Pki::new();
    let config = clients(pki.config(true))
        .client_set(
            "spiffe-client",
            "tls_client_certificate_bound_access_tokens",
            true,
        )
        .set("log.level", "debug");
    let serve = TokendProcess::serve(&config).listeners_only().start().await;
    let ca_pem = pki.ca_pem();
    let spiffe = Id::spiffe(&pki.client_ca);
    let (self_signed, _) = self_signed();
    let t = access_token(serve.http, &ca_pem, &spiffe, "spiffe-client").await;
    let form = [("client_id", "spiffe-client"), ("token", t.as_str())];
    post(
        serve.http,
        &ca_pem,
        Some(&spiffe),
        "/oauth/introspect",
        &form,
    )
    .await
    .unwrap();
    // Failures: a certificate that matches no client, garbage.
    token(serve.http, &ca_pem, Some(&self_signed), "spiffe-client").await;
    token(serve.http, &ca_pem, Some(&spiffe), "dns-client").await;
    let garbage = raw_chain_client(&ca_pem, vec![b"garbage".to_vec()], &spiffe.key);
    let _ = post_with(serve.http, garbage, "/oauth/token", None, &form).await;
    let ch = channel(serve.grpc, &ca_pem, Some(&spiffe)).await;
    let g = grpc_issue(&ch, "spiffe-client").await.unwrap();
    assert_unauthenticated(grpc_issue(&ch, "dn-client").await, "dn-client");
    serve.wait_log("invalid_client", 3).await;
    let log = serve.log();
    assert!(log.contains("spiffe-client"), "the log is scanned: {log}");
    for id in [&spiffe, &self_signed] {
        let b64 = STANDARD.encode(&id.der);
        for needle in [&b64[..64], &b64[b64.len() - 64..], &id.thumbprint()] {
            assert!(!log.contains(needle), "{needle} in the log");
        }
        for line in id.cert.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "a certificate line in the log");
        }
    }
    for tok in [&t, &g] {
        let sig = tok.rsplit('.').next().unwrap();
        assert!(!log.contains(sig), "a token in the log");
    }
    assert!(!log.contains(SPIFFE_ID), "the certificate's SAN in the log");
}

#[test]
fn check_config_names_each_mistake() {
    let pki = Pki::new();
    let problems = |b: ConfigBuilder| b.load_in(pki.dir.path(), &[]).validate().join("\n");
    let base = || pki.config(true);
    let p = problems(base().client(toml::toml! {
        client_id = "none"
        token_endpoint_auth_method = "tls_client_auth"
    }));
    assert!(
        p.contains("needs exactly one of tls_client_auth_subject_dn"),
        "{p}"
    );
    let mut two = mtls_client("two", "tls_client_auth_san_dns", "a.example");
    two.insert("tls_client_auth_san_uri".into(), SPIFFE_ID.into());
    assert!(problems(base().client(two)).contains("give exactly one"));
    let p = problems(base().client(mtls_client("ip", "tls_client_auth_san_ip", "10.0.0.300")));
    assert!(
        p.contains("tls_client_auth_san_ip: \"10.0.0.300\" is not"),
        "{p}"
    );
    let p = problems(base().client(mtls_client(
        "dn",
        "tls_client_auth_subject_dn",
        "CN=a,XYZ=b",
    )));
    assert!(p.contains("unknown attribute type"), "{p}");
    let p = problems(base().client_set("orders-service", "tls_client_auth_san_dns", "a.example"));
    assert!(
        p.contains("only for token_endpoint_auth_method = \"tls_client_auth\""),
        "{p}"
    );
    let p = problems(base().client(toml::toml! {
        client_id = "self"
        token_endpoint_auth_method = "self_signed_tls_client_auth"
    }));
    assert!(p.contains("needs its public keys"), "{p}");
    let p = problems(base().set("tls.client_auth", "sometimes"));
    assert!(p.contains("tls.client_auth: \"sometimes\""), "{p}");
    let p = problems(
        ConfigBuilder::memory()
            .set_path("tls.cert_file", &pki.dir.path().join("cert.pem"))
            .set_path("tls.key_file", &pki.dir.path().join("key.pem"))
            .set("tls.client_auth", "optional"),
    );
    assert!(
        p.contains("tls.client_auth: needs tls.client_ca_file"),
        "{p}"
    );
    let p = problems(base().set("discovery.mtls_endpoint_base_url", "http://x"));
    assert!(p.contains("discovery.mtls_endpoint_base_url"), "{p}");
    assert_eq!(problems(clients(base())), "");
}

#[tokio::test]
async fn exchanged_tokens_are_bound_to_the_exchanging_clients_certificate() {
    let pki = Pki::new();
    let exchanger = |id: &str, san: &str, bound: bool| {
        let mut t = mtls_client(id, "tls_client_auth_san_dns", san);
        t.insert(
            "grant_types".into(),
            toml::Value::try_from(vec![
                "client_credentials",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ])
            .unwrap(),
        );
        t.insert(
            "audience".into(),
            toml::Value::try_from(vec!["gateway"]).unwrap(),
        );
        t.insert(
            "token_exchange_audiences".into(),
            toml::Value::try_from(vec!["orders-api"]).unwrap(),
        );
        t.insert(
            "tls_client_certificate_bound_access_tokens".into(),
            bound.into(),
        );
        t
    };
    let mut caller = mtls_client("caller", "tls_client_auth_san_uri", SPIFFE_ID);
    caller.insert(
        "audience".into(),
        toml::Value::try_from(vec!["gateway"]).unwrap(),
    );
    caller.insert(
        "tls_client_certificate_bound_access_tokens".into(),
        true.into(),
    );
    let config = pki
        .config(false)
        .client(caller)
        .client(exchanger("bound-gw", "bound.gw.example", true))
        .client(exchanger("bearer-gw", "bearer.gw.example", false));
    let app = TestApp::start_unready(&config).await;
    let ca_pem = pki.ca_pem();
    let dns = |name: &'static str| {
        Id::new(Some(&pki.client_ca), move |p| {
            p.subject_alt_names
                .push(SanType::DnsName(name.try_into().unwrap()))
        })
    };
    let (caller_id, bound_gw, bearer_gw) = (
        Id::spiffe(&pki.client_ca),
        dns("bound.gw.example"),
        dns("bearer.gw.example"),
    );
    let subject = access_token(app.http, &ca_pem, &caller_id, "caller").await;
    assert_eq!(
        jwt_parts(&subject).1["cnf"]["x5t#S256"],
        caller_id.thumbprint()
    );
    let exchange = |id: &'static str, cert: &Id| {
        let (ca_pem, subject) = (ca_pem.clone(), subject.clone());
        let http = app.http;
        let cert = cert.clone();
        async move {
            post(
                http,
                &ca_pem,
                Some(&cert),
                "/oauth/token",
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("client_id", id),
                    ("subject_token", &subject),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                    ("audience", "orders-api"),
                ],
            )
            .await
            .unwrap()
        }
    };
    // Minted for the exchanging client: bound to its certificate when it
    // has the setting, a bearer token when it does not.
    let a = exchange("bound-gw", &bound_gw).await;
    assert_eq!(a.status, 200, "{a:?}");
    let t = a.body["access_token"].as_str().unwrap();
    assert_eq!(
        jwt_parts(t).1["cnf"],
        json!({"x5t#S256": bound_gw.thumbprint()})
    );
    let a = exchange("bearer-gw", &bearer_gw).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(
        jwt_parts(a.body["access_token"].as_str().unwrap())
            .1
            .get("cnf")
            .is_none()
    );
    app.stop().await;
}

/// `GET path` over HTTPS; the `Location` it answers with.
async fn location(addr: SocketAddr, ca_pem: &str, path: &str) -> String {
    let out = get(addr, ca_pem, path).await;
    out.lines()
        .find_map(|l| l.strip_prefix("location: "))
        .unwrap_or_else(|| panic!("no location: {out}"))
        .to_owned()
}

#[tokio::test]
async fn refreshed_tokens_are_bound_to_the_certificate_of_the_refresh() {
    use crate::common::flows::{LOGIN_APP_TOKEN, LOGIN_URL, WEB_CB, param, pkce};
    let pki = Pki::new();
    let mut client = mtls_client("bound-web", "tls_client_auth_san_dns", "web.example");
    for (k, v) in [
        ("grant_types", vec!["authorization_code", "refresh_token"]),
        ("redirect_uris", vec![WEB_CB]),
        ("scopes", vec!["profile"]),
    ] {
        client.insert(k.into(), toml::Value::try_from(v).unwrap());
    }
    client.insert(
        "tls_client_certificate_bound_access_tokens".into(),
        true.into(),
    );
    let config = pki
        .config(false)
        .client(client)
        .set("authorization.login_url", LOGIN_URL)
        .set(
            "authorization.login_app_token_hash",
            crate::common::config::sha256(LOGIN_APP_TOKEN),
        );
    let app = TestApp::start_unready(&config).await;
    let ca_pem = pki.ca_pem();
    let web = || {
        Id::new(Some(&pki.client_ca), |p| {
            p.subject_alt_names
                .push(SanType::DnsName("web.example".try_into().unwrap()))
        })
    };
    let (first, rotated) = (web(), web());

    // The browser and the login app (over TLS, without client certificates).
    let (verifier, challenge) = pkce();
    let to_login = location(
        app.http,
        &ca_pem,
        &format!(
            "/oauth/authorize?response_type=code&client_id=bound-web&redirect_uri={}\
             &scope=profile&code_challenge={challenge}&code_challenge_method=S256",
            urlencode(WEB_CB)
        ),
    )
    .await;
    let login_challenge = param(&to_login, "login_challenge").unwrap();
    let mut login = tokend::pb::authorization_service_client::AuthorizationServiceClient::new(
        channel(app.grpc, &ca_pem, None).await,
    );
    let mut accept = tonic::Request::new(tokend::pb::AcceptAuthorizationRequest {
        login_challenge,
        subject: "user-1".into(),
        granted_scope: vec!["profile".into()],
        ..Default::default()
    });
    accept.metadata_mut().insert(
        "authorization",
        format!("Bearer {LOGIN_APP_TOKEN}").parse().unwrap(),
    );
    let back = login
        .accept_authorization(accept)
        .await
        .unwrap()
        .into_inner()
        .redirect_to;
    let code = param(&back, "code").unwrap();

    // The code, redeemed with the first certificate.
    let a = post(
        app.http,
        &ca_pem,
        Some(&first),
        "/oauth/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "bound-web"),
            ("code", &code),
            ("redirect_uri", WEB_CB),
            ("code_verifier", &verifier),
        ],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let cnf = |a: &Answer| jwt_parts(a.body["access_token"].as_str().unwrap()).1["cnf"].clone();
    assert_eq!(cnf(&a), json!({"x5t#S256": first.thumbprint()}));
    let refresh = a.body["refresh_token"].as_str().unwrap().to_owned();

    // The refresh, after the client rotated its certificate: bound to the
    // new one (the refresh token belongs to the client, which proved itself).
    let a = post(
        app.http,
        &ca_pem,
        Some(&rotated),
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "bound-web"),
            ("refresh_token", &refresh),
        ],
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(cnf(&a), json!({"x5t#S256": rotated.thumbprint()}));
    // Without a certificate, no refresh (and the refresh token is not used up).
    let next = a.body["refresh_token"].as_str().unwrap().to_owned();
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", "bound-web"),
        ("refresh_token", next.as_str()),
    ];
    let a = post(app.http, &ca_pem, None, "/oauth/token", &form)
        .await
        .unwrap();
    assert_eq!(
        (a.status, &a.body["error"]),
        (401, &json!("invalid_client"))
    );
    let a = post(app.http, &ca_pem, Some(&rotated), "/oauth/token", &form)
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    app.stop().await;
}
