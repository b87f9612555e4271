//! tokend-verify: what a resource server needs to accept tokend's access
//! tokens without asking tokend about each request.
//!
//! - [`Verifier`] verifies RFC 9068 access tokens locally, strictly (`typ`,
//!   `iss`, `aud`, `exp`/`nbf` with leeway, the algorithm pinned by the JWK,
//!   never `none` or HMAC), against the issuer's JWKS which it fetches, caches
//!   and refetches when a token names an unknown `kid` (rate-limited).
//! - It learns revocations from tokend's `RevocationFeed` stream
//!   ([`feed`]): one token, a grant family, every token of a client or of a
//!   subject before a mark, a disabled client. The stream reconnects with
//!   backoff and resumes from its cursor; while it is down longer than
//!   [`FeedConfig::max_staleness`] the [`FeedPolicy`] decides: reject
//!   everything (the default) or accept until `exp`.
//! - [`AuthLayer`] guards axum and tonic services alike (401 / UNAUTHENTICATED)
//!   and puts the [`VerifiedToken`] into the request extensions; [`Require`]
//!   adds scope and audience checks (403 `insufficient_scope` /
//!   PERMISSION_DENIED).
//! - Certificate-bound tokens (RFC 8705): [`Verifier::verify_bound`] and the
//!   layer compare `cnf.x5t#S256` with the TLS client certificate
//!   ([`PeerCertificate`]); a bound token without its certificate is
//!   refused, and [`VerifierConfig::require_certificate_binding`] refuses
//!   bearer tokens too.
//! - Metrics through the `metrics` facade ([`metrics`]) and `tracing` spans;
//!   the token itself is never logged or recorded.
//!
//! It depends on `tokend-token` only (no store, no server): tokend is known
//! through its JWKS and the public proto. See docs/resource-servers.md.

pub mod feed;
mod jwks;
pub mod layer;
pub mod metrics;
pub mod revocation;
mod verifier;

pub use feed::{FeedConfig, FeedPolicy};
pub use jwks::JwksConfig;
pub use layer::{
    AuthLayer, PeerCertificate, RejectReason, Rejection, Require, VerifiedToken, bearer_token,
    require_audience, require_scope,
};
pub use revocation::RevocationSet;
pub use tokend_token::AccessClaims;
pub use verifier::{FeedStatus, Verifier, VerifierConfig};

/// The generated client of `tokend.v1.RevocationFeed`
/// (proto/tokend/v1/feed.proto).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tokend.v1");
}
