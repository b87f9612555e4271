//! Issue 15's measurements of the revocation feed (ignored by default; the
//! figures are in docs/revocation-feed.md):
//!
//! cargo test --release -p tokend --test api -- --ignored feed_measure --nocapture
//!
//! - `propagation`: from the return of a `Revoke` call on replica A to a
//!   `tokend_verify::Verifier` fed by replica B refusing the token, two
//!   replicas on one real Redis: p50, p99 and the maximum.
//! - `idle_watchers`: the resident set and CPU of a `tokend serve` process
//!   (a child process, so only the server is counted) holding 1000 idle
//!   watchers on 100 HTTP/2 connections.

use std::time::{Duration, Instant};

use tokend::pb::revocation_feed_client::RevocationFeedClient;
use tokend::pb::{RevokeRequest, WatchRequest};
use tokend_verify::{FeedConfig, RejectReason, Verifier, VerifierConfig};

use crate::common::config::{ISSUER, sha256};
use crate::common::{ConfigBuilder, RedisServer, SECRET, TestApp, TokendProcess, eventually};

fn config() -> ConfigBuilder {
    let hash = sha256(SECRET);
    ConfigBuilder::memory()
        .client(toml::toml! {
            client_id = "watcher"
            secret_hashes = [(hash.as_str())]
            grant_types = ["client_credentials"]
            revocation_feed = true
        })
        .set("auth_throttle.enabled", false)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored feed_measure --nocapture"]
async fn propagation() {
    const N: usize = 300;
    let redis = RedisServer::start().await;
    let (_key, a, b) = TestApp::replicas(
        config().store(&redis.url()),
        tokend::token::Algorithm::ES256,
    )
    .await;
    let feed = FeedConfig::new(format!("http://{}", b.grpc), "watcher", SECRET);
    let v = Verifier::start(
        VerifierConfig::new(ISSUER, b.url("/.well-known/jwks.json"), "orders-api").feed(feed),
    )
    .await
    .unwrap();
    assert!(eventually(Duration::from_secs(20), || async { v.is_ready() }).await);
    let mut grpc = a.grpc_client().await;
    let mut lat = Vec::with_capacity(N);
    for i in 0..N {
        let t = a.access_token("orders-service").await;
        v.verify(&t).await.unwrap();
        // Not in step with B's reads of the log (a loop that starts right
        // after one would always wait a whole poll interval).
        tokio::time::sleep(Duration::from_micros((i as u64 * 7919) % 53_000)).await;
        grpc.revoke(RevokeRequest {
            client_id: "orders-service".into(),
            client_secret: SECRET.into(),
            token: t.clone(),
            token_type_hint: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
        let start = Instant::now();
        loop {
            if matches!(v.verify_now(&t), Err(r) if r.reason() == RejectReason::Revoked) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "not propagated");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lat.push(start.elapsed());
    }
    lat.sort();
    println!(
        "propagation over {N} revocations (Revoke at replica A -> verifier fed by B): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[N - 1]
    );
    a.stop().await;
    b.stop().await;
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // utime and stime: fields 14 and 15, i.e. 11 and 12 after the state.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored feed_measure --nocapture"]
async fn idle_watchers() {
    const WATCHERS: usize = 1000;
    const CONNECTIONS: usize = 100;
    let tokend = TokendProcess::serve(
        &config()
            .set("revocation_feed.max_watchers", 2000)
            .set("revocation_feed.max_watchers_per_client", 2000)
            .set("server.max_concurrent_streams", 100),
    )
    .start()
    .await;
    let before = tokend.rss_kib();
    let mut streams = Vec::with_capacity(WATCHERS);
    for _ in 0..CONNECTIONS {
        let channel = tokend.grpc_channel().await;
        for _ in 0..WATCHERS / CONNECTIONS {
            let mut c = RevocationFeedClient::new(channel.clone());
            let mut s = c
                .watch(WatchRequest {
                    client_id: "watcher".into(),
                    client_secret: SECRET.into(),
                    cursor: String::new(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            // The snapshot marker: the watch is established.
            s.message().await.unwrap().unwrap();
            streams.push(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = tokend.rss_kib();
    let ticks = cpu_ticks(tokend.pid());
    let idle = Duration::from_secs(20);
    tokio::time::sleep(idle).await;
    let spent = cpu_ticks(tokend.pid()) - ticks;
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "{WATCHERS} idle watchers on {CONNECTIONS} connections: RSS {before} KiB -> {held} KiB (+{} KiB, {:.1} KiB per watcher); CPU {:.2} % of one core over {idle:?} (heartbeats every 5 s)",
        held - before,
        (held - before) as f64 / WATCHERS as f64,
        spent as f64 / hz / idle.as_secs_f64() * 100.0
    );
    drop(streams);
}
