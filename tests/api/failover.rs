//! Issue 19 chaos tests: two tokend replicas under a steady mixed load
//! (issue, revoke, introspect, code redemption, refresh rotation) while the
//! Redis primary under them dies: a Sentinel group (3 Sentinels, a primary, a
//! replica) and a Redis Cluster of 3 primaries with a replica each. With
//! `replica_acks = 1`:
//!
//! - no token whose revocation was answered 200 ever answers `active: true`,
//!   before, during or after the failover;
//! - no code is redeemed twice (each is tried through both replicas at once)
//!   and no refresh token rotates twice (rotated through one, replayed
//!   through the other);
//! - no answer is anything but the documented ones (no 500, no panic, no hang);
//! - unavailability (503) happens only between the kill and the recovery,
//!   and the window and the time to full recovery are reported (several runs:
//!   `TOKEND_FAILOVER_RUNS`, default 1).
//!
//! The killed node is restarted a few seconds after the kill: it rejoins as a
//! replica, so revocations can be acknowledged again (full recovery).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::api::Api;
use crate::common::config::key_file;
use crate::common::flows::{WEB_CB, refresh, s, web_code, web_tokens};
use crate::common::{ConfigBuilder, RedisCluster, RedisSentinelGroup, TestApp, eventually};

/// Bound on the failover and the recovery.
const RECOVERY: Duration = Duration::from_secs(40);
/// How long the killed node stays down.
const DOWN: Duration = Duration::from_secs(3);
/// Codes and refresh tokens made before the kill, spent during and after it.
const STOCK: usize = 40;

/// What the load saw; violations fail the test.
#[derive(Default)]
struct Tally {
    violations: Mutex<Vec<String>>,
    /// Times of 503 answers, from the start of the run, and the operation.
    unavailable: Mutex<Vec<(Duration, &'static str)>>,
    revoked_ok: AtomicUsize,
    rounds: AtomicUsize,
    codes_redeemed: AtomicUsize,
    refreshes: AtomicUsize,
}

impl Tally {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

/// One run's figures.
struct Run {
    /// The last 503 of introspection, and of any operation, from the kill.
    reads_back: Duration,
    writes_back: Duration,
    /// From the kill until revocations succeeded through both replicas again.
    recovered: Duration,
    unavailable: usize,
}

/// Classifies an HTTP answer: 200, the expected refusal, 503, or a violation.
fn sort(status: u16, what: &'static str, t: &Tally, started: Instant) -> Option<bool> {
    match status {
        200 => Some(true),
        400 | 401 => Some(false),
        503 => {
            t.unavailable
                .lock()
                .unwrap()
                .push((started.elapsed(), what));
            None
        }
        other => {
            t.violation(format!("{what}: HTTP {other}"));
            None
        }
    }
}

/// Issue through `a`, revoke through `b`, and introspect every token whose
/// revocation was answered 200 through both, forever (until `stop`).
async fn revoke_loop(a: Api, b: Api, t: Arc<Tally>, stop: Arc<AtomicBool>, started: Instant) {
    let mut revoked: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let token = a.access_token("orders-service").await;
        let r = b.revoke("orders-service", &token).await;
        if sort(r.status().as_u16(), "revoke", &t, started) == Some(true) {
            revoked.push(token);
            t.revoked_ok.fetch_add(1, Ordering::Relaxed);
        }
        // The newest and a few older ones, through both replicas.
        for token in revoked.iter().rev().take(4) {
            for api in [&a, &b] {
                let r = api.introspect_response(token).await;
                let status = r.status().as_u16();
                if status == 200 {
                    let body: serde_json::Value = r.json().await.unwrap();
                    if body["active"] != false {
                        t.violation(format!("a revoked token answered {body}"));
                    }
                } else {
                    sort(status, "introspect", &t, started);
                }
            }
        }
        t.rounds.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redeems each code through both replicas at once, and rotates each
/// refresh token through one replica and replays it through the other, one
/// pair every 300 ms: never two successes for one.
async fn single_use_loop(
    a: Api,
    b: Api,
    codes: Vec<(String, String)>,
    refresh_tokens: Vec<String>,
    t: Arc<Tally>,
    stop: Arc<AtomicBool>,
    started: Instant,
) {
    let mut codes = codes.into_iter();
    let mut refresh_tokens = refresh_tokens.into_iter();
    while !stop.load(Ordering::Relaxed) {
        if let Some((code, verifier)) = codes.next() {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", WEB_CB),
                ("code_verifier", verifier.as_str()),
            ];
            let (ra, rb) = tokio::join!(
                a.post_form(
                    "/oauth/token",
                    Some(("web-app", crate::common::SECRET)),
                    &form
                ),
                b.post_form(
                    "/oauth/token",
                    Some(("web-app", crate::common::SECRET)),
                    &form
                ),
            );
            let wins = [ra.status().as_u16(), rb.status().as_u16()]
                .into_iter()
                .filter(|s| sort(*s, "redeem", &t, started) == Some(true))
                .count();
            if wins > 1 {
                t.violation("a code was redeemed twice".into());
            }
            t.codes_redeemed.fetch_add(wins, Ordering::Relaxed);
        }
        if let Some(rt) = refresh_tokens.next() {
            // Rotated through one replica, replayed through the other (at
            // once, both are refused: tokend takes a concurrent reuse for
            // theft and ends the grant).
            let ra = refresh(&a, &rt, &[]).await.status();
            let rb = refresh(&b, &rt, &[]).await.status();
            let wins = [ra.as_u16(), rb.as_u16()]
                .into_iter()
                .filter(|s| sort(*s, "refresh", &t, started) == Some(true))
                .count();
            if wins > 1 {
                t.violation("a refresh token rotated twice".into());
            }
            t.refreshes.fetch_add(wins, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Codes (redeemable for 60 s) and refresh tokens for the load, made while
/// the store is healthy.
async fn stock(api: &Api) -> (Vec<(String, String)>, Vec<String>) {
    let mut codes = Vec::new();
    let mut refresh_tokens = Vec::new();
    for _ in 0..STOCK {
        codes.push(web_code(api, "profile").await);
        refresh_tokens.push(s(&web_tokens(api, "profile").await["refresh_token"]));
    }
    (codes, refresh_tokens)
}

/// One chaos run: load on `a` and `b`, `kill` the primary, `restart` it
/// after [`DOWN`], wait for full recovery, stop, and check.
async fn run<K, R, RF>(a: &TestApp, b: &TestApp, kill: K, restart: R) -> Run
where
    K: FnOnce(),
    R: FnOnce() -> RF,
    RF: Future<Output = ()>,
{
    let (codes, refresh_tokens) = stock(a).await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (aa, ba): (Api, Api) = ((**a).clone(), (**b).clone());
    let tasks = [
        tokio::spawn(revoke_loop(
            aa.clone(),
            ba.clone(),
            tally.clone(),
            stop.clone(),
            started,
        )),
        tokio::spawn(revoke_loop(
            ba.clone(),
            aa.clone(),
            tally.clone(),
            stop.clone(),
            started,
        )),
        tokio::spawn(single_use_loop(
            aa,
            ba,
            codes,
            refresh_tokens,
            tally.clone(),
            stop.clone(),
            started,
        )),
    ];
    let t = tally.clone();
    assert!(
        eventually(RECOVERY, || {
            let t = t.clone();
            async move { t.revoked_ok.load(Ordering::Relaxed) >= 20 }
        })
        .await,
        "the load did not get going"
    );
    assert!(
        tally.unavailable.lock().unwrap().is_empty(),
        "503 before anything failed: {:?}",
        tally.violations.lock().unwrap()
    );

    let killed = started.elapsed();
    kill();
    tokio::time::sleep(DOWN).await;
    restart().await;
    // Full recovery: revocations answered 200 through both replicas again,
    // twenty in a row with no 503 in between.
    let recovered = eventually(RECOVERY, || async {
        let mark = tally.unavailable.lock().unwrap().len();
        let before = tally.revoked_ok.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        tally.unavailable.lock().unwrap().len() == mark
            && tally.revoked_ok.load(Ordering::Relaxed) >= before + 10
    })
    .await;
    let recovered_at = started.elapsed();
    assert!(recovered, "no full recovery within {RECOVERY:?}");
    // After recovery: more load, with no 503 at all.
    let mark = tally.unavailable.lock().unwrap().len();
    let before = tally.rounds.load(Ordering::Relaxed);
    let t = tally.clone();
    assert!(
        eventually(RECOVERY, || {
            let t = t.clone();
            async move { t.rounds.load(Ordering::Relaxed) >= before + 20 }
        })
        .await
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a load task panicked");
    }
    let unavailable = tally.unavailable.lock().unwrap().clone();
    assert_eq!(
        unavailable.len(),
        mark,
        "503 after the recovery: {:?}",
        &unavailable[mark..]
    );
    let violations = tally.violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "violations: {violations:?}");
    assert!(
        tally.codes_redeemed.load(Ordering::Relaxed) > 0
            && tally.refreshes.load(Ordering::Relaxed) > 0,
        "no code or refresh token was ever used"
    );
    let last = |read_only: bool| {
        unavailable
            .iter()
            .filter(|(_, what)| !read_only || *what == "introspect")
            .map(|(at, _)| at.saturating_sub(killed))
            .max()
            .unwrap_or_default()
    };
    Run {
        reads_back: last(true),
        writes_back: last(false),
        recovered: recovered_at - killed,
        unavailable: unavailable.len(),
    }
}

fn runs() -> usize {
    std::env::var("TOKEND_FAILOVER_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Prints the figures of several runs, p50 and max of each: when
/// introspection stopped answering 503, when every operation did, and the
/// time to full recovery, all from the kill.
fn report(topology: &str, runs: &[Run]) {
    let stats = |f: fn(&Run) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(f).collect();
        v.sort();
        format!("p50 {:.2?} max {:.2?}", v[v.len() / 2], v[v.len() - 1])
    };
    eprintln!(
        "failover [{topology}] over {} run(s), from the kill: last 503 of introspection {}; \
         last 503 of any operation {}; full recovery {} (the killed node restarted after {DOWN:?}); \
         503 answers per run {:?}",
        runs.len(),
        stats(|r| r.reads_back),
        stats(|r| r.writes_back),
        stats(|r| r.recovered),
        runs.iter().map(|r| r.unavailable).collect::<Vec<_>>(),
    );
}

fn config_on(url: &str, key: &std::path::Path) -> ConfigBuilder {
    ConfigBuilder::on_store(url)
        .code_flow()
        .signing_key("RS256", key)
        .set("store.timeout_ms", 300)
        .set("store.replica_acks", 1)
        .set("store.replica_ack_timeout_ms", 300)
}

#[tokio::test]
async fn sentinel_failover_under_mixed_load_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let key = key_file(dir.path(), "signing.pem", tokend::token::Algorithm::RS256);
    let mut results = Vec::new();
    for _ in 0..runs() {
        let group = RedisSentinelGroup::start().await;
        let a = TestApp::start(&config_on(&group.url(), &key)).await;
        let b = TestApp::start(&config_on(&group.url(), &key)).await;
        let group = Arc::new(tokio::sync::Mutex::new(group));
        let (g1, g2) = (group.clone(), group.clone());
        let r = run(
            &a,
            &b,
            move || g1.try_lock().unwrap().primary.kill(),
            move || async move { g2.lock().await.primary.restart().await },
        )
        .await;
        results.push(r);
        a.stop().await;
        b.stop().await;
    }
    report("sentinel", &results);
}

#[tokio::test]
async fn cluster_failover_under_mixed_load_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let key = key_file(dir.path(), "signing.pem", tokend::token::Algorithm::RS256);
    let mut results = Vec::new();
    for _ in 0..runs() {
        let cluster = RedisCluster::start_with_replicas().await;
        let victim = cluster.a_primary().await;
        let a = TestApp::start(&config_on(&cluster.url(), &key)).await;
        let b = TestApp::start(&config_on(&cluster.url(), &key)).await;
        let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
        let (c1, c2) = (cluster.clone(), cluster.clone());
        let r = run(
            &a,
            &b,
            move || c1.try_lock().unwrap().nodes[victim].kill(),
            move || async move { c2.lock().await.nodes[victim].restart().await },
        )
        .await;
        results.push(r);
        a.stop().await;
        b.stop().await;
    }
    report("cluster", &results);
}

/// One request through a client-side balancer's eyes: `None` when the
/// replica cannot be reached (the balancer moves on), else the status and body.
async fn call(
    http: &reqwest::Client,
    api: &Api,
    path: &str,
    client_id: &str,
    form: &[(&str, &str)],
) -> Option<(u16, serde_json::Value)> {
    let r = http
        .post(api.url(path))
        .basic_auth(client_id, Some(crate::common::SECRET))
        .form(form)
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    Some((status, body))
}

/// Issue 19, replica loss: three `tokend serve` processes on one Redis and a
/// client spreading requests over them round robin, moving on when a replica
/// does not answer (what a load balancer does). One replica is SIGKILLed
/// mid-load; the other two carry on, and nothing any replica acknowledged is
/// lost: every revocation answered 200 (the killed replica's included) is
/// inactive through the survivors, and every code redeemed stays redeemed.
#[tokio::test]
async fn losing_a_tokend_replica_loses_nothing_it_acknowledged() {
    use crate::common::{RedisServer, TokendProcess};

    let redis = RedisServer::start().await;
    let dir = TempDir::new().unwrap();
    let key = key_file(dir.path(), "signing.pem", tokend::token::Algorithm::RS256);
    let config = ConfigBuilder::on_store(&redis.url())
        .code_flow()
        .signing_key("RS256", &key);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Some(TokendProcess::serve(&config).start().await));
    }
    let apis: Vec<Api> = replicas
        .iter()
        .map(|r| (**r.as_ref().unwrap()).clone())
        .collect();
    let (codes, _) = stock(&apis[0]).await;
    let mut codes = codes.into_iter();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    const VICTIM: usize = 1;
    let (mut revoked, mut redeemed) = (Vec::new(), Vec::new());
    let mut served_after_kill = [0usize; 3];
    let mut killed = false;
    let mut next = 0usize;
    for round in 0..90 {
        if round == 30 {
            replicas[VICTIM].take().unwrap().kill();
            killed = true;
        }
        // The balancer: this round's replica, or the next that answers.
        let mut done = false;
        for hop in 0..3 {
            let i = (next + hop) % 3;
            let api = &apis[i];
            let Some((status, body)) = call(
                &http,
                api,
                "/oauth/token",
                "orders-service",
                &[("grant_type", "client_credentials")],
            )
            .await
            else {
                continue;
            };
            assert_eq!(status, 200, "issue through replica {i}: {body}");
            let token = body["access_token"].as_str().unwrap().to_owned();
            let Some((status, body)) = call(
                &http,
                api,
                "/oauth/revoke",
                "orders-service",
                &[("token", &token)],
            )
            .await
            else {
                continue;
            };
            assert_eq!(status, 200, "revoke through replica {i}: {body}");
            revoked.push((token, i));
            if round % 2 == 0
                && let Some((code, verifier)) = codes.next()
            {
                let form = [
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", WEB_CB),
                    ("code_verifier", verifier.as_str()),
                ];
                if let Some((status, body)) =
                    call(&http, api, "/oauth/token", "web-app", &form).await
                {
                    assert_eq!(status, 200, "redeem through replica {i}: {body}");
                    redeemed.push((code, verifier, i));
                }
            }
            if killed {
                served_after_kill[i] += 1;
            }
            done = true;
            break;
        }
        assert!(done, "no replica answered in round {round}");
        next += 1;
    }
    assert_eq!(served_after_kill[VICTIM], 0);
    assert!(
        served_after_kill[0] > 10 && served_after_kill[2] > 10,
        "the survivors did not carry the load: {served_after_kill:?}"
    );
    assert!(
        revoked.iter().filter(|(_, i)| *i == VICTIM).count() >= 5
            && redeemed.iter().any(|(_, _, i)| *i == VICTIM),
        "the killed replica acknowledged too little to test"
    );
    for survivor in [0, 2] {
        let api = &apis[survivor];
        for (token, by) in &revoked {
            let (status, body) = call(
                &http,
                api,
                "/oauth/introspect",
                "resource-server",
                &[("token", token)],
            )
            .await
            .unwrap();
            assert_eq!(
                (status, &body["active"]),
                (200, &serde_json::Value::Bool(false)),
                "a token revoked through replica {by} answers {body} through {survivor}"
            );
        }
        for (code, verifier, by) in &redeemed {
            let form = [
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", WEB_CB),
                ("code_verifier", verifier.as_str()),
            ];
            let (status, body) = call(&http, api, "/oauth/token", "web-app", &form)
                .await
                .unwrap();
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_grant")),
                "a code redeemed through replica {by} was redeemable again through {survivor}"
            );
        }
    }
}
