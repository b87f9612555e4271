//! The attack suite's plumbing: one-off HTTP/1.1 requests over a plain TCP
//! connection (hyper's connection API, no pool), raw sockets for the held
//! bodies, gRPC channels, and reading the Prometheus text of `/metrics`.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

/// Bound on connecting and on one ordinary request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A base URL reduced to what a plain connection needs.
#[derive(Clone, Debug)]
pub struct Base {
    /// `host:port`, for connecting and for the Host header.
    pub authority: String,
}

impl Base {
    /// Parses `http://host[:port]` (or a bare `host:port`). TLS is not
    /// supported: point the suite at the plain listener.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/');
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            bail!("{url}: https is not supported; use the plain-text listener")
        } else {
            url
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            bail!("{url}: no host");
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self { authority })
    }

    pub async fn connect(&self) -> anyhow::Result<TcpStream> {
        tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .with_context(|| format!("connecting to {} timed out", self.authority))?
            .with_context(|| format!("connecting to {}", self.authority))
    }
}

/// One HTTP answer, body read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("{}: not JSON: {:.200}", self.status, self.text()))
    }
    /// `error` of an OAuth JSON error body ("" when there is none).
    pub fn error(&self) -> String {
        self.json()
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// An HTTP/1.1 connection that sends requests one after another.
pub struct H1 {
    base: Base,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn open(base: &Base) -> anyhow::Result<Self> {
        let tcp = base.connect().await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Self {
            base: base.clone(),
            sender,
        })
    }

    /// Sends a request and reads the whole answer, within [`REQUEST_TIMEOUT`].
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.base.authority);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let answer = async {
            self.sender.ready().await?;
            let res = self.sender.send_request(req).await?;
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await?.to_bytes();
            anyhow::Ok(Reply {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, answer)
            .await
            .with_context(|| format!("{path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }
}

/// One request on a fresh connection.
pub async fn request(
    base: &Base,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    H1::open(base)
        .await?
        .send(method, path, headers, body)
        .await
}

pub async fn get(base: &Base, path: &str) -> anyhow::Result<Reply> {
    request(base, Method::GET, path, &[], Vec::new()).await
}

/// A form POST, with Basic credentials when given.
pub async fn post_form(
    base: &Base,
    path: &str,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let mut headers = vec![(
        "content-type",
        "application/x-www-form-urlencoded".to_owned(),
    )];
    if let Some((id, secret)) = basic {
        headers.push(("authorization", basic_header(id, secret)));
    }
    request(
        base,
        Method::POST,
        path,
        &headers,
        encode_form(form).into_bytes(),
    )
    .await
}

pub fn basic_header(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

pub fn encode_form(form: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish()
}

pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A gRPC channel to `url` (`http://host:port`).
pub async fn channel(url: &str) -> anyhow::Result<Channel> {
    let base = Base::parse(url)?;
    Endpoint::from_shared(format!("http://{}", base.authority))?
        .connect_timeout(REQUEST_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("connecting to gRPC {url}"))
}

/// A random lowercase hex string of `bytes` random bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The sum of the samples of `name` whose label set contains every one of
/// `labels` (`op="put"`); `None` when there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_set, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else {
                continue;
            };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        if !labels.iter().all(|l| label_set.split(',').any(|x| x == *l)) {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The text of a `/metrics` URL.
pub async fn metrics_text(url: &str) -> anyhow::Result<String> {
    let base = Base::parse(url)?;
    let path = url
        .trim_start_matches("http://")
        .split_once('/')
        .map_or("/metrics".to_owned(), |(_, p)| format!("/{p}"));
    let r = get(&base, &path).await?;
    if r.status != 200 {
        bail!("{url}: {}", r.status);
    }
    let text = r.text();
    if !text.contains("tokend_") {
        bail!("{url} does not look like tokend's metrics");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_the_samples_with_the_labels() {
        let text = "# TYPE x counter\n\
                    tokend_store_duration_seconds_count{op=\"put\"} 3\n\
                    tokend_store_duration_seconds_count{op=\"put_new\"} 2\n\
                    tokend_store_duration_seconds_count{op=\"get\"} 7\n\
                    tokend_store_evictable 0\n\
                    tokend_store_evictable_other 1\n";
        let count = "tokend_store_duration_seconds_count";
        assert_eq!(metric(text, count, &["op=\"put\""]), Some(3.0));
        assert_eq!(metric(text, count, &[]), Some(12.0));
        assert_eq!(metric(text, count, &["op=\"delete\""]), None);
        assert_eq!(metric(text, "tokend_store_evictable", &[]), Some(0.0));
        assert_eq!(metric(text, "tokend_store", &[]), None);
    }

    #[test]
    fn base_urls() {
        assert_eq!(Base::parse("http://h:8080/").unwrap().authority, "h:8080");
        assert_eq!(Base::parse("http://h/metrics").unwrap().authority, "h:80");
        assert_eq!(Base::parse("127.0.0.1:9").unwrap().authority, "127.0.0.1:9");
        assert!(Base::parse("https://h:443").is_err());
    }
}
