//! Redis sizing and the cost of replica acknowledgements (issue 19).
//!
//! Sizing: the keys and bytes tokend keeps per live
//! revocation, authorization code, refresh-token grant and cut-off mark,
//! measured on a real `redis-server` with `MEMORY USAGE` of the keys
//! themselves and `used_memory` before and after. A measurement, not a
//! check, so it is ignored by default; the figures are in docs/redis.md:
//!
//! cargo test -p tokend --test api -- --ignored sizing --nocapture

use crate::common::flows::{web_code, web_tokens};
use crate::common::grpc::{ADMIN_SECRET, admin_client};
use crate::common::{ConfigBuilder, RedisServer, TestApp};

/// Items of each kind: enough that per-item memory dominates the overhead.
const N: usize = 500;

async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Keys matching `pattern`, and the mean `MEMORY USAGE` of one.
async fn keys_of(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> (usize, i64) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(conn)
        .await
        .unwrap();
    let mut total = 0i64;
    for k in &keys {
        let n: Option<i64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(k)
            .query_async(conn)
            .await
            .unwrap();
        total += n.unwrap_or(0);
    }
    (keys.len(), total / keys.len().max(1) as i64)
}

#[tokio::test]
#[ignore = "a measurement: run with --ignored sizing --nocapture"]
async fn sizing() {
    let redis = RedisServer::start().await;
    let app = TestApp::start(
        &ConfigBuilder::on_store(&redis.url())
            .code_flow()
            .admin(Some(ADMIN_SECRET)),
    )
    .await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let mut conn = redis.connection().await;
    let mut report = Vec::new();

    // Warm up what every request touches (rate-limit and known-caller keys).
    let _ = app.access_token("orders-service").await;
    let _ = web_tokens(&app, "profile").await;

    let kinds: [(&str, &str); 4] = [
        ("revoked access token", "tokend:rev:jti:*"),
        ("authorization code waiting for redemption", "tokend:code:*"),
        ("refresh-token grant (after one rotation)", "tokend:fam:*"),
        ("subject log-out mark", "tokend:sub:nbf:*"),
    ];
    for (what, pattern) in kinds {
        let before = used_memory(&mut conn).await;
        let keys_before: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        for i in 0..N {
            match what {
                "revoked access token" => {
                    let t = app.access_token("orders-service").await;
                    assert_eq!(app.revoke("orders-service", &t).await.status(), 200);
                }
                "authorization code waiting for redemption" => {
                    web_code(&app, "profile").await;
                }
                "refresh-token grant (after one rotation)" => {
                    let t = web_tokens(&app, "profile").await;
                    let rt = t["refresh_token"].as_str().unwrap();
                    let r = crate::common::flows::refresh(&app, rt, &[]).await;
                    assert_eq!(r.status(), 200);
                }
                _ => {
                    admin.revoke_subject(&format!("user-{i}")).await.unwrap();
                }
            }
        }
        let after = used_memory(&mut conn).await;
        let keys_after: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        let (n, mean) = keys_of(&mut conn, pattern).await;
        report.push(format!(
            "{what}: {:.1} keys each ({} in all), used_memory +{} B each; {pattern}: {n} keys, MEMORY USAGE {mean} B each",
            (keys_after - keys_before) as f64 / N as f64,
            keys_after - keys_before,
            (after - before) / N as i64,
        ));
    }
    for line in report {
        eprintln!("sizing: {line}");
    }
    app.stop().await;
}

/// The latency cost of `[store] replica_acks` (issue 19): sequential
/// revocations through tokend on a Redis primary with one replica, without
/// and with `replica_acks = 1`, reported as p50 / p99 per revocation. A
/// measurement (ignored by default; figures in docs/redis.md):
///
/// cargo test -p tokend --test api -- --ignored replica_ack_latency --nocapture
#[tokio::test]
#[ignore = "a measurement: run with --ignored replica_ack_latency --nocapture"]
async fn replica_ack_latency() {
    const ROUNDS: usize = 2000;
    let fast_sync = ["--repl-diskless-sync-delay", "0"];
    let primary = RedisServer::start_with_args(&fast_sync).await;
    let port = primary.port.to_string();
    let _replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port]).await;
    let conn = primary.connection().await;
    assert!(
        crate::common::eventually(std::time::Duration::from_secs(20), || {
            let mut conn = conn.clone();
            async move {
                let n: i64 = redis::cmd("WAIT")
                    .arg(1)
                    .arg(100)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(0);
                n == 1
            }
        })
        .await,
        "the replica never synced"
    );
    for acks in [0, 1] {
        let app = TestApp::start(
            &ConfigBuilder::on_store(&primary.url()).set("store.replica_acks", acks),
        )
        .await;
        let mut tokens = Vec::new();
        for _ in 0..ROUNDS {
            tokens.push(app.access_token("orders-service").await);
        }
        let mut took = Vec::with_capacity(ROUNDS);
        for t in &tokens {
            let start = std::time::Instant::now();
            assert_eq!(app.revoke("orders-service", t).await.status(), 200);
            took.push(start.elapsed());
        }
        took.sort();
        eprintln!(
            "replica_acks = {acks}: revocation over HTTP p50 {:.0?} p99 {:.0?} ({ROUNDS} sequential)",
            took[ROUNDS / 2],
            took[ROUNDS * 99 / 100]
        );
        app.stop().await;
    }
}
