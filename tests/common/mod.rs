//! Test harness shared by the integration tests: spawns tokend in-process on
//! ephemeral ports, real `redis-server` processes, and clients for both
//! transports. Everything talks over real loopback sockets.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use tokend::config::Config;
use tokend::pb::token_service_client::TokenServiceClient;
use tokend::server::Server;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Secret of every test client below: `sha256:` of this is in the configs.
pub const SECRET: &str = "s3cret-for-tests";

/// A TOML config for tests: ephemeral ports, the given store and signing
/// settings, and a standard set of clients. `extra` is appended verbatim.
pub fn config_toml(store_url: &str, signing: &str, extra: &str) -> String {
    let hash = tokend::oauth::client::SecretHash::sha256_of(SECRET);
    format!(
        r#"
issuer = "https://tokend.test"
[http]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[store]
url = "{store_url}"
[signing]
{signing}
[server]
shutdown_grace_secs = 5

[[clients]]
client_id = "orders-service"
secret_hashes = ["{hash}"]
grant_types = ["client_credentials"]
scopes = ["orders:read", "orders:write"]
default_scopes = ["orders:read"]
audience = ["orders-api", "billing-api"]
access_ttl_secs = 3600
claims = {{ organisation_id = 74, roles = ["ADMIN", "DOCTOR"], is_test = false }}

[[clients]]
client_id = "partner"
secret_hashes = ["{hash}"]
grant_types = ["client_credentials"]
scopes = ["bookings:create"]
audience = ["bookings-api"]
claims = {{ partner_id = "f31120ee", user_id = 276 }}
claims_in_response = true

[[clients]]
client_id = "basic-only"
secret_hashes = ["{hash}"]
token_endpoint_auth_method = "client_secret_basic"
grant_types = ["client_credentials"]

[[clients]]
client_id = "resource-server"
secret_hashes = ["{hash}"]
grant_types = ["client_credentials"]
{extra}
"#
    )
}

/// Writes `text` into a fresh temp dir and returns the file path.
pub fn write_temp(name: &str, text: &str) -> (tempdir::TempDir, PathBuf) {
    let dir = tempdir::TempDir::new();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Minimal self-deleting temp dir (no extra dependency).
pub mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct TempDir(PathBuf);
    static N: AtomicU64 = AtomicU64::new(0);

    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "tokend-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Default for TempDir {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running in-process tokend.
pub struct TestApp {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// The admin listener, when the config sets `[admin] listen`.
    pub admin: Option<SocketAddr>,
    pub http_client: reqwest::Client,
    pub core: std::sync::Arc<tokend::oauth::Core>,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempdir::TempDir>,
}

impl TestApp {
    /// Starts tokend from TOML text (written to a temp file so relative paths
    /// and `clients_file` behave as in production).
    pub async fn start(toml_text: &str) -> Self {
        let (dir, path) = write_temp("tokend.toml", toml_text);
        let mut app = Self::start_file(&path).await;
        app._dir = Some(dir);
        app
    }

    pub async fn start_file(path: &Path) -> Self {
        let cfg = Config::load(Some(path), Vec::new()).expect("test config loads");
        Self::start_config(cfg).await
    }

    pub async fn start_config(cfg: Config) -> Self {
        let app = Self::start_config_unready(cfg).await;
        app.wait_ready().await;
        app
    }

    /// Starts tokend without waiting for readiness (e.g. while its Redis is
    /// down).
    pub async fn start_config_unready(cfg: Config) -> Self {
        let server = Server::build(cfg.parse().expect("test config parses"))
            .await
            .expect("server builds");
        let http = server.http_addr();
        let grpc = server.grpc_addr();
        let admin = server.admin_addr();
        let core = server.core();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            http,
            grpc,
            admin,
            http_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            core,
            shutdown,
            task: Some(task),
            _dir: None,
        }
    }

    /// A handle on a tokend running elsewhere (a `tokend serve` child
    /// process); `core` is a placeholder and stopping it does nothing.
    pub fn remote(http: SocketAddr, grpc: SocketAddr) -> Self {
        let parsed = Config::default().parse().unwrap();
        let placeholder = tokend::oauth::Core::new(
            parsed.boot.oauth,
            parsed.live.limits,
            parsed.live.clients,
            tokend::token::KeySet::new(
                tokend::token::SigningKey::generate(tokend::token::Algorithm::ES256).unwrap(),
                Vec::new(),
            ),
            std::sync::Arc::new(tokend::store::MemoryStore::new()),
        );
        Self {
            http,
            grpc,
            admin: None,
            http_client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            core: std::sync::Arc::new(placeholder),
            shutdown: CancellationToken::new(),
            task: None,
            _dir: None,
        }
    }

    /// Memory store, ephemeral RS256 key.
    pub async fn default_memory() -> Self {
        Self::start(&config_toml("memory://", "algorithm = \"RS256\"", "")).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if let Ok(r) = self.http_client.get(self.url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tokend did not become ready");
    }

    pub async fn grpc_client(&self) -> TokenServiceClient<Channel> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        TokenServiceClient::new(ch)
    }

    pub async fn grpc_channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// GET `path` on the HTTP listener.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http_client.get(self.url(path)).send().await.unwrap()
    }

    /// POSTs a form body with optional Basic credentials.
    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.http_client.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.header("Authorization", basic_header(id, secret));
        }
        req.send().await.unwrap()
    }

    /// client_credentials over HTTP for a test client; returns the JSON.
    pub async fn token(&self, client_id: &str, extra: &[(&str, &str)]) -> serde_json::Value {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(extra);
        let r = self
            .post_form("/oauth/token", Some((client_id, SECRET)), &form)
            .await;
        assert_eq!(r.status(), 200, "token request failed");
        r.json().await.unwrap()
    }

    /// The raw response to a client_credentials request with Basic
    /// credentials (for the refusals: 401, 429, ...).
    pub async fn token_response(&self, client_id: &str, secret: &str) -> reqwest::Response {
        self.post_form(
            "/oauth/token",
            Some((client_id, secret)),
            &[("grant_type", "client_credentials")],
        )
        .await
    }

    /// A client_credentials access token for `client_id` (default scopes).
    pub async fn access_token(&self, client_id: &str) -> String {
        self.token(client_id, &[]).await["access_token"]
            .as_str()
            .expect("no access_token in the token response")
            .to_owned()
    }

    pub async fn introspect(&self, token: &str) -> serde_json::Value {
        let r = self
            .post_form(
                "/oauth/introspect",
                Some(("resource-server", SECRET)),
                &[("token", token)],
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `Basic` header value with RFC 6749 2.3.1 form-encoding of both parts.
pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A `redis-server` child process on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: tempdir::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts redis-server without persistence; panics with the install
    /// command if it is missing.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, false)
    }

    /// Starts redis-server with an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`): a SIGKILLed server restarted
    /// by [`RedisServer::restart`] (same port, same `--dir`) has every write
    /// it acknowledged.
    pub fn start_persistent() -> Self {
        Self::spawn(free_port(), true)
    }

    fn spawn(port: u16, persistent: bool) -> Self {
        let dir = tempdir::TempDir::new();
        let child = spawn_redis(port, dir.path(), persistent);
        let server = Self {
            port,
            child,
            dir,
            persistent,
        };
        server.wait_ping();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn wait_ping(&self) {
        wait_ping(self.port);
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new redis-server on the same port and directory (kills the
    /// old one first if it still runs). Empty unless started with
    /// [`RedisServer::start_persistent`], which reloads its append-only file.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn_redis(self.port, self.dir.path(), self.persistent);
        self.wait_ping();
    }
}

fn spawn_redis(port: u16, dir: &Path, persistent: bool) -> Child {
    let persistence: &[&str] = if persistent {
        &[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
    } else {
        &["--save", "", "--appendonly", "no"]
    };
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}). Install it: apt-get install -y redis-server \
                 (the README's test command does this for you)"
            )
        })
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port (bind to 0, read, release). Avoids 6399.
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p != 6399 {
            return p;
        }
    }
}

/// Decodes a JWT's header and payload without verifying (for assertions).
pub fn jwt_parts(token: &str) -> (serde_json::Value, serde_json::Value) {
    let mut it = token.split('.');
    let dec = |s: &str| -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    let h = dec(it.next().unwrap());
    let p = dec(it.next().unwrap());
    (h, p)
}

/// The ErrorInfo reason of a gRPC status.
pub fn error_reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_else(|| panic!("status without ErrorInfo: {status:?}"))
}

/// A 3-node Redis Cluster (3 primaries, no replicas) of child processes on
/// free loopback ports, in a fresh directory; killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Child>,
    _dir: tempdir::TempDir,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create`, and
    /// waits for `cluster_state:ok` on every node.
    pub fn start() -> Self {
        let dir = tempdir::TempDir::new();
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut children = Vec::new();
        for p in &ports {
            let node_dir = dir.path().join(p.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(node_dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start redis-server ({e}). Install it: apt-get install -y \
                         redis-server redis-tools"
                    )
                });
            children.push(child);
        }
        let cluster = Self {
            ports,
            children,
            _dir: dir,
        };
        for p in &cluster.ports {
            wait_ping(*p);
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}). Install it: apt-get install -y redis-tools")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in &cluster.ports {
            let mut ok = false;
            for _ in 0..200 {
                let info = Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    ok = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(ok, "cluster node {p} never reached cluster_state:ok");
        }
        cluster
    }

    /// `redis+cluster://` URL naming every node.
    pub fn url(&self) -> String {
        cluster_url("redis+cluster", &self.ports)
    }
}

/// A cluster URL (`scheme://127.0.0.1:p1,127.0.0.1:p2,...`) naming every node.
pub fn cluster_url(scheme: &str, ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("{scheme}://{}", hosts.join(","))
}

/// Kills and reaps server processes.
pub fn kill_all(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        kill_all(&mut self.children);
    }
}

/// Waits until something on `port` answers PING with PONG.
pub fn wait_ping(port: u16) {
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            if s.write_all(b"PING\r\n").is_ok() {
                let mut buf = [0u8; 7];
                if s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server on port {port} did not answer PING");
}

/// Polls `check` every 50 ms until it holds or `within` has passed; true if
/// it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a fresh RS256 key into `dir` with the real CLI, so processes share
/// it.
pub fn keygen(dir: &Path) -> PathBuf {
    let path = dir.join("signing.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_tokend"))
        .args(["keygen", "--alg", "RS256", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen failed");
    path
}

/// The `[signing]` body for an RS256 key file.
pub fn signing(key: &Path) -> String {
    format!("algorithm = \"RS256\"\nkey_file = \"{}\"", key.display())
}

/// HTTP status of `/readyz` (0 when the request fails).
pub async fn readyz(app: &TestApp) -> u16 {
    match app.http_client.get(app.url("/readyz")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// A real `tokend serve` child process (the binary under test), killed on
/// drop. Its stderr goes to `<dir>/<name>.log`.
pub struct TokendProcess {
    pub child: Child,
    pub app: TestApp,
    pub log: PathBuf,
}

impl TokendProcess {
    /// Starts `tokend serve` on fresh ports with `config` (a
    /// [`config_toml`] text: its HTTP and gRPC `127.0.0.1:0` are replaced by
    /// free ports) and waits until it is ready.
    pub async fn start(dir: &Path, name: &str, config: &str) -> Self {
        Self::start_with_env(dir, name, config, &[]).await
    }

    /// Like [`TokendProcess::start`], with extra environment variables (the
    /// `TOKEND_<SECTION>_<KEY>` overrides).
    pub async fn start_with_env(
        dir: &Path,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let (http, grpc) = (free_port(), free_port());
        let text = config
            .replace(
                "127.0.0.1:0\"\n[grpc]",
                &format!("127.0.0.1:{http}\"\n[grpc]"),
            )
            .replace(
                "127.0.0.1:0\"\n[store]",
                &format!("127.0.0.1:{grpc}\"\n[store]"),
            );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tokend"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let app = TestApp::remote(
            format!("127.0.0.1:{http}").parse().unwrap(),
            format!("127.0.0.1:{grpc}").parse().unwrap(),
        );
        let mut process = Self { child, app, log };
        let ready = eventually(Duration::from_secs(30), || async {
            readyz(&process.app).await == 200
        })
        .await;
        if !ready {
            let log = process.log_text();
            process.kill_now();
            panic!("tokend serve ({name}) did not become ready; its log:\n{log}");
        }
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// What the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL (no graceful shutdown) and wait for it.
    pub fn kill(mut self) {
        self.kill_now();
    }
}

impl Drop for TokendProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}
