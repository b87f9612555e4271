//! End-to-end tests over real sockets, on the harness in `tests/common` (the
//! modules below share helpers only through it). One test binary so the link
//! step runs once. The long soak is ignored by default; run it with
//! `cargo test -p tokend --test api -- --ignored soak`.

#[path = "../common/mod.rs"]
mod common;

mod authorization_code;
mod cli;
mod client_credentials;
mod failover;
mod faults;
mod federation;
mod feed;
mod feed_measure;
mod grpc;
mod hardening;
mod hardening_authorize;
mod held_streams;
mod hostile;
mod http_protocol;
mod introspection;
mod keys;
mod lifecycle;
mod mtls;
mod ops;
mod partner_compat;
mod private_key_jwt;
mod process;
mod redis_store;
mod redis_tls;
mod reload;
mod resource_server;
mod sentinel;
mod sizing;
mod soak;
mod store_eviction;
mod throttle;
mod tls;
mod token_exchange;
mod tracing;
