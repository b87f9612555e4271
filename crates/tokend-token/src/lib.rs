//! Token material: signing keys and the JWKS (`keys`), RFC 9068 JWT access
//! tokens (`jwt`), JWT client assertions (`assertion`), opaque random handles for codes and refresh tokens
//! (`opaque`), sealed blobs for login challenges (`sealed`), and the
//! verified-token cache used by introspection (`cache`).

pub mod assertion;
pub mod cache;
pub mod jwt;
pub mod keys;
pub mod opaque;
pub mod sealed;
pub mod spki;

pub use jwt::{AccessClaims, VerifyError};
pub use keys::{Algorithm, JwkSet, KeyLookup, KeySet, SigningKey};
