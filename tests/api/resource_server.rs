//! Issue 15: a `tokend_verify::Verifier` (the resource-server library)
//! connected to one replica rejects what was revoked on the other (two
//! replicas sharing a real Redis): a token revoked over HTTP, a client cut
//! off and a subject logged out with the admin API, and a refresh-token
//! family killed by reuse. A verifier whose tokend restarts misses nothing,
//! whether it resumes from its cursor or (away longer than the log keeps)
//! gets a fresh snapshot. Waits are bounded polls, not timing assertions.

use std::time::Duration;

use tokend_verify::{FeedConfig, RejectReason, Verifier, VerifierConfig};

use crate::common::config::{ISSUER, sha256};
use crate::common::flows::{refresh, s, web_tokens};
use crate::common::grpc::{ADMIN_SECRET, admin_client};
use crate::common::redis::free_port;
use crate::common::wait::next_ms;
use crate::common::{Api, ConfigBuilder, RedisServer, SECRET, TestApp, eventually};

fn config(redis: &RedisServer) -> ConfigBuilder {
    let hash = sha256(SECRET);
    ConfigBuilder::memory()
        .store(&redis.url())
        .code_flow()
        .client(toml::toml! {
            client_id = "watcher"
            secret_hashes = [(hash.as_str())]
            grant_types = ["client_credentials"]
            revocation_feed = true
        })
        .set("revocation_feed.heartbeat_secs", 1)
        .set("auth_throttle.enabled", false)
        .admin(Some(ADMIN_SECRET))
}

/// A verifier for the audiences the test clients' tokens carry, fed by
/// `api`'s replica; ready (snapshot applied) when returned.
async fn verifier(api: &Api) -> Verifier {
    let mut feed = FeedConfig::new(format!("http://{}", api.grpc), "watcher", SECRET)
        .max_staleness(Duration::from_secs(60));
    feed.backoff_initial = Duration::from_millis(20);
    feed.backoff_max = Duration::from_millis(200);
    let cfg = VerifierConfig::new(ISSUER, api.url("/.well-known/jwks.json"), "orders-api")
        .audience("bookings-api")
        .feed(feed);
    let v = Verifier::start(cfg).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || async { v.is_ready() }).await);
    v
}

/// Polls until `token` is refused as revoked (bounded).
async fn until_revoked(v: &Verifier, token: &str) {
    let revoked = eventually(Duration::from_secs(20), || async {
        matches!(v.verify(token).await, Err(r) if r.reason() == RejectReason::Revoked)
    })
    .await;
    assert!(
        revoked,
        "the verifier still accepts a token revoked at tokend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_revocation_on_one_replica_reaches_a_verifier_on_the_other() {
    let redis = RedisServer::start().await;
    let (_key, a, b) = TestApp::replicas(config(&redis), tokend::token::Algorithm::ES256).await;
    let v = verifier(&b).await;
    let mut admin = admin_client(&a, Some(ADMIN_SECRET)).await;

    // A token revoked over HTTP at A; its sibling stays valid.
    let t = a.access_token("orders-service").await;
    let sibling = a.access_token("orders-service").await;
    v.verify(&t).await.unwrap();
    assert_eq!(a.revoke("orders-service", &t).await.status(), 200);
    until_revoked(&v, &t).await;
    v.verify(&sibling).await.unwrap();

    // A client cut off with the admin API.
    let p = a.access_token("partner").await;
    v.verify(&p).await.unwrap();
    // A mark covers tokens issued strictly before its millisecond.
    next_ms().await;
    admin.revoke_client("partner").await.unwrap();
    until_revoked(&v, &p).await;

    // A subject logged out (web-app tokens are for user-42).
    let web = web_tokens(&a, "profile").await;
    let access = s(&web["access_token"]);
    v.verify(&access).await.unwrap();
    next_ms().await;
    admin.revoke_subject("user-42").await.unwrap();
    until_revoked(&v, &access).await;

    // A refresh family killed by reuse at A.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let web = web_tokens(&a, "profile").await;
    let access = s(&web["access_token"]);
    v.verify(&access).await.unwrap();
    let first = s(&web["refresh_token"]);
    assert_eq!(refresh(&a, &first, &[]).await.status(), 200);
    assert_eq!(refresh(&a, &first, &[]).await.status(), 400, "reuse");
    until_revoked(&v, &access).await;

    // A disabled client: everything it holds; enabled again: accepted.
    let o = a.access_token("orders-service").await;
    admin.disable("orders-service").await.unwrap();
    until_revoked(&v, &o).await;
    admin.enable("orders-service").await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            v.verify(&o).await.is_ok()
        })
        .await,
        "re-enabled"
    );
    a.stop().await;
    b.stop().await;
}

/// The watched replica restarts (fixed ports, as behind a Service) while
/// the other takes revocations: the verifier reconnects and misses none of
/// them; away for longer than the log keeps, it gets a snapshot instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_misses_nothing_across_a_restart_of_its_tokend() {
    let redis = RedisServer::start().await;
    let dir = tempfile::TempDir::new().unwrap();
    let key = crate::common::config::key_file(dir.path(), "k.pem", tokend::token::Algorithm::EdDSA);
    let base = config(&redis)
        .signing_key("EdDSA", &key)
        .set("revocation_feed.log_max_len", 100);
    let fixed = base
        .clone()
        .set("http.listen", format!("127.0.0.1:{}", free_port()))
        .set("grpc.listen", format!("127.0.0.1:{}", free_port()));
    let mut a = TestApp::start(&fixed).await;
    let b = TestApp::start(&base).await;
    let v = verifier(&a).await;
    let mut admin = admin_client(&b, Some(ADMIN_SECRET)).await;
    for (round, churn) in [(1, 0), (2, 150)] {
        let t = b.access_token("orders-service").await;
        v.verify(&t).await.unwrap();
        a.stop().await;
        // While A is down, revocations at B (round 2: more than the log
        // keeps, so the verifier's cursor can only be answered by a snapshot).
        for i in 0..churn {
            admin
                .revoke_subject(&format!("churn-{round}-{i}"))
                .await
                .unwrap();
        }
        assert_eq!(b.revoke("orders-service", &t).await.status(), 200);
        a = TestApp::start(&fixed).await;
        until_revoked(&v, &t).await;
    }
    a.stop().await;
    b.stop().await;
}
