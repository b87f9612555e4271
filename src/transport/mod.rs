//! Thin adapters from the wire onto the OAuth core. No OAuth rule is decided
//! here: transports decode, call `oauth::Core`, and encode.

pub mod access;
pub mod admin;
pub mod budget;
pub mod codec;
pub mod feed;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod routes;
pub mod tls;
