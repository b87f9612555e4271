//! TLS on both listeners with a throwaway CA: HTTPS and gRPC over TLS,
//! certificate rotation without restarting, and mTLS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokend::pb::token_service_client::TokenServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::common::grpc::issue_request;
use crate::common::http::basic_header;
use crate::common::pki::{ca, client_config, leaf};
use crate::common::{ConfigBuilder, SECRET, TestApp, TokendProcess, eventually};

/// Bound on a certificate rotation being picked up.
const ROTATION: Duration = Duration::from_secs(6);

/// `GET path` over HTTPS/1.1; returns the response text and the server's
/// certificate (DER), or the error text.
async fn https_get(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<(&str, &str)>,
    path: &str,
) -> Result<(String, Vec<u8>), String> {
    let cfg = client_config(ca_pem, client, &[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let served = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok((String::from_utf8_lossy(&out).into_owned(), served))
}

async fn https_post_token(addr: std::net::SocketAddr, ca_pem: &str) -> (String, Vec<u8>) {
    let cfg = client_config(ca_pem, None, &[]);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = "grant_type=client_credentials";
    let auth = basic_header("orders-service", SECRET);
    tls.write_all(
        format!(
            "POST /oauth/token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    (String::from_utf8_lossy(&out).into_owned(), Vec::new())
}

async fn grpc_tls(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<String, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ch = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let r = TokenServiceClient::new(ch)
        .issue(issue_request("orders-service", SECRET))
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(r.into_inner().access_token)
}

/// The standard clients with TLS on both listeners from `dir/cert.pem` and
/// `dir/key.pem`, checked for changes every second.
fn tls_config(dir: &Path) -> ConfigBuilder {
    ConfigBuilder::memory()
        .set_path("tls.cert_file", &dir.join("cert.pem"))
        .set_path("tls.key_file", &dir.join("key.pem"))
        .set("tls.reload_check_secs", 1)
}

#[tokio::test]
async fn both_listeners_speak_tls_and_pick_up_a_rotated_certificate() {
    let dir = TempDir::new().unwrap();
    let ca = ca("tokend test CA");
    let (cert1, key1, der1) = leaf(&ca, "tokend-1");
    std::fs::write(dir.path().join("cert.pem"), &cert1).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key1).unwrap();
    // The readiness probe speaks plain HTTP: no waiting on it here.
    let app = TestApp::start_unready(&tls_config(dir.path())).await;
    let (http, grpc) = (app.http, app.grpc);

    let ca_pem = ca.pem();
    let (text, served) = https_get(http, &ca_pem, None, "/healthz").await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(served, der1);
    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::get(format!("http://{http}/healthz")).await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let token = grpc_tls(grpc, &ca_pem, None).await.unwrap();
    assert!(token.starts_with("eyJ"));

    let (cert2, key2, der2) = leaf(&ca, "tokend-2");
    std::fs::write(dir.path().join("key.pem"), &key2).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert2).unwrap();
    let rotated = eventually(ROTATION, || async {
        let (_, served) = https_get(http, &ca_pem, None, "/healthz").await.unwrap();
        served == der2
    })
    .await;
    assert!(rotated, "the new certificate was not served");
    // Same listener, new handshakes on both ports work.
    assert!(
        grpc_tls(grpc, &ca_pem, None)
            .await
            .unwrap()
            .starts_with("eyJ")
    );
    // The token endpoint over HTTPS, with the new certificate.
    let (text, _) = https_post_token(http, &ca_pem).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn mtls_rejects_clients_without_a_certificate_and_follows_a_rotated_client_ca() {
    let dir = TempDir::new().unwrap();
    let server_ca = ca("server CA");
    let client_ca = ca("client CA");
    let (cert, key, _) = leaf(&server_ca, "tokend");
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    std::fs::write(dir.path().join("client-ca.pem"), client_ca.pem()).unwrap();
    let config =
        tls_config(dir.path()).set_path("tls.client_ca_file", &dir.path().join("client-ca.pem"));
    let app = TestApp::start_unready(&config).await;
    let ca_pem = server_ca.pem();
    let (ccert, ckey, _) = leaf(&client_ca, "orders-service");
    let (stranger_cert, stranger_key, _) = leaf(&server_ca, "stranger");

    let ok = https_get(app.http, &ca_pem, Some((&ccert, &ckey)), "/healthz")
        .await
        .unwrap();
    assert!(ok.0.starts_with("HTTP/1.1 200"), "{}", ok.0);
    // No certificate, or one from another CA: no HTTP answer.
    for client in [None, Some((stranger_cert.as_str(), stranger_key.as_str()))] {
        assert_refused(app.http, &ca_pem, client).await;
    }
    assert_issues(app.grpc, &ca_pem, (&ccert, &ckey)).await;
    assert!(grpc_tls(app.grpc, &ca_pem, None).await.is_err());

    // The client CA rotates without a restart: the new CA's clients get in,
    // the old CA's no longer do.
    let client_ca2 = ca("client CA 2");
    let (ccert2, ckey2, _) = leaf(&client_ca2, "orders-service-2");
    std::fs::write(dir.path().join("client-ca.pem"), client_ca2.pem()).unwrap();
    let rotated = eventually(ROTATION, || async {
        https_get(app.http, &ca_pem, Some((&ccert2, &ckey2)), "/healthz")
            .await
            .is_ok_and(|(text, _)| text.starts_with("HTTP/1.1 200"))
    })
    .await;
    assert!(rotated, "the new client CA was not used");
    assert_refused(app.http, &ca_pem, Some((&ccert, &ckey))).await;
    assert_issues(app.grpc, &ca_pem, (&ccert2, &ckey2)).await;
    app.stop().await;
}

/// The HTTPS listener gives `client` no HTTP answer (handshake refused).
async fn assert_refused(http: std::net::SocketAddr, ca_pem: &str, client: Option<(&str, &str)>) {
    match https_get(http, ca_pem, client, "/healthz").await {
        Err(_) => {}
        Ok((text, _)) => assert!(!text.contains("200 OK"), "{text}"),
    }
}

/// `client` gets a token over gRPC with TLS.
async fn assert_issues(grpc: std::net::SocketAddr, ca_pem: &str, client: (&str, &str)) {
    let token = grpc_tls(grpc, ca_pem, Some(client)).await.unwrap();
    assert!(token.starts_with("eyJ"), "{token}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_tokend_serve() {
    let dir = TempDir::new().unwrap();
    let ca = ca("tokend test CA");
    let (cert1, key1, der1) = leaf(&ca, "tokend-1");
    std::fs::write(dir.path().join("cert.pem"), &cert1).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key1).unwrap();
    // File polling practically off: only SIGHUP can explain a reload.
    let config = tls_config(dir.path()).set("tls.reload_check_secs", 3600);
    // TLS on the HTTP port: the plain readiness probe cannot be used.
    let serve = TokendProcess::serve(&config).listeners_only().start().await;
    let ca_pem = ca.pem();
    let served = https_get(serve.http, &ca_pem, None, "/healthz")
        .await
        .unwrap()
        .1;
    assert_eq!(served, der1);

    let (cert2, key2, der2) = leaf(&ca, "tokend-2");
    std::fs::write(dir.path().join("key.pem"), &key2).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert2).unwrap();
    serve.sighup();
    let rotated = eventually(ROTATION, || async {
        let (_, served) = https_get(serve.http, &ca_pem, None, "/healthz")
            .await
            .unwrap();
        served == der2
    })
    .await;
    assert!(rotated, "SIGHUP did not reload the certificate");
}
