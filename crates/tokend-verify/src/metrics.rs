//! Metrics, through the [`metrics`](https://docs.rs/metrics) facade: install
//! any recorder (e.g. `metrics-exporter-prometheus`) in the application and
//! these appear; without one they cost next to nothing.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `tokend_verify_verifications_total` | counter | `result` = `accepted` / `rejected` | tokens verified by a [`Verifier`](crate::Verifier) |
//! | `tokend_verify_rejections_total` | counter | `reason` ([`RejectReason::as_str`](crate::RejectReason::as_str)) | rejections by reason, including 403s of [`Require`](crate::Require) |
//! | `tokend_verify_feed_connected` | gauge | | 1 while the revocation feed stream is open, else 0 |
//! | `tokend_verify_feed_lag_seconds` | gauge | | now minus the time (`at_ms`) of the last live event received |
//! | `tokend_verify_feed_events_total` | counter | `kind` | feed events applied |
//! | `tokend_verify_feed_reconnects_total` | counter | | feed streams that ended and were reopened |
//! | `tokend_verify_revocations` | gauge | | entries in the revocation set |
//! | `tokend_verify_jwks_fetches_total` | counter | `result` = `ok` / `error` | JWKS fetches |

use crate::layer::RejectReason;

pub const VERIFICATIONS: &str = "tokend_verify_verifications_total";
pub const REJECTIONS: &str = "tokend_verify_rejections_total";
pub const FEED_CONNECTED: &str = "tokend_verify_feed_connected";
pub const FEED_LAG: &str = "tokend_verify_feed_lag_seconds";
pub const FEED_EVENTS: &str = "tokend_verify_feed_events_total";
pub const FEED_RECONNECTS: &str = "tokend_verify_feed_reconnects_total";
pub const REVOCATIONS: &str = "tokend_verify_revocations";
pub const JWKS_FETCHES: &str = "tokend_verify_jwks_fetches_total";

pub(crate) fn accepted() {
    metrics::counter!(VERIFICATIONS, "result" => "accepted").increment(1);
}

pub(crate) fn rejected(reason: RejectReason) {
    if reason.counts_as_verification() {
        metrics::counter!(VERIFICATIONS, "result" => "rejected").increment(1);
    }
    metrics::counter!(REJECTIONS, "reason" => reason.as_str()).increment(1);
}

pub(crate) fn feed_connected(up: bool) {
    metrics::gauge!(FEED_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub(crate) fn feed_lag(seconds: f64) {
    metrics::gauge!(FEED_LAG).set(seconds.max(0.0));
}

pub(crate) fn feed_event(kind: &'static str) {
    metrics::counter!(FEED_EVENTS, "kind" => kind).increment(1);
}

pub(crate) fn feed_reconnect() {
    metrics::counter!(FEED_RECONNECTS).increment(1);
}

pub(crate) fn revocations(n: usize) {
    metrics::gauge!(REVOCATIONS).set(n as f64);
}

pub(crate) fn jwks_fetch(ok: bool) {
    metrics::counter!(JWKS_FETCHES, "result" => if ok { "ok" } else { "error" }).increment(1);
}
