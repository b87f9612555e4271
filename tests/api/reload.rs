//! Hot reload, secret rotation and the `tokend admin` CLI against real
//! `tokend serve` child processes: clients files swapped the way Kubernetes
//! swaps mounted Secrets (`..data` symlink), SIGHUP, broken reloads, and the
//! audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::config::{clients_file, key_file, sha256};
use crate::common::grpc::ADMIN_SECRET;
use crate::common::http::jwt_parts;
use crate::common::process::tokend_command;
use crate::common::{Api, ConfigBuilder, TokendProcess, eventually};

const OLD: &str = "old-secret-0123456789abcdef";
const NEW: &str = "new-secret-fedcba9876543210";

/// Bound on a reload taking effect.
const RELOAD: Duration = Duration::from_secs(15);

/// A clients file: `partner` with a hash of each of `secrets`, and
/// `resource-server` (secret [`OLD`]) to introspect.
fn clients_toml(secrets: &[&str]) -> String {
    let hashes: Vec<String> = secrets.iter().map(|s| sha256(s)).collect();
    let introspector = sha256(OLD);
    clients_file([
        toml::toml! {
            client_id = "partner"
            secret_hashes = (hashes)
            scopes = ["bookings:create"]
        },
        toml::toml! {
            client_id = "resource-server"
            secret_hashes = [(introspector.as_str())]
            introspection = "any"
        },
    ])
}

/// The token endpoint's status for `partner` with `secret`.
async fn token_status(api: &Api, secret: &str) -> u16 {
    api.token_response("partner", secret)
        .await
        .status()
        .as_u16()
}

/// An access token for `partner` with `secret`.
async fn token(api: &Api, secret: &str) -> String {
    let r = api.token_response("partner", secret).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// Introspection by `resource-server` (secret [`OLD`]).
async fn active(api: &Api, token: &str) -> bool {
    let r = api
        .post_form(
            "/oauth/introspect",
            Some(("resource-server", OLD)),
            &[("token", token)],
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["active"] == true
}

/// Waits (bounded) until `secret` gets `status` at the token endpoint.
async fn wait_status(serve: &TokendProcess, secret: &str, status: u16) {
    let changed = eventually(RELOAD, || async {
        token_status(serve, secret).await == status
    })
    .await;
    assert!(changed, "reload did not take effect; log:\n{}", serve.log());
}

/// A Kubernetes-style mounted volume: `clients.toml -> ..data/clients.toml`,
/// `..data -> ..<generation>`; an update writes a new generation and renames
/// a new `..data` symlink over the old one (atomic swap).
struct K8sVolume {
    dir: PathBuf,
    generation: u32,
}

impl K8sVolume {
    fn new(dir: &Path, content: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut v = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        v.update(content);
        std::os::unix::fs::symlink("..data/clients.toml", dir.join("clients.toml")).unwrap();
        v
    }

    fn update(&mut self, content: &str) {
        self.generation += 1;
        let gen_name = format!("..gen_{}", self.generation);
        let gen_dir = self.dir.join(&gen_name);
        std::fs::create_dir_all(&gen_dir).unwrap();
        std::fs::write(gen_dir.join("clients.toml"), content).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&gen_name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.join("clients.toml")
    }
}

/// The main config in `dir` (an ES256 key `signing.pem` next to it, made on
/// first use), with the clients in `clients` and file polling every
/// `poll_secs` (0: off). The tests poll with secrets that are about to become
/// (in)valid, which the secret-guessing defence would rightly count as
/// failures from 127.0.0.1; it is tested on its own in `ops`, so it is off
/// here.
fn main_config(dir: &Path, clients: &Path, poll_secs: i64) -> ConfigBuilder {
    if !dir.join("signing.pem").exists() {
        key_file(dir, "signing.pem", tokend::token::Algorithm::ES256);
    }
    ConfigBuilder::bare()
        .set_path("clients_file", clients)
        // Relative to the config file, which is `dir/tokend.toml`.
        .signing_key("ES256", Path::new("signing.pem"))
        .set("log.format", "json")
        .set("server.reload_poll_secs", poll_secs)
        .set("auth_throttle.enabled", false)
}

/// `tokend serve` on `config` written to `dir/tokend.toml`.
async fn serve_in(dir: &Path, config: &ConfigBuilder) -> TokendProcess {
    TokendProcess::serve(config)
        .config_at(&dir.join("tokend.toml"))
        .start()
        .await
}

#[tokio::test]
async fn rotation_with_overlap_through_kubernetes_symlink_swaps() {
    let dir = TempDir::new().unwrap();
    let mut vol = K8sVolume::new(&dir.path().join("secret"), &clients_toml(&[OLD]));
    let cfg = main_config(dir.path(), &vol.path(), 1);
    let serve = serve_in(dir.path(), &cfg).await;
    let t_old = token(&serve, OLD).await;
    assert_eq!(token_status(&serve, NEW).await, 401);

    // 1. Add the new hash next to the old one: both secrets work.
    vol.update(&clients_toml(&[OLD, NEW]));
    wait_status(&serve, NEW, 200).await;
    assert_eq!(token_status(&serve, OLD).await, 200);
    // 2. The partner switches; tokens from either secret stay valid.
    let t_new = token(&serve, NEW).await;
    assert!(active(&serve, &t_old).await);
    // 3. Remove the old hash: the old secret stops working, the new one keeps working.
    vol.update(&clients_toml(&[NEW]));
    wait_status(&serve, OLD, 401).await;
    assert_eq!(token_status(&serve, NEW).await, 200);
    assert!(active(&serve, &t_new).await);

    // A broken update keeps the running clients and says why, once.
    vol.update(&clients_file([toml::toml! {
        client_id = "partner"
        secret_hashes = ["sha256:zz"]
    }]));
    serve
        .wait_log("reload failed; keeping the previous configuration", 1)
        .await;
    assert_eq!(token_status(&serve, NEW).await, 200);
    let log = serve.log();
    assert!(log.contains("secret_hashes[0]"), "{log}");
    // A change needing a restart is reported, the rest applies.
    vol.update(&clients_toml(&[OLD, NEW]));
    cfg.set("issuer", "https://elsewhere.test")
        .write(serve.config_path());
    wait_status(&serve, OLD, 200).await;
    serve.wait_log("needs a restart", 1).await;
    assert!(serve.log().contains("issuer"));
    // No secret ever reaches the log.
    let log = serve.log();
    assert!(!log.contains(OLD) && !log.contains(NEW), "{log}");
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_reload_keeps_the_old_configuration() {
    let dir = TempDir::new().unwrap();
    let clients = dir.path().join("clients.toml");
    std::fs::write(&clients, clients_toml(&[OLD])).unwrap();
    // No file polling: only SIGHUP can make a change visible.
    let serve = serve_in(dir.path(), &main_config(dir.path(), &clients, 0)).await;
    assert_eq!(token_status(&serve, OLD).await, 200);

    std::fs::write(&clients, clients_toml(&[OLD, NEW])).unwrap();
    // The sleep is the behaviour under test: nothing may change while time
    // passes without a SIGHUP (longer than the 1 s polling would take).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        token_status(&serve, NEW).await,
        401,
        "reloaded without SIGHUP"
    );
    serve.sighup();
    wait_status(&serve, NEW, 200).await;
    assert_eq!(token_status(&serve, OLD).await, 200);

    std::fs::write(&clients, clients_toml(&[NEW])).unwrap();
    serve.sighup();
    wait_status(&serve, OLD, 401).await;

    // Invalid TOML: the running clients stay, the log says why.
    std::fs::write(&clients, "[[clients]\nbroken").unwrap();
    serve.sighup();
    serve
        .wait_log("reload failed; keeping the previous configuration", 1)
        .await;
    assert_eq!(token_status(&serve, NEW).await, 200);
    assert_eq!(token_status(&serve, OLD).await, 401);
}

fn admin_cli(addr: &str, token: &str, args: &[&str]) -> std::process::Output {
    tokend_command()
        .arg("admin")
        .args(args)
        .env("TOKEND_ADMIN_ADDR", addr)
        .env("TOKEND_ADMIN_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test]
async fn admin_cli_cuts_a_client_off_and_every_action_is_audited() {
    let dir = TempDir::new().unwrap();
    let clients = dir.path().join("clients.toml");
    std::fs::write(&clients, clients_toml(&[OLD])).unwrap();
    let cfg = main_config(dir.path(), &clients, 0).admin(Some(ADMIN_SECRET));
    let serve = serve_in(dir.path(), &cfg).await;
    let addr = serve
        .admin
        .expect("admin listener in the ready file")
        .to_string();
    let token = token(&serve, OLD).await;

    let out = admin_cli(&addr, "wrong", &["list-clients"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));

    let out = admin_cli(&addr, ADMIN_SECRET, &["list-clients"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["client_id"], "partner");
    assert!(!stdout.contains("sha256"));

    let out = admin_cli(&addr, ADMIN_SECRET, &["disable-client", "partner"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["disabled"], true);
    assert_eq!(token_status(&serve, OLD).await, 401);
    assert!(!active(&serve, &token).await);

    let out = admin_cli(&addr, ADMIN_SECRET, &["revoke-client", "partner"]);
    assert!(out.status.success(), "{out:?}");
    let out = admin_cli(&addr, ADMIN_SECRET, &["enable-client", "partner"]);
    assert!(out.status.success(), "{out:?}");
    // Disabled, revoked, re-enabled: the old token stays dead, new ones work.
    assert_eq!(token_status(&serve, OLD).await, 200);
    assert!(!active(&serve, &token).await);
    let out = admin_cli(&addr, ADMIN_SECRET, &["get-client", "partner"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["disabled"], false);
    assert!(v["tokens_not_before_ms"].as_i64().unwrap() > 0);
    let out = admin_cli(&addr, ADMIN_SECRET, &["revoke-subject", "user-42"]);
    assert!(out.status.success(), "{out:?}");
    let out = admin_cli(&addr, ADMIN_SECRET, &["get-client", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));

    for action in [
        "disable_client",
        "revoke_client_tokens",
        "enable_client",
        "list_clients",
        "get_client",
        "revoke_subject_tokens",
        "authenticate",
    ] {
        serve.wait_log(&format!("\"action\":\"{action}\""), 1).await;
    }
    let log = serve.log();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "tokend::audit")
        .collect();
    assert!(audit.len() >= 8, "{log}");
    for event in &audit {
        assert!(
            event["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{event}"
        );
        assert!(event["at_ms"].as_i64().unwrap() > 0, "{event}");
        assert!(event["timestamp"].is_string(), "{event}");
    }
    let ok: Vec<&serde_json::Value> = audit.iter().filter(|e| e["outcome"] == "ok").collect();
    assert!(ok.iter().all(|e| e["actor"] == "admin-token"));
    assert!(
        ok.iter()
            .any(|e| e["action"] == "disable_client" && e["client_id"] == "partner")
    );
    assert!(
        ok.iter()
            .any(|e| e["action"] == "revoke_subject_tokens" && e["subject"] == "user-42")
    );
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "get_client" && e["outcome"] == "unknown_client")
    );
    assert!(!log.contains(ADMIN_SECRET) && !log.contains(OLD), "{log}");
}

/// `tokend_signing_key_info` follows a key rotated by a reload: the new key's
/// series is 1, the replaced key's drops to 0.
#[tokio::test]
async fn key_reload_updates_the_signing_key_metric() {
    let dir = TempDir::new().unwrap();
    let clients = dir.path().join("clients.toml");
    std::fs::write(&clients, clients_toml(&[OLD])).unwrap();
    let serve = serve_in(dir.path(), &main_config(dir.path(), &clients, 0)).await;
    let kid = |t: &str| jwt_parts(t).0["kid"].as_str().unwrap().to_owned();
    let old_kid = kid(&token(&serve, OLD).await);
    let metrics = || async { serve.get("/metrics").await.text().await.unwrap() };
    let series = |text: &str, kid: &str| {
        text.lines()
            .find(|l| l.starts_with("tokend_signing_key_info{") && l.contains(kid))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(series(&metrics().await, &old_kid).as_deref(), Some("1"));

    std::fs::write(
        dir.path().join("signing.pem"),
        tokend::token::keys::generate_pem(tokend::token::Algorithm::ES256).unwrap(),
    )
    .unwrap();
    serve.sighup();
    serve.wait_log("configuration reloaded", 1).await;
    let new_kid = kid(&token(&serve, OLD).await);
    assert_ne!(new_kid, old_kid);
    let text = metrics().await;
    assert_eq!(series(&text, &new_kid).as_deref(), Some("1"), "{text}");
    assert_eq!(series(&text, &old_kid).as_deref(), Some("0"), "{text}");
}
