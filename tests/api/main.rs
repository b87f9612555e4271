//! End-to-end tests over real sockets. One test binary (modules below) so the
//! link step runs once.

#[path = "../common/mod.rs"]
mod common;

mod authorization_code;
mod cli;
mod client_credentials;
mod faults;
mod grpc;
mod hostile;
mod http_protocol;
mod introspection;
mod keys;
mod lifecycle;
mod ops;
mod process;
mod redis_store;
mod redis_tls;
mod reload;
mod soak;
mod tls;
