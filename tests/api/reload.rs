//! Hot reload, secret rotation and the `tokend admin` CLI against real
//! `tokend serve` child processes: clients files swapped the way Kubernetes
//! swaps mounted Secrets (`..data` symlink), SIGHUP, broken reloads, and the
//! audit log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::basic_header;
use crate::common::tempdir::TempDir;
use crate::lifecycle::{ADMIN_SECRET, admin_toml};

const OLD: &str = "old-secret-0123456789abcdef";
const NEW: &str = "new-secret-fedcba9876543210";

fn hash(s: &str) -> String {
    tokend::oauth::client::SecretHash::sha256_of(s)
}

fn clients_toml(secrets: &[&str]) -> String {
    let hashes: Vec<String> = secrets.iter().map(|s| format!("{:?}", hash(s))).collect();
    format!(
        "[[clients]]\nclient_id = \"partner\"\nsecret_hashes = [{}]\nscopes = [\"bookings:create\"]\n\n\
         [[clients]]\nclient_id = \"resource-server\"\nsecret_hashes = [{:?}]\n",
        hashes.join(", "),
        hash(OLD)
    )
}

/// A `tokend serve` child process; stderr (the log) is collected.
struct Serve {
    child: Child,
    log: Arc<Mutex<String>>,
    http: String,
    admin: Option<String>,
    client: reqwest::Client,
}

impl Serve {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("tokend: HTTP on ") {
                    let _ = tx.send(line.clone());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("tokend serve did not start: {}", log.lock().unwrap()));
        let field = |name: &str| {
            banner
                .split("  ")
                .find_map(|p| p.trim().strip_prefix(name))
                .map(|s| s.trim().to_string())
        };
        Self {
            child,
            log,
            http: field("tokend: HTTP on ").unwrap(),
            admin: field("admin on "),
            client: reqwest::Client::new(),
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn sighup(&self) {
        let st = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The token endpoint's status for `partner` with `secret`.
    async fn token_status(&self, secret: &str) -> u16 {
        self.client
            .post(format!("{}/oauth/token", self.http))
            .header("Authorization", basic_header("partner", secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn token(&self, secret: &str) -> String {
        let r = self
            .client
            .post(format!("{}/oauth/token", self.http))
            .header("Authorization", basic_header("partner", secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn active(&self, token: &str) -> bool {
        let r = self
            .client
            .post(format!("{}/oauth/introspect", self.http))
            .header("Authorization", basic_header("resource-server", OLD))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        v["active"] == true
    }

    /// Waits (bounded) until `secret` gets `status` at the token endpoint.
    async fn wait_status(&self, secret: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.token_status(secret).await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("reload did not take effect; log:\n{}", self.log());
    }

    /// Waits (bounded) until the log contains `needle` `n` times.
    async fn wait_log(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("log never showed {needle:?} x{n}:\n{}", self.log());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// The tests poll with secrets that are about to become (in)valid, which the
/// secret-guessing defence would rightly count as failures from 127.0.0.1;
/// it is tested on its own in `ops`, so it is off here.
fn main_config(dir: &Path, clients_file: &Path, poll_secs: u64, extra: &str) -> PathBuf {
    let key = dir.join("signing.pem");
    if !key.exists() {
        std::fs::write(
            &key,
            tokend::token::keys::generate_pem(tokend::token::Algorithm::ES256).unwrap(),
        )
        .unwrap();
    }
    let path = dir.join("tokend.toml");
    std::fs::write(
        &path,
        format!(
            "issuer = \"https://tokend.test\"\nclients_file = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [grpc]\nlisten = \"127.0.0.1:0\"\n[signing]\nalgorithm = \"ES256\"\nkey_file = \"signing.pem\"\n\
             [log]\nformat = \"json\"\n[server]\nreload_poll_secs = {poll_secs}\n\
             [auth_throttle]\nenabled = false\n{extra}",
            clients_file.display().to_string()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn rotation_with_overlap_through_kubernetes_symlink_swaps() {
    let dir = TempDir::new();
    let mut vol = K8sVolume::new(&dir.path().join("secret"), &clients_toml(&[OLD]));
    let cfg = main_config(dir.path(), &vol.path(), 1, "");
    let serve = Serve::start(&cfg);
    let t_old = serve.token(OLD).await;
    assert_eq!(serve.token_status(NEW).await, 401);

    // 1. Add the new hash next to the old one: both secrets work.
    vol.update(&clients_toml(&[OLD, NEW]));
    serve.wait_status(NEW, 200).await;
    assert_eq!(serve.token_status(OLD).await, 200);
    // 2. The partner switches; tokens from either secret stay valid.
    let t_new = serve.token(NEW).await;
    assert!(serve.active(&t_old).await);
    // 3. Remove the old hash: the old secret stops working, the new one keeps working.
    vol.update(&clients_toml(&[NEW]));
    serve.wait_status(OLD, 401).await;
    assert_eq!(serve.token_status(NEW).await, 200);
    assert!(serve.active(&t_new).await);

    // A broken update keeps the running clients and says why, once.
    vol.update("[[clients]]\nclient_id = \"partner\"\nsecret_hashes = [\"sha256:zz\"]\n");
    serve
        .wait_log("reload failed; keeping the previous configuration", 1)
        .await;
    assert_eq!(serve.token_status(NEW).await, 200);
    let log = serve.log();
    assert!(log.contains("secret_hashes[0]"), "{log}");
    // A change needing a restart is reported, the rest applies.
    let cfg_text = std::fs::read_to_string(&cfg).unwrap();
    vol.update(&clients_toml(&[OLD, NEW]));
    std::fs::write(
        &cfg,
        cfg_text.replace("https://tokend.test", "https://elsewhere.test"),
    )
    .unwrap();
    serve.wait_status(OLD, 200).await;
    serve.wait_log("needs a restart", 1).await;
    assert!(serve.log().contains("issuer"));
    // No secret ever reaches the log.
    let log = serve.log();
    assert!(!log.contains(OLD) && !log.contains(NEW), "{log}");
}

#[tokio::test]
async fn sighup_reloads_and_a_bad_reload_keeps_the_old_configuration() {
    let dir = TempDir::new();
    let clients = dir.path().join("clients.toml");
    std::fs::write(&clients, clients_toml(&[OLD])).unwrap();
    // No file polling: only SIGHUP can make a change visible.
    let cfg = main_config(dir.path(), &clients, 0, "");
    let serve = Serve::start(&cfg);
    assert_eq!(serve.token_status(OLD).await, 200);

    std::fs::write(&clients, clients_toml(&[OLD, NEW])).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        serve.token_status(NEW).await,
        401,
        "reloaded without SIGHUP"
    );
    serve.sighup();
    serve.wait_status(NEW, 200).await;
    assert_eq!(serve.token_status(OLD).await, 200);

    std::fs::write(&clients, clients_toml(&[NEW])).unwrap();
    serve.sighup();
    serve.wait_status(OLD, 401).await;

    // Invalid TOML: the running clients stay, the log says why.
    std::fs::write(&clients, "[[clients]\nbroken").unwrap();
    serve.sighup();
    serve
        .wait_log("reload failed; keeping the previous configuration", 1)
        .await;
    assert_eq!(serve.token_status(NEW).await, 200);
    assert_eq!(serve.token_status(OLD).await, 401);
}

fn admin_cli(addr: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("admin")
        .args(args)
        .env("TOKEND_ADMIN_ADDR", addr)
        .env("TOKEND_ADMIN_TOKEN", token)
        .output()
        .unwrap()
}

#[tokio::test]
async fn admin_cli_cuts_a_client_off_and_every_action_is_audited() {
    let dir = TempDir::new();
    let clients = dir.path().join("clients.toml");
    std::fs::write(&clients, clients_toml(&[OLD])).unwrap();
    let cfg = main_config(dir.path(), &clients, 0, &admin_toml());
    let serve = Serve::start(&cfg);
    let addr = serve.admin.clone().expect("admin listener in the banner");
    let token = serve.token(OLD).await;

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
    assert_eq!(serve.token_status(OLD).await, 401);
    assert!(!serve.active(&token).await);

    let out = admin_cli(&addr, ADMIN_SECRET, &["revoke-client", "partner"]);
    assert!(out.status.success(), "{out:?}");
    let out = admin_cli(&addr, ADMIN_SECRET, &["enable-client", "partner"]);
    assert!(out.status.success(), "{out:?}");
    // Disabled, revoked, re-enabled: the old token stays dead, new ones work.
    assert_eq!(serve.token_status(OLD).await, 200);
    assert!(!serve.active(&token).await);
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
    let dir = TempDir::new();
    let clients = dir.path().join("clients.toml");
    std::fs::write(&clients, clients_toml(&[OLD])).unwrap();
    let cfg = main_config(dir.path(), &clients, 0, "");
    let serve = Serve::start(&cfg);
    let kid = |t: &str| {
        crate::common::jwt_parts(t).0["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old_kid = kid(&serve.token(OLD).await);
    let metrics = || async {
        serve
            .client
            .get(format!("{}/metrics", serve.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
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
    let new_kid = kid(&serve.token(OLD).await);
    assert_ne!(new_kid, old_kid);
    let text = metrics().await;
    assert_eq!(series(&text, &new_kid).as_deref(), Some("1"), "{text}");
    assert_eq!(series(&text, &old_kid).as_deref(), Some("0"), "{text}");
}
