//! The one test harness of the integration test binaries: tokend in-process
//! ([`app`]) or as a child process ([`process`]), both seen through the same
//! client handle ([`api`]); configs built as TOML values ([`config`]); real
//! `redis-server` processes ([`redis`]); waiting with deadlines ([`wait`]);
//! and the request helpers the test modules share ([`http`], [`grpc`],
//! [`flows`], [`load`], [`pki`]). Test modules import from here, never from
//! each other. Everything talks over real loopback sockets.
// Each test binary uses its own subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod app;
pub mod assertion;
pub mod config;
pub mod flows;
pub mod grpc;
pub mod http;
pub mod load;
pub mod pki;
pub mod process;
pub mod redis;
pub mod wait;

pub use api::Api;
pub use app::TestApp;
pub use config::ConfigBuilder;
pub use process::TokendProcess;
pub use redis::{RedisCluster, RedisSentinelGroup, RedisServer};
pub use wait::eventually;

/// Secret of every test client: its `sha256:` hash is in the configs.
pub const SECRET: &str = "s3cret-for-tests";

/// Fails when any of `planted` (credentials, tokens) appears in `logs`;
/// for each of `jwts`, its payload and signature on their own are planted
/// too.
pub fn assert_not_logged(logs: &str, planted: &[String], jwts: &[&String]) {
    let parts = jwts
        .iter()
        .flat_map(|t| t.split('.').skip(1).map(str::to_owned));
    for v in planted.iter().cloned().chain(parts) {
        assert!(
            !logs.contains(&v),
            "a planted credential appears in the logs: {v}"
        );
    }
}
