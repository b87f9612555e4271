//! tokend on a real TLS-only `redis-server` (`--port 0 --tls-port ...`) with a
//! throwaway private CA: `[store] tls_ca_file` makes `rediss://` trust it, and
//! the store round trip (revocation written, then read by introspection) runs
//! over TLS. Without the CA (system roots only) tokend must not be ready and
//! introspection must fail closed. With `--tls-auth-clients yes`, the same
//! with and without `tls_cert_file`/`tls_key_file`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;
use tokend::config::Config;

use crate::common::config::key_file;
use crate::common::pki::write_redis_certs;
use crate::common::redis::RedisTls;
use crate::common::{
    ConfigBuilder, RedisCluster, RedisSentinelGroup, RedisServer, TestApp, eventually,
};

/// Loads `tokend.toml` written to `dir` (so relative paths resolve against
/// `dir`) on the store `url`, with a 1 s store timeout, `store` settings
/// added to `[store]` and `env` overrides applied; checks it validates.
fn load(dir: &Path, url: &str, store: &[(&str, &str)], env: &[(&str, &str)]) -> Config {
    let key = dir.join("signing.pem");
    if !key.exists() {
        key_file(dir, "signing.pem", tokend::token::Algorithm::RS256);
    }
    let mut config = ConfigBuilder::on_store(url)
        .signing_key("RS256", &key)
        .set("store.timeout_ms", 1000);
    for (k, v) in store {
        config = config.set(&format!("store.{k}"), *v);
    }
    let cfg = config.load_in(dir, env);
    assert_eq!(cfg.validate(), Vec::<String>::new());
    cfg
}

/// A TLS-only Redis on fresh certificates in `dir`.
async fn tls_redis(dir: &Path, auth_clients: bool) -> RedisServer {
    write_redis_certs(dir);
    RedisServer::start_tls(RedisTls {
        certs: dir.to_path_buf(),
        auth_clients,
    })
    .await
}

async fn issue(app: &TestApp) -> String {
    app.access_token("orders-service").await
}

/// Issue two tokens, revoke one over HTTP: the revocation must reach Redis
/// (over TLS, the only port it has) and come back through introspection.
async fn revocation_round_trip(app: &TestApp) {
    assert!(
        eventually(Duration::from_secs(5), || app.is_ready()).await,
        "not ready on a TLS Redis it should trust"
    );
    let kept = issue(app).await;
    let revoked = issue(app).await;
    let r = app.revoke("orders-service", &revoked).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.introspect(&revoked).await, json!({"active": false}));
    assert_eq!(app.introspect(&kept).await["active"], true);
}

/// tokend on a Redis whose certificate it does not accept: never ready, and
/// introspection answers 503 `temporarily_unavailable`, never `active`.
/// Returns the `/readyz` reason.
async fn fails_closed(app: &TestApp) -> String {
    let token = issue(app).await;
    assert!(eventually(Duration::from_secs(3), || app.is_not_ready()).await);
    // Three looks spread over 600 ms: the sleeps are the behaviour under
    // test (it stays closed while time passes), not a wait for a change.
    for _ in 0..3 {
        let r = app.introspect_response(&token).await;
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        assert_ne!(body["active"], true);
        assert_eq!(app.readyz().await, 503);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let body = app.get_json("/readyz").await;
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("store unreachable"), "{body}");
    reason
}

#[tokio::test]
async fn redis_tls_with_private_ca_and_without() {
    let dir = TempDir::new().unwrap();
    let redis = tls_redis(dir.path(), false).await;

    // Relative to the config file, as in production.
    let cfg = load(dir.path(), &redis.url(), &[("tls_ca_file", "ca.pem")], &[]);
    assert_eq!(cfg.store.tls_ca_file, Some(dir.path().join("ca.pem")));
    let app = TestApp::start_config_unready(cfg).await;
    revocation_round_trip(&app).await;
    app.stop().await;

    // Negative control: the same Redis, system roots only.
    let cfg = load(dir.path(), &redis.url(), &[], &[]);
    let app = TestApp::start_config_unready(cfg).await;
    let reason = fails_closed(&app).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
    app.stop().await;
}

/// `rediss+cluster://`: a Redis Cluster whose nodes speak only TLS, trusted
/// through `tls_ca_file`; the revocation round trip crosses the cluster, and
/// the same cluster without the CA fails closed.
#[tokio::test]
async fn redis_tls_cluster_with_private_ca() {
    let dir = TempDir::new().unwrap();
    write_redis_certs(dir.path());
    let cluster = RedisCluster::start_tls(dir.path()).await;
    let cfg = load(
        dir.path(),
        &cluster.url(),
        &[("tls_ca_file", "ca.pem")],
        &[],
    );
    let app = TestApp::start_config_unready(cfg).await;
    revocation_round_trip(&app).await;
    app.stop().await;

    let cfg = load(dir.path(), &cluster.url(), &[], &[]);
    let app = TestApp::start_config_unready(cfg).await;
    fails_closed(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn redis_tls_client_certificate() {
    let dir = TempDir::new().unwrap();
    let redis = tls_redis(dir.path(), true).await;
    let ca_file = dir.path().join("ca.pem");
    let ca_file = ca_file.to_str().unwrap();

    // Through the generic TOKEND_STORE_* overrides.
    let cfg = load(
        dir.path(),
        &redis.url(),
        &[],
        &[
            ("TOKEND_STORE_TLS_CA_FILE", ca_file),
            ("TOKEND_STORE_TLS_CERT_FILE", "client.pem"),
            ("TOKEND_STORE_TLS_KEY_FILE", "client.key"),
        ],
    );
    assert_eq!(cfg.store.tls_key_file, Some(dir.path().join("client.key")));
    let app = TestApp::start_config_unready(cfg).await;
    revocation_round_trip(&app).await;
    app.stop().await;

    // Trusting the server is not enough when it demands a client certificate.
    let cfg = load(
        dir.path(),
        &redis.url(),
        &[],
        &[("TOKEND_STORE_TLS_CA_FILE", ca_file)],
    );
    let app = TestApp::start_config_unready(cfg).await;
    let reason = fails_closed(&app).await;
    assert!(reason.contains("CertificateRequired"), "{reason}");
    app.stop().await;
}

/// `rediss+sentinel://`: Sentinels and Redis nodes that speak only TLS
/// (their replication and Sentinel links too), trusted through
/// `tls_ca_file` for both; without the CA tokend fails closed.
#[tokio::test]
async fn redis_tls_sentinel_with_private_ca() {
    let dir = TempDir::new().unwrap();
    write_redis_certs(dir.path());
    let group = RedisSentinelGroup::start_tls(dir.path()).await;
    assert!(group.url().starts_with("rediss+sentinel://"));

    let cfg = load(dir.path(), &group.url(), &[("tls_ca_file", "ca.pem")], &[]);
    let app = TestApp::start_config_unready(cfg).await;
    revocation_round_trip(&app).await;
    app.stop().await;

    let cfg = load(dir.path(), &group.url(), &[], &[]);
    let app = TestApp::start_config_unready(cfg).await;
    fails_closed(&app).await;
    app.stop().await;
}
