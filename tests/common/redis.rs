//! Real `redis-server` child processes for the store tests: a single server
//! (plain, persistent or TLS-only) and a 3-node Cluster, each node in a
//! fresh directory, killed on drop. Redis cannot listen on port 0 and report
//! the port, so a free port is picked first; a start that loses that port to
//! another process is retried on a new one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wait::eventually;

/// Bound on a node's start (PING answered, or the TLS port accepting).
const START: Duration = Duration::from_secs(10);
/// Bound on a cluster agreeing on `cluster_state:ok` (~2 s here).
const CLUSTER_OK: Duration = Duration::from_secs(20);

/// A TLS-only node: the certificate files of
/// [`super::pki::write_redis_certs`] in `certs`.
#[derive(Clone, Debug)]
pub struct RedisTls {
    pub certs: PathBuf,
    /// `--tls-auth-clients yes`: clients must present a certificate.
    pub auth_clients: bool,
}

/// How a node runs.
#[derive(Clone, Debug, Default)]
struct Node {
    /// Append-only file fsynced on every write (`--appendfsync always`).
    persistent: bool,
    tls: Option<RedisTls>,
    cluster: bool,
    /// More `redis-server` arguments (e.g. `--maxmemory-policy volatile-lru`).
    extra: Vec<String>,
}

/// A `redis-server` child process on a loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: TempDir,
    node: Node,
}

impl RedisServer {
    /// A server without persistence on a free port; panics with the install
    /// command if redis-server is missing.
    pub async fn start() -> Self {
        Self::start_node(None, Node::default()).await
    }

    /// A server started with more `redis-server` arguments, e.g.
    /// `["--maxmemory-policy", "volatile-lru"]`.
    pub async fn start_with_args(args: &[&str]) -> Self {
        Self::start_node(
            None,
            Node {
                extra: args.iter().map(|a| a.to_string()).collect(),
                ..Node::default()
            },
        )
        .await
    }

    /// A server on `port`, which the test chose beforehand (e.g. a store
    /// configured before its Redis exists).
    pub async fn start_on(port: u16) -> Self {
        Self::start_node(Some(port), Node::default()).await
    }

    /// A server with an append-only file fsynced on every write
    /// (`--appendonly yes --appendfsync always`): a SIGKILLed server
    /// restarted by [`RedisServer::restart`] (same port, same `--dir`) has
    /// every write it acknowledged.
    pub async fn start_persistent() -> Self {
        Self::start_node(
            None,
            Node {
                persistent: true,
                ..Node::default()
            },
        )
        .await
    }

    /// A server listening only on a TLS port (plain port 0, i.e. off).
    pub async fn start_tls(tls: RedisTls) -> Self {
        Self::start_node(
            None,
            Node {
                tls: Some(tls),
                ..Node::default()
            },
        )
        .await
    }

    async fn start_node(fixed: Option<u16>, node: Node) -> Self {
        // A free port can be taken by another process before redis-server
        // binds it; then it exits at once and another port is tried.
        for _ in 0..5 {
            let port = fixed.unwrap_or_else(free_port);
            let dir = TempDir::with_prefix("tokend-redis-").unwrap();
            let mut server = Self {
                port,
                child: spawn(port, dir.path(), &node),
                dir,
                node: node.clone(),
            };
            match server.wait_up().await {
                Ok(()) => return server,
                Err(exited) if fixed.is_some() => panic!("{exited}"),
                Err(_) => continue,
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `redis://` (or `rediss://` for a TLS node) URL of database 0.
    pub fn url(&self) -> String {
        let scheme = if self.node.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// A connection for commands of the test's own (`DBSIZE`, `CONFIG SET`).
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the process (SIGKILL) and waits for it.
    /// The number of keys in the database (`DBSIZE`).
    pub async fn dbsize(&self) -> i64 {
        let mut conn = redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
    }

    /// The redis-server process id (to pause it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new redis-server on the same port and directory (kills the
    /// old one first if it still runs). Empty unless started with
    /// [`RedisServer::start_persistent`], which reloads its append-only file.
    pub async fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port, self.dir.path(), &self.node);
        if let Err(exited) = self.wait_up().await {
            panic!("{exited}");
        }
    }

    /// Waits until the node answers: PING, or for a TLS node its port
    /// accepting connections. Err when the process exited first.
    async fn wait_up(&mut self) -> Result<(), String> {
        let (port, tls) = (self.port, self.node.tls.is_some());
        let child = &mut self.child;
        let mut exited = None;
        let up = eventually(START, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
            }
            let gone = exited.is_some();
            async move { gone || answers(port, tls).await }
        })
        .await;
        match exited {
            Some(status) => Err(format!(
                "redis-server on port {port} exited at start ({status}){}",
                if tls { "; is it built with TLS?" } else { "" }
            )),
            None if up => Ok(()),
            None => {
                self.kill();
                panic!("redis-server on port {port} did not answer within {START:?}");
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(port: u16, dir: &Path, node: &Node) -> Child {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1"]);
    match &node.tls {
        None => {
            cmd.args(["--port", &port.to_string()]);
        }
        Some(tls) => {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(tls.certs.join("redis.pem"))
                .arg("--tls-key-file")
                .arg(tls.certs.join("redis.key"))
                .arg("--tls-ca-cert-file")
                .arg(tls.certs.join("ca.pem"))
                .args([
                    "--tls-auth-clients",
                    if tls.auth_clients { "yes" } else { "no" },
                ]);
            if node.cluster {
                cmd.args(["--tls-cluster", "yes"]);
            }
        }
    }
    if node.persistent {
        cmd.args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]);
    } else {
        cmd.args(["--save", "", "--appendonly", "no"]);
    }
    if node.cluster {
        cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
            .arg("--cluster-config-file")
            .arg(dir.join("nodes.conf"));
    }
    cmd.args(&node.extra);
    cmd.arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}). Install it: apt-get install -y redis-server \
                 redis-tools (the README's test command does this for you)"
            )
        })
}

/// One check of a node: PING answered with PONG (plain), or a TCP
/// connection accepted (TLS: no PING over plain TCP there).
async fn answers(port: u16, tls: bool) -> bool {
    let bound = Duration::from_millis(500);
    let Ok(Ok(mut s)) = tokio::time::timeout(bound, TcpStream::connect(("127.0.0.1", port))).await
    else {
        return false;
    };
    if tls {
        return true;
    }
    let mut buf = [0u8; 7];
    let pong = async {
        s.write_all(b"PING\r\n").await?;
        s.read_exact(&mut buf).await
    };
    // A node with `requirepass` answers `-NOAUTH ...`: up as well.
    matches!(tokio::time::timeout(bound, pong).await, Ok(Ok(_)))
        && (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH")
}

/// A 3-node Redis Cluster (3 primaries, no replicas) of child processes on
/// free loopback ports, each in a fresh directory; killed on drop. Or, from
/// [`RedisCluster::start_with_replicas`], 3 primaries each with a replica.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    /// The nodes, to be killed and restarted by failover tests (all killed
    /// on drop).
    pub nodes: Vec<RedisServer>,
    tls: Option<RedisTls>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create`, and
    /// waits for `cluster_state:ok` on every node.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same with TLS-only nodes (the cluster bus over TLS too).
    pub async fn start_tls(certs: &Path) -> Self {
        Self::start_with(Some(RedisTls {
            certs: certs.to_path_buf(),
            auth_clients: false,
        }))
        .await
    }

    /// Six nodes: 3 primaries, each with one replica; a primary unreachable
    /// for 1 s is failed over (`cluster-node-timeout 1000`), and a full sync
    /// starts at once.
    pub async fn start_with_replicas() -> Self {
        Self::create(
            None,
            1,
            &[
                "--cluster-node-timeout",
                "1000",
                "--repl-diskless-sync-delay",
                "0",
            ],
        )
        .await
    }

    async fn start_with(tls: Option<RedisTls>) -> Self {
        Self::create(tls, 0, &[]).await
    }

    async fn create(tls: Option<RedisTls>, replicas: usize, extra: &[&str]) -> Self {
        let node = Node {
            tls: tls.clone(),
            cluster: true,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            ..Node::default()
        };
        // A port handed out twice makes the second node exit at start: it is
        // then retried on another port.
        let mut nodes = Vec::new();
        for _ in 0..3 * (1 + replicas) {
            nodes.push(RedisServer::start_node(None, node.clone()).await);
        }
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.extend(
            ["--cluster-replicas", &replicas.to_string(), "--cluster-yes"].map(String::from),
        );
        let out = redis_cli(tls.as_ref(), create).await;
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for p in &ports {
            let tls = tls.clone();
            let ok = eventually(CLUSTER_OK, || {
                let tls = tls.clone();
                let args = ["-p", &p.to_string(), "cluster", "info"].map(String::from);
                async move {
                    let info = redis_cli(tls.as_ref(), args.to_vec()).await;
                    String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok")
                }
            })
            .await;
            assert!(ok, "cluster node {p} never reached cluster_state:ok");
        }
        if replicas > 0 {
            for p in &ports {
                let synced = eventually(CLUSTER_OK, || async move {
                    let out = redis_cli(
                        None,
                        ["-p", &p.to_string(), "info", "replication"]
                            .map(String::from)
                            .to_vec(),
                    )
                    .await;
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    text.contains("role:master") && text.contains("state=online")
                        || text.contains("master_link_status:up")
                })
                .await;
                assert!(synced, "cluster node {p} never finished replicating");
            }
        }
        Self { ports, nodes, tls }
    }

    /// The index in `nodes` of a node that is a primary now.
    pub async fn a_primary(&self) -> usize {
        for (i, p) in self.ports.iter().enumerate() {
            let out = redis_cli(
                self.tls.as_ref(),
                ["-p", &p.to_string(), "role"].map(String::from).to_vec(),
            )
            .await;
            if String::from_utf8_lossy(&out.stdout).starts_with("master") {
                return i;
            }
        }
        panic!("no cluster node is a primary");
    }

    /// `redis+cluster://` (or `rediss+cluster://`) URL naming every node.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("{scheme}://{}", hosts.join(","))
    }
}

/// Runs `redis-cli` (with `--tls --cacert` for TLS nodes) off the async
/// threads.
async fn redis_cli(tls: Option<&RedisTls>, args: Vec<String>) -> std::process::Output {
    redis_cli_as(tls, None, args).await
}

/// [`redis_cli`] with a password (`REDISCLI_AUTH`, never on the command line).
async fn redis_cli_as(
    tls: Option<&RedisTls>,
    password: Option<&str>,
    args: Vec<String>,
) -> std::process::Output {
    let ca = tls.map(|t| t.certs.join("ca.pem"));
    let password = password.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("redis-cli");
        if let Some(ca) = &ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        if let Some(p) = &password {
            cmd.env("REDISCLI_AUTH", p);
        }
        cmd.args(&args).output().unwrap_or_else(|e| {
            panic!("cannot run redis-cli ({e}). Install it: apt-get install -y redis-tools")
        })
    })
    .await
    .unwrap()
}

/// A free loopback port (bind to 0, read, release), for processes that
/// cannot listen on port 0 themselves. Avoids 6399 (taken on some machines).
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p != 6399 {
            return p;
        }
    }
}

/// Bound on a Sentinel group agreeing on its topology (each Sentinel sees
/// the replica and the two other Sentinels; hello messages every 2 s).
const SENTINELS_AGREE: Duration = Duration::from_secs(30);

/// The primary's name the Sentinels monitor.
pub const SENTINEL_MASTER: &str = "tokendprimary";

/// A Sentinel-managed Redis: a primary, one replica and three Sentinels
/// (quorum 2, primary down after 500 ms), all child processes on loopback,
/// killed on drop.
pub struct RedisSentinelGroup {
    pub primary: RedisServer,
    pub replica: RedisServer,
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<(Child, TempDir)>,
    tls: Option<RedisTls>,
    /// (the Redis nodes' password, the Sentinels' password)
    auth: Option<(String, String)>,
}

impl RedisSentinelGroup {
    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// The same group with passwords: `redis_password` on the Redis nodes
    /// (`requirepass`, `masterauth`, the Sentinels' `auth-pass`) and
    /// `sentinel_password` on the Sentinels themselves (`requirepass`).
    pub async fn start_with_passwords(redis_password: &str, sentinel_password: &str) -> Self {
        Self::start_with(
            None,
            Some((redis_password.to_owned(), sentinel_password.to_owned())),
        )
        .await
    }

    /// The same group speaking only TLS (Sentinels included, and the
    /// replication and Sentinel links between them), on the certificates of
    /// [`super::pki::write_redis_certs`] in `certs`.
    pub async fn start_tls(certs: &Path) -> Self {
        Self::start_with(
            Some(RedisTls {
                certs: certs.to_path_buf(),
                auth_clients: false,
            }),
            None,
        )
        .await
    }

    async fn start_with(tls: Option<RedisTls>, auth: Option<(String, String)>) -> Self {
        // No delay before the full sync (Redis waits 5 s by default for more
        // replicas to share a diskless transfer).
        let mut extra = vec!["--repl-diskless-sync-delay".to_string(), "0".to_string()];
        if tls.is_some() {
            extra.extend(["--tls-replication".to_string(), "yes".to_string()]);
        }
        if let Some((pw, _)) = &auth {
            extra.extend(["--requirepass", pw, "--masterauth", pw].map(String::from));
        }
        let node = Node {
            tls: tls.clone(),
            extra: extra.clone(),
            ..Node::default()
        };
        let primary = RedisServer::start_node(None, node.clone()).await;
        let p = primary.port.to_string();
        let mut replica_extra = vec![
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            p.clone(),
        ];
        replica_extra.extend(extra);
        let replica = RedisServer::start_node(
            None,
            Node {
                extra: replica_extra,
                ..node
            },
        )
        .await;
        let replica_port = replica.port;
        let t = tls.clone();
        let redis_pw = auth.as_ref().map(|(r, _)| r.clone());
        let synced = eventually(SENTINELS_AGREE, || {
            let t = t.clone();
            let redis_pw = redis_pw.clone();
            async move {
                let out = redis_cli_as(
                    t.as_ref(),
                    redis_pw.as_deref(),
                    ["-p", &replica_port.to_string(), "info", "replication"]
                        .map(String::from)
                        .to_vec(),
                )
                .await;
                String::from_utf8_lossy(&out.stdout).contains("master_link_status:up")
            }
        })
        .await;
        assert!(synced, "the replica never finished its first sync");
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let dir = TempDir::with_prefix("tokend-sentinel-").unwrap();
            let conf = dir.path().join("sentinel.conf");
            let listen = match &tls {
                None => format!("port {port}\n"),
                Some(t) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {c}/redis.pem\ntls-key-file {c}/redis.key\n\
                     tls-ca-cert-file {c}/ca.pem\ntls-replication yes\ntls-auth-clients no\n",
                    c = t.certs.display()
                ),
            };
            std::fs::write(
                &conf,
                format!(
                    "{listen}bind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                     sentinel parallel-syncs {SENTINEL_MASTER} 1\n{auth}",
                    dir = dir.path().display(),
                    auth = match &auth {
                        None => String::new(),
                        Some((r, s)) =>
                            format!("sentinel auth-pass {SENTINEL_MASTER} {r}\nrequirepass {s}\n"),
                    }
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start redis-server --sentinel ({e}): apt-get install -y redis-server")
                });
            sentinels.push((child, dir));
            sentinel_ports.push(port);
        }
        let group = Self {
            primary,
            replica,
            sentinel_ports,
            sentinels,
            tls,
            auth,
        };
        for port in &group.sentinel_ports {
            let port = *port;
            let tls = group.tls.clone();
            let sentinel_pw = group.auth.as_ref().map(|(_, s)| s.clone());
            let agreed = eventually(SENTINELS_AGREE, || {
                let tls = tls.clone();
                let sentinel_pw = sentinel_pw.clone();
                async move {
                    let out = redis_cli_as(
                        tls.as_ref(),
                        sentinel_pw.as_deref(),
                        [
                            "-p",
                            &port.to_string(),
                            "sentinel",
                            "master",
                            SENTINEL_MASTER,
                        ]
                        .map(String::from)
                        .to_vec(),
                    )
                    .await;
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let field = |name: &str| {
                        let mut lines = text.lines();
                        while let Some(l) = lines.next() {
                            if l == name {
                                return lines.next().map(str::to_owned);
                            }
                        }
                        None
                    };
                    field("num-slaves").as_deref() == Some("1")
                        && field("num-other-sentinels").as_deref() == Some("2")
                }
            })
            .await;
            assert!(
                agreed,
                "Sentinel on port {port} never saw the replica and its peers"
            );
        }
        group
    }

    /// `redis+sentinel://` URL naming the three Sentinels and the primary.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{SENTINEL_MASTER}", hosts.join(","))
    }

    /// The primary's port as the Sentinels report it now.
    pub async fn primary_port(&self) -> Option<u16> {
        let out = redis_cli_as(
            self.tls.as_ref(),
            self.auth.as_ref().map(|(_, s)| s.as_str()),
            [
                "-p",
                &self.sentinel_ports[0].to_string(),
                "sentinel",
                "get-master-addr-by-name",
                SENTINEL_MASTER,
            ]
            .map(String::from)
            .to_vec(),
        )
        .await;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for RedisSentinelGroup {
    fn drop(&mut self) {
        for (child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
