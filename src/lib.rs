//! tokend: an OAuth 2.0 token service with a gRPC API and an HTTP bridge.
//!
//! This crate is the service: configuration, transports, wiring, reload,
//! health, metrics, logs and the command line. The rules live below it
//! (docs/architecture.md draws the layers; the compiler enforces them):
//! - `tokend-core` ([`oauth`], [`store`]): every protocol rule and the
//!   shared state; no transport types.
//! - `tokend-token` ([`token`]): keys, JWKS, JWT minting and verification,
//!   opaque handles; no I/O.
//!
//! Here:
//! - [`config`]: the TOML file, parsed once into live and boot settings;
//!   each component owns its section ([`signing`], [`telemetry`],
//!   [`transport::tls`], `store`); [`otel`]: trace export (`[telemetry]`).
//! - [`transport`]: gRPC (tonic) and HTTP (axum) adapters onto the core.
//! - [`server`]: wiring and lifecycle; [`reload`]: hot reload (SIGHUP, file
//!   changes); [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod federation;
pub mod health;
pub mod metrics;
pub mod otel;
pub mod reload;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod transport;
pub mod watch;

pub use tokend_core::{feed, oauth, store};
pub use tokend_token as token;

/// Generated protobuf and gRPC code for `tokend.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("tokend.v1");

    /// Encoded descriptors for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tokend_descriptor");
}
