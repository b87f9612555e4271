//! With the `otel` feature, a JWKS refetch made while verifying a request's
//! token carries that request's W3C trace context, so the resource server's
//! trace continues into tokend; a background fetch starts a trace of its own.
//! (`cargo test -p tokend-verify --features otel --test otel`.)

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use tokend_token::keys::{Algorithm, SigningKey};
use tokend_verify::{Verifier, VerifierConfig};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn a_refetch_inside_a_request_carries_its_traceparent() {
    // The application's tracing: an OpenTelemetry bridge (no exporter needed
    // to have trace and span ids).
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("resource-server")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let old = SigningKey::generate(Algorithm::ES256).unwrap();
    let new = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(&[&old]).await;
    let v = Verifier::start(
        VerifierConfig::new(ISSUER, &jwks.url, AUDIENCE)
            .jwks(|j| j.min_refetch_interval(Duration::ZERO)),
    )
    .await
    .unwrap();
    eventually("the first JWKS", || async { v.is_ready().then_some(()) }).await;
    // The start-up fetch belongs to no request: its span starts a trace of
    // its own.
    let startup = jwks.last_traceparent();

    // A token under a key published since: verifying it refetches, inside
    // the request's span.
    jwks.serve_keys(&[&new, &old]);
    let token = mint(&new, &claims());
    let request = tracing::info_span!("GET /orders");
    let trace_id = request.context().span().span_context().trace_id();
    async { v.verify(&token).await.unwrap() }
        .instrument(request)
        .await;
    let parent = jwks.last_traceparent();
    let parts: Vec<&str> = parent.split('-').collect();
    assert_eq!(parts.len(), 4, "{parent:?}");
    assert_eq!(
        (parts[0], parts[1]),
        ("00", trace_id.to_string().as_str()),
        "{parent}"
    );
    assert_eq!(parts[3], "01", "sampled");
    assert_ne!(parts[2], "0000000000000000");
    assert!(!startup.contains(parts[1]), "{startup} vs {parent}");
}
