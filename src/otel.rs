//! Distributed tracing (`[telemetry]`, docs/tracing.md): tokend's spans are
//! plain `tracing` spans with the target [`SPAN_TARGET`] (one per request in
//! the access layer, one per Redis call in the store), bridged to
//! OpenTelemetry by `tracing-opentelemetry` and exported over OTLP/gRPC by
//! the SDK's batch span processor, on the tonic already in the tree.
//!
//! - **Off by default, and then free**: with no endpoint the subscriber is
//!   the plain log subscriber and `tokend::span` is filtered out at the
//!   callsite, so a request creates no span at all (the only work left is a
//!   header lookup for `traceparent`, to log the caller's trace id).
//! - **Bounded, never blocking**: spans wait for export in a queue of
//!   `max_queue_size`, counted from the moment a span ends until its batch's
//!   export returned (an export to a silent collector holds its batch for
//!   the exporter's timeout). A span that finds the queue full is dropped and
//!   counted in `tokend_trace_spans_dropped_total`: the SDK drops too but
//!   keeps its count private, so [`Bounded`] keeps the bound itself (the SDK
//!   queue is as large, so it never drops first). Requests never wait on the
//!   collector: the export runs on the SDK's own thread.
//! - **Propagation**: W3C `traceparent`/`tracestate` from HTTP headers and
//!   gRPC metadata (both are HTTP/2 headers) make the request span a child
//!   of the caller's.
//! - **Sampling decided before the span exists** ([`sampled`]): parent-based
//!   (the caller's flag), else `sampling_ratio`. A request that is not
//!   sampled gets no span at all rather than a non-recording one: measured
//!   with tokend-bench, building and then discarding the bridge's span data
//!   cost ~25 % CPU per request at ratio 0.01, deciding first costs nothing
//!   measurable (docs/performance.md). The SDK's sampler then records every
//!   span it is given (parent-based always-on).
//! - **Nothing secret**: spans carry only what the access log carries
//!   (sanitised client id, grant type, outcome) plus protocol attributes;
//!   log events never become span events (the exporting layer sees only
//!   `tokend::span`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use serde::{Deserialize, Deserializer};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use tokend_core::store::instrumented::SPAN_TARGET;

/// The SDK's default queue (`OTEL_BSP_MAX_QUEUE_SIZE`).
const DEFAULT_QUEUE: u64 = 2048;
/// Largest accepted `max_queue_size`: a finished span holds ~1 KiB, so this
/// bounds the queue to ~100 MiB at worst.
const MAX_QUEUE: u64 = 100_000;

/// `[telemetry]` as written. Everything is restart-only.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// The OTLP/gRPC collector (`http://otel-collector:4317`). Unset: the
    /// standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; neither: no export.
    pub otlp_endpoint: Option<String>,
    /// Share of the traces tokend starts itself that are recorded (0..=1);
    /// a caller's sampling decision (`traceparent` flags) is followed.
    /// Unset: `OTEL_TRACES_SAMPLER` (`*always_off`: 0, `*traceidratio`:
    /// `OTEL_TRACES_SAMPLER_ARG`), else 1.
    #[serde(deserialize_with = "de_opt_number")]
    pub sampling_ratio: Option<f64>,
    /// `service.name`. Unset: `OTEL_SERVICE_NAME`, else `tokend`.
    pub service_name: Option<String>,
    /// Extra resource attributes (`deployment.environment.name`, ...), on
    /// top of `OTEL_RESOURCE_ATTRIBUTES`. A table, or `"k=v,k2=v2"` (the
    /// form an environment override takes).
    #[serde(deserialize_with = "de_attributes")]
    pub resource_attributes: BTreeMap<String, String>,
    /// Spans waiting for export at most (see the module docs). Unset:
    /// `OTEL_BSP_MAX_QUEUE_SIZE`, else 2048.
    #[serde(deserialize_with = "de_opt_number")]
    pub max_queue_size: Option<f64>,
}

/// `[telemetry]`, parsed: present only when export is on.
#[derive(Debug, Clone)]
pub struct TraceExport {
    pub endpoint: String,
    pub sampling_ratio: Option<f64>,
    pub service_name: Option<String>,
    pub resource_attributes: Vec<(String, String)>,
    pub max_queue_size: usize,
}

fn de_opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        F(f64),
        I(i64),
        Str(String),
    }
    Ok(Some(match N::deserialize(d)? {
        N::F(f) => f,
        N::I(i) => i as f64,
        N::Str(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}")))?,
    }))
}

fn de_attributes<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum A {
        Table(BTreeMap<String, String>),
        Str(String),
    }
    match A::deserialize(d)? {
        A::Table(t) => Ok(t),
        A::Str(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!("expected key=value pairs, got {p:?}"))
                    })
            })
            .collect(),
    }
}

impl TelemetrySettings {
    /// Fills what the file leaves unset from the standard OpenTelemetry
    /// variables tokend reads itself (the rest the SDK reads on its own);
    /// `OTEL_SDK_DISABLED=true` turns export off.
    pub fn apply_otel_env(&mut self, env: &[(String, String)]) {
        let var = |name: &str| {
            env.iter()
                .find(|(k, v)| k == name && !v.trim().is_empty())
                .map(|(_, v)| v.trim().to_owned())
        };
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            self.otlp_endpoint = None;
            return;
        }
        if self.otlp_endpoint.as_deref().is_none_or(str::is_empty) {
            self.otlp_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        }
        if self.max_queue_size.is_none() {
            self.max_queue_size = var("OTEL_BSP_MAX_QUEUE_SIZE").and_then(|v| v.parse().ok());
        }
        if self.sampling_ratio.is_none() {
            // The standard sampler variables, read the SDK's way; tokend's
            // sampling is always parent-based.
            let arg = var("OTEL_TRACES_SAMPLER_ARG").and_then(|v| v.parse::<f64>().ok());
            self.sampling_ratio = match var("OTEL_TRACES_SAMPLER").as_deref() {
                Some("always_off" | "parentbased_always_off") => Some(0.0),
                Some("traceidratio" | "parentbased_traceidratio") => Some(arg.unwrap_or(1.0)),
                _ => None,
            };
        }
    }

    /// Checks the section; `None` when export is off.
    pub fn parse(&self) -> Result<Option<TraceExport>, Vec<String>> {
        let mut p = Vec::new();
        let endpoint = match self.otlp_endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) => match check_endpoint(e) {
                Ok(()) => Some(e.to_owned()),
                Err(why) => {
                    p.push(format!(
                        "telemetry.otlp_endpoint: {e:?} {why}; expected the OTLP/gRPC URL of a collector, like \"http://otel-collector:4317\""
                    ));
                    None
                }
            },
        };
        if let Some(r) = self.sampling_ratio
            && !(r.is_finite() && (0.0..=1.0).contains(&r))
        {
            p.push(format!(
                "telemetry.sampling_ratio: {r} is outside 0..=1 (0 records no trace tokend starts, 1 records all)"
            ));
        }
        if let Some(n) = &self.service_name
            && n.trim().is_empty()
        {
            p.push("telemetry.service_name: must not be empty".into());
        }
        for k in self.resource_attributes.keys() {
            if k.trim().is_empty() {
                p.push("telemetry.resource_attributes: a key is empty".into());
            }
        }
        let queue = self.max_queue_size.unwrap_or(DEFAULT_QUEUE as f64);
        if !(queue.fract() == 0.0 && (1.0..=MAX_QUEUE as f64).contains(&queue)) {
            p.push(format!(
                "telemetry.max_queue_size: {queue} must be a whole number from 1 to {MAX_QUEUE}"
            ));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(endpoint.map(|endpoint| TraceExport {
            endpoint,
            sampling_ratio: self.sampling_ratio,
            service_name: self.service_name.clone(),
            resource_attributes: self
                .resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_queue_size: queue as usize,
        }))
    }
}

/// An absolute `http(s)://host[:port][/]` URL: gRPC has no path of its own.
fn check_endpoint(e: &str) -> Result<(), &'static str> {
    let uri: http::Uri = e.parse().map_err(|_| "is not a URL")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    let host = uri.host().unwrap_or("");
    if host.is_empty() {
        return Err("has no host");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not carry credentials (use OTEL_EXPORTER_OTLP_HEADERS)");
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err("must not have a path or query");
    }
    Ok(())
}

/// The running export pipeline, flushed and stopped by [`Pipeline::shutdown`].
pub struct Pipeline {
    provider: SdkTracerProvider,
}

impl Pipeline {
    /// Builds the exporter and the provider. Needs a Tokio runtime context
    /// (the exporter's channel runs on it); connects lazily, so an
    /// unreachable collector does not delay the start.
    pub fn start(export: &TraceExport) -> anyhow::Result<Self> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(export.endpoint.clone());
        if export.endpoint.starts_with("https://") {
            exporter = exporter
                .with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
        }
        let exporter = exporter
            .build()
            .context("telemetry.otlp_endpoint: cannot build the OTLP exporter")?;
        let queued = Arc::new(AtomicUsize::new(0));
        let cap = export.max_queue_size;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cap)
            .build();
        let processor = BatchSpanProcessor::new(
            Releasing {
                inner: exporter,
                queued: queued.clone(),
            },
            batch,
        );
        crate::metrics::install();
        let dropped = metrics::counter!("tokend_trace_spans_dropped_total");
        dropped.absolute(0);
        metrics::counter!("tokend_trace_spans_exported_total").absolute(0);
        metrics::counter!("tokend_trace_spans_export_failed_total").absolute(0);
        let mut resource = Resource::builder();
        // OTEL_SERVICE_NAME, when set, names the service unless the file
        // does; the SDK's default would be "unknown_service".
        let service_name = export.service_name.clone().or_else(|| {
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|s| !s.trim().is_empty())
        });
        resource = resource
            .with_service_name(service_name.unwrap_or_else(|| "tokend".into()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attributes(
                export
                    .resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            );
        // The decision is taken before a span exists (see `sampled`): every
        // span the SDK sees is to be recorded.
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: processor,
                queued,
                cap,
                dropped,
            })
            .with_resource(resource.build())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .build();
        RATIO_BITS.store(
            export.sampling_ratio.unwrap_or(1.0).to_bits(),
            Ordering::Relaxed,
        );
        Ok(Self { provider })
    }

    /// The tracer the `tracing` bridge records into.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        self.provider.tracer("tokend")
    }

    /// Exports what is queued and stops, waiting at most `within` (a blocking
    /// call: run it off the async threads). A collector that does not answer
    /// in time costs the spans still queued, never a hung shutdown.
    pub fn shutdown(&self, within: Duration) {
        match self.provider.shutdown_with_timeout(within) {
            Ok(()) => tracing::debug!("trace export flushed"),
            Err(e) => tracing::warn!(error = %e, "trace export not flushed at shutdown"),
        }
    }
}

/// See the module docs: the queue bound, kept here so drops are counted.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans ended and not yet through an export ([`Releasing`] gives them
    /// back).
    queued: Arc<AtomicUsize>,
    cap: usize,
    dropped: metrics::Counter,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, giving each batch's places in the queue back once its
/// export returned (exported, refused or timed out).
#[derive(Debug)]
struct Releasing<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Releasing<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = batch.len();
        let export = self.inner.export(batch);
        let queued = self.queued.clone();
        async move {
            let r = export.await;
            queued.fetch_sub(n, Ordering::AcqRel);
            match &r {
                Ok(()) => {
                    metrics::counter!("tokend_trace_spans_exported_total").increment(n as u64)
                }
                Err(e) => {
                    metrics::counter!("tokend_trace_spans_export_failed_total").increment(n as u64);
                    tracing::debug!(error = %e, spans = n, "trace export failed");
                }
            }
            r
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Reads W3C trace context from request headers (HTTP headers or gRPC
/// metadata alike).
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// `sampling_ratio` of the running pipeline, as `f64` bits (1.0 until one
/// starts: without a pipeline request spans are disabled anyway).
static RATIO_BITS: AtomicU64 = AtomicU64::new(0x3FF0_0000_0000_0000);

/// Whether a request is traced: the caller's decision when it sent a
/// `traceparent`, else `sampling_ratio` (a uniform draw per request:
/// SplitMix64 over a counter, no system randomness needed to sample).
pub fn sampled(caller: Option<&Context>) -> bool {
    if let Some(cx) = caller {
        return cx.span().span_context().is_sampled();
    }
    let ratio = f64::from_bits(RATIO_BITS.load(Ordering::Relaxed));
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    static NEXT: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut z = NEXT.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits as a uniform draw in [0, 1).
    ((z >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < ratio
}

/// The caller's trace context, when the request carries a valid
/// `traceparent` (`tracestate` rides along).
pub fn caller_context(headers: &http::HeaderMap) -> Option<Context> {
    if !headers.contains_key("traceparent") {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of the caller's span (before it is first entered).
pub fn set_parent(span: &tracing::Span, caller: Context) {
    let _ = span.set_parent(caller);
}

/// The trace id for the access log: the request span's when tokend traces,
/// else the caller's (so logs join the caller's trace either way).
pub fn trace_id(span: &tracing::Span, caller: Option<&Context>) -> Option<TraceId> {
    let own = (!span.is_disabled())
        .then(|| span.context().span().span_context().trace_id())
        .filter(|t| *t != TraceId::INVALID);
    own.or_else(|| caller.map(|c| c.span().span_context().trace_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml_text: &str) -> Result<Option<TraceExport>, Vec<String>> {
        let s: TelemetrySettings = toml::from_str(toml_text).unwrap();
        s.parse()
    }

    #[test]
    fn settings_are_checked_by_name() {
        assert!(settings("").unwrap().is_none(), "off without an endpoint");
        let on = settings("otlp_endpoint = \"http://collector:4317\"\nsampling_ratio = 0.25")
            .unwrap()
            .unwrap();
        assert_eq!(on.sampling_ratio, Some(0.25));
        assert_eq!(on.max_queue_size, 2048);
        for bad in ["1.5", "-0.1", "\"nan\""] {
            let e = settings(&format!("sampling_ratio = {bad}")).unwrap_err();
            assert!(e[0].starts_with("telemetry.sampling_ratio: "), "{e:?}");
            assert!(e[0].contains("outside 0..=1"), "{e:?}");
        }
        for bad in [
            "collector:4317",
            "ftp://c:4317",
            "http://",
            "http://c:4317/v1/traces",
            "http://u:p@c:4317",
            "http://c:4317?x=1",
            "not a url",
        ] {
            let e = settings(&format!("otlp_endpoint = \"{bad}\"")).unwrap_err();
            assert!(
                e[0].starts_with("telemetry.otlp_endpoint: "),
                "{bad}: {e:?}"
            );
            assert!(!e[0].contains("u:p@") || bad.contains("u:p@"));
        }
        let e = settings("max_queue_size = 0").unwrap_err();
        assert!(e[0].starts_with("telemetry.max_queue_size: "), "{e:?}");
        let a = settings(
            "otlp_endpoint = \"https://c\"\nresource_attributes = \"deployment.environment.name=prod, team=id\"",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            a.resource_attributes,
            [
                ("deployment.environment.name".into(), "prod".into()),
                ("team".into(), "id".into())
            ]
        );
    }

    #[test]
    fn standard_variables_fill_what_the_file_leaves_unset() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let mut s = TelemetrySettings::default();
        s.apply_otel_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "64"),
        ]));
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://generic:4317"));
        assert_eq!(s.max_queue_size, Some(64.0));
        let mut s = TelemetrySettings::default();
        s.apply_otel_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ]));
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://traces:4317"));
        let mut s = TelemetrySettings {
            otlp_endpoint: Some("http://file:4317".into()),
            ..Default::default()
        };
        s.apply_otel_env(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://generic:4317",
        )]));
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://file:4317"));
        s.apply_otel_env(&env(&[("OTEL_SDK_DISABLED", "true")]));
        assert_eq!(s.otlp_endpoint, None);
        for (sampler, arg, ratio) in [
            ("parentbased_traceidratio", "0.25", Some(0.25)),
            ("traceidratio", "0.5", Some(0.5)),
            ("always_off", "", Some(0.0)),
            ("parentbased_always_on", "", None),
        ] {
            let mut s = TelemetrySettings::default();
            s.apply_otel_env(&env(&[
                ("OTEL_TRACES_SAMPLER", sampler),
                ("OTEL_TRACES_SAMPLER_ARG", arg),
            ]));
            assert_eq!(s.sampling_ratio, ratio, "{sampler}");
        }
        let mut s = TelemetrySettings {
            sampling_ratio: Some(0.1),
            ..Default::default()
        };
        s.apply_otel_env(&env(&[("OTEL_TRACES_SAMPLER", "always_off")]));
        assert_eq!(s.sampling_ratio, Some(0.1), "the file wins");
    }

    #[test]
    fn a_callers_flag_decides_else_the_ratio() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        let unsampled = caller_context(&h).unwrap();
        assert!(!sampled(Some(&unsampled)));
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert!(sampled(Some(&caller_context(&h).unwrap())));
        // (No pipeline in unit tests: the ratio is 1.)
        assert!(sampled(None));
    }

    #[test]
    fn the_callers_context_is_read_from_traceparent() {
        let mut h = http::HeaderMap::new();
        assert!(caller_context(&h).is_none());
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let cx = caller_context(&h).expect("valid traceparent");
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        h.insert("traceparent", "00-garbage".parse().unwrap());
        assert!(caller_context(&h).is_none());
    }
}
