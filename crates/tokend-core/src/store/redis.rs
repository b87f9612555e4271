//! The Redis backend: the [`Store`] trait on one Redis (`redis://`,
//! `rediss://`), a Redis Cluster (`redis+cluster://`, `rediss+cluster://`) or
//! a Sentinel-managed Redis (`redis+sentinel://`, `rediss+sentinel://`),
//! shared by every replica so revocations, codes and rate counters are one
//! truth across them.
//!
//! Sentinel: the primary's address comes from the first Sentinel that knows
//! it (the redis crate's Sentinel client, which also checks that the node
//! answers `ROLE` as a primary). The connection to it is kept and reused; a
//! connection error, a timeout or a `READONLY` answer (the old primary,
//! demoted to a replica by a failover) drops it, and the next call asks the
//! Sentinels again. A `READONLY` answer means the command was not applied, so
//! that one call is retried once on the new primary; anything else fails
//! (fail-closed, as with a Redis that is down) and the next call reconnects.
//!
//! Connections are the redis crate's self-healing handles (the
//! `ConnectionManager`, or the cluster connection), created lazily: tokend starts
//! and serves what needs no store while Redis is down, readiness says "not
//! ready", and the first call after Redis returns reconnects. Handles are cloned
//! per call (they multiplex one connection), never locked.
//!
//! Every call is bounded by `[store] timeout_ms` with a tokio timeout around the
//! whole command, connection attempts included, so a Redis that accepts TCP and
//! never answers costs a request at most that long and then a `StoreError`.
//!
//! TLS (`rediss://`, `rediss+cluster://`) is the redis crate's rustls
//! support on the process's one crypto provider (aws-lc-rs). The server is
//! verified against the system's roots, or only against `[store] tls_ca_file`
//! when that is set; `tls_cert_file`/`tls_key_file` add a client certificate.
//! The files are read once, when the store is created.
//!
//! Key layout: `<key_prefix><key>`, value as given, TTL as given (`PX`, ms,
//! rounded up); rate-limit state lives at `<key_prefix><key>` too, holding the
//! GCRA theoretical arrival time in µs (server clock) with a TTL ending when
//! it is no longer ahead of now. Every operation touches one key, except
//! `get_many`, which the cluster client splits per slot and reassembles in key
//! order; so no hash tags are needed, and none are imposed: keys spread over the
//! whole cluster.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, Cmd, ConnectionAddr, ErrorKind, FromRedisValue,
    IntoConnectionInfo, RedisResult, Script, ServerErrorKind, TlsCertificates, TlsMode, Value,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};

use super::log::{LogAppend, LogId, LogView};
use super::{RateDecision, Store, StoreError, StoreResult, StoreSettings};

mod log;

/// GCRA in one script so that read-compute-write is atomic across replicas.
/// Mirrors `MemoryStore::rate_limit` exactly, in microseconds, on the Redis
/// server's clock (one clock for every replica). ARGV: interval, tolerance (µs).
/// Returns {allowed (0/1), retry_after (µs)}.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > tolerance then
  return {0, nxt - now - tolerance}
end
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.max(1, math.ceil((nxt - now) / 1000)))
return {1, 0}
";

/// INCRBY and PEXPIRE in one script, so a counter never outlives its TTL
/// (a crash between the two commands would leave it forever).
const INCR: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
";

/// Which Redis deployment a handle talks to.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// The current primary of a Sentinel-managed Redis, found through the
/// Sentinels on first use and again after anything suggests it changed.
struct SentinelConn {
    /// Asks the Sentinels; one lookup at a time.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the primary and its generation, while it is trusted.
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    /// The trusted connection, or a new one to the primary the Sentinels name.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.trusted() {
            return Ok(c);
        }
        let mut client = self.client.lock().await;
        // Another call may have reconnected while this one waited.
        if let Some(c) = self.trusted() {
            return Ok(c);
        }
        let conn = client
            .get_async_connection_with_config(&self.config)
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
        tracing::info!(
            generation,
            "connected to the Redis primary named by Sentinel"
        );
        Ok((generation, conn))
    }

    fn trusted(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops using connection `generation` (a newer one stays).
    fn distrust(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
            tracing::warn!(
                generation,
                "dropped the connection to the Redis primary; asking Sentinel again"
            );
        }
    }

    /// Runs `call` on the primary. A `READONLY` answer (a demoted primary:
    /// the command was not applied) is retried once on the primary the
    /// Sentinels name now.
    async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generation, conn) = self.connection().await?;
            // Dropped before the answer (the store timeout fired): the
            // primary may be gone, so the connection is not trusted again.
            let mut guard = Distrust {
                conn: self,
                generation,
                armed: true,
            };
            let result = call(conn).await;
            match &result {
                Err(e) if is_read_only(e) && attempt == 1 => continue,
                Err(e) if is_connection_error(e) => {}
                _ => guard.armed = false,
            }
            return result;
        }
    }
}

/// Distrusts a connection when dropped armed (see [`SentinelConn::run`]).
struct Distrust<'a> {
    conn: &'a SentinelConn,
    generation: u64,
    armed: bool,
}

impl Drop for Distrust<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.distrust(self.generation);
        }
    }
}

/// Errors after which a connection to a Sentinel-named primary is not used
/// again: it broke, timed out, or the node is no longer the primary.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || is_read_only(e)
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::MasterDown)
                | ErrorKind::MasterNameNotFoundBySentinel
        )
}

/// `READONLY`: the node is a replica now; nothing was written. Scripts
/// report it inside their own error, hence the text check too.
fn is_read_only(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly) || e.to_string().contains("READONLY")
}

/// [`Store`] on Redis, Redis Cluster or a Sentinel-managed Redis.
pub struct RedisStore {
    conn: Conn,
    /// The connection of acknowledged writes (with `replica_acks`).
    writer: Option<Conn>,
    prefix: String,
    timeout: Duration,
    acks: Option<ReplicaAcks>,
    gcra: Script,
    incr: Script,
}

/// `[store] replica_acks`: writes whose loss would be a security failure
/// (`put`, `put_new`, `take`, `delete`: revocations, cut-offs, code
/// redemptions, refresh rotations) are followed by `WAIT replicas timeout` in
/// the same pipeline, on the node that took the write, over connections of
/// their own (`WAIT` blocks its connection: reads never queue behind it);
/// fewer acknowledgements
/// than asked fail the call (the caller answers 503: a revocation is never
/// reported done while a failover could still lose it). Rate counters are not
/// waited for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplicaAcks {
    pub replicas: u32,
    pub timeout: Duration,
}

/// Where to connect, parsed from `[store] url` (and the password override).
#[derive(Clone)]
enum Target {
    Single(redis::ConnectionInfo),
    Cluster {
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    },
    Sentinel {
        /// Sentinel addresses (default port 26379).
        sentinels: Vec<(String, u16)>,
        /// The monitored primary's name.
        master: String,
        db: i64,
        /// Credentials for the Redis nodes (the URL's, or the password override).
        username: Option<String>,
        password: Option<String>,
        tls: bool,
    },
}

/// Credentials for the Sentinels themselves (`[store] sentinel_username`,
/// `TOKEND_STORE_SENTINEL_PASSWORD`): Sentinels have their own ACLs, and none
/// by default.
#[derive(Clone, Default)]
pub struct SentinelAuth {
    pub username: Option<String>,
    pub password: Option<SecretString>,
}

/// Percent-decodes a URL's user or password.
fn decode_userinfo(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "user/password is not valid percent-encoded UTF-8".to_string())
}

/// Splits `[user[:pass]@]rest` into the decoded user and password and `rest`.
fn split_userinfo(rest: &str) -> Result<(Option<String>, Option<String>, &str), String> {
    let Some((auth, hosts)) = rest.rsplit_once('@') else {
        return Ok((None, None, rest));
    };
    let (u, p) = auth.split_once(':').unwrap_or((auth, ""));
    let username = (!u.is_empty()).then(|| decode_userinfo(u)).transpose()?;
    let password = (!p.is_empty()).then(|| decode_userinfo(p)).transpose()?;
    Ok((username, password, hosts))
}

/// `host[:port],...` into (host, port) pairs, `default_port` where none is given.
fn host_ports(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let mut out = Vec::new();
    for h in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (host, port) = match h.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') && !host.is_empty() => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| "a host's port is not a number".to_string())?;
                (host, port)
            }
            _ => (h, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("empty host".into());
        }
        out.push((host.to_owned(), port));
    }
    if out.is_empty() {
        return Err("needs at least one host:port".into());
    }
    Ok(out)
}

/// The Redis server a store URL names first, for the `server.address` and
/// `server.port` of trace spans (the first node of a Cluster; `None` for
/// Sentinel URLs, whose hosts are Sentinels, not the server answering).
/// Never includes the user info.
pub fn server_address(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(
        scheme,
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster"
    ) {
        return None;
    }
    let (_, _, hosts) = split_userinfo(rest).ok()?;
    let hosts = hosts.split(['/', '?']).next().unwrap_or("");
    host_ports(hosts, 6379).ok()?.into_iter().next()
}

/// Parses a store URL. Errors never repeat the URL (it may hold a password).
fn parse_target(url: &str, password: Option<&SecretString>) -> Result<Target, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected SCHEME://...".to_string())?;
    match scheme {
        "redis" | "rediss" => {
            let info = url
                .into_connection_info()
                .map_err(|e| format!("not a valid {scheme}:// URL ({})", e.category()))?;
            let info = match password {
                Some(p) => {
                    let redis = info
                        .redis_settings()
                        .clone()
                        .set_password(p.expose_secret());
                    info.set_redis_settings(redis)
                }
                None => info,
            };
            Ok(Target::Single(info))
        }
        "redis+cluster" | "rediss+cluster" => {
            let node_scheme = scheme.trim_end_matches("+cluster");
            let (username, url_password, hosts) = split_userinfo(rest)?;
            let hosts = hosts.trim_end_matches('/');
            if hosts.contains('/') || hosts.contains('?') {
                return Err(
                    "a cluster URL takes no database or options (cluster has db 0 only)".into(),
                );
            }
            let nodes = host_ports(hosts, 6379)
                .map_err(|e| format!("a cluster URL {e}"))?
                .into_iter()
                .map(|(h, p)| {
                    let h = if h.contains(':') { format!("[{h}]") } else { h };
                    format!("{node_scheme}://{h}:{p}")
                })
                .collect();
            Ok(Target::Cluster {
                nodes,
                username,
                password: password
                    .map(|p| p.expose_secret().to_owned())
                    .or(url_password),
            })
        }
        "redis+sentinel" | "rediss+sentinel" => {
            let (username, url_password, rest) = split_userinfo(rest)?;
            let (hosts, path) = rest.split_once('/').ok_or_else(|| {
                "a Sentinel URL names the primary: redis+sentinel://HOST:PORT,.../MASTER_NAME"
                    .to_string()
            })?;
            let (master, query) = path.split_once('?').unwrap_or((path, ""));
            let master = master.trim_end_matches('/');
            if master.is_empty() || master.contains('/') {
                return Err(
                    "a Sentinel URL names the primary: redis+sentinel://HOST:PORT,.../MASTER_NAME"
                        .into(),
                );
            }
            let mut db = 0;
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("db", n)) => {
                        db = n
                            .parse::<i64>()
                            .ok()
                            .filter(|n| *n >= 0)
                            .ok_or_else(|| "db must be a non-negative number".to_string())?;
                    }
                    _ => return Err("a Sentinel URL takes only the db=N option".into()),
                }
            }
            let sentinels = host_ports(hosts, 26379).map_err(|e| format!("a Sentinel URL {e}"))?;
            Ok(Target::Sentinel {
                sentinels,
                master: decode_userinfo(master)?,
                db,
                username,
                password: password
                    .map(|p| p.expose_secret().to_owned())
                    .or(url_password),
                tls: scheme == "rediss+sentinel",
            })
        }
        other => Err(format!(
            "unsupported scheme {other:?}: expected memory://, redis://, rediss://, \
             redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://"
        )),
    }
}

/// Checks a store URL without connecting (for `check-config`).
pub fn validate_url(url: &str, password: Option<&SecretString>) -> Result<(), String> {
    parse_target(url, password).map(|_| ())
}

/// Whether `url` names a Sentinel-managed Redis.
pub fn is_sentinel_url(url: &str) -> bool {
    matches!(
        url.split_once("://"),
        Some(("redis+sentinel" | "rediss+sentinel", _))
    )
}

/// Whether `url` is one of the TLS schemes.
fn is_tls_url(url: &str) -> bool {
    matches!(
        url.split_once("://"),
        Some(("rediss" | "rediss+cluster" | "rediss+sentinel", _))
    )
}

/// Reads `[store] tls_ca_file`, `tls_cert_file` and `tls_key_file` into the
/// redis crate's TLS material (`None` when none is set), checking that each
/// file is readable PEM of the right kind and that they come with a `rediss`
/// URL. Used by validation and at start. Problems name the key and the file,
/// never file contents.
pub fn tls_certificates(s: &StoreSettings) -> Result<Option<TlsCertificates>, Vec<String>> {
    let set: Vec<&str> = [
        ("store.tls_ca_file", &s.tls_ca_file),
        ("store.tls_cert_file", &s.tls_cert_file),
        ("store.tls_key_file", &s.tls_key_file),
    ]
    .into_iter()
    .filter_map(|(k, f)| f.as_ref().map(|_| k))
    .collect();
    if set.is_empty() {
        return Ok(None);
    }
    let mut problems = Vec::new();
    if !is_tls_url(&s.url) {
        problems.push(format!(
            "{}: only for a rediss://, rediss+cluster:// or rediss+sentinel:// store.url",
            set.join(", ")
        ));
    }
    let mut read = |key: &str, path: &Path, check: fn(&Path, &[u8]) -> Result<(), String>| {
        let checked = std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| check(path, &bytes).map(|()| bytes));
        checked
            .map_err(|e| problems.push(format!("{key}: {e}")))
            .ok()
    };
    let root_cert = s
        .tls_ca_file
        .as_deref()
        .and_then(|p| read("store.tls_ca_file", p, check_ca));
    let client_tls = match (&s.tls_cert_file, &s.tls_key_file) {
        (Some(c), Some(k)) => {
            let cert = read("store.tls_cert_file", c, check_cert_chain);
            let key = read("store.tls_key_file", k, check_key);
            if let (Some(cert), Some(key)) = (&cert, &key)
                && let Err(e) = check_pair(cert, key)
            {
                problems.push(format!("store.tls_key_file: {e}"));
            }
            cert.zip(key)
                .map(|(client_cert, client_key)| ClientTlsConfig {
                    client_cert,
                    client_key,
                })
        }
        (Some(_), None) => {
            problems.push("store.tls_key_file: required with store.tls_cert_file".into());
            None
        }
        (None, Some(_)) => {
            problems.push("store.tls_cert_file: required with store.tls_key_file".into());
            None
        }
        (None, None) => None,
    };
    if problems.is_empty() {
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    } else {
        Err(problems)
    }
}

/// One or more PEM certificates, each usable as a trust anchor.
fn check_ca(path: &Path, pem: &[u8]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("{}: invalid PEM ({e})", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate ({e})", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(())
}

/// One or more PEM certificates (the client's, then intermediates).
fn check_cert_chain(path: &Path, pem: &[u8]) -> Result<(), String> {
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| format!("{}: invalid PEM ({e})", path.display()))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    Ok(())
}

/// A PEM private key. The parser's error is not repeated: it could quote the
/// file.
fn check_key(path: &Path, pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem).map(|_| ()).map_err(|_| {
        format!(
            "{}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

/// The client key is usable and belongs to the first certificate of the chain.
fn check_pair(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM ({e})"))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| "no PEM private key".to_string())?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map(|_| ())
        .map_err(|e| format!("does not go with store.tls_cert_file ({e})"))
}

impl RedisStore {
    /// Creates the store without waiting for Redis: the connection is made on
    /// first use and remade after failures, so a Redis that is down at boot only
    /// makes tokend not ready.
    pub fn new(
        url: &str,
        password: Option<&SecretString>,
        key_prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::with_tls(url, password, key_prefix, timeout, None)
    }

    /// [`RedisStore::new`] with TLS material (see [`tls_certificates`]) for a
    /// `rediss://` or `rediss+cluster://` URL: a CA to trust instead of the
    /// system's roots and/or a client certificate.
    pub fn with_tls(
        url: &str,
        password: Option<&SecretString>,
        key_prefix: &str,
        timeout: Duration,
        tls: Option<TlsCertificates>,
    ) -> anyhow::Result<Self> {
        Self::open(
            url,
            password,
            key_prefix,
            timeout,
            tls,
            SentinelAuth::default(),
            None,
        )
    }

    /// [`RedisStore::with_tls`] with the Sentinels' own credentials (for a
    /// `redis+sentinel://` URL; ignored otherwise) and, with `acks`, waiting
    /// for replica acknowledgements after the writes that matter (see
    /// [`ReplicaAcks`]).
    pub fn open(
        url: &str,
        password: Option<&SecretString>,
        key_prefix: &str,
        timeout: Duration,
        tls: Option<TlsCertificates>,
        sentinel_auth: SentinelAuth,
        acks: Option<ReplicaAcks>,
    ) -> anyhow::Result<Self> {
        if tls.is_some() && !is_tls_url(url) {
            anyhow::bail!(
                "TLS certificates need a rediss://, rediss+cluster:// or rediss+sentinel:// URL"
            );
        }
        let target = parse_target(url, password).map_err(anyhow::Error::msg)?;
        // Acknowledged writes get connections of their own: `WAIT` blocks the
        // connection it is sent on, and reads must not queue behind it.
        let writer = match acks {
            Some(a) => Some(Self::connect(
                target.clone(),
                tls.clone(),
                sentinel_auth.clone(),
                timeout + a.timeout,
            )?),
            None => None,
        };
        let conn = Self::connect(target, tls, sentinel_auth, timeout)?;
        Ok(Self {
            conn,
            writer,
            prefix: key_prefix.to_owned(),
            timeout,
            acks,
            gcra: Script::new(GCRA),
            incr: Script::new(INCR),
        })
    }

    /// A lazily connecting handle to `target`; every answer within `timeout`.
    fn connect(
        target: Target,
        tls: Option<TlsCertificates>,
        sentinel_auth: SentinelAuth,
        timeout: Duration,
    ) -> anyhow::Result<Conn> {
        Ok(match target {
            Target::Single(info) => {
                let client = match tls {
                    Some(certs) => redis::Client::build_with_tls(info, certs)?,
                    None => redis::Client::open(info)?,
                };
                // Short reconnect backoff: a Redis that comes back is in use again
                // within a readiness interval, and a failed attempt ends (and the
                // next call starts a new one) instead of retrying for minutes.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(200));
                Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
            }
            Target::Cluster {
                nodes,
                username,
                password,
            } => {
                let mut b = ClusterClientBuilder::new(nodes)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if let Some(u) = username {
                    b = b.username(u);
                }
                if let Some(p) = password {
                    b = b.password(p);
                }
                if let Some(certs) = tls {
                    b = b.certs(certs);
                }
                let client = b.build()?;
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
            Target::Sentinel {
                sentinels,
                master,
                db,
                username,
                password,
                tls: use_tls,
            } => {
                let addrs = sentinels.into_iter().map(|(host, port)| {
                    if use_tls {
                        ConnectionAddr::TcpTls {
                            host,
                            port,
                            insecure: false,
                            tls_params: None,
                        }
                    } else {
                        ConnectionAddr::Tcp(host, port)
                    }
                });
                let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
                    .set_client_to_redis_db(db);
                if let Some(u) = username {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = password {
                    b = b.set_client_to_redis_password(p);
                }
                if let Some(u) = sentinel_auth.username {
                    b = b.set_client_to_sentinel_username(u);
                }
                if let Some(p) = sentinel_auth.password {
                    b = b.set_client_to_sentinel_password(p.expose_secret());
                }
                if use_tls {
                    b = b
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if let Some(certs) = tls {
                        b = b
                            .set_client_to_redis_certificates(certs.clone())
                            .set_client_to_sentinel_certificates(certs);
                    }
                }
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                Conn::Sentinel(Arc::new(SentinelConn {
                    client: tokio::sync::Mutex::new(b.build()?),
                    current: std::sync::Mutex::new(None),
                    generation: AtomicU64::new(0),
                    config,
                }))
            }
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs one command on a fresh clone of the handle, bounded by the timeout.
    async fn query<T: FromRedisValue>(&self, op: &'static str, cmd: &Cmd) -> StoreResult<T> {
        let fut = async {
            match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
                Conn::Sentinel(s) => {
                    s.run(|mut c| async move { cmd.query_async::<T>(&mut c).await })
                        .await
                }
            }
        };
        self.bounded(op, fut).await
    }

    /// Runs a write that must survive a failover: with `replica_acks`, in one
    /// pipeline with `WAIT`, failing when too few replicas acknowledged it.
    async fn write<T: FromRedisValue>(&self, op: &'static str, cmd: Cmd) -> StoreResult<T> {
        let Some(acks) = self.acks else {
            return self.query(op, &cmd).await;
        };
        let wait_ms = u64::try_from(acks.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.add_command(cmd)
            .cmd("WAIT")
            .arg(acks.replicas)
            .arg(wait_ms);
        let pipe = &pipe;
        let fut = async {
            match self.writer.clone().unwrap_or_else(|| self.conn.clone()) {
                Conn::Single(mut c) => pipe.query_async::<(T, i64)>(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async::<(T, i64)>(&mut c).await,
                Conn::Sentinel(s) => {
                    s.run(|mut c| async move { pipe.query_async::<(T, i64)>(&mut c).await })
                        .await
                }
            }
        };
        let (value, acked) = self
            .bounded_for(op, self.timeout + acks.timeout, fut)
            .await?;
        if acked < i64::from(acks.replicas) {
            metrics::counter!("tokend_store_replica_ack_failures_total", "op" => op).increment(1);
            return Err(StoreError::new(
                op,
                format!(
                    "{acked} of {} replicas acknowledged the write within {wait_ms} ms",
                    acks.replicas
                ),
            ));
        }
        Ok(value)
    }

    /// Runs one of our scripts on `key`, bounded by the timeout.
    async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        key: &str,
        a: i64,
        b: i64,
    ) -> StoreResult<T> {
        let key = self.key(key);
        let fut = async {
            match self.conn.clone() {
                Conn::Single(mut c) => invoke(script, &key, a, b, &mut c).await,
                Conn::Cluster(mut c) => invoke(script, &key, a, b, &mut c).await,
                Conn::Sentinel(s) => {
                    let key = &key;
                    s.run(|mut c| async move { invoke(script, key, a, b, &mut c).await })
                        .await
                }
            }
        };
        self.bounded(op, fut).await
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        self.bounded_for(op, self.timeout, fut).await
    }

    async fn bounded_for<T>(
        &self,
        op: &'static str,
        limit: Duration,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            // Redis error texts name the failure (connection refused, NOSCRIPT,
            // ...), never our values.
            Ok(Err(e)) => Err(StoreError::new(op, e)),
            Err(_) => Err(StoreError::new(
                op,
                format!("timed out after {} ms", limit.as_millis()),
            )),
        }
    }
}

/// `SET key value [PX ms]`, TTLs rounded up to whole milliseconds (never 0,
/// which Redis rejects).
fn set_cmd(key: String, value: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl_ms(ttl));
    }
    cmd
}

fn ttl_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// Runs `script` on one key with two integer arguments.
async fn invoke<C: ConnectionLike, T: FromRedisValue>(
    script: &Script,
    key: &str,
    a: i64,
    b: i64,
    con: &mut C,
) -> redis::RedisResult<T> {
    script.key(key).arg(a).arg(b).invoke_async(con).await
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
            Conn::Sentinel(_) => "redis-sentinel",
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.write::<()>("put", set_cmd(self.key(key), value, ttl))
            .await
    }

    async fn put_new(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> StoreResult<bool> {
        let mut cmd = set_cmd(self.key(key), value, ttl);
        cmd.arg("NX");
        let reply: Value = self.write("put_new", cmd).await?;
        Ok(!matches!(reply, Value::Nil))
    }

    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.query("get", redis::cmd("GET").arg(self.key(key)))
            .await
    }

    async fn get_many(&self, keys: &[String]) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for k in keys {
            cmd.arg(self.key(k));
        }
        let values: Vec<Option<Vec<u8>>> = self.query("get_many", &cmd).await?;
        if values.len() != keys.len() {
            return Err(StoreError::new(
                "get_many",
                format!("{} values for {} keys", values.len(), keys.len()),
            ));
        }
        Ok(values)
    }

    async fn take(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(key));
        self.write("take", cmd).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        self.write::<()>("delete", cmd).await
    }

    async fn rate_limit(&self, key: &str, per_sec: f64, burst: u32) -> StoreResult<RateDecision> {
        // Same arithmetic as the memory backend, in whole microseconds.
        let interval = Duration::from_secs_f64(1.0 / per_sec.max(1e-9));
        let tolerance = interval * burst.max(1);
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4).max(1);
        let (interval, tolerance) = (micros(interval), micros(tolerance));
        let (interval, tolerance) = (interval as i64, tolerance as i64);
        let (allowed, retry_us): (i64, i64) = self
            .script("rate_limit", &self.gcra, key, interval, tolerance)
            .await?;
        Ok(RateDecision {
            allowed: allowed == 1,
            retry_after: Duration::from_micros(u64::try_from(retry_us).unwrap_or(0)),
        })
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Duration) -> StoreResult<i64> {
        let ttl = i64::try_from(ttl_ms(ttl)).unwrap_or(i64::MAX);
        self.script("incr", &self.incr, key, delta, ttl).await
    }

    async fn log_append(&self, append: &LogAppend<'_>) -> StoreResult<LogId> {
        self.append_log(append).await
    }

    async fn log_read(&self, after: LogId, max: usize) -> StoreResult<LogView> {
        self.read_log(after, max).await
    }

    async fn log_tail(&self, max: usize) -> StoreResult<LogView> {
        self.tail_log(max).await
    }

    async fn log_state(&self, now_ms: u64, max: usize) -> StoreResult<Vec<Vec<u8>>> {
        self.log_state_values(now_ms, max).await
    }

    async fn ping(&self) -> StoreResult<()> {
        // On a cluster the client sends PING to every primary: readiness then
        // means every slot is reachable.
        self.query::<()>("ping", &redis::cmd("PING")).await
    }

    async fn evictable(&self) -> StoreResult<Vec<String>> {
        // `INFO memory`, not `CONFIG GET`: managed services often disable
        // CONFIG. On a cluster the client sends INFO to every primary and
        // answers with a map of node address to reply.
        let reply: Value = self
            .query("evictable", redis::cmd("INFO").arg("memory"))
            .await?;
        let mut out = Vec::new();
        let mut check = |node: &str, info: &Value| -> StoreResult<()> {
            let text = info_text(info).ok_or_else(|| {
                StoreError::new("evictable", format!("unexpected INFO reply from {node}"))
            })?;
            let policy = maxmemory_policy(&text).ok_or_else(|| {
                StoreError::new(
                    "evictable",
                    format!("no maxmemory_policy in INFO from {node}"),
                )
            })?;
            if policy != "noeviction" {
                out.push(format!("{node} maxmemory-policy={policy}"));
            }
            Ok(())
        };
        match &reply {
            Value::Map(nodes) => {
                for (node, info) in nodes {
                    let node = info_text(node).unwrap_or_else(|| "?".into());
                    check(&node, info)?;
                }
            }
            single => check("redis", single)?,
        }
        out.sort();
        Ok(out)
    }
}

/// The text of an INFO reply (or a node name).
fn info_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// `maxmemory_policy:...` of an `INFO memory` text.
fn maxmemory_policy(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|l| l.strip_prefix("maxmemory_policy:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_errors_hide_secrets() {
        assert!(matches!(
            parse_target("redis://u:p@127.0.0.1:6380/2", None),
            Ok(Target::Single(_))
        ));
        let pw = SecretString::from("from-env");
        let Ok(Target::Single(info)) = parse_target("redis://:url-pw@h:1/0", Some(&pw)) else {
            panic!("parses");
        };
        assert_eq!(info.redis_settings().password(), Some("from-env"));
        assert_eq!(info.redis_settings().db(), 0);
        let Ok(Target::Cluster {
            nodes,
            username,
            password,
        }) = parse_target("rediss+cluster://app:s%40cret@a:7000,b:7001,c", None)
        else {
            panic!("parses");
        };
        assert_eq!(
            nodes,
            ["rediss://a:7000", "rediss://b:7001", "rediss://c:6379"]
        );
        assert_eq!(username.as_deref(), Some("app"));
        assert_eq!(password.as_deref(), Some("s@cret"));
        let Ok(Target::Cluster { password, .. }) =
            parse_target("redis+cluster://:x@a:1", Some(&pw))
        else {
            panic!("parses");
        };
        assert_eq!(password.as_deref(), Some("from-env"));

        let Ok(Target::Sentinel {
            sentinels,
            master,
            db,
            username,
            password,
            tls,
        }) = parse_target(
            "rediss+sentinel://app:s%40cret@s1:26380,s2,[::1]:5000/my%20primary?db=3",
            None,
        )
        else {
            panic!("parses");
        };
        assert_eq!(
            sentinels,
            [
                ("s1".to_string(), 26380),
                ("s2".to_string(), 26379),
                ("::1".to_string(), 5000)
            ]
        );
        assert_eq!((master.as_str(), db, tls), ("my primary", 3, true));
        assert_eq!(username.as_deref(), Some("app"));
        assert_eq!(password.as_deref(), Some("s@cret"));
        let Ok(Target::Sentinel { password, tls, .. }) =
            parse_target("redis+sentinel://:x@s1/primary", Some(&pw))
        else {
            panic!("parses");
        };
        assert_eq!((password.as_deref(), tls), (Some("from-env"), false));

        for bad in [
            "redis+sentinel://:hunter2@s1:26379",
            "redis+sentinel://:hunter2@s1:26379/",
            "redis+sentinel://:hunter2@s1:26379/m?db=x",
            "redis+sentinel://:hunter2@s1:26379/m?timeout=1",
            "redis+sentinel://:hunter2@s1:port/m",
            "redis+sentinel://:hunter2@/m",
            "http://:hunter2@h:1",
            "redis+cluster://:hunter2@a:1/3",
            "redis+cluster://:hunter2@",
            "redis://:hunter2@h:notaport",
        ] {
            let e = parse_target(bad, None).err().expect(bad);
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_eviction_policy_is_read_from_info_memory() {
        let info = "# Memory\r\nused_memory:1\r\nmaxmemory_policy:volatile-lru\r\n";
        assert_eq!(maxmemory_policy(info), Some("volatile-lru"));
        assert_eq!(maxmemory_policy("# Memory\r\n"), None);
    }

    #[test]
    fn the_traced_server_address_never_carries_credentials() {
        assert_eq!(
            server_address("redis://:hunter2@cache.internal:6380/0"),
            Some(("cache.internal".into(), 6380))
        );
        assert_eq!(
            server_address("rediss+cluster://u:p@a:7000,b:7001"),
            Some(("a".into(), 7000))
        );
        assert_eq!(server_address("redis://h"), Some(("h".into(), 6379)));
        assert_eq!(server_address("redis+sentinel://s:26379/mymaster"), None);
        assert_eq!(server_address("memory://"), None);
    }

    #[test]
    fn ttls_round_up_to_a_millisecond() {
        assert_eq!(ttl_ms(Duration::from_micros(1)), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_ms(Duration::from_secs(3)), 3000);
    }
}
