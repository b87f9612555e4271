//! `tokend-bench attack`: issue 14's attacks, bounded, against a running
//! tokend, one line each (`PASS|FAIL|SKIP  <name>  <what was measured>`).
//!
//! Every attack sends a fixed number of requests and has a deadline; a step
//! that does not finish in time is a FAIL, never a hang. The attacks that
//! make tokend back the caller's address off (wrong secrets) run last, and
//! the ones before them accept nothing that depends on the throttle. See
//! docs/security.md, "Attack suite".

mod net;
mod streams;

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use http::Method;
use tokend::pb::IssueRequest;
use tokend::pb::token_service_client::TokenServiceClient;
use tonic::Code;

use net::{Base, Reply, encode, get, metric, metrics_text, post_form, random_hex};

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

/// A valid-looking PKCE S256 challenge (43 base64url characters).
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

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

    async fn authorize(&self, query: &str) -> anyhow::Result<Reply> {
        get(self.http()?, &format!("/oauth/authorize?{query}")).await
    }

    /// The error redirect of `response_type=token` for the code client, with
    /// `state` as given (already encoded).
    async fn error_redirect(
        &self,
        client: &str,
        redirect: &str,
        state: &str,
    ) -> anyhow::Result<String> {
        let r = self
            .authorize(&format!(
                "response_type=token&client_id={}&redirect_uri={}&state={state}",
                encode(client),
                encode(redirect)
            ))
            .await?;
        match r.header("location") {
            Some(l) if (300..400).contains(&r.status) => Ok(l.to_owned()),
            _ => anyhow::bail!(
                "response_type=token was not redirected: {} {:.200}",
                r.status,
                r.text()
            ),
        }
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

    async fn malformed_query(&self) -> anyhow::Result<Outcome> {
        let r = self.authorize("client_id=x&redirect_uri=%ZZ").await?;
        let body = r.json().unwrap_or_default();
        let description = body["error_description"].as_str().unwrap_or_default();
        verdict(
            r.status == 400
                && body["error"] == "invalid_request"
                && description.contains("malformed")
                && r.header("location").is_none(),
            format!(
                "redirect_uri=%ZZ: {} {} {description:?}",
                r.status, body["error"]
            ),
        )
    }

    async fn rfc9207(&self) -> anyhow::Result<Outcome> {
        let meta = self.discovery().await?;
        if meta["authorization_response_iss_parameter_supported"] != true {
            return fail("discovery lacks authorization_response_iss_parameter_supported: true");
        }
        let issuer = meta["issuer"].as_str().unwrap_or_default().to_owned();
        let (client, redirect) = match self.code_client() {
            Ok(c) => c,
            Err(why) => {
                return pass(format!(
                    "discovery announces it; the error redirect is not checked ({why})"
                ));
            }
        };
        let to = self.error_redirect(client, redirect, "s").await?;
        let iss = query_param(&to, "iss").map(|v| decode(&v));
        verdict(
            iss.as_deref() == Some(issuer.as_str()),
            format!("discovery announces it; error redirect iss={iss:?} (issuer {issuer:?})"),
        )
    }

    async fn state_echo(&self) -> anyhow::Result<Outcome> {
        let (client, redirect) = match self.code_client() {
            Ok(c) => c,
            Err(why) => return skip(why),
        };
        let state = "a%7Eb+c%2f";
        let to = self.error_redirect(client, redirect, state).await?;
        let echoed = query_param(&to, "state");
        verdict(
            echoed.as_deref() == Some(state),
            format!(
                "sent state={state}, error redirect has state={}",
                echoed.unwrap_or_default()
            ),
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
            Some(v) if v == 0.0 => pass("tokend_store_evictable 0"),
            Some(v) => fail(format!(
                "tokend_store_evictable {v}: the store may evict revocation state"
            )),
            None => skip("tokend_store_evictable not exported yet"),
        }
    }

    async fn authorize_writes_nothing(&self) -> anyhow::Result<Outcome> {
        let (client, redirect) = match self.code_client() {
            Ok(c) => c,
            Err(why) => return skip(why),
        };
        let Some(url) = &self.a.metrics else {
            return skip("needs --metrics");
        };
        let writes = |text: &str| {
            ["put", "put_new"]
                .iter()
                .map(|op| {
                    metric(
                        text,
                        "tokend_store_duration_seconds_count",
                        &[&format!("op=\"{op}\"")],
                    )
                    .unwrap_or(0.0)
                })
                .sum::<f64>()
        };
        let before = writes(&metrics_text(url).await?);
        let query = format!(
            "/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&state=attack-suite\
             &code_challenge={CHALLENGE}&code_challenge_method=S256",
            encode(client),
            encode(redirect)
        );
        let n = self.a.authorize_requests;
        let workers = 8u64;
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..workers {
            let base = self.http()?.clone();
            let query = query.clone();
            let count = n / workers + u64::from(w < n % workers);
            tasks.spawn(async move {
                let mut conn = net::H1::open(&base).await?;
                let mut to_login = 0u64;
                for _ in 0..count {
                    let r = conn.send(Method::GET, &query, &[], Vec::new()).await?;
                    if (300..400).contains(&r.status)
                        && r.header("location")
                            .is_some_and(|l| l.contains("login_challenge"))
                    {
                        to_login += 1;
                    }
                }
                anyhow::Ok(to_login)
            });
        }
        let mut to_login = 0;
        while let Some(r) = tasks.join_next().await {
            to_login += r??;
        }
        let after = writes(&metrics_text(url).await?);
        let d = format!(
            "{n} authorize requests ({to_login} sent to the login page): store put/put_new {before} -> {after}"
        );
        if to_login == 0 {
            return fail(format!(
                "{d}; none reached the login page (check --code-client/--redirect-uri)"
            ));
        }
        verdict(after == before, d)
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

    async fn client_enumeration(&self) -> anyhow::Result<Outcome> {
        let http = self.http()?;
        let unknown = format!("attack-suite-{}", random_hex(8));
        let mut parts = Vec::new();
        let mut ok = true;
        if let Some(public) = &self.a.public_client {
            let answer = |id: String| async move {
                let r = post_form(
                    http,
                    "/oauth/token",
                    None,
                    &[("grant_type", "client_credentials"), ("client_id", &id)],
                )
                .await?;
                anyhow::Ok((
                    r.status,
                    r.header("www-authenticate").map(str::to_owned),
                    r.body,
                ))
            };
            let p = answer(public.clone()).await?;
            let u = answer(unknown.clone()).await?;
            let same = p == u;
            ok &= same;
            parts.push(format!(
                "token endpoint: public id {} {}, unknown id {} ({})",
                p.0,
                String::from_utf8_lossy(&p.2),
                u.0,
                if same { "identical" } else { "DIFFERENT" }
            ));
        }
        if let Some(c) = &self.a.client {
            let redirect = self
                .a
                .redirect_uri
                .clone()
                .unwrap_or_else(|| "https://attack-suite.invalid/cb".to_owned());
            let answer = |id: String| {
                let redirect = redirect.clone();
                async move {
                    let r = self
                        .authorize(&format!(
                            "response_type=code&client_id={}&redirect_uri={}&state=s\
                             &code_challenge={CHALLENGE}&code_challenge_method=S256",
                            encode(&id),
                            encode(&redirect)
                        ))
                        .await?;
                    anyhow::Ok((
                        r.status,
                        r.header("content-type").map(str::to_owned),
                        r.header("location").map(str::to_owned),
                        r.body,
                    ))
                }
            };
            let k = answer(c.id.clone()).await?;
            let u = answer(unknown).await?;
            let same = k == u;
            ok &= same;
            parts.push(format!(
                "authorize: client without the code grant {}, unknown id {} ({})",
                k.0,
                u.0,
                if same { "identical" } else { "DIFFERENT" }
            ));
        }
        if parts.is_empty() {
            return skip("needs --public-client and/or --client");
        }
        verdict(ok, parts.join("; "))
    }

    async fn unknown_ids(&self) -> anyhow::Result<Outcome> {
        skip(
            "needs store visibility (no metric counts throttle keys); covered by \
             throttle::unknown_client_ids_cost_no_store_keys_of_their_own",
        )
    }

    async fn argon2_flood(&self) -> anyhow::Result<Outcome> {
        let Some(id) = &self.a.argon2_client else {
            return skip("needs --argon2-client");
        };
        let http = self.http()?;
        let rss = |text: &str| metric(text, "process_resident_memory_bytes", &[]);
        let before = match &self.a.metrics {
            Some(url) => rss(&metrics_text(url).await?),
            None => None,
        };
        let n = 60;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (http, id) = (http.clone(), id.clone());
            tasks.spawn(async move {
                post_form(
                    &http,
                    "/oauth/token",
                    Some((&id, &format!("attack-suite-wrong-{i}"))),
                    &[("grant_type", "client_credentials")],
                )
                .await
            });
        }
        let (mut c401, mut c429, mut c503, mut other) = (0, 0, 0, Vec::new());
        while let Some(r) = tasks.join_next().await {
            let r = r??;
            match r.status {
                401 => c401 += 1,
                429 => c429 += 1,
                503 if r.header("retry-after").is_some() => c503 += 1,
                s => other.push(s),
            }
        }
        let health = get(http, "/healthz").await.map(|r| r.status);
        let mut d = format!(
            "{n} concurrent wrong secrets: {c401} checked (401), {c429} refused (429), {c503} told to retry (503)"
        );
        let mut ok = other.is_empty();
        if !other.is_empty() {
            d += &format!(", unexpected {other:?}");
        }
        match &health {
            Ok(s) => d += &format!("; /healthz {s} afterwards"),
            Err(e) => {
                ok = false;
                d += &format!("; /healthz did not answer afterwards: {e:#}");
            }
        }
        let after = match &self.a.metrics {
            Some(url) => rss(&metrics_text(url).await?),
            None => None,
        };
        match (before, after) {
            (Some(b), Some(a)) => {
                let grew = (a - b) / f64::from(1 << 20);
                d += &format!(
                    "; RSS {:.0} -> {:.0} MiB",
                    b / f64::from(1 << 20),
                    a / f64::from(1 << 20)
                );
                if grew > 200.0 {
                    ok = false;
                    d += " (grew more than 200 MiB)";
                }
            }
            _ => d += "; RSS not measured (process_resident_memory_bytes not exported)",
        }
        verdict(ok, d)
    }

    async fn guessing_burst(&self) -> anyhow::Result<Outcome> {
        let http = self.http()?;
        let (id, whose) = match &self.a.client {
            Some(c) => (c.id.clone(), "--client's id"),
            None => (format!("attack-suite-{}", random_hex(8)), "an unknown id"),
        };
        let n = 120;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (http, id) = (http.clone(), id.clone());
            tasks.spawn(async move {
                post_form(
                    &http,
                    "/oauth/token",
                    Some((&id, &format!("attack-suite-guess-{i}"))),
                    &[("grant_type", "client_credentials")],
                )
                .await
            });
        }
        let (mut c401, mut c429, mut other) = (0u32, 0u32, Vec::new());
        while let Some(r) = tasks.join_next().await {
            match r??.status {
                401 => c401 += 1,
                429 => c429 += 1,
                s => other.push(s),
            }
        }
        let mut d = format!(
            "{n} concurrent wrong secrets for {whose}: {c401} checked (401), {c429} refused (429)"
        );
        if !other.is_empty() {
            d += &format!(", unexpected {other:?}");
        }
        if c401 < self.a.threshold.min(n) {
            d += " (fewer than the threshold: the address was already backing off)";
        }
        verdict(other.is_empty() && c401 <= self.a.threshold + 2, d)
    }
}

/// The raw (still encoded) value of `name` in the query of `url`.
fn query_param(url: &str, name: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    let q = q.split('#').next().unwrap_or_default();
    q.split('&')
        .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}

fn decode(v: &str) -> String {
    form_urlencoded::parse(format!("x={v}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Seconds since `t`, for the measurements.
fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}
