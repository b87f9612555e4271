//! Issue 14: revocation state must never be silently evictable. tokend
//! reads Redis's `maxmemory-policy` (`INFO memory`) at start and again while
//! running; any policy but `noeviction` keeps it not ready (both probes),
//! with a loud warning, unless `[store] allow_eviction = true`. Real
//! `redis-server` processes, a real `tokend serve`.

use std::time::Duration;

use crate::common::http::sample;
use crate::common::{Api, ConfigBuilder, RedisServer, TokendProcess, eventually};

/// Long enough for a few eviction-policy checks (every 3 s) on a loaded
/// machine.
const FLIP: Duration = Duration::from_secs(20);

async fn readyz_body(api: &Api) -> serde_json::Value {
    api.http_client
        .get(api.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn evictable_gauge(api: &Api) -> Option<f64> {
    let text = api.get("/metrics").await.text().await.unwrap();
    sample(&text, "tokend_store_evictable", &[])
}

async fn set_policy(redis: &RedisServer, policy: &str) {
    let mut conn = redis.connection().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(policy)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// The attack's precondition: a Redis with `volatile-lru` (the default of
/// several managed services) evicts tokend's keys, which all have TTLs.
#[tokio::test]
async fn an_evicting_redis_keeps_tokend_not_ready_and_is_logged_loudly() {
    let redis = RedisServer::start_with_args(&["--maxmemory-policy", "volatile-lru"]).await;
    let p = TokendProcess::serve(&ConfigBuilder::on_store(&redis.url()))
        .listeners_only()
        .start()
        .await;
    p.wait_log("THE STORE MAY EVICT KEYS", 1).await;
    assert!(
        p.log().contains("maxmemory-policy=volatile-lru"),
        "{}",
        p.log()
    );
    let named = eventually(FLIP, || async {
        readyz_body(&p).await["reason"]
            .as_str()
            .is_some_and(|r| r.contains("volatile-lru"))
    })
    .await;
    assert!(named, "{}", readyz_body(&p).await);
    assert!(p.is_not_ready().await, "both probes say not ready");
    assert_eq!(evictable_gauge(&p).await, Some(1.0));
    // Redis itself is fine: the store is reachable, only its policy is wrong.
    let text = p.get("/metrics").await.text().await.unwrap();
    assert_eq!(sample(&text, "tokend_store_up", &[]), Some(1.0));
}

/// The documented override: ready, and still the warning.
#[tokio::test]
async fn allow_eviction_serves_on_an_evicting_redis_with_the_warning() {
    let redis = RedisServer::start_with_args(&["--maxmemory-policy", "allkeys-lru"]).await;
    let p = TokendProcess::serve(
        &ConfigBuilder::on_store(&redis.url()).set("store.allow_eviction", true),
    )
    .start()
    .await;
    assert!(p.is_ready().await);
    p.wait_log("THE STORE MAY EVICT KEYS", 1).await;
    assert!(p.log().contains("allkeys-lru"), "{}", p.log());
    assert_eq!(evictable_gauge(&p).await, Some(1.0));
}

/// `noeviction` is ready; a policy changed while tokend runs flips
/// readiness within a few seconds, and back.
#[tokio::test]
async fn noeviction_is_ready_and_a_policy_changed_at_runtime_flips_readiness() {
    let redis = RedisServer::start_with_args(&["--maxmemory-policy", "noeviction"]).await;
    let p = TokendProcess::serve(&ConfigBuilder::on_store(&redis.url()))
        .start()
        .await;
    assert!(p.is_ready().await);
    assert_eq!(evictable_gauge(&p).await, Some(0.0));
    assert!(!p.log().contains("THE STORE MAY EVICT KEYS"), "{}", p.log());

    set_policy(&redis, "allkeys-lru").await;
    assert!(
        eventually(FLIP, || p.is_not_ready()).await,
        "still ready after CONFIG SET maxmemory-policy allkeys-lru"
    );
    assert_eq!(evictable_gauge(&p).await, Some(1.0));
    p.wait_log("allkeys-lru", 1).await;

    set_policy(&redis, "noeviction").await;
    assert!(
        eventually(FLIP, || p.is_ready()).await,
        "not ready again after noeviction: {}",
        readyz_body(&p).await
    );
    assert_eq!(evictable_gauge(&p).await, Some(0.0));
}
