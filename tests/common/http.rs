//! HTTP-side helpers: Basic credentials, reading JWTs for assertions, and a
//! token request held open mid-body on a raw socket.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `Basic` header value with RFC 6749 2.3.1 form-encoding of both parts.
pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Decodes a JWT's header and payload without verifying (for assertions).
pub fn jwt_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    let mut it = token.split('.');
    let dec = |s: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    let h = dec(it.next().unwrap());
    let p = dec(it.next().unwrap());
    (h, p)
}

/// (status, `error`) of an OAuth error response (a JSON body).
pub async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The body [`held_token_request`] announces; [`HeldRequest::finish`] sends
/// the rest of it.
const HELD_BODY: &str = "grant_type=client_credentials";
const HELD_SENT: usize = "grant_type=".len();

/// A POST /oauth/token on its own connection whose body is only partly
/// sent: a request the server is in the middle of.
pub struct HeldRequest {
    pub stream: TcpStream,
}

/// Starts a token request on `addr` and returns once tokend's handler is
/// reading its body: the request says `Expect: 100-continue`, and the server
/// answers `100 Continue` only when the handler asks for the body, so after
/// this the request is in flight for sure (holding a concurrency slot,
/// keeping a draining server busy). `credentials` adds Basic auth.
pub async fn held_token_request(
    addr: SocketAddr,
    credentials: Option<(&str, &str)>,
) -> HeldRequest {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = credentials
        .map(|(id, secret)| format!("Authorization: {}\r\n", basic_header(id, secret)))
        .unwrap_or_default();
    stream
        .write_all(
            format!(
                "POST /oauth/token HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
                HELD_BODY.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; interim.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut got))
        .await
        .expect("no 100 Continue: the handler never asked for the body")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(interim)
    );
    stream
        .write_all(&HELD_BODY.as_bytes()[..HELD_SENT])
        .await
        .unwrap();
    HeldRequest { stream }
}

impl HeldRequest {
    /// Sends the rest of the body and reads the whole response (the server
    /// closes or the response ends the connection).
    pub async fn finish(mut self) -> String {
        self.stream
            .write_all(&HELD_BODY.as_bytes()[HELD_SENT..])
            .await
            .unwrap();
        self.read_to_end().await
    }

    /// Reads until the server closes the connection.
    pub async fn read_to_end(&mut self) -> String {
        let mut out = Vec::new();
        let _ = self.stream.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The value of the Prometheus sample `name` whose labels include all of
/// `labels` (each written `key="value"`), from a `/metrics` text.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' ']).next() == Some(name) && labels.iter().all(|lb| l.contains(lb))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
}

/// An HTTP client whose connections come from `ip` (any 127/8 address
/// reaches the loopback listener), to act as different peers.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse::<IpAddr>().unwrap()))
        .build()
        .unwrap()
}

/// A client_credentials request with Basic credentials from `client`.
pub async fn token_from(
    app: &super::api::Api,
    client: &reqwest::Client,
    id: &str,
    secret: &str,
) -> reqwest::Response {
    client
        .post(app.url("/oauth/token"))
        .header("Authorization", basic_header(id, secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

/// The Prometheus text at `url` (checks the status and content type).
pub async fn metrics_text(url: String) -> String {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    r.text().await.unwrap()
}
