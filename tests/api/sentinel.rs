//! tokend on a Sentinel-managed Redis (issue 19): two replicas find the
//! primary through three Sentinels, and when the primary dies they follow the
//! failover to the promoted replica without a restart. Throughout, a revoked
//! token never answers `active: true` (fail-closed: 503 while no primary
//! answers), and readiness recovers.

use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::config::key_file;
use crate::common::{ConfigBuilder, RedisSentinelGroup, TestApp, eventually};

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
        .set("store.timeout_ms", 300);
    let a = TestApp::start(&config).await;
    let b = TestApp::start(&config).await;
    assert!(a.is_ready().await && b.is_ready().await);

    let live = a.access_token("orders-service").await;
    let revoked = a.access_token("orders-service").await;
    assert_eq!(a.revoke("orders-service", &revoked).await.status(), 200);
    assert_eq!(b.introspect(&revoked).await["active"], false);
    assert_eq!(b.introspect(&live).await["active"], true);
    // The replica has the revocation before the primary dies (tokend's own
    // replica acknowledgement is a separate setting).
    let primary = group.primary.connection().await;
    let acked = eventually(Duration::from_secs(5), || {
        let mut conn = primary.clone();
        async move {
            let n: Result<i64, _> = redis::cmd("WAIT")
                .arg(1)
                .arg(100)
                .query_async(&mut conn)
                .await;
            n.is_ok_and(|n| n == 1)
        }
    })
    .await;
    assert!(acked, "the replica did not acknowledge the revocation");
    drop(primary);

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
    assert_eq!(group.primary_port().await, Some(group.replica.port));

    // The new primary takes writes from both replicas, and they agree.
    let fresh = b.access_token("orders-service").await;
    assert_eq!(b.revoke("orders-service", &fresh).await.status(), 200);
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
