//! Log setup: `[log] format` (text or JSON) and `level`; `RUST_LOG`, when set,
//! takes precedence over `level` for fine-grained filters.
//!
//! Whatever the level, [`ALWAYS`] caps the HTTP/2, HTTP/1, TLS and tonic
//! internals at `info`: at debug/trace they dump frames and headers
//! (`Authorization: Basic ...`) and bodies (client secrets). The access log
//! (`tokend::access`) is tokend's own per-request record instead.
//!
//! The same subscriber carries trace export when `[telemetry]` turns it on
//! ([`crate::otel`]): the log output then has its own filter and never shows
//! the exported spans (`tokend::span`), and the exporting layer sees only
//! those spans, never a log event.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// `[log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl LogSettings {
    /// Checks `level` (a level or an `EnvFilter` directive list).
    pub fn check(&self) -> Result<(), String> {
        parse_level(&self.level)
            .map(|_| ())
            .map_err(|e| format!("log.level: {e}"))
    }
}

/// Filter directives appended to every configuration (see the module docs).
pub const ALWAYS: &[&str] = &[
    "h2=info",
    "hyper=info",
    "hyper_util=info",
    "tonic=info",
    "tower=info",
    "tower_http=info",
    "axum=info",
    "rustls=info",
    "tokio_rustls=info",
    "reqwest=info",
    // Spans for trace export (crate::otel), never log lines.
    "tokend::span=off",
];

/// Checks a level or filter directive.
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("{level:?} is not a log level or filter ({e})"))
}

/// Installs the global subscriber (once; later calls are no-ops) and, when
/// `export` is set, starts the trace export pipeline (in a Tokio runtime
/// context) and returns it for the shutdown flush.
pub fn init(
    settings: &LogSettings,
    export: Option<&crate::otel::TraceExport>,
) -> anyhow::Result<Option<crate::otel::Pipeline>> {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| parse_level(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let filter = ALWAYS.iter().fold(filter, |f, d| {
        f.add_directive(d.parse().expect("static directive"))
    });
    // Colour only on a terminal: a log file or a collector gets plain text
    // (issue 14, item 10).
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let Some(export) = export else {
        // No export: the plain subscriber, one global filter, as before
        // tracing existed (request spans are disabled at their callsite).
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        let _ = match settings.format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .try_init(),
            LogFormat::Text => builder.try_init(),
        };
        return Ok(None);
    };
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let pipeline = crate::otel::Pipeline::start(export)?;
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt = match settings.format {
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    // Only tokend's spans, without the bridge's extras (source location,
    // thread names, busy/idle times): what docs/tracing.md lists.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(pipeline.tracer())
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // Nothing reads OpenTelemetry's current context: no attach/detach
        // per poll of a request.
        .with_context_activation(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(crate::otel::SPAN_TARGET, tracing::Level::TRACE),
        );
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(spans)
        .try_init();
    Ok(Some(pipeline))
}
