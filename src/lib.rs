//! tokend: an OAuth 2.0 token service with a gRPC API and an HTTP bridge.
//!
//! # Layout
//! - [`oauth`]: the core; every protocol rule (client authentication, grants,
//!   scope, introspection, revocation). No transport types.
//! - [`token`]: keys, JWT minting and verification, opaque handles.
//! - [`store`]: the shared-state trait and its backends.
//! - [`transport`]: gRPC (tonic) and HTTP (axum) adapters onto the core.
//! - [`reload`]: hot reload of clients and keys (SIGHUP, file changes).
//! - [`server`]: wiring and lifecycle; [`cli`]: the command line;
//!   [`config`]: the TOML file.

pub mod cli;
pub mod config;
pub mod health;
pub mod metrics;
pub mod oauth;
pub mod reload;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod transport;
pub mod watch;

/// Generated protobuf and gRPC code for `tokend.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("tokend.v1");

    /// Encoded descriptors for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tokend_descriptor");
}
