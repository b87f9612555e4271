//! The attack suite against a real tokend, in-process on loopback ports:
//! every attack passes against the hardened server configured with the
//! clients the attacks need, and the suite does fail when the server is
//! weakened through its configuration (so a PASS means something).

// The allocator of the `tokend` binary, so that the memory the argon2 line
// measures behaves as in production (glibc's malloc keeps each thread's
// freed 19 MiB argon2 block: 9 verifications left RSS 171 MiB higher here).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use tokend_bench::attack::{self, AttackArgs, Line, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "attack-suite-test-secret";
const ARGON2_SECRET: &str = "the right horse";
const WEB_CB: &str = "https://app.example/callback";

/// A tokend built from a TOML text and run on this test's runtime.
struct Tokend {
    http: SocketAddr,
    grpc: SocketAddr,
    admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Tokend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Tokend {
    async fn start(toml: &str) -> Self {
        let dir = tempfile::TempDir::with_prefix("tokend-attack-").unwrap();
        let path = dir.path().join("tokend.toml");
        std::fs::write(&path, toml).unwrap();
        let cfg = tokend::config::Config::load(Some(&path), std::iter::empty()).unwrap();
        let settings = cfg
            .parse()
            .unwrap_or_else(|p| panic!("the test config is invalid: {p:?}"));
        let server = tokend::server::Server::build(settings).await.unwrap();
        let (http, grpc, admin) = (server.http_addr(), server.grpc_addr(), server.admin_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        let t = Self {
            http,
            grpc,
            admin,
            shutdown,
            _dir: dir,
        };
        let start = Instant::now();
        while status_of(t.http, "/readyz").await != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "tokend not ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t
    }

    /// Runs the suite with `options` after the listener URLs.
    async fn attack(&self, options: &[&str]) -> Vec<Line> {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            a: AttackArgs,
        }
        let http = format!("http://{}", self.http);
        let grpc = format!("http://{}", self.grpc);
        let mut argv = vec!["attack", "--http", &http, "--grpc", &grpc];
        argv.extend_from_slice(options);
        let cli = Cli::try_parse_from(argv).unwrap();
        let started = Instant::now();
        let lines = attack::run(&cli.a, |l| eprintln!("{l}")).await;
        eprintln!("suite took {:?}", started.elapsed());
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{:?}",
            started.elapsed()
        );
        lines
    }
}

/// The status of `GET path`, over a raw connection (None: no answer).
async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut got))
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Memory store, loopback listeners, the admin listener (metrics), a 2 s
/// body deadline, and the clients the attacks need: two confidential
/// client_credentials clients, a public and a confidential code-flow client
/// (with the login app configured) and an argon2 client. `extra` is
/// appended to the top-level table.
fn config(extra: &str) -> String {
    let sha = tokend::oauth::client::SecretHash::sha256_of(SECRET);
    let argon2 = tokend::oauth::client::argon2_hash(ARGON2_SECRET).unwrap();
    let login_app =
        tokend::oauth::client::SecretHash::sha256_of("login-app-token-0123456789abcdef");
    format!(
        r#"
issuer = "https://tokend.test"

[http]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[store]
url = "memory://"
[server]
shutdown_grace_secs = 1
body_read_timeout_secs = 2
{extra}
[authorization]
login_url = "https://login.example/login"
login_app_token_hash = "{login_app}"

[[clients]]
client_id = "orders-service"
secret_hashes = ["{sha}"]
grant_types = ["client_credentials"]
scopes = ["orders:read"]

[[clients]]
client_id = "partner"
secret_hashes = ["{sha}"]
grant_types = ["client_credentials"]

[[clients]]
client_id = "mobile-app"
token_endpoint_auth_method = "none"
grant_types = ["authorization_code", "refresh_token"]
scopes = ["profile"]
redirect_uris = ["http://127.0.0.1:7777/cb"]

[[clients]]
client_id = "web-app"
secret_hashes = ["{sha}"]
grant_types = ["authorization_code", "refresh_token"]
scopes = ["profile"]
redirect_uris = ["{WEB_CB}"]

[[clients]]
client_id = "human"
secret_hashes = ["{argon2}"]
grant_types = ["client_credentials"]
"#
    )
}

fn verdict_of<'a>(lines: &'a [Line], name: &str) -> &'a Line {
    lines
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("no line {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_passes_against_a_hardened_tokend() {
    let tokend = Tokend::start(&config("")).await;
    let metrics = format!("http://{}/metrics", tokend.admin.unwrap());
    let client = format!("orders-service:{SECRET}");
    let other = format!("partner:{SECRET}");
    let lines = tokend
        .attack(&[
            "--metrics",
            &metrics,
            "--client",
            &client,
            "--other-client",
            &other,
            "--public-client",
            "mobile-app",
            "--code-client",
            "web-app",
            "--redirect-uri",
            WEB_CB,
            "--argon2-client",
            "human",
            "--body-deadline-secs",
            "2",
        ])
        .await;
    let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 16, "{text:#?}");
    for l in &lines {
        let expected = if l.name == "unknown-client-ids" {
            Verdict::Skip
        } else {
            Verdict::Pass
        };
        assert_eq!(l.verdict, expected, "{l}\n{text:#?}");
        assert!(l.to_string().starts_with(if expected == Verdict::Pass {
            "PASS  "
        } else {
            "SKIP  "
        }));
    }
    // The measurements say what they measured.
    let burst = verdict_of(&lines, "secret-guessing-burst").to_string();
    assert!(burst.contains("120 concurrent wrong secrets"), "{burst}");
    let streams = verdict_of(&lines, "http2-stream-exhaustion").to_string();
    assert!(
        streams.contains("SETTINGS_MAX_CONCURRENT_STREAMS 100"),
        "{streams}"
    );
}

/// The secret-guessing burst from an address with no earlier failures:
/// exactly the threshold is checked, the rest refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guessing_burst_is_held_at_the_threshold() {
    let tokend = Tokend::start(&config("")).await;
    let client = format!("orders-service:{SECRET}");
    let lines = tokend
        .attack(&[
            "--client",
            &client,
            "--held-bodies",
            "1",
            "--body-deadline-secs",
            "2",
        ])
        .await;
    let burst = verdict_of(&lines, "secret-guessing-burst");
    assert_eq!(burst.verdict, Verdict::Pass, "{burst}");
    assert_eq!(
        burst.detail,
        "120 concurrent wrong secrets for --client's id: 10 checked (401), 110 refused (429)"
    );
}

/// Without the options an attack needs it is skipped, not failed; and the
/// suite fails when the server is weakened: a stream limit over the bound,
/// discovery listing scopes that were not expected, and no secret-guessing
/// back-off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weakened_tokend_fails_the_suite_and_missing_options_skip() {
    let tokend = Tokend::start(&config(
        "max_concurrent_streams = 5000\n[discovery]\nscopes_supported = [\"orders:read\"]\n\
         [auth_throttle]\nenabled = false\n",
    ))
    .await;
    let lines = tokend
        .attack(&["--body-deadline-secs", "2", "--held-bodies", "20"])
        .await;
    let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let streams = verdict_of(&lines, "http2-stream-exhaustion");
    assert_eq!(streams.verdict, Verdict::Fail, "{text:#?}");
    assert!(streams.detail.contains("5000"), "{streams}");
    let scopes = verdict_of(&lines, "discovery-scopes");
    assert_eq!(scopes.verdict, Verdict::Fail, "{text:#?}");
    for name in [
        "state-byte-for-byte",
        "store-eviction",
        "authorize-writes-nothing",
        "revocation-oracle",
        "client-enumeration",
        "argon2-flood",
    ] {
        let l = verdict_of(&lines, name);
        assert_eq!(l.verdict, Verdict::Skip, "{l}");
        assert!(l.detail.starts_with("needs --"), "{l}");
    }
    // Nothing else failed: the failures are the weakened settings.
    let failed: Vec<&str> = lines
        .iter()
        .filter(|l| l.verdict == Verdict::Fail)
        .map(|l| l.name)
        .collect();
    assert_eq!(
        failed,
        [
            "discovery-scopes",
            "http2-stream-exhaustion",
            "secret-guessing-burst"
        ],
        "{text:#?}"
    );
    let burst = verdict_of(&lines, "secret-guessing-burst");
    assert!(burst.detail.contains("120 checked (401)"), "{burst}");

    // The expected list makes the same discovery pass.
    let lines = tokend
        .attack(&[
            "--expect-scopes",
            "orders:read",
            "--max-streams",
            "1000",
            "--held-bodies",
            "1",
            "--body-deadline-secs",
            "2",
        ])
        .await;
    assert_eq!(
        verdict_of(&lines, "discovery-scopes").verdict,
        Verdict::Pass
    );
}

/// A gRPC listener that accepts connections and never answers: the gRPC
/// attacks end as FAIL at their deadlines, and the suite ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_is_a_fail_not_a_hang() {
    let tokend = Tokend::start(&config("")).await;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = hole.accept().await {
            held.push(tcp);
        }
    });
    let http = format!("http://{}", tokend.http);
    let grpc = format!("http://{hole_addr}");
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: AttackArgs,
    }
    let cli = Cli::try_parse_from([
        "attack",
        "--http",
        &http,
        "--grpc",
        &grpc,
        "--held-bodies",
        "1",
        "--body-deadline-secs",
        "2",
    ])
    .unwrap();
    let started = Instant::now();
    let lines = attack::run(&cli.a, |l| eprintln!("{l}")).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    for name in [
        "grpc-message-over-cap",
        "grpc-garbage-protobuf",
        "http2-stream-exhaustion",
    ] {
        assert_eq!(verdict_of(&lines, name).verdict, Verdict::Fail, "{name}");
    }
    assert_eq!(
        verdict_of(&lines, "json-repeated-keys").verdict,
        Verdict::Pass
    );
}
