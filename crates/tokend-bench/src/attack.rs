//! `tokend-bench attack`: issue 14's attacks, bounded, against a running
//! tokend, one line each (`PASS|FAIL|SKIP  <name>  <what was measured>`).
//!
//! Every attack sends a fixed number of requests and has a deadline; a step
//! that does not finish in time is a FAIL, never a hang. The attacks that
//! make tokend back the caller's address off (wrong secrets) run last, and
//! the ones before them accept nothing that depends on the throttle. See
//! docs/security.md, "Attack suite".

mod authorize;
mod guessing;
mod net;
mod streams;

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use http::Method;
use tokend::pb::IssueRequest;
use tokend::pb::token_service_client::TokenServiceClient;
use tonic::Code;

use net::{Base, get, metric, metrics_text, post_form, random_hex};

/// The options of `tokend-bench attack`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
The guessing attacks (argon2-flood, secret-guessing-burst) make tokend back the \
caller's own address off for a while (the auth throttle, up to [auth_throttle] \
max_secs): run the suite from a machine whose address does not matter, against \
a staging deployment, never against production. Plain http:// only (no TLS).")]
pub struct AttackArgs {
    /// Base URL of the HTTP listener (http://host:port).
    #[arg(long)]
    pub http: String,
    /// URL of the gRPC listener (http://host:port).
    #[arg(long)]
    pub grpc: String,
    /// The /metrics URL (on the admin listener when one is configured);
    /// needed by authorize-writes-nothing and store-eviction.
    #[arg(long)]
    pub metrics: Option<String>,
    /// A confidential client_credentials client, `id:secret` (revocation
    /// oracle; its id is also the unsuitable client of the authorize
    /// enumeration and the target of the secret-guessing burst).
    #[arg(long, value_parser = parse_cred)]
    pub client: Option<Credentials>,
    /// A second confidential client, `id:secret`: it revokes --client's token.
    #[arg(long, value_parser = parse_cred)]
    pub other_client: Option<Credentials>,
    /// A client that may introspect, `id:secret` (default: --client).
    #[arg(long, value_parser = parse_cred)]
    pub introspector: Option<Credentials>,
    /// A public client's id (token-endpoint enumeration).
    #[arg(long)]
    pub public_client: Option<String>,
    /// A client with the authorization_code grant (RFC 9207, state,
    /// authorize-writes-nothing); needs --redirect-uri.
    #[arg(long)]
    pub code_client: Option<String>,
    /// A redirect URI registered for --code-client.
    #[arg(long)]
    pub redirect_uri: Option<String>,
    /// A client whose secret is an argon2 hash (argon2-flood).
    #[arg(long)]
    pub argon2_client: Option<String>,
    /// The deployment's [auth_throttle] threshold.
    #[arg(long, default_value_t = 10)]
    pub threshold: u32,
    /// The deployment's [server] body_read_timeout_secs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=30))]
    pub body_deadline_secs: u64,
    /// Highest SETTINGS_MAX_CONCURRENT_STREAMS that passes (also the most
    /// streams the suite opens).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_streams: u32,
    /// HTTP/1.1 connections held with an unfinished body.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub held_bodies: u64,
    /// /oauth/authorize requests of authorize-writes-nothing.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub authorize_requests: u64,
    /// The scopes discovery may list (comma-separated); without it,
    /// `scopes_supported` must be absent.
    #[arg(long, value_delimiter = ',')]
    pub expect_scopes: Option<Vec<String>>,
}

/// `id:secret`.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
}

fn parse_cred(s: &str) -> Result<Credentials, String> {
    let (id, secret) = s
        .split_once(':')
        .ok_or_else(|| "expected id:secret".to_owned())?;
    Ok(Credentials {
        id: id.to_owned(),
        secret: secret.to_owned(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
}

/// One attack's result.
#[derive(Clone, Debug)]
pub struct Line {
    pub verdict: Verdict,
    pub name: &'static str,
    pub detail: String,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = match self.verdict {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        };
        write!(f, "{v}  {}  {}", self.name, self.detail)
    }
}

/// What an attack found: its verdict and measurement (the runner adds the
/// name).
type Outcome = (Verdict, String);

fn pass(d: impl Into<String>) -> anyhow::Result<Outcome> {
    Ok((Verdict::Pass, d.into()))
}
fn fail(d: impl Into<String>) -> anyhow::Result<Outcome> {
    Ok((Verdict::Fail, d.into()))
}
fn skip(d: impl Into<String>) -> anyhow::Result<Outcome> {
    Ok((Verdict::Skip, d.into()))
}
fn verdict(ok: bool, d: impl Into<String>) -> anyhow::Result<Outcome> {
    Ok((if ok { Verdict::Pass } else { Verdict::Fail }, d.into()))
}

/// Runs `attack` within `limit`: an error or the deadline is a FAIL.
async fn step(
    name: &'static str,
    limit: Duration,
    attack: impl Future<Output = anyhow::Result<Outcome>>,
) -> Line {
    let (verdict, detail) = match tokio::time::timeout(limit, attack).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => (Verdict::Fail, format!("error: {e:#}")),
        Err(_) => (Verdict::Fail, format!("not finished within {limit:?}")),
    };
    Line {
        verdict,
        name,
        detail,
    }
}

/// Runs every attack in order and returns one line each; `each` sees every
/// line as soon as it is known (to print it).
pub async fn run(a: &AttackArgs, mut each: impl FnMut(&Line)) -> Vec<Line> {
    let s = Suite::new(a);
    let short = Duration::from_secs(20);
    let held = Duration::from_secs(a.body_deadline_secs + 25);
    let mut lines = Vec::new();
    macro_rules! go {
        ($name:literal, $limit:expr, $f:expr) => {{
            let line = step($name, $limit, $f).await;
            each(&line);
            lines.push(line);
        }};
    }
    go!("grpc-message-over-cap", short, s.grpc_over_cap());
    go!("grpc-garbage-protobuf", short, s.grpc_garbage());
    go!("json-repeated-keys", short, s.json_repeated_keys());
    go!("malformed-authorize-query", short, s.malformed_query());
    go!("rfc9207-iss", short, s.rfc9207());
    go!("state-byte-for-byte", short, s.state_echo());
    go!("discovery-scopes", short, s.discovery_scopes());
    go!("store-eviction", short, s.store_eviction());
    go!(
        "authorize-writes-nothing",
        Duration::from_secs(40),
        s.authorize_writes_nothing()
    );
    go!("revocation-oracle", short, s.revocation_oracle());
    go!("client-enumeration", short, s.client_enumeration());
    go!("http2-stream-exhaustion", held, streams::grpc_streams(&s));
    go!("held-http1-bodies", held, streams::held_bodies(&s));
    go!("unknown-client-ids", short, s.unknown_ids());
    // Last: these two make tokend back this address off.
    go!("argon2-flood", Duration::from_secs(30), s.argon2_flood());
    go!(
        "secret-guessing-burst",
        Duration::from_secs(30),
        s.guessing_burst()
    );
    lines
}

/// The parsed options the attacks share.
struct Suite<'a> {
    a: &'a AttackArgs,
    http: anyhow::Result<Base>,
}

impl<'a> Suite<'a> {
    fn new(a: &'a AttackArgs) -> Self {
        Self {
            a,
            http: Base::parse(&a.http),
        }
    }

    fn http(&self) -> anyhow::Result<&Base> {
        self.http
            .as_ref()
            .map_err(|e| anyhow::anyhow!("--http: {e:#}"))
    }

    /// --code-client and --redirect-uri, or why the attack is skipped.
    fn code_client(&self) -> Result<(&str, &str), String> {
        match (&self.a.code_client, &self.a.redirect_uri) {
            (Some(c), Some(r)) => Ok((c, r)),
            _ => Err("needs --code-client and --redirect-uri".to_owned()),
        }
    }

    async fn discovery(&self) -> anyhow::Result<serde_json::Value> {
        let r = get(self.http()?, "/.well-known/oauth-authorization-server").await?;
        anyhow::ensure!(r.status == 200, "discovery answered {}", r.status);
        r.json()
    }

    async fn grpc_over_cap(&self) -> anyhow::Result<Outcome> {
        let mut c = TokenServiceClient::new(net::channel(&self.a.grpc).await?)
            .max_encoding_message_size(2 << 20);
        let r = c
            .issue(IssueRequest {
                grant_type: "client_credentials".into(),
                client_id: format!("attack-suite-{}", random_hex(4)),
                client_secret: "s".repeat(1 << 20),
                ..Default::default()
            })
            .await;
        match r {
            Err(e) if e.code() == Code::ResourceExhausted => {
                pass("1 MiB Issue: RESOURCE_EXHAUSTED")
            }
            Err(e) => fail(format!("1 MiB Issue: {:?} {}", e.code(), e.message())),
            Ok(_) => fail("1 MiB Issue was accepted"),
        }
    }

    async fn grpc_garbage(&self) -> anyhow::Result<Outcome> {
        let mut grpc = tonic::client::Grpc::new(net::channel(&self.a.grpc).await?);
        grpc.ready().await?;
        // A length-delimited field whose length runs past the end.
        let r = grpc
            .unary(
                tonic::Request::new(vec![0x0a, 0xff, 0x01, b'x']),
                "/tokend.v1.TokenService/Issue".parse()?,
                streams::RawCodec,
            )
            .await;
        match r {
            Err(e) if e.code() == Code::InvalidArgument => {
                pass("truncated protobuf to Issue: INVALID_ARGUMENT")
            }
            Err(e) => fail(format!(
                "truncated protobuf to Issue: {:?} {} (want INVALID_ARGUMENT)",
                e.code(),
                e.message()
            )),
            Ok(_) => fail("truncated protobuf to Issue was answered OK"),
        }
    }

    async fn json_repeated_keys(&self) -> anyhow::Result<Outcome> {
        let r = net::request(
            self.http()?,
            Method::POST,
            "/oauth/token",
            &[("content-type", "application/json".to_owned())],
            br#"{"grant_type":"client_credentials","grant_type":"client_credentials"}"#.to_vec(),
        )
        .await?;
        let e = r.error();
        verdict(
            r.status == 400 && e == "invalid_request",
            format!("repeated grant_type key: {} {e}", r.status),
        )
    }

    async fn discovery_scopes(&self) -> anyhow::Result<Outcome> {
        let meta = self.discovery().await?;
        let listed: Option<Vec<String>> = meta.get("scopes_supported").map(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        });
        match (listed, &self.a.expect_scopes) {
            (None, _) => pass("scopes_supported absent"),
            (Some(mut got), Some(want)) => {
                let mut want = want.clone();
                got.sort();
                want.sort();
                verdict(
                    got == want,
                    format!("scopes_supported {got:?}, expected {want:?}"),
                )
            }
            (Some(got), None) => fail(format!(
                "scopes_supported lists {got:?} to anyone (pass --expect-scopes if intended)"
            )),
        }
    }

    async fn store_eviction(&self) -> anyhow::Result<Outcome> {
        let Some(url) = &self.a.metrics else {
            return skip("needs --metrics");
        };
        let text = metrics_text(url).await?;
        match metric(&text, "tokend_store_evictable", &[]) {
            Some(0.0) => pass("tokend_store_evictable 0"),
            Some(v) => fail(format!(
                "tokend_store_evictable {v}: the store may evict revocation state"
            )),
            None => skip("tokend_store_evictable not exported yet"),
        }
    }

    async fn revocation_oracle(&self) -> anyhow::Result<Outcome> {
        let (Some(a), Some(b)) = (&self.a.client, &self.a.other_client) else {
            return skip("needs --client and --other-client");
        };
        let http = self.http()?;
        let r = post_form(
            http,
            "/oauth/token",
            Some((&a.id, &a.secret)),
            &[("grant_type", "client_credentials")],
        )
        .await?;
        anyhow::ensure!(
            r.status == 200,
            "--client got no token: {} {:.200}",
            r.status,
            r.text()
        );
        let token = r.json()?["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let revoke = |token: String| async move {
            post_form(
                http,
                "/oauth/revoke",
                Some((&b.id, &b.secret)),
                &[("token", &token)],
            )
            .await
        };
        let theirs = revoke(token.clone()).await?;
        let garbage = revoke(format!("attack-suite-{}", random_hex(16))).await?;
        let introspector = self.a.introspector.as_ref().unwrap_or(a);
        let i = post_form(
            http,
            "/oauth/introspect",
            Some((&introspector.id, &introspector.secret)),
            &[("token", &token)],
        )
        .await?;
        let active = i.json().map(|v| v["active"] == true).unwrap_or(false);
        let same = (theirs.status, &theirs.body) == (garbage.status, &garbage.body);
        verdict(
            same && active,
            format!(
                "another client's token revoked: {} {:?}, garbage: {} {:?}; token still active: {active}",
                theirs.status,
                theirs.text(),
                garbage.status,
                garbage.text()
            ),
        )
    }

    async fn unknown_ids(&self) -> anyhow::Result<Outcome> {
        skip(
            "needs store visibility (no metric counts throttle keys); covered by \
             throttle::unknown_client_ids_cost_no_store_keys_of_their_own",
        )
    }
}

/// Seconds since `t`, for the measurements.
fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}
