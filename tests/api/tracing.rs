//! Distributed tracing (issue 20), end to end: a real `tokend serve` process
//! exporting over OTLP/gRPC to a collector in this test (a tonic server on
//! the `opentelemetry-proto` types, on a loopback socket). The export
//! pipeline is process-global (one subscriber, one provider), so every test
//! here runs tokend as a child process with its own collector.
//!
//! Checked: spans join the caller's trace (`traceparent` over HTTP and gRPC
//! metadata) and carry the conventional attributes; a Redis call is a child
//! span; the access log names the trace; sampling follows the caller; no
//! secret, token, code or challenge is ever exported; a collector that never
//! answers costs dropped (and counted) spans, not failed requests, and does
//! not hold up shutdown; bad settings are refused by name.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::net::TcpListener;

use crate::common::flows::{
    LOGIN_APP_TOKEN, WEB_CB, accept, challenge_for, login_client, param, pkce, redeem, refresh, s,
};
use crate::common::grpc::{introspect_request, issue_request};
use crate::common::http::{basic_header, sample};
use crate::common::process::tokend_command;
use crate::common::{ConfigBuilder, RedisServer, SECRET, TokendProcess, eventually};

/// Bound on spans reaching the collector (the batch delay is set to 100 ms).
const ARRIVE: Duration = Duration::from_secs(20);

/// An OTLP/gRPC trace collector on a loopback port, keeping every export.
struct Collector {
    url: String,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Keep(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Keep {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Keep(received.clone()));
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self {
            url,
            received,
            task,
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<SpanView> {
        let got = self.received.lock().unwrap();
        let mut out = Vec::new();
        for req in got.iter() {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push(SpanView {
                            name: span.name.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            kind: span.kind,
                            attrs: attributes(&span.attributes),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Everything exported, as text: names, attributes, events, resources,
    /// links, trace state, status messages.
    fn everything(&self) -> String {
        format!("{:?}", self.received.lock().unwrap())
    }

    /// Waits for a span of `trace_id` named `name`.
    async fn span(&self, trace_id: &str, name: &str) -> SpanView {
        let found = eventually(ARRIVE, || async {
            self.spans()
                .iter()
                .any(|s| s.trace_id == trace_id && s.name == name)
        })
        .await;
        assert!(
            found,
            "no span {name:?} in trace {trace_id} reached the collector; got {:?}",
            self.spans()
                .iter()
                .map(|s| (&s.name, &s.trace_id))
                .collect::<Vec<_>>()
        );
        self.spans()
            .into_iter()
            .find(|s| s.trace_id == trace_id && s.name == name)
            .unwrap()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Clone)]
struct SpanView {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    kind: i32,
    attrs: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

impl SpanView {
    fn attr(&self, key: &str) -> &str {
        self.attrs
            .get(key)
            .unwrap_or_else(|| panic!("span {:?} has no {key}: {:?}", self.name, self.attrs))
    }
}

/// OTLP `SPAN_KIND_SERVER` and `SPAN_KIND_CLIENT`.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

fn value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A `traceparent` for the caller's span `parent` in `trace` (sampled).
fn traceparent(trace: &str, parent: &str) -> String {
    format!("00-{trace}-{parent}-01")
}

/// The standard test clients plus the code flow, exporting to `collector`
/// with every trace recorded.
fn traced(collector: &Collector) -> ConfigBuilder {
    ConfigBuilder::memory()
        .code_flow()
        .set("telemetry.otlp_endpoint", collector.url.as_str())
        .set("telemetry.sampling_ratio", 1.0)
}

/// `tokend serve` on `config`, exporting batches every 100 ms.
async fn serve(config: &ConfigBuilder) -> TokendProcess {
    TokendProcess::serve(config)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start()
        .await
}

/// POSTs a form with Basic credentials and a `traceparent`.
async fn post_traced(
    api: &crate::common::Api,
    path: &str,
    basic: (&str, &str),
    form: &[(&str, &str)],
    tp: &str,
) -> reqwest::Response {
    api.http_client
        .post(api.url(path))
        .header("Authorization", basic_header(basic.0, basic.1))
        .header("traceparent", tp)
        .header("tracestate", "vendor=opaque")
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn requests_join_the_callers_trace_over_http_and_grpc() {
    let collector = Collector::start().await;
    let tokend = serve(
        &traced(&collector)
            .set("telemetry.service_name", "tokend-under-test")
            .set(
                "telemetry.resource_attributes",
                toml::toml! { "deployment.environment.name" = "ci" },
            ),
    )
    .await;

    // HTTP: the caller's span is the parent.
    let (t1, p1) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let r = post_traced(
        &tokend,
        "/oauth/token",
        ("orders-service", SECRET),
        &[("grant_type", "client_credentials")],
        &traceparent(t1, p1),
    )
    .await;
    assert_eq!(r.status(), 200);
    let span = collector.span(t1, "POST /oauth/token").await;
    assert_eq!(span.parent_span_id, p1);
    assert_eq!(span.kind, SERVER);
    for (k, v) in [
        ("http.request.method", "POST"),
        ("http.route", "/oauth/token"),
        ("http.response.status_code", "200"),
        ("network.protocol.version", "1.1"),
        ("client.address", "127.0.0.1"),
        ("oauth.grant_type", "client_credentials"),
        ("oauth.client_id", "orders-service"),
        ("oauth.outcome", "ok"),
        ("oauth.token_type", "access_token"),
        ("oauth.refresh_token_issued", "false"),
    ] {
        assert_eq!(span.attr(k), v, "{k}");
    }
    assert_eq!(span.resource["service.name"], "tokend-under-test");
    assert_eq!(span.resource["deployment.environment.name"], "ci");
    // The access log names the same trace, so logs and traces join.
    tokend.wait_log(&format!("trace_id={t1}"), 1).await;

    // gRPC: the same through request metadata.
    let (t2, p2) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut grpc = tokend.grpc_client().await;
    let mut req = tonic::Request::new(issue_request("orders-service", SECRET));
    req.metadata_mut()
        .insert("traceparent", traceparent(t2, p2).parse().unwrap());
    grpc.issue(req).await.unwrap();
    let span = collector.span(t2, "tokend.v1.TokenService/Issue").await;
    assert_eq!(span.parent_span_id, p2);
    assert_eq!(span.kind, SERVER);
    for (k, v) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "tokend.v1.TokenService"),
        ("rpc.method", "Issue"),
        ("rpc.grpc.status_code", "0"),
        ("oauth.client_id", "orders-service"),
        ("oauth.outcome", "ok"),
    ] {
        assert_eq!(span.attr(k), v, "{k}");
    }

    // A gRPC refusal: its status code and OAuth outcome, not an error of
    // the server's.
    let (t3, p3) = ("11111111111111111111111111111111", "2222222222222222");
    let mut req = tonic::Request::new(introspect_request("not-a-token", "wrong-secret"));
    req.metadata_mut()
        .insert("traceparent", traceparent(t3, p3).parse().unwrap());
    let status = grpc.introspect(req).await.unwrap_err();
    let span = collector
        .span(t3, "tokend.v1.TokenService/Introspect")
        .await;
    assert_eq!(
        span.attr("rpc.grpc.status_code"),
        (status.code() as i32).to_string()
    );
    assert_eq!(span.attr("oauth.outcome"), "invalid_client");
    assert!(!span.attrs.contains_key("otel.status_code"));

    // Without a traceparent tokend starts its own trace.
    let r = tokend
        .post_form(
            "/oauth/token",
            Some(("orders-service", SECRET)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        eventually(ARRIVE, || async {
            collector.spans().iter().any(|s| {
                s.attrs.get("tokend.request_id") == Some(&rid) && s.parent_span_id.is_empty()
            })
        })
        .await,
        "no root span for request {rid}"
    );
}

#[tokio::test]
async fn a_redis_call_is_a_child_span_of_its_request() {
    let redis = RedisServer::start().await;
    let collector = Collector::start().await;
    let tokend = serve(&traced(&collector).store(&redis.url())).await;
    let token = tokend.access_token("orders-service").await;

    let (t, p) = ("5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7");
    let r = post_traced(
        &tokend,
        "/oauth/introspect",
        ("resource-server", SECRET),
        &[("token", &token)],
        &traceparent(t, p),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["active"], true);
    let request = collector.span(t, "POST /oauth/introspect").await;
    assert_eq!(request.parent_span_id, p);
    assert_eq!(request.attr("oauth.token_type"), "access_token");
    assert_eq!(request.attr("tokend.cache_hit"), "false");
    // The revocation read (one MGET) is a client span under the request.
    let store = collector.span(t, "MGET").await;
    assert_eq!(store.parent_span_id, request.span_id);
    assert_eq!(store.kind, CLIENT);
    let port = redis
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/0")
        .to_owned();
    for (k, v) in [
        ("db.system.name", "redis"),
        ("db.system", "redis"),
        ("db.operation.name", "MGET"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
        ("tokend.store.op", "get_many"),
    ] {
        assert_eq!(store.attr(k), v, "{k}");
    }

    // Introspected again: the verified-token cache answers.
    let (t2, p2) = ("6bf92f3577b34da6a3ce929d0e0e4736", "20f067aa0ba902b7");
    post_traced(
        &tokend,
        "/oauth/introspect",
        ("resource-server", SECRET),
        &[("token", &token)],
        &traceparent(t2, p2),
    )
    .await;
    let again = collector.span(t2, "POST /oauth/introspect").await;
    assert_eq!(again.attr("tokend.cache_hit"), "true");
    // Background store calls (the readiness ping every second) start no
    // traces of their own.
    assert!(
        !collector.spans().iter().any(|s| s.name == "PING"),
        "background calls were traced"
    );
}

#[tokio::test]
async fn sampling_follows_the_callers_decision() {
    let collector = Collector::start().await;
    // tokend itself samples nothing...
    let tokend = serve(&traced(&collector).set("telemetry.sampling_ratio", 0.0)).await;
    let form = [("grant_type", "client_credentials")];
    let basic = ("orders-service", SECRET);
    let unsampled = "7bf92f3577b34da6a3ce929d0e0e4736";
    let r = tokend
        .http_client
        .post(tokend.url("/oauth/token"))
        .header("Authorization", basic_header(basic.0, basic.1))
        .header("traceparent", format!("00-{unsampled}-30f067aa0ba902b7-00"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let own = tokend.post_form("/oauth/token", Some(basic), &form).await;
    assert_eq!(own.status(), 200);
    // ...but records what a sampled caller asks for.
    let sampled = "8bf92f3577b34da6a3ce929d0e0e4736";
    post_traced(
        &tokend,
        "/oauth/token",
        basic,
        &form,
        &traceparent(sampled, "40f067aa0ba902b7"),
    )
    .await;
    collector.span(sampled, "POST /oauth/token").await;
    // Spans reach the exporter in the order they end: the two earlier
    // requests would have been exported by now.
    let spans = collector.spans();
    assert!(spans.iter().all(|s| s.trace_id == sampled), "{spans:?}");
    // The unsampled trace is still named in the access log.
    tokend.wait_log(&format!("trace_id={unsampled}"), 1).await;
}

#[tokio::test]
async fn no_secret_token_code_or_challenge_is_ever_exported() {
    let collector = Collector::start().await;
    let tokend = serve(&traced(&collector)).await;
    let tp = traceparent("9bf92f3577b34da6a3ce929d0e0e4736", "50f067aa0ba902b7");
    let mut secrets: Vec<String> = vec![
        SECRET.into(),
        basic_header("orders-service", SECRET),
        basic_header("web-app", SECRET),
        LOGIN_APP_TOKEN.into(),
        "wrong-secret-xyzzy".into(),
        "unconfigured-client-name".into(),
    ];

    // client_credentials, Basic and in the body; a wrong secret; an
    // unknown (caller-chosen) client id.
    let r = post_traced(
        &tokend,
        "/oauth/token",
        ("orders-service", SECRET),
        &[("grant_type", "client_credentials")],
        &tp,
    )
    .await;
    let access = s(&r.json::<serde_json::Value>().await.unwrap()["access_token"]);
    let r = tokend
        .token_in_body("orders-service", SECRET, &[("scope", "orders:write")])
        .await;
    let access2 = s(&r.json::<serde_json::Value>().await.unwrap()["access_token"]);
    assert_eq!(
        tokend
            .token_response("orders-service", "wrong-secret-xyzzy")
            .await
            .status(),
        401
    );
    assert_eq!(
        tokend
            .token_response("unconfigured-client-name", SECRET)
            .await
            .status(),
        401
    );
    // Introspection and revocation, over both transports.
    post_traced(
        &tokend,
        "/oauth/introspect",
        ("resource-server", SECRET),
        &[("token", &access)],
        &tp,
    )
    .await;
    let mut grpc = tokend.grpc_client().await;
    grpc.introspect(introspect_request(&access2, SECRET))
        .await
        .unwrap();
    let issued = grpc
        .issue(issue_request("partner", SECRET))
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert_eq!(tokend.revoke("orders-service", &access).await.status(), 200);

    // The authorization-code flow: challenge, code, PKCE verifier, refresh
    // token, the login app's bearer secret.
    let (verifier, code_challenge) = pkce();
    let challenge = challenge_for(
        &tokend,
        &[
            ("response_type", "code"),
            ("client_id", "web-app"),
            ("redirect_uri", WEB_CB),
            ("scope", "profile"),
            ("state", "state-value-123"),
            ("code_challenge", &code_challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let mut login = login_client(&tokend).await;
    let to = accept(&mut login, &challenge, "user-42", &[])
        .await
        .unwrap();
    let code = param(&to, "code").unwrap();
    let r = redeem(&tokend, &code, &verifier).await;
    assert_eq!(r.status(), 200);
    let tokens: serde_json::Value = r.json().await.unwrap();
    let refresh_token = s(&tokens["refresh_token"]);
    let r = refresh(&tokend, &refresh_token, &[]).await;
    assert_eq!(r.status(), 200);
    let refreshed: serde_json::Value = r.json().await.unwrap();
    post_traced(
        &tokend,
        "/oauth/introspect",
        ("web-app", SECRET),
        &[("token", &s(&refreshed["refresh_token"]))],
        &tp,
    )
    .await;
    secrets.extend([
        access,
        access2,
        issued,
        verifier,
        code_challenge,
        challenge,
        code,
        refresh_token,
        s(&tokens["access_token"]),
        s(&refreshed["access_token"]),
        s(&refreshed["refresh_token"]),
    ]);

    // Wait until the last request's span (the refresh token's
    // introspection) is exported: everything before it has been too.
    assert!(
        eventually(ARRIVE, || async {
            collector.spans().iter().any(|s| {
                s.name == "POST /oauth/introspect"
                    && s.attrs.get("oauth.client_id").map(String::as_str) == Some("web-app")
            })
        })
        .await
    );
    let spans = collector.spans();
    for name in [
        "POST /oauth/token",
        "GET /oauth/authorize",
        "tokend.v1.AuthorizationService/AcceptAuthorization",
        "tokend.v1.TokenService/Introspect",
        "tokend.v1.TokenService/Issue",
        "POST /oauth/revoke",
    ] {
        assert!(
            spans.iter().any(|s| s.name == name),
            "no {name} span: {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
    }
    assert!(
        spans
            .iter()
            .any(|s| s.attrs.get("oauth.token_type").map(String::as_str) == Some("refresh_token")),
        "the refresh token's introspection is typed"
    );
    let everything = collector.everything();
    for secret in &secrets {
        assert!(
            !everything.contains(secret.as_str()),
            "{secret:?} was exported:\n{everything}"
        );
    }
    // Nor does the log (client secrets, Basic headers, the login app secret).
    let log = tokend.log();
    for secret in &secrets[..5] {
        assert!(!log.contains(secret.as_str()), "{secret:?} in the log");
    }
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_spans_not_requests() {
    // Accepts connections and never answers on them.
    let hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hole.accept().await {
            held.push(conn);
        }
    });
    let queue = 8;
    let tokend = TokendProcess::serve(
        &ConfigBuilder::memory()
            .set("telemetry.otlp_endpoint", hole_url.as_str())
            .set("telemetry.sampling_ratio", 1.0)
            .set("telemetry.max_queue_size", queue),
    )
    // Exports wait (far) longer than this test: the queue stays full.
    .env("OTEL_BSP_SCHEDULE_DELAY", "50")
    .env("OTEL_EXPORTER_OTLP_TIMEOUT", "600000")
    .env("OTEL_BSP_EXPORT_TIMEOUT", "600000")
    .start()
    .await;
    let requests = 40;
    for _ in 0..requests {
        let r = tokend
            .post_form(
                "/oauth/token",
                Some(("orders-service", SECRET)),
                &[("grant_type", "client_credentials")],
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    // At most `queue` spans wait; every further one is dropped and counted
    // (each request ends one span; the probes and scrapes add more).
    let dropped = || async {
        let text = tokend.get("/metrics").await.text().await.unwrap();
        sample(&text, "tokend_trace_spans_dropped_total", &[]).unwrap_or(0.0)
    };
    let least = f64::from(requests - queue);
    let counted = eventually(ARRIVE, || async { dropped().await >= least }).await;
    assert!(
        counted,
        "expected at least {least} dropped spans, counted {}",
        dropped().await
    );
    // Shutdown tries to flush, within its budget, and exits cleanly.
    tokend.sigterm();
    let (code, log) = tokend.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("trace export not flushed"), "{log}");
    holder.abort();
}

/// A collector that refuses connections: the spans of every failed export
/// are counted (and requests succeed regardless).
#[tokio::test]
async fn spans_of_failed_exports_are_counted() {
    let closed = crate::common::redis::free_port();
    let tokend = TokendProcess::serve(
        &ConfigBuilder::memory()
            .set(
                "telemetry.otlp_endpoint",
                format!("http://127.0.0.1:{closed}"),
            )
            .set("telemetry.sampling_ratio", 1.0),
    )
    .env("OTEL_BSP_SCHEDULE_DELAY", "50")
    .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
    .start()
    .await;
    for _ in 0..5 {
        let r = tokend
            .post_form(
                "/oauth/token",
                Some(("orders-service", SECRET)),
                &[("grant_type", "client_credentials")],
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let failed = || async {
        let text = tokend.get("/metrics").await.text().await.unwrap();
        (
            sample(&text, "tokend_trace_spans_export_failed_total", &[]).unwrap_or(0.0),
            sample(&text, "tokend_trace_spans_exported_total", &[]).unwrap_or(-1.0),
        )
    };
    assert!(
        eventually(ARRIVE, || async { failed().await.0 >= 5.0 }).await,
        "failed exports not counted: {:?}",
        failed().await
    );
    assert_eq!(failed().await.1, 0.0, "nothing was exported");
}

#[tokio::test]
async fn bad_telemetry_settings_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokend.toml");
    ConfigBuilder::memory()
        .set("telemetry.otlp_endpoint", "otel-collector:4317")
        .set("telemetry.sampling_ratio", 1.5)
        .write(&path);
    let out = tokend_command()
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("telemetry.sampling_ratio: 1.5 is outside 0..=1"),
        "{err}"
    );
    assert!(
        err.contains("telemetry.otlp_endpoint: \"otel-collector:4317\""),
        "{err}"
    );
    assert!(err.contains("http://otel-collector:4317"), "{err}");

    // The standard variable is checked the same way, and serve refuses it.
    ConfigBuilder::memory().write(&path);
    let out = tokend_command()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("telemetry.otlp_endpoint: \"grpc://collector\""),
        "{err}"
    );
    let err = TokendProcess::serve(&ConfigBuilder::memory())
        .env("TOKEND_TELEMETRY_SAMPLING_RATIO", "-1")
        .start_expecting_failure()
        .await;
    assert!(
        err.contains("telemetry.sampling_ratio: -1 is outside 0..=1"),
        "{err}"
    );
}
