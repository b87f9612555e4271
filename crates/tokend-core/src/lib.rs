//! tokend's core: every OAuth rule ([`oauth`]) and the shared state behind
//! one trait ([`store`]: embedded memory, Redis, Redis Cluster).
//!
//! This crate knows no transport: no tonic, axum, hyper or clap appear in its
//! dependencies (`cargo tree -p tokend-core -e normal` proves it, and CI
//! checks it). The service crate turns wire requests into the plain types of
//! [`oauth`] and results back into wire responses; token material comes from
//! `tokend-token`, which knows no store.
//!
//! Components own their settings: [`store::StoreSettings`] is the `[store]`
//! section as written, and the service's config module only assembles it.

pub mod de;
pub mod feed;
pub mod oauth;
pub mod store;
