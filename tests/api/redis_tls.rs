//! tokend on a real TLS-only `redis-server` (`--port 0 --tls-port ...`) with a
//! throwaway private CA: `[store] tls_ca_file` makes `rediss://` trust it, and
//! the store round trip (revocation written, then read by introspection) runs
//! over TLS. Without the CA (system roots only) tokend must not be ready and
//! introspection must fail closed. With `--tls-auth-clients yes`, the same
//! with and without `tls_cert_file`/`tls_key_file`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tokend::config::Config;

use crate::common::{
    SECRET, TestApp, config_toml, eventually, free_port, keygen, readyz, signing, tempdir::TempDir,
};
use crate::redis_store::{is_not_ready, is_ready};
use crate::tls::{ca, leaf};

/// Writes a fresh CA (`ca.pem`), a server certificate for 127.0.0.1 and
/// localhost (`redis.pem`, `redis.key`), and a client certificate
/// (`client.pem`, `client.key`) signed by that CA into `dir`.
fn write_certs(dir: &Path) {
    let ca = ca("tokend test Redis CA");
    let (server_cert, server_key, _) = leaf(&ca, "redis");
    let (client_cert, client_key, _) = leaf(&ca, "tokend");
    for (name, pem) in [
        ("ca.pem", ca.pem()),
        ("redis.pem", server_cert),
        ("redis.key", server_key),
        ("client.pem", client_cert),
        ("client.key", client_key),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
}

/// Starts a redis-server listening only on TLS `port` with the certificates
/// of [`write_certs`] in `dir`, plus `extra` arguments; returns once the port
/// accepts connections.
fn spawn_tls_node(dir: &Path, port: u16, auth_clients: bool, extra: &[&str]) -> Child {
    let data = dir.join(format!("redis-data-{port}"));
    std::fs::create_dir_all(&data).unwrap();
    let mut child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(dir.join("redis.pem"))
        .arg("--tls-key-file")
        .arg(dir.join("redis.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.join("ca.pem"))
        .args([
            "--tls-auth-clients",
            if auth_clients { "yes" } else { "no" },
        ])
        .args(["--save", "", "--appendonly", "no"])
        .args(extra)
        .arg("--dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}). Install it: apt-get install -y redis-server")
        });
    // No PING over plain TCP here: wait for the TLS port to accept.
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server exited at start ({status}); is it built with TLS?");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("TLS redis-server on port {port} did not start listening");
}

/// A redis-server listening only on a TLS port, killed on drop.
struct TlsRedis {
    port: u16,
    child: Child,
}

impl TlsRedis {
    /// Writes fresh certificates into `dir` ([`write_certs`]) and starts
    /// redis-server on them.
    fn start(dir: &Path, auth_clients: bool) -> Self {
        write_certs(dir);
        let port = free_port();
        let child = spawn_tls_node(dir, port, auth_clients, &[]);
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/0", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three TLS-only cluster nodes (cluster bus over TLS too), joined into one
/// cluster with all slots covered; killed on drop.
struct TlsRedisCluster {
    ports: Vec<u16>,
    children: Vec<Child>,
}

impl TlsRedisCluster {
    fn start(dir: &Path) -> Self {
        write_certs(dir);
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut cluster = Self {
            ports: ports.clone(),
            children: Vec::new(),
        };
        for p in &ports {
            let conf = dir.join(format!("nodes-{p}.conf"));
            let conf = conf.to_str().unwrap();
            cluster.children.push(spawn_tls_node(
                dir,
                *p,
                false,
                &[
                    "--tls-cluster",
                    "yes",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-config-file",
                    conf,
                ],
            ));
        }
        let ca = dir.join("ca.pem");
        let cli = |args: &[String]| {
            Command::new("redis-cli")
                .arg("--tls")
                .arg("--cacert")
                .arg(&ca)
                .args(args)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-cli ({e}). Install it: apt-get install -y redis-tools")
                })
        };
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = cli(&create);
        assert!(
            out.status.success(),
            "redis-cli --tls --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for p in &ports {
            let ok = (0..200).any(|_| {
                let info = cli(&["-p".into(), p.to_string(), "cluster".into(), "info".into()]);
                let up = String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok");
                if !up {
                    std::thread::sleep(Duration::from_millis(50));
                }
                up
            });
            assert!(ok, "TLS cluster node {p} never reached cluster_state:ok");
        }
        cluster
    }

    fn url(&self) -> String {
        crate::common::cluster_url("rediss+cluster", &self.ports)
    }
}

impl Drop for TlsRedisCluster {
    fn drop(&mut self) {
        crate::common::kill_all(&mut self.children);
    }
}

/// Loads `tokend.toml` from `dir` (so relative paths resolve against `dir`)
/// with `store_lines` added to `[store]` and `env` overrides applied.
fn load(dir: &Path, url: &str, key: &Path, store_lines: &str, env: &[(&str, &str)]) -> Config {
    let text = config_toml(url, &signing(key), "").replace(
        "[signing]",
        &format!("timeout_ms = 1000\n{store_lines}\n[signing]"),
    );
    let path = dir.join("tokend.toml");
    std::fs::write(&path, text).unwrap();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let cfg = Config::load(Some(&path), env).unwrap();
    assert_eq!(cfg.validate(), Vec::<String>::new());
    cfg
}

async fn issue(app: &TestApp) -> String {
    app.access_token("orders-service").await
}

/// Issue two tokens, revoke one over HTTP: the revocation must reach Redis
/// (over TLS, the only port it has) and come back through introspection.
async fn revocation_round_trip(app: &TestApp) {
    assert!(
        eventually(Duration::from_secs(5), || is_ready(app)).await,
        "not ready on a TLS Redis it should trust"
    );
    let kept = issue(app).await;
    let revoked = issue(app).await;
    let r = app
        .post_form(
            "/oauth/revoke",
            Some(("orders-service", SECRET)),
            &[("token", &revoked)],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.introspect(&revoked).await, json!({"active": false}));
    assert_eq!(app.introspect(&kept).await["active"], true);
}

/// tokend on a Redis whose certificate it does not accept: never ready, and
/// introspection answers 503 `temporarily_unavailable`, never `active`.
/// Returns the `/readyz` reason.
async fn fails_closed(app: &TestApp) -> String {
    let token = issue(app).await;
    assert!(eventually(Duration::from_secs(3), || is_not_ready(app)).await);
    for _ in 0..3 {
        let r = app
            .post_form(
                "/oauth/introspect",
                Some(("resource-server", SECRET)),
                &[("token", &token)],
            )
            .await;
        assert_eq!(r.status(), 503);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        assert_ne!(body["active"], true);
        assert_eq!(readyz(app).await, 503);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("store unreachable"), "{body}");
    reason
}

#[tokio::test]
async fn redis_tls_with_private_ca_and_without() {
    let dir = TempDir::new();
    let key = keygen(dir.path());
    let redis = TlsRedis::start(dir.path(), false);

    // Relative to the config file, as in production.
    let cfg = load(
        dir.path(),
        &redis.url(),
        &key,
        "tls_ca_file = \"ca.pem\"",
        &[],
    );
    assert_eq!(cfg.store.tls_ca_file, Some(dir.path().join("ca.pem")));
    let app = TestApp::start_config_unready(cfg).await;
    revocation_round_trip(&app).await;
    app.stop().await;

    // Negative control: the same Redis, system roots only.
    let cfg = load(dir.path(), &redis.url(), &key, "", &[]);
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
    let dir = TempDir::new();
    let key = keygen(dir.path());
    let cluster = TlsRedisCluster::start(dir.path());
    let cfg = load(
        dir.path(),
        &cluster.url(),
        &key,
        "tls_ca_file = \"ca.pem\"",
        &[],
    );
    let app = TestApp::start_config_unready(cfg).await;
    revocation_round_trip(&app).await;
    app.stop().await;

    let cfg = load(dir.path(), &cluster.url(), &key, "", &[]);
    let app = TestApp::start_config_unready(cfg).await;
    fails_closed(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn redis_tls_client_certificate() {
    let dir = TempDir::new();
    let key = keygen(dir.path());
    let redis = TlsRedis::start(dir.path(), true);
    let ca_file = dir.path().join("ca.pem");
    let ca_file = ca_file.to_str().unwrap();

    // Through the generic TOKEND_STORE_* overrides.
    let cfg = load(
        dir.path(),
        &redis.url(),
        &key,
        "",
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
        &key,
        "",
        &[("TOKEND_STORE_TLS_CA_FILE", ca_file)],
    );
    let app = TestApp::start_config_unready(cfg).await;
    let reason = fails_closed(&app).await;
    assert!(reason.contains("CertificateRequired"), "{reason}");
    app.stop().await;
}
