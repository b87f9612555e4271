//! The OAuth endpoints' paths, named once: the discovery document (RFC 8414,
//! [`super::Core::metadata`]) advertises them and the HTTP bridge routes them
//! (the service's `transport::routes` lists them with the probes).

/// RFC 6749 3.1 authorization endpoint.
pub const AUTHORIZE: &str = "/oauth/authorize";
/// The out-of-band page showing a code to copy (issue 18; `oob` module).
pub const OOB: &str = "/oauth/oob";
/// RFC 6749 3.2 token endpoint.
pub const TOKEN: &str = "/oauth/token";
/// RFC 7662 introspection endpoint.
pub const INTROSPECT: &str = "/oauth/introspect";
/// RFC 7009 revocation endpoint.
pub const REVOKE: &str = "/oauth/revoke";
/// RFC 8414 authorization server metadata.
pub const METADATA: &str = "/.well-known/oauth-authorization-server";
/// The JWKS (RFC 7517) the access tokens verify against.
pub const JWKS: &str = "/.well-known/jwks.json";
