//! `tokend-bench`: the load generator of issue 7.
//!
//! It starts a release `tokend` as a child process (generated key file per
//! algorithm via `tokend keygen`, generated config, `memory://` or a given
//! `redis://` URL), or attaches to a running one, then drives it over loopback
//! with gRPC `Issue`, HTTP `POST /oauth/token`, gRPC/HTTP introspection, and
//! RFC 8693 token exchange over both (subject tokens obtained up front by
//! client_credentials).
//!
//! For each workload it prints requests/s and latency percentiles (wall clock:
//! noisy on a shared machine), every response status (a run of 401s must never
//! look fast; any non-success makes the exit code 1), the **server's CPU time
//! per request** from `/proc/PID/stat` utime+stime deltas (the stable figure),
//! its peak RSS (`VmHWM`), and, measured in the same run, the raw aws-lc-rs
//! sign/verify cost per operation for the same key and the ratio between the
//! two. Load is bounded in time and count and stops by itself.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use tokend::pb::token_service_client::TokenServiceClient;
use tokend::pb::{IntrospectRequest, IssueRequest};
use tokend::token::Algorithm;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

mod open_loop;
mod sink;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tokend-bench",
    about = "Load generator for tokend: throughput, latency, server CPU per request vs the signature floor",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// `attack`: issue 14's attack suite against a running tokend (staging
    /// only); without a subcommand, the load generator.
    #[command(subcommand)]
    command: Option<Sub>,
    /// Workloads to run, in order. `*-introspect` introspects each issued
    /// token once (verification every time); `*-introspect-hot` introspects
    /// one token again and again (the verified-token cache). `*-exchange`
    /// exchanges (RFC 8693) a different subject token each time (a stock is
    /// issued up front by client_credentials: one verification and one
    /// signature per exchange); `*-exchange-hot` exchanges one subject token
    /// again and again (its verification from the cache: one signature).
    /// `grpc-health` and `http-healthz` are the transport floor: the
    /// cheapest request the server answers (gRPC health Check, GET
    /// /healthz), with no authentication, store or crypto.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "grpc-issue,http-issue,grpc-introspect,http-introspect,grpc-introspect-hot,http-introspect-hot,grpc-exchange,http-exchange,grpc-exchange-hot,http-exchange-hot,grpc-health,http-healthz"
    )]
    targets: Vec<Target>,
    /// Concurrent requests in flight (one connection each).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Seconds per workload (at most 600).
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Stop each workload after this many requests (whichever comes first).
    #[arg(long)]
    requests: Option<u64>,
    /// Signing algorithm of the spawned server: RS256, ES256 or EdDSA.
    #[arg(long, default_value = "RS256", value_parser = parse_alg)]
    alg: Algorithm,
    /// Store of the spawned server: memory:// or a redis:// URL.
    #[arg(long, default_value = "memory://")]
    store: String,
    /// The tokend binary to spawn (default: next to this binary).
    #[arg(long)]
    tokend: Option<PathBuf>,
    /// Attach to a running tokend with this PID instead of spawning one
    /// (needs --grpc/--http, --client-id, --client-secret; --key-file for the floor).
    #[arg(long)]
    attach_pid: Option<u32>,
    /// gRPC address of an attached server (host:port).
    #[arg(long)]
    grpc: Option<String>,
    /// HTTP address of an attached server (host:port).
    #[arg(long)]
    http: Option<String>,
    /// Client id used for all requests (attach mode).
    #[arg(long, default_value = "bench-client")]
    client_id: String,
    /// Client secret (attach mode).
    #[arg(long, env = "TOKEND_BENCH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// Exchange workloads, attach mode: the client whose client_credentials
    /// tokens are the subject tokens. They must be addressed to one of
    /// --client-id's `audience` values, and --client-id needs the
    /// token-exchange grant and --exchange-audience among its
    /// `token_exchange_audiences`. Without it, attach mode skips them.
    #[arg(long)]
    subject_client_id: Option<String>,
    /// The subject client's secret (attach mode; default: --client-secret).
    #[arg(
        long,
        env = "TOKEND_BENCH_SUBJECT_CLIENT_SECRET",
        hide_env_values = true
    )]
    subject_client_secret: Option<String>,
    /// The audience exchanged tokens are asked for.
    #[arg(long, default_value = "billing-api")]
    exchange_audience: String,
    /// The server's signing key (PEM), for the raw signature floor (attach mode).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Append one JSON object per workload to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Spawned server only: export traces (`[telemetry]`) with this sampling
    /// ratio (0 to 1) to an OTLP/gRPC sink in this process, to measure what
    /// tracing costs per request. Unset: no export (tokend's default).
    #[arg(long, value_parser = parse_ratio)]
    trace_ratio: Option<f64>,
    /// Open-loop (fixed-rate) runs: tail latency (issue 21).
    #[command(flatten)]
    open: open_loop::OpenArgs,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{s:?} is not a ratio from 0 to 1"))
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Sub {
    /// Runs issue 14's attacks, bounded, against a running tokend and prints
    /// one line each (PASS|FAIL|SKIP  name  measurement); exit 1 on any FAIL.
    /// The guessing attacks back this machine's address off for a while:
    /// run it from an address that does not matter, never against production.
    Attack(tokend_bench::attack::AttackArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    GrpcIssue,
    HttpIssue,
    GrpcIntrospect,
    HttpIntrospect,
    GrpcIntrospectHot,
    HttpIntrospectHot,
    GrpcExchange,
    HttpExchange,
    GrpcExchangeHot,
    HttpExchangeHot,
    GrpcHealth,
    HttpHealthz,
    /// Not a workload: issues the stock of subject tokens for `*-exchange`.
    #[value(skip)]
    GrpcIssueSubject,
    #[value(skip)]
    HttpIssueSubject,
}

/// What one request does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// client_credentials by the bench client.
    Issue,
    /// client_credentials by the subject client (a subject token).
    IssueSubject,
    Introspect,
    /// RFC 8693 token exchange of a subject token by the bench client.
    Exchange,
    Probe,
}

/// RFC 8693 identifiers.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::GrpcIssue => "grpc-issue",
            Self::HttpIssue => "http-issue",
            Self::GrpcIntrospect => "grpc-introspect",
            Self::HttpIntrospect => "http-introspect",
            Self::GrpcIntrospectHot => "grpc-introspect-hot",
            Self::HttpIntrospectHot => "http-introspect-hot",
            Self::GrpcExchange => "grpc-exchange",
            Self::HttpExchange => "http-exchange",
            Self::GrpcExchangeHot => "grpc-exchange-hot",
            Self::HttpExchangeHot => "http-exchange-hot",
            Self::GrpcHealth => "grpc-health",
            Self::HttpHealthz => "http-healthz",
            Self::GrpcIssueSubject => "grpc-issue-subject",
            Self::HttpIssueSubject => "http-issue-subject",
        }
    }
    fn grpc(self) -> bool {
        matches!(
            self,
            Self::GrpcIssue
                | Self::GrpcIntrospect
                | Self::GrpcIntrospectHot
                | Self::GrpcExchange
                | Self::GrpcExchangeHot
                | Self::GrpcHealth
                | Self::GrpcIssueSubject
        )
    }
    fn op(self) -> Op {
        match self {
            Self::GrpcIssue | Self::HttpIssue => Op::Issue,
            Self::GrpcIssueSubject | Self::HttpIssueSubject => Op::IssueSubject,
            Self::GrpcHealth | Self::HttpHealthz => Op::Probe,
            Self::GrpcExchange
            | Self::HttpExchange
            | Self::GrpcExchangeHot
            | Self::HttpExchangeHot => Op::Exchange,
            Self::GrpcIntrospect
            | Self::HttpIntrospect
            | Self::GrpcIntrospectHot
            | Self::HttpIntrospectHot => Op::Introspect,
        }
    }
    /// Takes a different token from a pool for each request.
    fn cold(self) -> bool {
        matches!(
            self,
            Self::GrpcIntrospect | Self::HttpIntrospect | Self::GrpcExchange | Self::HttpExchange
        )
    }
    /// The `op` label of the JSON lines.
    fn op_label(self) -> &'static str {
        match (self.op(), self.cold()) {
            (Op::Issue | Op::IssueSubject, _) => "issue",
            (Op::Introspect, true) => "introspect",
            (Op::Introspect, false) => "introspect-hot",
            (Op::Exchange, true) => "exchange",
            (Op::Exchange, false) => "exchange-hot",
            (Op::Probe, _) => "probe",
        }
    }
}

fn parse_alg(s: &str) -> Result<Algorithm, String> {
    Algorithm::parse(s).ok_or_else(|| format!("unknown algorithm {s:?}: use RS256, ES256 or EdDSA"))
}

// === the server under test ===

struct Server {
    pid: u32,
    grpc: String,
    http: String,
    client_id: String,
    secret: String,
    /// The client whose tokens the exchange workloads exchange.
    subject_client_id: Option<String>,
    subject_secret: String,
    key_file: Option<PathBuf>,
    child: Option<Child>,
    dir: Option<PathBuf>,
    /// `--trace-ratio`: where the spawned server's spans go.
    trace_sink: Option<sink::Sink>,
}

impl Server {
    fn spawn(args: &Args) -> anyhow::Result<Self> {
        let tokend = match &args.tokend {
            Some(p) => p.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("binary has no directory")?
                .join("tokend"),
        };
        if !tokend.exists() {
            bail!(
                "{} not found: run `cargo build --release --bins` or pass --tokend",
                tokend.display()
            );
        }
        let dir = std::env::temp_dir().join(format!("tokend-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let key_file = dir.join("signing.pem");
        let st = Command::new(&tokend)
            .args(["keygen", "--alg", args.alg.as_str(), "--out"])
            .arg(&key_file)
            .stdout(Stdio::null())
            .status()
            .context("tokend keygen")?;
        if !st.success() {
            bail!("tokend keygen failed");
        }
        let secret = tokend::token::opaque::hex(&random_bytes());
        let hash = tokend::oauth::client::SecretHash::sha256_of(&secret);
        // A per-run key prefix, so runs sharing a Redis never see each
        // other's revocations.
        let prefix = format!("bench{}:", std::process::id());
        let config = format!(
            r#"issuer = "http://127.0.0.1"
[http]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[store]
url = "{store}"
key_prefix = "{prefix}"
[signing]
algorithm = "{alg}"
key_file = "{key}"
[log]
level = "warn"
[server]
shutdown_grace_secs = 2

[[clients]]
client_id = "bench-client"
secret_hashes = ["{hash}"]
grant_types = ["client_credentials", "{TOKEN_EXCHANGE}"]
scopes = ["orders:read", "orders:write"]
default_scopes = ["orders:read"]
audience = ["orders-api"]
claims = {{ organisation_id = 74, roles = ["ADMIN"] }}
token_exchange_audiences = ["{exchange_audience}"]
token_exchange_claims = ["organisation_id"]

# The subject tokens of the exchange workloads: addressed to orders-api,
# which bench-client receives and exchanges for {exchange_audience}.
[[clients]]
client_id = "bench-portal"
secret_hashes = ["{hash}"]
grant_types = ["client_credentials"]
scopes = ["orders:read", "orders:write"]
default_scopes = ["orders:read", "orders:write"]
audience = ["orders-api"]
claims = {{ organisation_id = 74, roles = ["ADMIN"] }}
"#,
            exchange_audience = args.exchange_audience,
            store = args.store,
            alg = args.alg.as_str(),
            key = key_file.display(),
        );
        let mut config = config;
        let trace_sink = match args.trace_ratio {
            Some(ratio) => {
                let sink = sink::start().context("OTLP sink")?;
                config.push_str(&format!(
                    "\n[telemetry]\notlp_endpoint = \"http://{}\"\nsampling_ratio = {ratio}\n",
                    sink.addr
                ));
                Some(sink)
            }
            None => None,
        };
        let cfg_path = dir.join("tokend.toml");
        std::fs::write(&cfg_path, config)?;
        let mut child = Command::new(&tokend)
            .arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start tokend")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel::<Result<(String, String), String>>();
        // Keeps draining the server's log so it never blocks on a full pipe;
        // warnings and errors are shown.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut last = Vec::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("tokend: HTTP on http://") {
                    let mut it = rest.split_whitespace();
                    let http = it.next().unwrap_or_default().to_owned();
                    let grpc = it.nth(2).unwrap_or_default().to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Ok((http, grpc)));
                    }
                    continue;
                }
                if tx.is_some() {
                    last.push(line);
                } else {
                    eprintln!("  [tokend] {line}");
                }
            }
            if let Some(tx) = tx {
                let _ = tx.send(Err(last.join("\n")));
            }
        });
        let pid = child.id();
        let mut server = Self {
            pid,
            grpc: String::new(),
            http: String::new(),
            client_id: "bench-client".into(),
            subject_client_id: Some("bench-portal".into()),
            subject_secret: secret.clone(),
            secret,
            key_file: Some(key_file),
            child: Some(child),
            dir: Some(dir),
            trace_sink,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok((http, grpc))) => {
                server.http = http;
                server.grpc = grpc;
                Ok(server)
            }
            Ok(Err(log)) => bail!("tokend exited during start-up:\n{log}"),
            Err(_) => bail!("tokend did not start within 20 s"),
        }
    }

    fn attach(args: &Args, pid: u32) -> anyhow::Result<Self> {
        let secret = args
            .client_secret
            .clone()
            .context("--attach-pid needs --client-secret (or TOKEND_BENCH_CLIENT_SECRET)")?;
        if args.grpc.is_none() && args.http.is_none() {
            bail!("--attach-pid needs --grpc and/or --http");
        }
        Ok(Self {
            pid,
            grpc: args.grpc.clone().unwrap_or_default(),
            http: args.http.clone().unwrap_or_default(),
            client_id: args.client_id.clone(),
            subject_client_id: args.subject_client_id.clone(),
            subject_secret: args
                .subject_client_secret
                .clone()
                .unwrap_or_else(|| secret.clone()),
            secret,
            key_file: args.key_file.clone(),
            child: None,
            dir: None,
            trace_sink: None,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM for a graceful drain; SIGKILL if it lingers.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn random_bytes() -> [u8; 32] {
    let mut b = [0; 32];
    aws_lc_rs::rand::fill(&mut b).expect("system randomness");
    b
}

// === /proc readings ===

/// Clock ticks per second of /proc/PID/stat times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in ticks.
fn proc_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone"))?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Peak resident set size (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU time of the calling thread in nanoseconds (schedstat is ns-precise,
/// unlike the 10 ms ticks of /proc/PID/stat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

// === the signature floor ===

#[derive(Debug, Clone, Copy)]
struct Floor {
    sign_us: f64,
    verify_us: f64,
}

/// Raw aws-lc-rs sign and verify of `token`'s signing input with the server's
/// key, on one thread, in CPU time.
fn measure_floor(alg: Algorithm, pem_text: &[u8], token: &str) -> anyhow::Result<Floor> {
    let der = pem::parse(pem_text)?.into_contents();
    let (input, sig_b64) = token.rsplit_once('.').context("not a JWT")?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64)?;
    let msg = input.as_bytes();
    let rng = SystemRandom::new();
    type SignFn = Box<dyn Fn() -> usize>;
    let (sign, public, valg): (
        SignFn,
        Vec<u8>,
        &'static dyn signature::VerificationAlgorithm,
    ) = match alg {
        Algorithm::RS256 => {
            let kp = RsaKeyPair::from_pkcs8(&der)
                .or_else(|_| RsaKeyPair::from_der(&der))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let public = kp.public_key().as_ref().to_vec();
            let m = msg.to_vec();
            let sign: SignFn = Box::new(move || {
                let mut out = vec![0; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, &m, &mut out)
                    .expect("sign");
                out.len()
            });
            (sign, public, &signature::RSA_PKCS1_2048_8192_SHA256)
        }
        Algorithm::ES256 => {
            let kp = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let public = kp.public_key().as_ref().to_vec();
            let m = msg.to_vec();
            let sign: SignFn = Box::new(move || kp.sign(&rng, &m).expect("sign").as_ref().len());
            (sign, public, &signature::ECDSA_P256_SHA256_FIXED)
        }
        Algorithm::EdDSA => {
            let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let public = kp.public_key().as_ref().to_vec();
            let m = msg.to_vec();
            let sign: SignFn = Box::new(move || kp.sign(&m).as_ref().len());
            (sign, public, &signature::ED25519)
        }
    };
    let key = ParsedPublicKey::new(valg, &public).map_err(|e| anyhow::anyhow!("{e}"))?;
    if key.verify_sig(msg, &sig).is_err() {
        bail!("the key file does not verify the server's tokens (wrong --key-file?)");
    }
    // Six slices of 0.05 s of CPU each; the cheapest slice is the floor, so
    // a burst from a neighbour on a shared machine during one slice does not
    // lower the ratios of the whole run.
    let per_op = |f: &mut dyn FnMut()| {
        for _ in 0..20 {
            f();
        }
        let mut best = f64::MAX;
        for _ in 0..6 {
            let budget = 50_000_000;
            let start = thread_cpu_ns();
            let mut n = 0u64;
            while thread_cpu_ns() - start < budget {
                for _ in 0..10 {
                    f();
                }
                n += 10;
            }
            best = best.min((thread_cpu_ns() - start) as f64 / 1000.0 / n as f64);
        }
        best
    };
    let sign_us = per_op(&mut || {
        std::hint::black_box(sign());
    });
    let verify_us = per_op(&mut || {
        std::hint::black_box(key.verify_sig(msg, &sig).is_ok());
    });
    Ok(Floor { sign_us, verify_us })
}

// === clients ===

enum Conn {
    Grpc(Box<(TokenServiceClient<Channel>, HealthClient<Channel>)>),
    Http(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
}

struct Ctx {
    /// The server process, for /proc readings.
    pid: u32,
    /// Clock ticks per second of /proc/PID/stat.
    ticks: f64,
    server_grpc: String,
    server_http: String,
    client_id: String,
    secret: String,
    basic: String,
    /// The subject client (exchange workloads).
    subject_client_id: String,
    subject_secret: String,
    subject_basic: String,
    exchange_audience: String,
}

async fn connect(ctx: &Ctx, grpc: bool) -> anyhow::Result<Conn> {
    if grpc {
        let ch = Channel::from_shared(format!("http://{}", ctx.server_grpc))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("gRPC connect")?;
        Ok(Conn::Grpc(Box::new((
            TokenServiceClient::new(ch.clone()),
            HealthClient::new(ch),
        ))))
    } else {
        let tcp = tokio::net::TcpStream::connect(&ctx.server_http)
            .await
            .context("HTTP connect")?;
        tcp.set_nodelay(true)?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Conn::Http(send))
    }
}

/// Whether the server says it is ready (gRPC health of "", the readiness the
/// server reports, or `GET /readyz`): a tokend whose store is down still
/// signs client_credentials tokens (its rate limit and guessing defence fail
/// open), so without this a run against a dead Redis would measure an
/// outage and call it a result. `Err` carries what the server said.
async fn readiness(ctx: &Ctx) -> Result<(), String> {
    if !ctx.server_grpc.is_empty() {
        let Ok(Conn::Grpc(mut c)) = connect(ctx, true).await else {
            return Err("gRPC connect failed".into());
        };
        return match c.1.check(HealthCheckRequest::default()).await {
            Ok(r) if r.get_ref().status == 1 => Ok(()),
            Ok(r) => Err(format!("gRPC health status {}", r.get_ref().status)),
            Err(s) => Err(format!("gRPC health {:?}: {}", s.code(), s.message())),
        };
    }
    let Ok(Conn::Http(mut send)) = connect(ctx, false).await else {
        return Err("HTTP connect failed".into());
    };
    let req = http::Request::get("/readyz")
        .header(http::header::HOST, ctx.server_http.as_str())
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    match send.send_request(req).await {
        Ok(res) => {
            let status = res.status();
            let body = res.into_body().collect().await.map(|b| b.to_bytes());
            if status == http::StatusCode::OK {
                Ok(())
            } else {
                let body = body.unwrap_or_default();
                Err(format!(
                    "readyz {}: {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
                ))
            }
        }
        Err(e) => Err(format!("readyz: {e}")),
    }
}

/// Waits (bounded) for the server to say it is ready.
async fn wait_ready(ctx: &Ctx, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        match readiness(ctx).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// One request's outcome: a status label, and the token when one was issued.
struct Outcome {
    status: String,
    ok: bool,
    token: Option<String>,
}

impl Outcome {
    fn fail(status: impl Into<String>) -> Self {
        Self {
            status: status.into(),
            ok: false,
            token: None,
        }
    }
}

/// A successful token response; only issued tokens are kept (the subject
/// tokens and the tokens to introspect), not exchanged ones. A token that is
/// not a JWT (three base64url parts, a JSON object as header and payload)
/// is an error, whatever the status said.
fn issued(op: Op, status: &str, token: String) -> Outcome {
    if !is_jwt(&token) {
        return Outcome::fail(format!("{status} not a JWT"));
    }
    Outcome {
        status: status.into(),
        ok: true,
        token: matches!(op, Op::Issue | Op::IssueSubject).then_some(token),
    }
}

/// Three base64url (unpadded) parts: a JSON object header, a JSON object
/// payload, a non-empty signature.
fn is_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let object = |b64: &str| {
        URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|j| serde_json::from_slice::<serde_json::Value>(&j).ok())
            .is_some_and(|v| v.is_object())
    };
    object(h) && object(p) && !s.is_empty() && URL_SAFE_NO_PAD.decode(s).is_ok()
}

async fn one_request(conn: &mut Conn, ctx: &Ctx, op: Op, token: &str) -> Outcome {
    let issue = matches!(op, Op::Issue | Op::IssueSubject | Op::Exchange);
    match conn {
        Conn::Grpc(c) if op == Op::Probe => match c.1.check(HealthCheckRequest::default()).await {
            Ok(r) if r.get_ref().status == 1 => Outcome {
                status: "grpc SERVING".into(),
                ok: true,
                token: None,
            },
            Ok(_) => Outcome::fail("grpc not SERVING"),
            Err(s) => Outcome::fail(format!("grpc {:?}", s.code())),
        },
        Conn::Http(send) if op == Op::Probe => {
            let req = http::Request::get("/healthz")
                .header(http::header::HOST, ctx.server_http.as_str())
                .body(Full::new(Bytes::new()))
                .expect("valid request");
            if send.ready().await.is_err() {
                return Outcome::fail("http connection closed");
            }
            match send.send_request(req).await {
                Ok(res) => {
                    let status = res.status();
                    if res.into_body().collect().await.is_err() {
                        return Outcome::fail("http body error");
                    }
                    if status == http::StatusCode::OK {
                        Outcome {
                            status: "http 200".into(),
                            ok: true,
                            token: None,
                        }
                    } else {
                        Outcome::fail(format!("http {}", status.as_u16()))
                    }
                }
                Err(_) => Outcome::fail("http transport error"),
            }
        }
        Conn::Grpc(c) => {
            let c = &mut c.0;
            if issue {
                let req = match op {
                    Op::IssueSubject => IssueRequest {
                        grant_type: "client_credentials".into(),
                        client_id: ctx.subject_client_id.clone(),
                        client_secret: ctx.subject_secret.clone(),
                        ..Default::default()
                    },
                    Op::Exchange => IssueRequest {
                        grant_type: TOKEN_EXCHANGE.into(),
                        client_id: ctx.client_id.clone(),
                        client_secret: ctx.secret.clone(),
                        subject_token: token.to_owned(),
                        subject_token_type: ACCESS_TOKEN_TYPE.into(),
                        audience: vec![ctx.exchange_audience.clone()],
                        ..Default::default()
                    },
                    _ => IssueRequest {
                        grant_type: "client_credentials".into(),
                        client_id: ctx.client_id.clone(),
                        client_secret: ctx.secret.clone(),
                        ..Default::default()
                    },
                };
                match c.issue(req).await {
                    Ok(r)
                        if op == Op::Exchange
                            && r.get_ref().issued_token_type != ACCESS_TOKEN_TYPE =>
                    {
                        Outcome::fail("grpc OK without issued_token_type")
                    }
                    Ok(r) if !r.get_ref().access_token.is_empty() => {
                        issued(op, "grpc OK", r.into_inner().access_token)
                    }
                    Ok(_) => Outcome::fail("grpc OK without a token"),
                    Err(s) => Outcome::fail(format!("grpc {:?}", s.code())),
                }
            } else {
                let r = c
                    .introspect(IntrospectRequest {
                        client_id: ctx.client_id.clone(),
                        client_secret: ctx.secret.clone(),
                        token: token.to_owned(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(r) if r.get_ref().active => Outcome {
                        status: "grpc OK active".into(),
                        ok: true,
                        token: None,
                    },
                    Ok(_) => Outcome::fail("grpc OK inactive"),
                    Err(s) => Outcome::fail(format!("grpc {:?}", s.code())),
                }
            }
        }
        Conn::Http(send) => {
            let (path, body) = if op == Op::Exchange {
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", TOKEN_EXCHANGE)
                    .append_pair("subject_token", token)
                    .append_pair("subject_token_type", ACCESS_TOKEN_TYPE)
                    .append_pair("audience", &ctx.exchange_audience)
                    .finish();
                ("/oauth/token", body)
            } else if issue {
                ("/oauth/token", "grant_type=client_credentials".to_owned())
            } else {
                (
                    "/oauth/introspect",
                    // base64url tokens need no percent-encoding.
                    format!("token={token}"),
                )
            };
            let req = http::Request::post(path)
                .header(http::header::HOST, ctx.server_http.as_str())
                .header(
                    http::header::AUTHORIZATION,
                    if op == Op::IssueSubject {
                        ctx.subject_basic.as_str()
                    } else {
                        ctx.basic.as_str()
                    },
                )
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
            if send.ready().await.is_err() {
                return Outcome::fail("http connection closed");
            }
            let res = match send.send_request(req).await {
                Ok(r) => r,
                Err(_) => return Outcome::fail("http transport error"),
            };
            let status = res.status();
            let Ok(body) = res.into_body().collect().await.map(|b| b.to_bytes()) else {
                return Outcome::fail("http body error");
            };
            if status != http::StatusCode::OK {
                return Outcome::fail(format!("http {}", status.as_u16()));
            }
            let v: serde_json::Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => return Outcome::fail("http 200 not JSON"),
            };
            if issue {
                if op == Op::Exchange && v["issued_token_type"] != ACCESS_TOKEN_TYPE {
                    return Outcome::fail("http 200 without issued_token_type");
                }
                match v["access_token"].as_str() {
                    Some(t) => issued(op, "http 200", t.to_owned()),
                    None => Outcome::fail("http 200 without a token"),
                }
            } else if v["active"] == true {
                Outcome {
                    status: "http 200 active".into(),
                    ok: true,
                    token: None,
                }
            } else {
                Outcome::fail("http 200 inactive")
            }
        }
    }
}

// === a workload ===

#[derive(Default)]
struct TaskResult {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<String, u64>,
    tokens: Vec<String>,
}

struct Report {
    requests: u64,
    errors: u64,
    statuses: BTreeMap<String, u64>,
    seconds: f64,
    p50_us: u32,
    p90_us: u32,
    p99_us: u32,
    cpu_us_per_req: f64,
    peak_rss_kib: Option<u64>,
}

/// Most tokens kept from issue workloads for cold introspection.
const MAX_POOL: usize = 200_000;

async fn run_target(
    target: Target,
    args: &Args,
    ctx: Arc<Ctx>,
    pool: Arc<Mutex<Vec<String>>>,
    take: usize,
    hot_token: Option<String>,
) -> anyhow::Result<Report> {
    let duration = Duration::from_secs_f64(args.duration.clamp(0.1, 600.0));
    let limit = args.requests.unwrap_or(u64::MAX);
    // Cold introspection consumes its own share of the token pool.
    let cold: Option<Arc<Mutex<Vec<String>>>> = if target.cold() {
        let mut p = pool.lock();
        let n = take.min(p.len());
        let at = p.len() - n;
        Some(Arc::new(Mutex::new(p.split_off(at))))
    } else {
        None
    };
    let issued = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(args.concurrency as usize + 1));
    let mut handles = Vec::new();
    for _ in 0..args.concurrency {
        let ctx = ctx.clone();
        let barrier = barrier.clone();
        let issued = issued.clone();
        let cold = cold.clone();
        let hot = hot_token.clone().unwrap_or_default();
        handles.push(tokio::spawn(async move {
            let mut conn = connect(&ctx, target.grpc()).await;
            if let Ok(c) = conn.as_mut() {
                // Warm the connection (and, for hot introspection, the
                // server's cache) outside the measured window.
                if cold.is_none() {
                    let _ = one_request(c, &ctx, target.op(), &hot).await;
                }
            }
            barrier.wait().await;
            let mut conn = conn?;
            let mut r = TaskResult::default();
            let deadline = tokio::time::Instant::now() + duration;
            while tokio::time::Instant::now() < deadline {
                if issued.fetch_add(1, Ordering::Relaxed) >= limit {
                    break;
                }
                let token = match &cold {
                    Some(p) => match p.lock().pop() {
                        Some(t) => t,
                        None => break,
                    },
                    None => String::new(),
                };
                let token = if cold.is_some() { token } else { hot.clone() };
                let t0 = Instant::now();
                let out = one_request(&mut conn, &ctx, target.op(), &token).await;
                let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                r.latencies_us.push(us);
                *r.statuses.entry(out.status).or_default() += 1;
                if let Some(t) = out.token
                    && r.tokens.len() < MAX_POOL
                {
                    r.tokens.push(t);
                }
                if !out.ok && matches!(conn, Conn::Http(_)) {
                    // A failed HTTP exchange may have closed the connection.
                    match connect(&ctx, false).await {
                        Ok(c) => conn = c,
                        Err(_) => break,
                    }
                }
            }
            anyhow::Ok(r)
        }));
    }
    let ready_before = readiness(&ctx).await;
    barrier.wait().await;
    let cpu0 = proc_cpu_ticks(ctx.pid)?;
    let t0 = Instant::now();
    let mut all = TaskResult::default();
    for h in handles {
        let r = h.await.context("load task panicked")??;
        all.latencies_us.extend(r.latencies_us);
        for (k, v) in r.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.tokens.extend(r.tokens);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = proc_cpu_ticks(ctx.pid)?;
    // Answers given while the server said it was not ready measured an
    // outage: every request of the workload counts as an error.
    if let Err(why) = ready_before.and(readiness(&ctx).await) {
        let n = all.latencies_us.len() as u64;
        all.statuses.clear();
        all.statuses
            .insert(format!("server not ready ({why})"), n.max(1));
    }
    {
        let mut p = pool.lock();
        let room = MAX_POOL.saturating_sub(p.len());
        p.extend(all.tokens.into_iter().take(room));
    }
    let requests = all.latencies_us.len() as u64;
    let answered: u64 = all.statuses.values().sum();
    let ok: u64 = all
        .statuses
        .iter()
        .filter(|(k, _)| ok_status(k))
        .map(|(_, v)| *v)
        .sum();
    all.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.latencies_us.is_empty() {
            return 0;
        }
        let i =
            ((all.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, all.latencies_us.len());
        all.latencies_us[i - 1]
    };
    let cpu_us = (cpu1 - cpu0) as f64 / ctx.ticks * 1e6;
    Ok(Report {
        requests,
        errors: answered.max(requests) - ok,
        statuses: all.statuses,
        seconds,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        cpu_us_per_req: if requests > 0 {
            cpu_us / requests as f64
        } else {
            0.0
        },
        peak_rss_kib: peak_rss_kib(ctx.pid),
    })
}

/// The status labels of a correct answer.
fn ok_status(status: &str) -> bool {
    matches!(
        status,
        "grpc OK" | "grpc OK active" | "grpc SERVING" | "http 200" | "http 200 active"
    )
}

/// The least a request can cost: an issue signs; an introspection verifies;
/// an exchange verifies the subject token and signs, unless the subject
/// token's verification is cached (`*-exchange-hot`).
fn floor_of(target: Target, floor: Option<Floor>) -> (&'static str, Option<f64>) {
    match target.op() {
        Op::Probe => ("none", None),
        Op::Issue | Op::IssueSubject => ("sign", floor.map(|f| f.sign_us)),
        Op::Introspect => ("verify", floor.map(|f| f.verify_us)),
        Op::Exchange if target.cold() => ("verify+sign", floor.map(|f| f.verify_us + f.sign_us)),
        Op::Exchange => ("sign", floor.map(|f| f.sign_us)),
    }
}

fn ms(us: u32) -> String {
    format!("{:.2} ms", f64::from(us) / 1000.0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Attack(a)) = &args.command {
        return attack(a);
    }
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("tokend-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `tokend-bench attack`: prints each line as it is known.
fn attack(a: &tokend_bench::attack::AttackArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokend-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let lines = rt.block_on(tokend_bench::attack::run(a, |l| println!("{l}")));
    if lines
        .iter()
        .any(|l| l.verdict == tokend_bench::attack::Verdict::Fail)
    {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn store_label(url: &str) -> &'static str {
    if url.starts_with("redis") || url.starts_with("rediss") {
        "redis"
    } else if url.starts_with("memory") {
        "memory"
    } else {
        "other"
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let server = match args.attach_pid {
        Some(pid) => Server::attach(&args, pid)?,
        None => Server::spawn(&args)?,
    };
    let ticks = clock_ticks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ctx = Arc::new(Ctx {
        pid: server.pid,
        ticks,
        server_grpc: server.grpc.clone(),
        server_http: server.http.clone(),
        client_id: server.client_id.clone(),
        secret: server.secret.clone(),
        basic: basic_auth(&server.client_id, &server.secret),
        subject_client_id: server.subject_client_id.clone().unwrap_or_default(),
        subject_secret: server.subject_secret.clone(),
        subject_basic: basic_auth(
            server.subject_client_id.as_deref().unwrap_or_default(),
            &server.subject_secret,
        ),
        exchange_audience: args.exchange_audience.clone(),
    });
    let store = if args.attach_pid.is_some() {
        "attached"
    } else {
        store_label(&args.store)
    };
    let alg = args.alg;
    println!(
        "tokend-bench: server pid {} (gRPC {}, HTTP {}), {alg}, store {store}, concurrency {}, {} s per workload",
        server.pid, server.grpc, server.http, args.concurrency, args.duration
    );

    // One token up front: the floor signs exactly this signing input, and
    // hot introspection asks about it.
    let prefer_grpc = !server.grpc.is_empty();
    // A server that never gets ready is still measured, so that the report
    // shows it: every workload then counts its requests as errors.
    if let Err(why) = rt.block_on(wait_ready(&ctx, Duration::from_secs(5))) {
        println!("server not ready after 5 s: {why}; every workload will count as failed");
    }
    let sample = rt.block_on(async {
        let mut c = connect(&ctx, prefer_grpc).await?;
        let out = one_request(&mut c, &ctx, Op::Issue, "").await;
        match out.token {
            Some(t) => anyhow::Ok(t),
            None => bail!("the first token request failed: {}", out.status),
        }
    })?;
    // Exchange workloads: a subject token obtained up front by
    // client_credentials (exchanged again and again by `*-exchange-hot`).
    let mut targets = args.targets.clone();
    let wants_exchange = targets.iter().any(|t| t.op() == Op::Exchange);
    if wants_exchange && server.subject_client_id.is_none() {
        println!("exchange workloads: skipped (attach mode needs --subject-client-id; see --help)");
        targets.retain(|t| t.op() != Op::Exchange);
    }
    let subject_sample = if wants_exchange && server.subject_client_id.is_some() {
        Some(rt.block_on(async {
            let mut c = connect(&ctx, prefer_grpc).await?;
            let subject = match one_request(&mut c, &ctx, Op::IssueSubject, "").await {
                Outcome { token: Some(t), .. } => t,
                out => bail!("the subject client's token request failed: {}", out.status),
            };
            // One exchange, so a policy refusal stops the run here.
            let out = one_request(&mut c, &ctx, Op::Exchange, &subject).await;
            if !out.ok {
                bail!("the first token exchange failed: {}", out.status);
            }
            anyhow::Ok(subject)
        })?)
    } else {
        None
    };
    let floor = match &server.key_file {
        Some(k) => {
            let pem_text = std::fs::read(k).with_context(|| format!("{}", k.display()))?;
            let f = std::thread::scope(|s| {
                s.spawn(|| measure_floor(alg, &pem_text, &sample))
                    .join()
                    .expect("floor thread")
            })?;
            println!(
                "floor (raw aws-lc-rs, one thread, CPU time, this run): {alg} sign {:.1} us/op, verify {:.1} us/op",
                f.sign_us, f.verify_us
            );
            Some(f)
        }
        None => {
            println!("floor: skipped (no --key-file)");
            None
        }
    };

    // Tokens for cold introspection (the bench client's), and subject
    // tokens for cold exchange (the subject client's).
    let pool = Arc::new(Mutex::new(Vec::<String>::new()));
    let subject_pool = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut all_ok = true;
    let mut json_lines = Vec::new();
    let cold_intro_total = targets
        .iter()
        .filter(|t| t.cold() && t.op() == Op::Introspect)
        .count();
    let cold_exchange_total = targets
        .iter()
        .filter(|t| t.cold() && t.op() == Op::Exchange)
        .count();
    let (mut cold_intro_seen, mut cold_exchange_seen) = (0, 0);
    let open_env = open_loop::Env {
        rt: &rt,
        args: &args,
        ctx: ctx.clone(),
        floor,
        alg,
        store,
        prefer_grpc,
        pool: pool.clone(),
        subject_pool: subject_pool.clone(),
        sample: sample.clone(),
        subject_sample: subject_sample.clone(),
    };
    for &target in &targets {
        let needs = if target.grpc() {
            &server.grpc
        } else {
            &server.http
        };
        if needs.is_empty() {
            bail!("{}: no address for this transport", target.name());
        }
        let mut take = 0;
        if target.cold() && target.op() == Op::Exchange {
            if subject_pool.lock().is_empty() {
                // A stock of subject tokens for every cold exchange
                // workload: as many as the subject client gets issued in
                // the same time (an exchange costs more than an issue).
                let stock = Args {
                    duration: (args.duration * cold_exchange_total as f64).min(600.0),
                    requests: args.requests.map(|n| n * cold_exchange_total as u64),
                    ..args.clone()
                };
                println!(
                    "(issuing subject tokens for {:.0} s to exchange)",
                    stock.duration
                );
                let t = if prefer_grpc {
                    Target::GrpcIssueSubject
                } else {
                    Target::HttpIssueSubject
                };
                let r = rt.block_on(run_target(
                    t,
                    &stock,
                    ctx.clone(),
                    subject_pool.clone(),
                    0,
                    None,
                ))?;
                if r.errors > 0 {
                    bail!("issuing subject tokens: {} errors", r.errors);
                }
            }
            take = subject_pool.lock().len() / (cold_exchange_total - cold_exchange_seen).max(1);
            cold_exchange_seen += 1;
        } else if target.cold() {
            if pool.lock().is_empty() {
                // Nothing issued yet: issue a stock of tokens to introspect.
                let n = args.requests.unwrap_or(2_000);
                println!("(issuing {n} tokens to introspect)");
                let stock = Args {
                    requests: Some(n),
                    duration: 600.0,
                    ..args.clone()
                };
                let t = if prefer_grpc {
                    Target::GrpcIssue
                } else {
                    Target::HttpIssue
                };
                rt.block_on(run_target(t, &stock, ctx.clone(), pool.clone(), 0, None))?;
            }
            take = pool.lock().len() / (cold_intro_total - cold_intro_seen).max(1);
            cold_intro_seen += 1;
        }
        if let Some(rate) = args.open.rate {
            all_ok &= open_env.run(target, rate, None, &mut json_lines)?;
            continue;
        }
        let take = open_env.stock_for_max(target, take)?;
        let (target_pool, hot) = if target.op() == Op::Exchange {
            (subject_pool.clone(), subject_sample.clone())
        } else {
            (pool.clone(), Some(sample.clone()))
        };
        let r = rt.block_on(run_target(
            target,
            &args,
            ctx.clone(),
            target_pool,
            take,
            hot,
        ))?;
        let (floor_op, floor_us) = floor_of(target, floor);
        // A workload with errors measured something else: no ratio.
        let ratio = floor_us
            .filter(|_| r.errors == 0 && r.requests > 0)
            .map(|f| r.cpu_us_per_req / f);
        let rps = r.requests as f64 / r.seconds;
        println!("\n== {} ({alg}, store {store})", target.name());
        println!(
            "  requests    {} in {:.2} s, errors {}  [{}]",
            r.requests,
            r.seconds,
            r.errors,
            r.statuses
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  throughput  {rps:.0} req/s (wall clock; shared machine, indicative only)");
        println!(
            "  latency     p50 {}  p90 {}  p99 {}",
            ms(r.p50_us),
            ms(r.p90_us),
            ms(r.p99_us)
        );
        match (floor_us, ratio) {
            (Some(f), Some(x)) => println!(
                "  server CPU  {:.1} us/request (utime+stime)  vs raw {alg} {floor_op} {f:.1} us/op  = {x:.2}x",
                r.cpu_us_per_req
            ),
            _ => println!(
                "  server CPU  {:.1} us/request (utime+stime)",
                r.cpu_us_per_req
            ),
        }
        if let Some(kib) = r.peak_rss_kib {
            println!("  peak RSS    {:.1} MiB (VmHWM)", kib as f64 / 1024.0);
        }
        if r.errors > 0 || r.requests == 0 {
            all_ok = false;
            println!("  FAILED: {} non-success responses", r.errors);
        }
        json_lines.push(serde_json::json!({
            "mode": "closed",
            "target": target.name(),
            "transport": if target.grpc() { "grpc" } else { "http" },
            "op": target.op_label(),
            "alg": alg.as_str(),
            "store": store,
            "concurrency": args.concurrency,
            "requests": r.requests,
            "errors": r.errors,
            "statuses": r.statuses,
            "seconds": r.seconds,
            "rps": rps,
            "p50_us": r.p50_us,
            "p90_us": r.p90_us,
            "p99_us": r.p99_us,
            "server_cpu_us_per_req": r.cpu_us_per_req,
            "floor_op": floor_op,
            "floor_us": floor_us,
            "ratio": ratio,
            "peak_rss_mib": r.peak_rss_kib.map(|k| k as f64 / 1024.0),
            "trace_ratio": args.trace_ratio,
        }));
        all_ok &= open_env.fractions(target, rps, &mut json_lines)?;
    }
    if let Some(path) = &args.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}", path.display()))?;
        for l in json_lines {
            writeln!(f, "{l}")?;
        }
    }
    if let (Some(sink), Some(ratio)) = (&server.trace_sink, args.trace_ratio) {
        println!(
            "trace export (sampling ratio {ratio}): {} spans received by the sink",
            sink.spans()
        );
    }
    drop(open_env);
    drop(rt);
    drop(server);
    Ok(all_ok)
}

/// An HTTP Basic `Authorization` value (RFC 6749 2.3.1).
fn basic_auth(client_id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            form_encode(client_id),
            form_encode(secret)
        ))
    )
}

/// RFC 6749 2.3.1: Basic credentials are form-urlencoded first.
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_three_part_base64url_json_token_counts_as_issued() {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let good = format!(
            "{}.{}.{}",
            enc(r#"{"alg":"ES256"}"#),
            enc(r#"{"sub":"x"}"#),
            enc("sig")
        );
        assert!(is_jwt(&good));
        assert!(issued(Op::Issue, "grpc OK", good.clone()).ok);
        for bad in [
            String::new(),
            "opaque-token".into(),
            format!("{}.{}", enc("{}"), enc("{}")),
            format!("{good}.{}", enc("x")),
            format!("{}.{}.{}", enc("{}"), enc("not json"), enc("sig")),
            format!("{}.{}.{}", enc("{}"), enc("[1]"), enc("sig")),
            format!("{}.{}.", enc("{}"), enc("{}")),
            format!("{}.{}.{}", enc("{}"), "a+b/", enc("sig")),
        ] {
            assert!(!is_jwt(&bad), "{bad}");
            let out = issued(Op::Issue, "http 200", bad);
            assert!(!out.ok && out.status == "http 200 not a JWT");
        }
    }
}
