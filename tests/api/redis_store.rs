//! tokend on Redis, end to end: replicas (real `tokend serve` processes and
//! in-process apps) sharing revocations, restarts, a Redis Cluster, and the
//! behaviour while Redis is down (fail-closed introspection, issuance going on,
//! readiness on both health protocols flipping and recovering).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::common::config::key_file;
use crate::common::grpc::{error_reason, introspect_request, issue_request, revoke_request};
use crate::common::http::error_of;
use crate::common::redis::free_port;
use crate::common::{
    ConfigBuilder, RedisCluster, RedisServer, SECRET, TestApp, TokendProcess, eventually,
};

/// The readiness budget of the issue: both probes follow Redis within 2 s.
const FLIP: Duration = Duration::from_secs(2);

/// A fresh RS256 key in `dir`, shared by the replicas of a test.
fn shared_key(dir: &TempDir) -> PathBuf {
    key_file(dir.path(), "signing.pem", tokend::token::Algorithm::RS256)
}

/// The standard clients on `store_url` with the key file `key`.
fn config_on(store_url: &str, key: &Path) -> ConfigBuilder {
    ConfigBuilder::on_store(store_url).signing_key("RS256", key)
}

/// An in-process tokend on `store_url` with a short store timeout.
async fn app_on(store_url: &str, key: &Path, ready: bool) -> TestApp {
    let config = config_on(store_url, key).set("store.timeout_ms", 200);
    if ready {
        TestApp::start(&config).await
    } else {
        TestApp::start_unready(&config).await
    }
}

async fn issue(app: &TestApp) -> String {
    app.access_token("orders-service").await
}

#[tokio::test]
async fn redis_outage_fails_closed_keeps_issuing_and_recovers() {
    let dir = TempDir::new().unwrap();
    let key = shared_key(&dir);
    let mut redis = RedisServer::start().await;
    let app = app_on(&redis.url(), &key, true).await;
    assert!(app.is_ready().await);
    let token = issue(&app).await;
    assert_eq!(app.introspect(&token).await["active"], true);
    let revoked = issue(&app).await;
    assert_eq!(app.revoke("orders-service", &revoked).await.status(), 200);

    redis.kill();
    assert!(
        eventually(FLIP, || app.is_not_ready()).await,
        "/readyz and gRPC health did not turn NOT_SERVING within 2 s of Redis going away"
    );
    // Introspection cannot read revocations: 503, never active.
    for t in [&token, &revoked] {
        let r = app.introspect_response(t).await;
        assert_eq!(error_of(r).await, (503, "temporarily_unavailable".into()));
    }
    let mut grpc = app.grpc_client().await;
    let status = grpc
        .introspect(introspect_request(&token, SECRET))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(error_reason(&status), "temporarily_unavailable");
    let r = app.revoke("orders-service", &token).await;
    assert_eq!(r.status(), 503);
    let status = grpc
        .revoke(revoke_request("orders-service", &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    // Issuing client_credentials needs no store.
    let fresh = issue(&app).await;
    let issued = grpc
        .issue(issue_request("orders-service", SECRET))
        .await
        .unwrap()
        .into_inner();
    assert!(!issued.access_token.is_empty());

    // A new, empty Redis on the same address: back without a restart.
    redis.restart().await;
    assert!(
        eventually(FLIP, || app.is_ready()).await,
        "/readyz and gRPC health did not turn SERVING within 2 s of Redis returning"
    );
    assert_eq!(app.introspect(&fresh).await["active"], true);
    assert_eq!(app.introspect(&issued.access_token).await["active"], true);
    assert_eq!(app.revoke("orders-service", &fresh).await.status(), 200);
    assert_eq!(app.introspect(&fresh).await, json!({"active": false}));
    app.stop().await;
}

#[tokio::test]
async fn starts_while_redis_is_down_and_becomes_ready_when_it_appears() {
    let dir = TempDir::new().unwrap();
    let key = shared_key(&dir);
    // The store's address is configured before its Redis exists.
    let port = free_port();
    let app = app_on(&format!("redis://127.0.0.1:{port}/0"), &key, false).await;
    // Serving, not ready.
    assert!(eventually(FLIP, || app.is_not_ready()).await);
    let token = issue(&app).await;
    assert_eq!(app.introspect_response(&token).await.status(), 503);

    let _redis = RedisServer::start_on(port).await;
    assert!(
        eventually(FLIP, || app.is_ready()).await,
        "not ready within 2 s of Redis appearing"
    );
    assert_eq!(app.introspect(&token).await["active"], true);
    app.stop().await;
}

#[tokio::test]
async fn two_processes_share_revocations_across_restarts() {
    let dir = TempDir::new().unwrap();
    let key = shared_key(&dir);
    let redis = RedisServer::start().await;
    let config = config_on(&redis.url(), &key);
    let a = TokendProcess::serve(&config).start().await;
    let b = TokendProcess::serve(&config).start().await;

    let revoked = a.access_token("orders-service").await;
    let kept = a.access_token("orders-service").await;
    // Same key on both: B accepts A's tokens, so "inactive" below means revoked.
    assert_eq!(b.introspect(&kept).await["active"], true);
    assert_eq!(b.introspect(&revoked).await["active"], true);
    assert_eq!(b.revoke("orders-service", &revoked).await.status(), 200);
    assert_eq!(a.introspect(&revoked).await, json!({"active": false}));
    assert_eq!(a.introspect(&kept).await["active"], true);

    // Restart A: the revocation lives in Redis, not in the process.
    a.kill();
    let a = TokendProcess::serve(&config).start().await;
    assert_eq!(a.introspect(&revoked).await, json!({"active": false}));
    assert_eq!(a.introspect(&kept).await["active"], true);
    drop(b);
}

#[tokio::test]
async fn revocation_through_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let dir = TempDir::new().unwrap();
    let key = shared_key(&dir);
    let a = app_on(&cluster.url(), &key, true).await;
    let b = app_on(&cluster.url(), &key, true).await;
    let mut tokens = Vec::new();
    for _ in 0..8 {
        tokens.push(issue(&a).await);
    }
    // Several jtis, so the revocation marks land on several nodes.
    for t in &tokens[..4] {
        assert_eq!(b.revoke("orders-service", t).await.status(), 200);
    }
    for (i, t) in tokens.iter().enumerate() {
        let want = i >= 4;
        assert_eq!(a.introspect(t).await["active"], want, "token {i} via a");
        assert_eq!(b.introspect(t).await["active"], want, "token {i} via b");
    }
    a.stop().await;
    b.stop().await;
}

/// Calls per Redis command since the last call (`CONFIG RESETSTAT` after
/// reading `INFO commandstats`).
async fn command_calls(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    let calls = info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        // Redis 7 names subcommands `config|resetstat`.
        .filter(|(name, _)| !(name == "info" || name == "ping" || name.starts_with("config")))
        .collect();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
    calls
}

/// Commands of the request path: without the revocation feed's background
/// log read (`EVAL` of a script that runs `EXISTS`, `XINFO` and `XRANGE`).
fn request_path(calls: Vec<(String, u64)>) -> Vec<(String, u64)> {
    const FEED_POLL: &[&str] = &["eval", "exists", "xinfo", "xrange"];
    calls
        .into_iter()
        .filter(|(name, _)| !FEED_POLL.contains(&name.as_str()))
        .collect()
}

/// The store targets of the performance issue: a steady caller's
/// client_credentials issuance costs no Redis command at all (the
/// secret-guessing defence remembers established callers per replica), and
/// introspection costs one MGET.
#[tokio::test]
async fn steady_callers_cost_no_store_round_trip_to_issue_and_one_to_introspect() {
    let redis = RedisServer::start().await;
    // The revocation feed's log reads (one EVAL per poll, in the background)
    // are not the request path: polled rarely here, and left out below.
    let app = TestApp::start(
        &ConfigBuilder::on_store(&redis.url()).set("revocation_feed.poll_interval_ms", 10_000),
    )
    .await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // First contact: the defence reads its records and marks the caller.
    let token = issue(&app).await;
    app.introspect(&token).await;
    let mut grpc = app.grpc_client().await;
    let request = || issue_request("orders-service", SECRET);
    grpc.issue(request()).await.unwrap();

    command_calls(&mut conn).await;
    for _ in 0..30 {
        issue(&app).await;
        grpc.issue(request()).await.unwrap();
    }
    let after_issue = request_path(command_calls(&mut conn).await);
    // The disabled-flags refresh (one MGET a second) may fall in the window.
    let total: u64 = after_issue.iter().map(|(_, n)| n).sum();
    assert!(
        total <= 3,
        "60 issuances cost Redis commands: {after_issue:?}"
    );

    for _ in 0..20 {
        assert_eq!(app.introspect(&token).await["active"], true);
    }
    let after_introspect = request_path(command_calls(&mut conn).await);
    let mget = after_introspect
        .iter()
        .find(|(n, _)| n == "mget")
        .map_or(0, |(_, n)| *n);
    let others: u64 = after_introspect
        .iter()
        .filter(|(n, _)| n != "mget")
        .map(|(_, n)| n)
        .sum();
    assert!(
        (20..=23).contains(&mget) && others == 0,
        "20 introspections: {after_introspect:?}"
    );
}
