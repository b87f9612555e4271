//! Log setup: `[log] format` (text or JSON) and `level`; `RUST_LOG`, when set,
//! takes precedence over `level` for fine-grained filters.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Checks a level or filter directive.
pub fn parse_level(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("{level:?} is not a log level or filter ({e})"))
}

/// Installs the global subscriber (once; later calls are no-ops).
pub fn init(settings: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| parse_level(&settings.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
