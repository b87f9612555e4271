//! Every HTTP path tokend serves, listed once: the routers take their paths
//! from here and the access layer its bounded `endpoint` labels, so a route
//! cannot be served without a label or labelled without being served.

pub use tokend_core::oauth::endpoints::{
    AUTHORIZE, INTROSPECT, JWKS, METADATA, OOB, REVOKE, TOKEN,
};

/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Readiness.
pub const READYZ: &str = "/readyz";
/// Prometheus exposition.
pub const METRICS: &str = "/metrics";

/// Every path, OAuth endpoints first.
pub const ALL: &[&str] = &[
    TOKEN, INTROSPECT, REVOKE, AUTHORIZE, OOB, METADATA, JWKS, HEALTHZ, READYZ, METRICS,
];

/// Paths polled by machines (probes, scrapers): logged at debug.
pub const MACHINE: &[&str] = &[HEALTHZ, READYZ, METRICS];
