//! Faults with real components (issue 8, "Faults and load"): a `redis-server`
//! SIGKILLed under sustained issuance and introspection and restarted, and a
//! `tokend serve` process SIGKILLed and restarted while Redis holds its state.
//! No mocks: real processes, real loopback sockets, both transports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tempfile::TempDir;

use crate::common::config::key_file;
use crate::common::flows::{redeem, refresh, s, web_code, web_tokens};
use crate::common::grpc::{ADMIN_SECRET, admin_client};
use crate::common::http::error_of;
use crate::common::load::{Answer, BOTH, Target, Transport};
use crate::common::wait::next_ms;
use crate::common::{ConfigBuilder, RedisServer, TokendProcess, eventually};

/// Generous deadline for readiness to follow Redis on a loaded 2-core machine
/// (the 2 s budget itself is tested in `redis_store`).
const RECOVERY: Duration = Duration::from_secs(30);
/// The least time Redis stays down in the outage test.
const OUTAGE_MIN: Duration = Duration::from_millis(1500);

/// The standard clients on `redis_url` with an RS256 key shared by the
/// processes (`dir/signing.pem`, made on first use).
fn config_on(redis_url: &str, dir: &std::path::Path) -> ConfigBuilder {
    let key = dir.join("signing.pem");
    if !key.exists() {
        key_file(dir, "signing.pem", tokend::token::Algorithm::RS256);
    }
    ConfigBuilder::on_store(redis_url).signing_key("RS256", &key)
}

// Phases of the outage test. A request may answer `temporarily_unavailable`
// only if the outage window (from just before the kill until readiness is
// seen again after the restart) overlaps it.
const BEFORE: u8 = 0;
/// From just before the kill until just before the restart.
const OUTAGE: u8 = 1;
/// From just before the restart until readiness is seen again.
const RECOVERING: u8 = 2;
const AFTER: u8 = 3;

#[derive(Default)]
struct Tally {
    /// Completed loop iterations per phase.
    rounds: [AtomicU64; 4],
    /// Successful issuances per phase and transport (index: phase * 2 + transport).
    issued: [AtomicU64; 8],
    /// `temporarily_unavailable` answers per transport.
    unavailable: [AtomicU64; 2],
    /// `active: true` for a live token, per phase.
    live_active: [AtomicU64; 4],
    /// Inactive answers for a revoked token, per phase.
    revoked_inactive: [AtomicU64; 4],
    violations: Mutex<Vec<String>>,
}

impl Tally {
    fn violation(&self, what: String) {
        let mut v = self.violations.lock();
        if v.len() < 50 {
            v.push(what);
        }
    }
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
}

fn tidx(via: Transport) -> usize {
    match via {
        Transport::Http => 0,
        Transport::Grpc => 1,
    }
}

/// One load task: issue a token over `via`, then introspect a revoked token, a
/// live token made before the outage and the fresh one, until `stop`.
async fn load_task(
    target: Target,
    via: Transport,
    revoked: Arc<Vec<String>>,
    live: Arc<Vec<String>>,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let start = phase.load(Ordering::SeqCst);
        let fresh = match target.issue(via, "orders-service").await {
            Ok(t) => {
                let now = phase.load(Ordering::SeqCst);
                tally.issued[usize::from(now) * 2 + tidx(via)].fetch_add(1, Ordering::Relaxed);
                Some(t)
            }
            Err(e) => {
                tally.violation(format!("issuance failed (phase {start}): {e}"));
                None
            }
        };
        let checks = [
            (revoked[i % revoked.len()].as_str(), true),
            (live[i % live.len()].as_str(), false),
        ]
        .into_iter()
        .chain(fresh.as_deref().map(|t| (t, false)));
        for (token, is_revoked) in checks {
            let start = phase.load(Ordering::SeqCst);
            let answer = target.introspect(via, token).await;
            let end = phase.load(Ordering::SeqCst);
            let during_outage = [start, end]
                .iter()
                .any(|p| *p == OUTAGE || *p == RECOVERING);
            match (answer, is_revoked) {
                (Answer::Active, true) => tally.violation(format!(
                    "REVOKED TOKEN ACTIVE over {via:?} (phase {start}->{end})"
                )),
                (Answer::Inactive, true) => {
                    tally.revoked_inactive[usize::from(end)].fetch_add(1, Ordering::Relaxed);
                }
                (Answer::Active, false) => {
                    tally.live_active[usize::from(end)].fetch_add(1, Ordering::Relaxed);
                }
                (Answer::Inactive, false) => tally.violation(format!(
                    "live token inactive over {via:?} (phase {start}->{end})"
                )),
                (Answer::Unavailable, _) if during_outage => {
                    tally.unavailable[tidx(via)].fetch_add(1, Ordering::Relaxed);
                }
                (Answer::Unavailable, _) => tally.violation(format!(
                    "temporarily_unavailable outside the outage over {via:?} (phase {start}->{end})"
                )),
                (Answer::Other(e), _) => {
                    tally.violation(format!("unexpected answer (phase {start}->{end}): {e}"))
                }
            }
        }
        tally.rounds[usize::from(phase.load(Ordering::SeqCst))].fetch_add(1, Ordering::Relaxed);
        i += 1;
        // Pacing, not waiting for anything: a gap between rounds keeps the
        // load sustained rather than flat out (the machine is shared).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Redis SIGKILLed while four tasks issue and introspect over both
/// transports, then restarted on the same port and directory. The Redis keeps
/// an fsync-always append-only file: that is what makes "no revocation made
/// before the outage is lost" possible at all (see the control test below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_no_revocation_and_recovers() {
    let dir = TempDir::new().unwrap();
    let mut redis = RedisServer::start_persistent().await;
    let mut tokend = TokendProcess::serve(&config_on(&redis.url(), dir.path()))
        .env("TOKEND_STORE_TIMEOUT_MS", "200")
        .start()
        .await;
    let pid = tokend.pid();
    let target = Target::new(&tokend).await;

    // Before the outage: revocations over both transports, and live tokens.
    let (mut revoked, mut live) = (Vec::new(), Vec::new());
    for (n, via) in BOTH.into_iter().cycle().take(8).enumerate() {
        let t = target.issue(via, "orders-service").await.unwrap();
        if n % 2 == 0 {
            target.revoke(via, "orders-service", &t).await.unwrap();
            revoked.push(t);
        } else {
            live.push(t);
        }
    }
    // Control: the answers discriminate before anything breaks.
    for via in BOTH {
        for t in &revoked {
            assert_eq!(target.introspect(via, t).await, Answer::Inactive);
        }
        for t in &live {
            assert_eq!(target.introspect(via, t).await, Answer::Active);
        }
    }

    let (revoked, live) = (Arc::new(revoked), Arc::new(live));
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = [
        Transport::Http,
        Transport::Grpc,
        Transport::Http,
        Transport::Grpc,
    ]
    .into_iter()
    .map(|via| {
        tokio::spawn(load_task(
            target.clone(),
            via,
            revoked.clone(),
            live.clone(),
            phase.clone(),
            stop.clone(),
            tally.clone(),
        ))
    })
    .collect();
    let t = tally.clone();
    assert!(
        eventually(RECOVERY, || {
            let t = t.clone();
            async move { Tally::get(&t.rounds[BEFORE as usize]) >= 20 }
        })
        .await,
        "the load loop did not get going"
    );

    // The outage, mid-loop.
    phase.store(OUTAGE, Ordering::SeqCst);
    redis.kill();
    let killed_at = std::time::Instant::now();
    assert!(
        eventually(RECOVERY, || tokend.is_not_ready()).await,
        "/readyz and gRPC health did not report the Redis outage"
    );
    // Load keeps running through the outage: both transports must have seen
    // fail-closed answers, and issuance must have gone on over both.
    let t = tally.clone();
    assert!(
        eventually(RECOVERY, || {
            let t = t.clone();
            async move {
                t.unavailable.iter().all(|u| Tally::get(u) >= 5)
                    && (0..2).all(|tr| Tally::get(&t.issued[OUTAGE as usize * 2 + tr]) >= 5)
            }
        })
        .await,
        "during the outage: unavailable {:?}, issued {:?}, violations {:?}",
        tally.unavailable,
        tally.issued,
        tally.violations.lock()
    );

    // A sustained outage: at least this long, whatever the polling above
    // took. The sleep is the behaviour under test (an outage that lasts).
    tokio::time::sleep(OUTAGE_MIN.saturating_sub(killed_at.elapsed())).await;
    assert!(tokend.is_not_ready().await, "still down at restart time");
    phase.store(RECOVERING, Ordering::SeqCst);
    redis.restart().await;
    assert!(
        eventually(RECOVERY, || tokend.is_ready()).await,
        "/readyz and gRPC health did not recover after Redis came back"
    );
    phase.store(AFTER, Ordering::SeqCst);
    let t = tally.clone();
    assert!(
        eventually(RECOVERY, || {
            let t = t.clone();
            async move {
                Tally::get(&t.live_active[AFTER as usize]) >= 20
                    && Tally::get(&t.revoked_inactive[AFTER as usize]) >= 10
            }
        })
        .await,
        "the load loop did not recover after the restart"
    );
    stop.store(true, Ordering::Relaxed);
    for result in futures::future::join_all(tasks).await {
        result.expect("load task panicked");
    }

    eprintln!(
        "outage test: rounds {:?}, issued {:?}, unavailable {:?}, live active {:?}, revoked inactive {:?}",
        tally.rounds, tally.issued, tally.unavailable, tally.live_active, tally.revoked_inactive
    );
    let violations = tally.violations.lock().clone();
    assert!(violations.is_empty(), "violations: {violations:#?}");
    // Every revocation made before the outage holds, live tokens are active,
    // on both transports, with Redis answering again (no 503 now).
    for via in BOTH {
        for t in revoked.iter() {
            assert_eq!(target.introspect(via, t).await, Answer::Inactive);
        }
        for t in live.iter() {
            assert_eq!(target.introspect(via, t).await, Answer::Active);
        }
    }
    // tokend rode it out: same process, never restarted, no panic.
    assert!(tokend.is_running(), "tokend exited");
    assert_eq!(tokend.pid(), pid);
    let log = tokend.log();
    assert!(!log.contains("panicked"), "tokend panicked:\n{log}");
}

/// Control for the test above: with a Redis that restarts empty (no
/// persistence), a revocation made before the outage is lost, so the "still
/// holds" assertion there depends on persistence and can fail. This is the
/// documented requirement, not a tokend bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_redis_without_persistence_forgets_revocations() {
    let dir = TempDir::new().unwrap();
    let mut redis = RedisServer::start().await;
    let tokend = TokendProcess::serve(&config_on(&redis.url(), dir.path()))
        .start()
        .await;
    let target = Target::new(&tokend).await;
    let t = target
        .issue(Transport::Http, "orders-service")
        .await
        .unwrap();
    target
        .revoke(Transport::Http, "orders-service", &t)
        .await
        .unwrap();
    assert_eq!(
        target.introspect(Transport::Http, &t).await,
        Answer::Inactive
    );
    redis.restart().await;
    // The first requests after the restart may still find the old connection
    // broken (503); wait for a real answer.
    let answered = eventually(RECOVERY, || {
        let (target, t) = (target.clone(), t.clone());
        async move { target.introspect(Transport::Http, &t).await != Answer::Unavailable }
    })
    .await;
    assert!(answered && tokend.is_ready().await);
    assert_eq!(
        target.introspect(Transport::Http, &t).await,
        Answer::Active,
        "an empty Redis cannot remember the revocation"
    );
}

/// A `tokend serve` process on `redis_url` with the shared key, the
/// authorization-code clients and the admin API.
async fn start_with_admin(dir: &std::path::Path, redis_url: &str) -> TokendProcess {
    let config = config_on(redis_url, dir)
        .code_flow()
        .admin(Some(ADMIN_SECRET));
    TokendProcess::serve(&config).start().await
}

/// tokend SIGKILLed while Redis holds its state; a new process on the same
/// Redis (and key file) carries on: revocations (single and bulk), an
/// unredeemed authorization code and a live refresh-token family all survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokend_killed_and_restarted_keeps_revocations_codes_and_refresh_families() {
    let dir = TempDir::new().unwrap();
    let redis = RedisServer::start().await;
    let first = start_with_admin(dir.path(), &redis.url()).await;
    let a = Target::new(&first).await;

    // A revoked access token (and a live one as the control).
    let revoked = a.issue(Transport::Grpc, "orders-service").await.unwrap();
    let kept = a.issue(Transport::Http, "orders-service").await.unwrap();
    a.revoke(Transport::Grpc, "orders-service", &revoked)
        .await
        .unwrap();
    // A bulk revocation: every token of subject `partner` issued before now.
    let partner_old = a.issue(Transport::Http, "partner").await.unwrap();
    next_ms().await; // distinct ms instants
    admin_client(&first, Some(ADMIN_SECRET))
        .await
        .revoke_subject("partner")
        .await
        .unwrap();
    next_ms().await;
    // An authorization code, issued through /oauth/authorize and the login
    // app's AcceptAuthorization over gRPC, not redeemed.
    let (code, verifier) = web_code(&first, "profile orders:read").await;
    // A refresh-token family, live.
    let grant = web_tokens(&first, "profile").await;
    let (rt0, grant_at) = (s(&grant["refresh_token"]), s(&grant["access_token"]));
    for via in BOTH {
        assert_eq!(a.introspect(via, &revoked).await, Answer::Inactive);
        assert_eq!(a.introspect(via, &partner_old).await, Answer::Inactive);
        assert_eq!(a.introspect(via, &kept).await, Answer::Active);
        assert_eq!(a.introspect(via, &grant_at).await, Answer::Active);
        assert_eq!(a.introspect_as(via, "web-app", &rt0).await, Answer::Active);
    }

    // SIGKILL: no graceful shutdown, nothing flushed by tokend.
    first.kill();
    let second = start_with_admin(dir.path(), &redis.url()).await;
    let b = Target::new(&second).await;
    for via in BOTH {
        assert_eq!(
            b.introspect(via, &revoked).await,
            Answer::Inactive,
            "{via:?}"
        );
        assert_eq!(
            b.introspect(via, &partner_old).await,
            Answer::Inactive,
            "{via:?}"
        );
        // Controls: same key, so "inactive" above means "revoked".
        assert_eq!(b.introspect(via, &kept).await, Answer::Active, "{via:?}");
        assert_eq!(
            b.introspect(via, &grant_at).await,
            Answer::Active,
            "{via:?}"
        );
    }
    let partner_new = b.issue(Transport::Grpc, "partner").await.unwrap();
    assert_eq!(
        b.introspect(Transport::Http, &partner_new).await,
        Answer::Active
    );

    // The code is redeemable, exactly once.
    let r = redeem(&second, &code, &verifier).await;
    assert_eq!(r.status(), 200, "the code did not survive the restart");
    let redeemed: Value = r.json().await.unwrap();
    assert_eq!(
        b.introspect(Transport::Grpc, &s(&redeemed["access_token"]))
            .await,
        Answer::Active
    );
    assert_eq!(
        error_of(redeem(&second, &code, &verifier).await).await,
        (400, "invalid_grant".into())
    );

    // The refresh family rotates, and the rotated token is detected as reuse.
    let r = refresh(&second, &rt0, &[]).await;
    assert_eq!(
        r.status(),
        200,
        "the refresh token did not survive the restart"
    );
    let rotated: Value = r.json().await.unwrap();
    let (rt1, at1) = (s(&rotated["refresh_token"]), s(&rotated["access_token"]));
    assert_eq!(b.introspect(Transport::Http, &at1).await, Answer::Active);
    assert_eq!(
        error_of(refresh(&second, &rt0, &[]).await).await,
        (400, "invalid_grant".into())
    );
    for via in BOTH {
        // Reuse revoked the whole family.
        assert_eq!(
            b.introspect_as(via, "web-app", &rt1).await,
            Answer::Inactive,
            "{via:?}"
        );
        assert_eq!(b.introspect(via, &at1).await, Answer::Inactive, "{via:?}");
        assert_eq!(
            b.introspect(via, &grant_at).await,
            Answer::Inactive,
            "{via:?}"
        );
    }
    let log = second.log();
    assert!(!log.contains("panicked"), "tokend panicked:\n{log}");
}
