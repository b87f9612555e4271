//! Certificate-bound tokens (RFC 8705 3): the verifier compares
//! `cnf.x5t#S256` with the TLS client certificate; the tower layer finds it
//! in tonic's TLS connection info (a tonic server serving TLS itself) and in
//! the `PeerCertificate` extension an axum app on tokio-rustls inserts.
//! Real TLS sockets, certificates made with rcgen.

mod common;

use std::sync::Arc;

use axum::Extension;
use axum::routing::get;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokend_token::jwt::Confirmation;
use tokend_token::keys::{Algorithm, SigningKey};
use tokend_verify::{
    AuthLayer, PeerCertificate, RejectReason, VerifiedToken, Verifier, VerifierConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

#[allow(clippy::all)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/full/demo.v1.rs"));
}

use pb::orders_client::OrdersClient;
use pb::orders_server::{Orders, OrdersServer};
use pb::{ListOrdersRequest, ListOrdersResponse};

type Ca = CertifiedIssuer<'static, KeyPair>;

fn ca() -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test CA");
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// (PEM cert, PEM key, DER cert) for `localhost`, signed by `ca`.
fn leaf(ca: &Ca) -> (String, String, Vec<u8>) {
    let p = CertificateParams::new(vec!["localhost".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// A verifier trusting a fresh key, a CA, tokend-like server and two client
/// certificates (`a` with its DER).
struct Setup {
    key: SigningKey,
    jwks: JwksServer,
    verifier: Verifier,
    ca: Ca,
    server: (String, String),
    a: (String, String, Vec<u8>),
    b: (String, String),
}

async fn setup() -> Setup {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(&[&key]).await;
    let verifier = Verifier::start(VerifierConfig::new(ISSUER, &jwks.url, AUDIENCE))
        .await
        .unwrap();
    let ca = ca();
    let (server_cert, server_key, _) = leaf(&ca);
    let (b_cert, b_key, _) = leaf(&ca);
    Setup {
        key,
        jwks,
        verifier,
        a: leaf(&ca),
        server: (server_cert, server_key),
        b: (b_cert, b_key),
        ca,
    }
}

fn bound_to(key: &SigningKey, der: &[u8]) -> String {
    let mut c = claims();
    c.cnf = Some(Confirmation::of_certificate(der));
    mint(key, &c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_needs_its_certificate_and_binding_can_be_required() {
    let Setup {
        key,
        jwks,
        verifier: v,
        ca,
        a: (_, _, a),
        ..
    } = setup().await;
    let (_, _, b) = leaf(&ca);
    let bound = bound_to(&key, &a);
    let bearer = mint(&key, &claims());
    let reason = |r: Result<VerifiedToken, tokend_verify::Rejection>| r.unwrap_err().reason();

    let t = v.verify_bound(&bound, Some(&a)).await.unwrap();
    assert_eq!(t.cnf, Some(Confirmation::of_certificate(&a)));
    for cert in [Some(&b[..]), None, Some(&[][..])] {
        assert_eq!(
            reason(v.verify_bound(&bound, cert).await),
            RejectReason::CertificateMismatch
        );
    }
    // Without a certificate API, a bound token is refused too.
    assert_eq!(
        reason(v.verify(&bound).await),
        RejectReason::CertificateMismatch
    );
    assert_eq!(
        v.verify_bound_now(&bound, Some(&b)).unwrap_err().reason(),
        RejectReason::CertificateMismatch
    );
    // Cached as verified, still checked against the certificate.
    assert!(v.verify_bound_now(&bound, Some(&a)).is_ok());
    // A bearer token as before, with or without a certificate.
    assert!(v.verify(&bearer).await.is_ok());
    assert!(v.verify_bound(&bearer, Some(&a)).await.is_ok());
    // A garbage thumbprint matches nothing.
    let mut c = claims();
    c.cnf = Some(Confirmation {
        x5t_s256: Some("not base64!".into()),
    });
    assert_eq!(
        reason(v.verify_bound(&mint(&key, &c), Some(&a)).await),
        RejectReason::CertificateMismatch
    );

    let strict = Verifier::start(
        VerifierConfig::new(ISSUER, &jwks.url, AUDIENCE).require_certificate_binding(true),
    )
    .await
    .unwrap();
    assert_eq!(
        reason(strict.verify_bound(&bearer, Some(&a)).await),
        RejectReason::CertificateRequired
    );
    assert!(strict.verify_bound(&bound, Some(&a)).await.is_ok());
}

/// Answers with nothing: what matters is whether the layer let the call in.
struct Svc;

#[tonic::async_trait]
impl Orders for Svc {
    async fn list_orders(
        &self,
        _: tonic::Request<ListOrdersRequest>,
    ) -> Result<tonic::Response<ListOrdersResponse>, tonic::Status> {
        Ok(tonic::Response::new(ListOrdersResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_reads_a_tonic_servers_peer_certificate() {
    let s = setup().await;
    let (l, addr) = bind().await;
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(
                ServerTlsConfig::new()
                    .identity(Identity::from_pem(&s.server.0, &s.server.1))
                    .client_ca_root(Certificate::from_pem(s.ca.pem()))
                    .client_auth_optional(true),
            )
            .unwrap()
            .layer(AuthLayer::new(s.verifier.clone()))
            .add_service(OrdersServer::new(Svc))
            .serve_with_incoming_shutdown(TcpListenerStream::new(l), async move {
                stopping.cancelled().await
            }),
    );
    let call = |id: Option<(&str, &str)>, token: String| {
        let ca_pem = s.ca.pem();
        let id = id.map(|(c, k)| Identity::from_pem(c, k));
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost");
            if let Some(id) = id {
                tls = tls.identity(id);
            }
            let ch = Endpoint::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut req = tonic::Request::new(ListOrdersRequest::default());
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            OrdersClient::new(ch).list_orders(req).await.map(|_| ())
        }
    };
    let bound = bound_to(&s.key, &s.a.2);
    call(Some((&s.a.0, &s.a.1)), bound.clone()).await.unwrap();
    for id in [Some((s.b.0.as_str(), s.b.1.as_str())), None] {
        let s = call(id, bound.clone()).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    }
    call(None, mint(&s.key, &claims())).await.unwrap();
    stop.cancel();
}

/// An axum app serving TLS itself: the accept loop puts each connection's
/// client certificate into its requests as a `PeerCertificate` (the pattern
/// docs/mtls.md shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_reads_the_peer_certificate_extension_of_an_axum_app() {
    let s = setup().await;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(s.ca.pem().as_bytes()).unwrap())
        .unwrap();
    let roots = Arc::new(roots);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(s.server.0.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(s.server.1.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let app = axum::Router::new()
        .route(
            "/orders",
            get(|Extension(t): Extension<VerifiedToken>| async move { t.client_id.clone() }),
        )
        .layer(AuthLayer::new(s.verifier.clone()));
    let (l, addr) = bind().await;
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cert = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| PeerCertificate::new(c.as_ref()));
                let svc = hyper::service::service_fn(move |mut req: http::Request<_>| {
                    if let Some(c) = &cert {
                        req.extensions_mut().insert(c.clone());
                    }
                    tower::ServiceExt::oneshot(app.clone(), req.map(axum::body::Body::new))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    let get = |id: Option<(&str, &str)>, token: String| {
        let b = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone());
        let cfg = match id {
            None => b.with_no_client_auth(),
            Some((c, k)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(k.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(
                format!(
                    "GET /orders HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
                     Authorization: Bearer {token}\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            let _ = tls.read_to_string(&mut out).await;
            out
        }
    };
    let bound = bound_to(&s.key, &s.a.2);
    let ok = get(Some((&s.a.0, &s.a.1)), bound.clone()).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    for id in [Some((s.b.0.as_str(), s.b.1.as_str())), None] {
        let r = get(id, bound.clone()).await;
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert!(r.contains("invalid_token"), "{r}");
    }
}
