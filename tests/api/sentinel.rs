//! tokend on a Sentinel-managed Redis (issue 19): two replicas find the
//! primary through three Sentinels, and when the primary dies they follow the
//! failover to the promoted replica without a restart. With
//! `replica_acks = 1` a revocation answered 200 is on the replica before the
//! answer, so killing the primary right after it loses nothing. Throughout,
//! a revoked token never answers `active: true` (fail-closed: 503 while no
//! primary answers), and readiness recovers. And without a Redis replica to
//! acknowledge, a revocation is a 503, never a 200 that a failover could undo.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::config::key_file;
use crate::common::http::{error_of, metrics_text, sample};
use crate::common::{ConfigBuilder, RedisSentinelGroup, RedisServer, TestApp, eventually};

/// Failover here: 500 ms to declare the primary down, then the election and
/// promotion (a few seconds); tokend then needs one failed call to look again.
const FAILOVER: Duration = Duration::from_secs(30);

#[tokio::test]
async fn replicas_follow_a_sentinel_failover_and_never_resurrect_a_revoked_token() {
    let mut group = RedisSentinelGroup::start().await;
    let dir = TempDir::new().unwrap();
    let key = key_file(dir.path(), "signing.pem", tokend::token::Algorithm::RS256);
    let config = ConfigBuilder::on_store(&group.url())
        .signing_key("RS256", &key)
        .set("store.timeout_ms", 300)
        .set("store.replica_acks", 1)
        .set("store.replica_ack_timeout_ms", 500);
    let a = TestApp::start(&config).await;
    let b = TestApp::start(&config).await;
    assert!(a.is_ready().await && b.is_ready().await);

    let live = a.access_token("orders-service").await;
    let revoked = a.access_token("orders-service").await;
    assert_eq!(a.revoke("orders-service", &revoked).await.status(), 200);
    assert_eq!(b.introspect(&revoked).await["active"], false);
    assert_eq!(b.introspect(&live).await["active"], true);
    // No waiting of the test's own: the 200 above means the replica has it.
    group.primary.kill();
    let killed = Instant::now();
    let unavailable = std::sync::atomic::AtomicUsize::new(0);
    let recovered = eventually(FAILOVER, || async {
        let unavailable = &unavailable;
        let mut ok = true;
        for (app, token, want) in [(&b, &revoked, false), (&a, &live, true)] {
            let r = app.introspect_response(token).await;
            match r.status().as_u16() {
                200 => {
                    let body: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(body["active"], want, "during the failover: {body}");
                }
                503 => {
                    unavailable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    ok = false;
                }
                s => panic!("introspection answered {s} during the failover"),
            }
        }
        ok
    })
    .await;
    assert!(
        recovered,
        "tokend did not follow the failover within {FAILOVER:?}"
    );
    eprintln!(
        "sentinel failover: introspection available again {:?} after the primary was killed \
         ({} answers were 503)",
        killed.elapsed(),
        unavailable.into_inner()
    );
    // tokend may have learnt the new primary from another Sentinel than the
    // one asked here, which hears of the failover a moment later.
    let replica = Some(group.replica.port);
    assert!(
        eventually(FAILOVER, || async { group.primary_port().await == replica }).await,
        "the Sentinels never named the replica as the primary: {:?}",
        group.primary_port().await
    );

    // The new primary has no replica yet: a revocation cannot be made safe,
    // so it is not reported done.
    let fresh = b.access_token("orders-service").await;
    let r = b.revoke("orders-service", &fresh).await;
    assert_eq!(error_of(r).await, (503, "temporarily_unavailable".into()));
    // The old primary comes back; the Sentinels make it the new primary's
    // replica, and revocations are acknowledged again.
    group.primary.restart().await;
    assert!(
        eventually(FAILOVER, || async {
            b.revoke("orders-service", &fresh).await.status() == 200
        })
        .await,
        "revocations never succeeded again after the old primary rejoined as a replica"
    );
    assert_eq!(a.introspect(&fresh).await["active"], false);
    assert_eq!(a.introspect(&revoked).await["active"], false);
    assert_eq!(b.introspect(&live).await["active"], true);
    assert!(
        eventually(Duration::from_secs(5), || async {
            a.is_ready().await && b.is_ready().await
        })
        .await,
        "readiness did not recover after the failover"
    );
    a.stop().await;
    b.stop().await;
}

/// `replica_acks` on a Redis without replicas: every security-relevant write
/// fails (503 `temporarily_unavailable`, counted in
/// `tokend_store_replica_ack_failures_total`) instead of being reported done;
/// issuance, which writes nothing, goes on.
#[tokio::test]
async fn unacknowledged_revocations_are_never_reported_done() {
    let redis = RedisServer::start().await;
    let config = ConfigBuilder::on_store(&redis.url())
        .set("store.replica_acks", 1)
        .set("store.replica_ack_timeout_ms", 50);
    let app = TestApp::start(&config).await;
    let token = app.access_token("orders-service").await;
    let r = app.revoke("orders-service", &token).await;
    assert_eq!(error_of(r).await, (503, "temporarily_unavailable".into()));
    let m = metrics_text(app.url("/metrics")).await;
    assert!(
        sample(
            &m,
            "tokend_store_replica_ack_failures_total",
            &["op=\"put\""]
        ) >= Some(1.0),
        "{m}"
    );
    app.stop().await;
}

/// Passwords on both sides: the Redis nodes' in the URL (or
/// `TOKEND_STORE_PASSWORD`), the Sentinels' own from
/// `TOKEND_STORE_SENTINEL_PASSWORD`. Without the Sentinels' password tokend
/// cannot find the primary and fails closed.
#[tokio::test]
async fn sentinel_and_redis_passwords_are_separate() {
    let group = RedisSentinelGroup::start_with_passwords("redis-pw", "sentinel-pw").await;
    let url = group
        .url()
        .replace("redis+sentinel://", "redis+sentinel://:redis-pw@");
    let config = ConfigBuilder::on_store(&url).set("store.timeout_ms", 300);
    let dir = TempDir::new().unwrap();

    let cfg = config.load_in(
        dir.path(),
        &[("TOKEND_STORE_SENTINEL_PASSWORD", "sentinel-pw")],
    );
    let app = TestApp::start_config(cfg).await;
    let token = app.access_token("orders-service").await;
    assert_eq!(app.revoke("orders-service", &token).await.status(), 200);
    assert_eq!(app.introspect(&token).await["active"], false);
    app.stop().await;

    let app = TestApp::start_unready(&config).await;
    let token = app.access_token("orders-service").await;
    let r = app.introspect_response(&token).await;
    assert_eq!(error_of(r).await, (503, "temporarily_unavailable".into()));
    assert!(app.is_not_ready().await);
    app.stop().await;
}
