//! The per-request tower layer both transports share: request id, access log
//! (one event per request), request metrics, the request timeout and the
//! concurrency limit.
//!
//! Handlers learn nothing new here; they only note what the core told them
//! (client id, grant type, outcome) in the [`RequestRecord`] this layer puts in
//! the request's extensions, and read the caller's address from it. Labels
//! are sanitised here: client ids only for configured clients, grant types
//! only when known, so neither logs nor metrics carry caller-chosen text.
//!
//! The same layer opens the request's trace span (docs/tracing.md): a child
//! of the caller's `traceparent` when there is one, named and attributed by
//! the OpenTelemetry HTTP and RPC conventions, and given the same sanitised
//! OAuth fields as the access log, whose `trace_id` joins the two. With
//! trace export off the span is disabled at its callsite and costs nothing.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tracing::Instrument;
use tracing::field::Empty;

use super::budget::{PeerShares, WithDeadline};
use super::listen::{ClientCert, ConnInfo};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::oauth::OAuthError;
use crate::oauth::client::GrantType;

/// Which listener a request came through (the `transport` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http,
    Grpc,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// The caller's socket address, inserted by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The OAuth error code of an HTTP error response, set by the HTTP error
/// conversion so the layer logs the exact code.
#[derive(Debug, Clone, Copy)]
pub struct Outcome(pub &'static str);

#[derive(Default)]
struct Fields {
    client_id: Option<String>,
    grant_type: Option<&'static str>,
    outcome: Option<&'static str>,
}

/// What a handler notes about its request for the access log.
#[derive(Clone, Default)]
pub struct RequestRecord {
    peer: Option<SocketAddr>,
    /// The connection's TLS client certificate (never logged).
    cert: Option<Arc<tokend_core::oauth::mtls::ClientCertificate>>,
    fields: Arc<Mutex<Fields>>,
}

impl RequestRecord {
    /// The record of a request (an empty one when the layer is absent).
    pub fn of(ext: &http::Extensions) -> Self {
        ext.get::<Self>().cloned().unwrap_or_default()
    }

    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer.map(|p| p.ip())
    }

    /// The TLS client certificate of the request's connection.
    pub fn client_cert(&self) -> Option<Arc<tokend_core::oauth::mtls::ClientCertificate>> {
        self.cert.clone()
    }

    /// The client id the caller claimed (sanitised before logging).
    pub fn client(&self, id: &str) {
        self.fields.lock().client_id = Some(id.to_owned());
    }

    pub fn grant_type(&self, g: &str) {
        self.fields.lock().grant_type = GrantType::parse(g).map(GrantType::as_str);
    }

    pub fn outcome<T>(&self, r: &Result<T, OAuthError>) {
        self.set_outcome(match r {
            Ok(_) => "ok",
            Err(e) => e.code(),
        });
    }

    /// An outcome decided before the core was called (a bearer check).
    pub fn set_outcome(&self, code: &'static str) {
        self.fields.lock().outcome = Some(code);
    }
}

/// Turns an OAuth error into this transport's response (for rejections the
/// layer itself makes: overload and timeout).
pub type Reject<B> = fn(OAuthError) -> Response<B>;

/// The bounds the access layer applies to each request of a listener
/// (`[server]`; see `budget` for the per-address share and body deadline).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_concurrent: usize,
    pub max_concurrent_per_peer: usize,
    pub timeout: Duration,
    pub body_read_timeout: Duration,
}

/// See the module docs.
pub struct AccessLayer<B> {
    transport: Transport,
    label: Arc<dyn Fn(&str) -> String + Send + Sync>,
    limit: Arc<Semaphore>,
    shares: Arc<PeerShares>,
    limits: RequestLimits,
    reject: Reject<B>,
    durations: Arc<Durations>,
}

// Manual impls: response bodies (tonic's) need not be `Clone`.
impl<B> Clone for AccessLayer<B> {
    fn clone(&self) -> Self {
        Self {
            transport: self.transport,
            label: self.label.clone(),
            limit: self.limit.clone(),
            shares: self.shares.clone(),
            limits: self.limits,
            reject: self.reject,
            durations: self.durations.clone(),
        }
    }
}

impl<S: Clone, B> Clone for AccessService<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<B> AccessLayer<B> {
    pub fn new(
        transport: Transport,
        label: Arc<dyn Fn(&str) -> String + Send + Sync>,
        limits: RequestLimits,
        reject: Reject<B>,
    ) -> Self {
        Self {
            transport,
            label,
            limit: Arc::new(Semaphore::new(
                limits.max_concurrent.min(Semaphore::MAX_PERMITS),
            )),
            shares: PeerShares::new(limits.max_concurrent_per_peer),
            limits,
            reject,
            durations: Arc::new(Durations::new(transport)),
        }
    }
}

impl<S, B> tower::Layer<S> for AccessLayer<B> {
    type Service = AccessService<S, B>;
    fn layer(&self, inner: S) -> Self::Service {
        AccessService {
            inner,
            layer: self.clone(),
        }
    }
}

pub struct AccessService<S, B> {
    inner: S,
    layer: AccessLayer<B>,
}

/// A generated request id: a random per-process prefix and a counter.
/// Unique, cheap (no RNG call per request), and not a secret.
fn new_request_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| crate::token::opaque::random_id()[..16].to_owned());
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{n:x}")
}

/// Accepts a caller's `x-request-id` when it is short, plain text; else
/// generates one.
fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(new_request_id)
}

fn peer_of<T>(req: &Request<T>) -> Option<SocketAddr> {
    let ext = req.extensions();
    ext.get::<PeerAddr>()
        .map(|p| p.0)
        .or_else(|| ext.get::<ConnInfo>().map(|c| c.remote))
        .or_else(|| {
            ext.get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|c| c.remote_addr)
        })
        .or_else(|| {
            ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
        })
}

/// The TLS client certificate of a request's connection: the HTTP
/// extension, or gRPC's connection info.
fn cert_of<T>(req: &Request<T>) -> Option<Arc<tokend_core::oauth::mtls::ClientCertificate>> {
    let ext = req.extensions();
    ext.get::<ClientCert>()
        .map(|c| c.0.clone())
        .or_else(|| ext.get::<ConnInfo>().and_then(|c| c.cert.clone()))
}

/// The gRPC methods served on the public port, as `endpoint` labels.
const GRPC_METHODS: &[&str] = &[
    "tokend.v1.TokenService/Issue",
    "tokend.v1.TokenService/Introspect",
    "tokend.v1.TokenService/Revoke",
    "tokend.v1.RevocationFeed/Watch",
    "tokend.v1.AuthorizationService/GetAuthorization",
    "tokend.v1.AuthorizationService/AcceptAuthorization",
    "tokend.v1.AuthorizationService/RejectAuthorization",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];
const OTHER: &str = "other";

fn labels(transport: Transport) -> &'static [&'static str] {
    match transport {
        Transport::Http => super::routes::ALL,
        Transport::Grpc => GRPC_METHODS,
    }
}

/// A bounded `endpoint` label: known routes / gRPC methods, else "other".
fn endpoint(transport: Transport, path: &str) -> &'static str {
    let path = match transport {
        Transport::Http => path,
        Transport::Grpc => path.trim_start_matches('/'),
    };
    labels(transport)
        .iter()
        .find(|e| **e == path)
        .copied()
        .unwrap_or(OTHER)
}

/// `tokend_request_duration_seconds` handles, one per endpoint label of a
/// transport, looked up once instead of per request.
struct Durations {
    by_endpoint: Vec<(&'static str, metrics::Histogram)>,
}

impl Durations {
    fn new(transport: Transport) -> Self {
        let by_endpoint = labels(transport)
            .iter()
            .chain([&OTHER])
            .map(|e| {
                let h = metrics::histogram!(
                    "tokend_request_duration_seconds",
                    "endpoint" => *e,
                    "transport" => transport.as_str()
                );
                (*e, h)
            })
            .collect();
        Self { by_endpoint }
    }

    fn record(&self, endpoint: &'static str, d: Duration) {
        if let Some((_, h)) = self.by_endpoint.iter().find(|(e, _)| *e == endpoint) {
            h.record(d.as_secs_f64());
        }
    }
}

/// The caller's address for the access log (empty when unknown), formatted
/// only when the event is actually logged.
struct PeerField(Option<SocketAddr>);

impl std::fmt::Display for PeerField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => p.fmt(f),
            None => Ok(()),
        }
    }
}

/// The sanitised client label, computed only when the event is logged.
struct ClientField<'a>(&'a (dyn Fn(&str) -> String + Send + Sync), Option<&'a str>);

impl std::fmt::Display for ClientField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(c) => f.write_str(&(self.0)(c)),
            None => Ok(()),
        }
    }
}

/// Probes and scrapes are logged at debug, not info, to keep the access log
/// readable.
fn is_probe(endpoint: &str) -> bool {
    super::routes::MACHINE.contains(&endpoint) || endpoint.starts_with("grpc.")
}

/// Whether a gRPC response is tonic's refusal of an oversized message
/// (OUT_OF_RANGE, a code tokend itself never answers).
fn oversized_message<B>(res: &Response<B>) -> bool {
    res.headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
}

/// The outcome when no handler noted one: from the response itself.
fn fallback_outcome<B>(transport: Transport, res: &Response<B>) -> &'static str {
    if let Some(o) = res.extensions().get::<Outcome>() {
        return o.0;
    }
    match transport {
        Transport::Http => match res.status().as_u16() {
            200..=399 => "ok",
            503 => "temporarily_unavailable",
            500..=599 => "server_error",
            _ => "invalid_request",
        },
        Transport::Grpc => match res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
        {
            None | Some("0") => "ok",
            Some("3" | "12") => "invalid_request",
            Some("14") => "temporarily_unavailable",
            Some(_) => "server_error",
        },
    }
}

/// The request's span (see the module docs); disabled unless traces are
/// exported. Only bounded, non-secret values: the method, the route or gRPC
/// method label (never the raw path), the protocol version, the caller's IP.
fn request_span<T>(
    transport: Transport,
    req: &Request<T>,
    endpoint: &'static str,
    peer: Option<SocketAddr>,
) -> tracing::Span {
    let span = tracing::info_span!(
        target: crate::otel::SPAN_TARGET,
        "request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = Empty,
        http.route = Empty,
        http.response.status_code = Empty,
        network.protocol.version = Empty,
        rpc.system = Empty,
        rpc.service = Empty,
        rpc.method = Empty,
        rpc.grpc.status_code = Empty,
        client.address = Empty,
        oauth.grant_type = Empty,
        oauth.client_id = Empty,
        oauth.outcome = Empty,
        oauth.token_type = Empty,
        oauth.refresh_token_issued = Empty,
        tokend.cache_hit = Empty,
        tokend.request_id = Empty,
        "error.type" = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(p) = peer {
        span.record("client.address", p.ip().to_string());
    }
    let known = endpoint != OTHER;
    match transport {
        Transport::Http => {
            let method = match *req.method() {
                http::Method::GET => "GET",
                http::Method::POST => "POST",
                http::Method::HEAD => "HEAD",
                http::Method::PUT => "PUT",
                http::Method::DELETE => "DELETE",
                http::Method::OPTIONS => "OPTIONS",
                http::Method::PATCH => "PATCH",
                _ => "_OTHER",
            };
            let version = match req.version() {
                http::Version::HTTP_10 => "1.0",
                http::Version::HTTP_11 => "1.1",
                http::Version::HTTP_2 => "2",
                _ => "",
            };
            span.record("http.request.method", method);
            span.record("network.protocol.version", version);
            if known {
                span.record("http.route", endpoint);
                span.record("otel.name", format!("{method} {endpoint}"));
            } else {
                span.record("otel.name", method);
            }
        }
        Transport::Grpc => {
            span.record("rpc.system", "grpc");
            match endpoint.split_once('/') {
                Some((service, method)) if known => {
                    span.record("rpc.service", service);
                    span.record("rpc.method", method);
                    span.record("otel.name", endpoint);
                }
                _ => {
                    span.record("otel.name", "grpc");
                }
            }
        }
    }
    span
}

/// gRPC codes that are the server's fault (OpenTelemetry RPC conventions):
/// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS.
fn grpc_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Fills the request span's response attributes.
fn record_response<B>(span: &tracing::Span, transport: Transport, res: &Response<B>) {
    match transport {
        Transport::Http => {
            let status = res.status().as_u16();
            span.record("http.response.status_code", i64::from(status));
            if status >= 500 {
                span.record("otel.status_code", "error");
                span.record("error.type", res.status().as_str());
            }
        }
        Transport::Grpc => {
            // Success travels in the trailers; an error answered at once
            // ("trailers-only") has its status in the headers.
            let code = res
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.status_code", code);
            if grpc_server_error(code) {
                span.record("otel.status_code", "error");
                span.record("error.type", code);
            }
        }
    }
}

/// The access log's `trace_id` (empty when the request has none).
struct TraceField(Option<opentelemetry::trace::TraceId>);

impl std::fmt::Display for TraceField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(t) => t.fmt(f),
            None => Ok(()),
        }
    }
}

impl<S, ReqB, B> tower::Service<Request<ReqB>> for AccessService<S, B>
where
    S: tower::Service<Request<ReqB>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqB: WithDeadline + Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let start = Instant::now();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        let rid = request_id(req.headers());
        let peer = peer_of(&req);
        let record = RequestRecord {
            peer,
            cert: cert_of(&req),
            fields: Arc::default(),
        };
        req.extensions_mut().insert(record.clone());
        let endpoint = endpoint(layer.transport, req.uri().path());
        let caller = crate::otel::caller_context(req.headers());
        // Only sampled requests get a span (see crate::otel).
        let span = if tracing::enabled!(target: crate::otel::SPAN_TARGET, tracing::Level::INFO)
            && crate::otel::sampled(caller.as_ref())
        {
            request_span(layer.transport, &req, endpoint, peer)
        } else {
            tracing::Span::none()
        };
        if let Some(cx) = &caller
            && !span.is_disabled()
        {
            crate::otel::set_parent(&span, cx.clone());
        }
        let request_span = span.clone();
        // Reflection is a long-lived bidirectional stream: its request body
        // has no end to wait for.
        let body_fired = Arc::new(AtomicBool::new(false));
        if !endpoint.ends_with("/ServerReflectionInfo") {
            let (within, fired) = (layer.limits.body_read_timeout, body_fired.clone());
            req = req.map(|b| b.with_deadline(within, fired));
        }
        Box::pin(
            async move {
                let share = match peer {
                    Some(p) => layer.shares.acquire(p.ip()).map(Some),
                    None => Some(None),
                };
                let mut res = match (share, layer.limit.clone().try_acquire_owned()) {
                    (None, _) => (layer.reject)(OAuthError::TemporarilyUnavailable(
                        "too many concurrent requests from this address; retry later".into(),
                    )),
                    (Some(_), Err(_)) => (layer.reject)(OAuthError::TemporarilyUnavailable(
                        "too many concurrent requests; retry later".into(),
                    )),
                    (Some(_share), Ok(_permit)) => {
                        match tokio::time::timeout(layer.limits.timeout, inner.call(req)).await {
                            Ok(Ok(res)) => res,
                            Ok(Err(never)) => match never {},
                            Err(_) => (layer.reject)(OAuthError::TemporarilyUnavailable(
                                "the request took too long".into(),
                            )),
                        }
                    }
                };
                if body_fired.load(Ordering::Relaxed) {
                    // Whatever the handler made of the cut body, the caller
                    // learns what happened.
                    let e = OAuthError::invalid_request(
                        "the request body did not arrive within server.body_read_timeout_secs",
                    );
                    record.set_outcome(e.code());
                    res = (layer.reject)(e);
                }
                if layer.transport == Transport::Grpc && oversized_message(&res) {
                    // tonic refuses a message over the configured size (before
                    // buffering it) with OUT_OF_RANGE and no details; tokend
                    // answers it like an oversized HTTP body.
                    let e = OAuthError::RequestTooLarge(
                        "the message is larger than grpc.max_message_bytes".into(),
                    );
                    record.set_outcome(e.code());
                    res = (layer.reject)(e);
                }
                if let Ok(mut v) = HeaderValue::from_str(&rid) {
                    // Unique per response: HPACK "never indexed", so it does not
                    // churn the HTTP/2 header tables of both peers.
                    v.set_sensitive(true);
                    res.headers_mut().insert("x-request-id", v);
                }
                let fields = std::mem::take(&mut *record.fields.lock());
                let outcome = fields
                    .outcome
                    .unwrap_or_else(|| fallback_outcome(layer.transport, &res));
                let elapsed = start.elapsed();
                let transport = layer.transport.as_str();
                layer.durations.record(endpoint, elapsed);
                // Probes answering "not ready" are not OAuth errors.
                if outcome != "ok" && !is_probe(endpoint) {
                    metrics::counter!(
                        "tokend_oauth_errors_total",
                        "error" => outcome,
                        "transport" => transport
                    )
                    .increment(1);
                }
                let latency_ms = elapsed.as_secs_f64() * 1000.0;
                let grant_type = fields.grant_type.unwrap_or("");
                if !request_span.is_disabled() {
                    record_response(&request_span, layer.transport, &res);
                    request_span.record("oauth.outcome", outcome);
                    request_span.record("tokend.request_id", rid.as_str());
                    if !grant_type.is_empty() {
                        request_span.record("oauth.grant_type", grant_type);
                    }
                    if let Some(c) = fields.client_id.as_deref() {
                        request_span.record("oauth.client_id", (layer.label)(c));
                    }
                }
                let trace_id = TraceField(crate::otel::trace_id(&request_span, caller.as_ref()));
                // Field values are only evaluated (and formatted) when the event
                // is enabled, so a quiet log costs nothing here.
                macro_rules! access {
                ($lvl:expr) => {
                    tracing::event!(
                        target: "tokend::access",
                        $lvl,
                        transport,
                        endpoint,
                        client_id = %ClientField(&*layer.label, fields.client_id.as_deref()),
                        grant_type,
                        outcome,
                        latency_ms,
                        peer = %PeerField(peer),
                        request_id = %rid,
                        trace_id = %trace_id,
                        "request"
                    )
                };
            }
                if is_probe(endpoint) {
                    access!(tracing::Level::DEBUG);
                } else {
                    access!(tracing::Level::INFO);
                }
                Ok(res)
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(endpoint(Transport::Http, "/oauth/token"), "/oauth/token");
        for route in super::super::routes::ALL {
            assert_eq!(
                endpoint(Transport::Http, route),
                *route,
                "labelled as itself"
            );
        }
        assert_eq!(endpoint(Transport::Http, "/secret-in-path"), "other");
        assert_eq!(
            endpoint(Transport::Grpc, "/tokend.v1.TokenService/Issue"),
            "tokend.v1.TokenService/Issue"
        );
        assert_eq!(endpoint(Transport::Grpc, "/evil.Service/X"), "other");
        assert_eq!(
            endpoint(Transport::Grpc, "/tokend.v1.TokenService/Nope"),
            "other"
        );
        assert!(new_request_id() != new_request_id());
        let mut h = http::HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(request_id(&h), "has space");
    }
}
