//! Issue 15: `tokend.v1.RevocationFeed` over real gRPC, on the memory store
//! and across two replicas on a real Redis: who may watch, snapshot then live
//! events, exact resumption from a cursor, a fresh snapshot for a cursor the
//! log no longer covers, every revocation kind from the replica the watcher
//! is not on, Redis down and back, and the bounds (watcher caps, shared
//! snapshots under a reconnect storm, slow consumers cut off resumably).

use std::time::Duration;

use tokend::pb::revocation_feed_client::RevocationFeedClient;
use tokend::pb::{CredentialChange, EventKind, RevocationEvent, WatchRequest};
use tonic::{Code, Status, Streaming};

use crate::common::config::sha256;
use crate::common::flows::{refresh, s, web_tokens};
use crate::common::grpc::{ADMIN_SECRET, admin_client, error_reason};
use crate::common::{Api, ConfigBuilder, RedisServer, SECRET, TestApp, eventually};

/// The memory config plus a `watcher` client allowed to watch, quick
/// heartbeats, and the admin API.
fn config() -> ConfigBuilder {
    ConfigBuilder::memory()
        .client(watcher_client("watcher"))
        .set("revocation_feed.heartbeat_secs", 1)
        .set("auth_throttle.enabled", false)
        .admin(Some(ADMIN_SECRET))
}

fn watcher_client(id: &str) -> toml::Table {
    let hash = sha256(SECRET);
    toml::toml! {
        client_id = (id)
        secret_hashes = [(hash.as_str())]
        grant_types = ["client_credentials"]
        revocation_feed = true
    }
}

async fn watch_as(
    api: &Api,
    client_id: &str,
    cursor: &str,
) -> Result<Streaming<RevocationEvent>, Status> {
    let mut c = RevocationFeedClient::new(api.grpc_channel().await);
    c.watch(WatchRequest {
        client_id: client_id.into(),
        client_secret: SECRET.into(),
        cursor: cursor.into(),
        ..Default::default()
    })
    .await
    .map(tonic::Response::into_inner)
}

async fn watch(api: &Api, cursor: &str) -> Streaming<RevocationEvent> {
    watch_as(api, "watcher", cursor).await.expect("watch")
}

/// The next message (a generous deadline: a hang fails, not a slow machine).
async fn next(stream: &mut Streaming<RevocationEvent>) -> Result<Option<RevocationEvent>, Status> {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("the feed answered within 20 s")
}

/// The next event that is not a heartbeat.
async fn next_event(stream: &mut Streaming<RevocationEvent>) -> RevocationEvent {
    loop {
        let e = next(stream).await.expect("no error").expect("not ended");
        if e.kind != EventKind::Heartbeat as i32 {
            return e;
        }
    }
}

/// Reads the snapshot: its entries and the cursor that follows it.
async fn snapshot(stream: &mut Streaming<RevocationEvent>) -> (Vec<RevocationEvent>, String) {
    let mut entries = Vec::new();
    loop {
        let e = next_event(stream).await;
        if e.kind == EventKind::SnapshotComplete as i32 {
            assert!(!e.cursor.is_empty() && e.heartbeat_ms == 1000, "{e:?}");
            return (entries, e.cursor);
        }
        assert!(e.snapshot && e.cursor.is_empty(), "{e:?}");
        entries.push(e);
    }
}

fn kind(e: &RevocationEvent) -> EventKind {
    EventKind::try_from(e.kind).unwrap()
}

fn claims_of(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&raw).unwrap()
}

fn jti_of(token: &str) -> String {
    s(&claims_of(token)["jti"])
}

#[tokio::test]
async fn only_permitted_clients_watch() {
    let app = TestApp::start(&config()).await;
    // Wrong secret: UNAUTHENTICATED, invalid_client.
    let mut c = RevocationFeedClient::new(app.grpc_channel().await);
    let e = c
        .watch(WatchRequest {
            client_id: "watcher".into(),
            client_secret: "wrong".into(),
            cursor: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), error_reason(&e)),
        (Code::Unauthenticated, "invalid_client".into())
    );
    // A valid client without `revocation_feed = true`: PERMISSION_DENIED.
    let e = watch_as(&app, "orders-service", "").await.unwrap_err();
    assert_eq!(
        (e.code(), error_reason(&e)),
        (Code::PermissionDenied, "unauthorized_client".into())
    );
    // A garbage or oversized cursor is not an error: it gets a snapshot.
    for cursor in ["garbage", "9-9-9", &"1".repeat(64)] {
        let mut w = watch(&app, cursor).await;
        let (entries, _) = snapshot(&mut w).await;
        assert!(entries.is_empty());
    }
    let e = watch_as(&app, "watcher", &"1".repeat(65))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    app.stop().await;
}

/// Snapshot, then live events each with a cursor, then a resume from a
/// cursor that yields exactly the events after it, and heartbeats while quiet.
#[tokio::test]
async fn snapshot_then_live_then_exact_resume() {
    let app = TestApp::start(&config()).await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let t1 = app.access_token("orders-service").await;
    assert_eq!(app.revoke("orders-service", &t1).await.status(), 200);
    admin.revoke_subject("user-7").await.unwrap();
    admin.disable("partner").await.unwrap();
    admin.revoke_client("basic-only").await.unwrap();
    // Disabled then enabled: no longer in force, not in the snapshot.
    admin.disable("resource-server").await.unwrap();
    admin.enable("resource-server").await.unwrap();

    let mut w = watch(&app, "").await;
    let (mut entries, cursor) = snapshot(&mut w).await;
    entries.sort_by_key(|e| (e.kind, e.client_id.clone()));
    let got: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                kind(e),
                e.jti.clone(),
                e.client_id.clone(),
                e.subject.clone(),
                e.change,
            )
        })
        .collect();
    let cut_off = CredentialChange::CutOff as i32;
    let disabled = CredentialChange::Disabled as i32;
    assert_eq!(
        got,
        [
            (
                EventKind::TokenRevoked,
                jti_of(&t1),
                "orders-service".into(),
                String::new(),
                0
            ),
            (
                EventKind::SessionRevoked,
                String::new(),
                String::new(),
                "user-7".into(),
                0
            ),
            (
                EventKind::CredentialChange,
                String::new(),
                "basic-only".into(),
                String::new(),
                cut_off
            ),
            (
                EventKind::CredentialChange,
                String::new(),
                "partner".into(),
                String::new(),
                disabled
            ),
        ]
    );
    let now_s = tokend::oauth::now_unix_ms() / 1000;
    assert!(entries[0].expires_at > now_s + 3000, "{:?}", entries[0]);
    assert!(entries[1].not_before_ms > 0 && entries[2].not_before_ms > 0);
    assert_eq!(entries[3].expires_at, 0, "a disabled client never expires");

    // Live: each event with its own cursor, in order.
    let t2 = app.access_token("orders-service").await;
    app.revoke("orders-service", &t2).await;
    let live = next_event(&mut w).await;
    assert_eq!(
        (kind(&live), live.jti.clone(), live.snapshot),
        (EventKind::TokenRevoked, jti_of(&t2), false)
    );
    assert!(
        live.cursor > cursor || live.cursor.len() > cursor.len(),
        "{} after {cursor}",
        live.cursor
    );
    // Quiet: heartbeats carry the current position.
    let beat = next(&mut w).await.unwrap().unwrap();
    assert_eq!(
        (kind(&beat), beat.cursor.clone()),
        (EventKind::Heartbeat, live.cursor.clone())
    );
    drop(w);

    // While away: three more events. Resuming gets exactly those, no snapshot.
    let t3 = app.access_token("orders-service").await;
    app.revoke("orders-service", &t3).await;
    admin.enable("partner").await.unwrap();
    admin.revoke_subject("user-8").await.unwrap();
    let mut w = watch(&app, &live.cursor).await;
    let a = next_event(&mut w).await;
    let b = next_event(&mut w).await;
    let c = next_event(&mut w).await;
    assert_eq!(
        [kind(&a), kind(&b), kind(&c)],
        [
            EventKind::TokenRevoked,
            EventKind::CredentialChange,
            EventKind::SessionRevoked
        ]
    );
    assert_eq!(
        (a.jti.as_str(), b.change, c.subject.as_str()),
        (
            jti_of(&t3).as_str(),
            CredentialChange::Enabled as i32,
            "user-8"
        )
    );
    assert!(!a.snapshot && !b.snapshot && !c.snapshot);
    // Nothing more: the next message is a heartbeat at c's cursor.
    let beat = next(&mut w).await.unwrap().unwrap();
    assert_eq!(
        (kind(&beat), beat.cursor),
        (EventKind::Heartbeat, c.cursor.clone())
    );
    // Resuming from the newest cursor: nothing but heartbeats.
    let mut w2 = watch(&app, &c.cursor).await;
    assert_eq!(
        kind(&next(&mut w2).await.unwrap().unwrap()),
        EventKind::Heartbeat
    );
    drop((w, w2));
    app.stop().await;
}

/// A cursor older than the log keeps gets a fresh snapshot instead of a gap.
#[tokio::test]
async fn a_cursor_the_log_no_longer_covers_gets_a_snapshot() {
    let app = TestApp::start(&config().set("revocation_feed.log_max_len", 100)).await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    admin.revoke_subject("first").await.unwrap();
    let mut w = watch(&app, "").await;
    let (_, _) = snapshot(&mut w).await;
    admin.revoke_subject("second").await.unwrap();
    let old = next_event(&mut w).await.cursor;
    drop(w);
    for i in 0..150 {
        admin.revoke_subject(&format!("many-{i}")).await.unwrap();
    }
    let mut w = watch(&app, &old).await;
    let (entries, _) = snapshot(&mut w).await;
    // Everything in force is in it, the old subjects included.
    let subjects: std::collections::HashSet<_> =
        entries.iter().map(|e| e.subject.clone()).collect();
    assert_eq!(subjects.len(), 152);
    assert!(
        subjects.contains("first") && subjects.contains("second") && subjects.contains("many-149")
    );
    app.stop().await;
}

/// Two replicas on one Redis: every kind of revocation made on A reaches a
/// watcher on B, and a refresh-token reuse on A kills the family on B.
#[tokio::test]
async fn revocations_on_one_replica_reach_watchers_of_the_other() {
    let redis = RedisServer::start().await;
    let (_key, a, b) = TestApp::replicas(
        config().store(&redis.url()).code_flow(),
        tokend::token::Algorithm::ES256,
    )
    .await;
    let mut w = watch(&b, "").await;
    let (entries, _) = snapshot(&mut w).await;
    assert!(entries.is_empty());

    let t = a.access_token("orders-service").await;
    assert_eq!(a.revoke("orders-service", &t).await.status(), 200);
    let e = next_event(&mut w).await;
    assert_eq!(
        (kind(&e), e.jti.clone(), e.client_id.clone()),
        (EventKind::TokenRevoked, jti_of(&t), "orders-service".into())
    );

    let mut admin = admin_client(&a, Some(ADMIN_SECRET)).await;
    admin.revoke_client("partner").await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (kind(&e), e.client_id.as_str(), e.change),
        (
            EventKind::CredentialChange,
            "partner",
            CredentialChange::CutOff as i32
        )
    );
    admin.revoke_subject("user-42").await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (kind(&e), e.subject.as_str()),
        (EventKind::SessionRevoked, "user-42")
    );
    admin.disable("partner").await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        (e.client_id.as_str(), e.change),
        ("partner", CredentialChange::Disabled as i32)
    );

    // Refresh-token reuse: the family (the access token's `sid`) is revoked.
    let tokens = web_tokens(&a, "profile").await;
    let sid = s(&claims_of(&s(&tokens["access_token"]))["sid"]);
    let first = s(&tokens["refresh_token"]);
    assert_eq!(refresh(&a, &first, &[]).await.status(), 200);
    assert_eq!(refresh(&a, &first, &[]).await.status(), 400, "reuse");
    let e = next_event(&mut w).await;
    assert_eq!(
        (kind(&e), e.sid.as_str()),
        (EventKind::FamilyRevoked, sid.as_str())
    );
    drop(w);
    a.stop().await;
    b.stop().await;
}

/// Redis stops answering: the stream ends UNAVAILABLE and new watches are
/// refused; when it is back, a watcher resumes from its cursor and gets
/// exactly what happened since.
#[tokio::test]
async fn redis_down_ends_the_stream_and_cursors_resume_after() {
    let redis = RedisServer::start().await;
    let app = TestApp::start(&config().store(&redis.url()).set("store.timeout_ms", 300)).await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    let mut w = watch(&app, "").await;
    snapshot(&mut w).await;
    admin.revoke_subject("before").await.unwrap();
    let cursor = next_event(&mut w).await.cursor;
    let pid = redis.pid();
    signal(pid, "-STOP");
    let end = loop {
        match next(&mut w).await {
            Ok(Some(e)) => assert_eq!(kind(&e), EventKind::Heartbeat),
            Ok(None) => panic!("the stream ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(
        (end.code(), error_reason(&end)),
        (Code::Unavailable, "temporarily_unavailable".into())
    );
    let refused = watch_as(&app, "watcher", &cursor).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    signal(pid, "-CONT");
    admin.revoke_subject("after").await.unwrap();
    // Retried until the replica has read the log again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut w = loop {
        match watch_as(&app, "watcher", &cursor).await {
            Ok(w) => break w,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.code(), Code::Unavailable);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let e = next_event(&mut w).await;
    assert_eq!(
        (kind(&e), e.subject.as_str(), e.snapshot),
        (EventKind::SessionRevoked, "after", false)
    );
    drop(w);
    app.stop().await;
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Watchers are capped per client and in total; a slot frees when a watcher
/// leaves.
#[tokio::test]
async fn watchers_are_capped() {
    let app = TestApp::start(
        &config()
            .set("revocation_feed.max_watchers_per_client", 2)
            .set("revocation_feed.max_watchers", 3)
            .client(watcher_client("watcher-2")),
    )
    .await;
    let w1 = watch(&app, "").await;
    let w2 = watch(&app, "").await;
    let e = watch_as(&app, "watcher", "").await.unwrap_err();
    assert_eq!(
        (e.code(), error_reason(&e)),
        (Code::ResourceExhausted, "too_many_watchers".into())
    );
    let w3 = watch_as(&app, "watcher-2", "").await.unwrap();
    let e = watch_as(&app, "watcher-2", "").await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "the total cap");
    drop(w1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            watch_as(&app, "watcher", "").await.is_ok()
        })
        .await,
        "a slot frees when a watcher leaves"
    );
    drop((w2, w3));
    app.stop().await;
}

/// A reconnect storm: many watchers asking for a snapshot at once share a
/// few builds instead of one store read each.
#[tokio::test]
async fn a_reconnect_storm_shares_snapshots() {
    let redis = RedisServer::start().await;
    let app = TestApp::start(
        &config()
            .store(&redis.url())
            .set("revocation_feed.max_watchers_per_client", 100)
            .set("revocation_feed.snapshot_max_age_ms", 5000),
    )
    .await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    for i in 0..20 {
        admin.revoke_subject(&format!("s{i}")).await.unwrap();
    }
    // Snapshot builds, counted where they cost: state reads on this Redis.
    let built = || async {
        let mut c = redis.connection().await;
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_hscan:calls="))
            .and_then(|l| l.split(',').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = built().await;
    let watchers = futures::future::join_all((0..50).map(|_| watch(&app, ""))).await;
    let mut total = 0;
    for mut w in watchers {
        let (entries, _) = snapshot(&mut w).await;
        assert_eq!(entries.len(), 20);
        total += 1;
    }
    assert_eq!(total, 50);
    let builds = built().await - before;
    assert!(
        (1.0..=2.0).contains(&builds),
        "{builds} snapshot reads for 50 watchers"
    );
    app.stop().await;
}

/// A watcher that stops reading is cut off (ABORTED, resumable) instead of
/// having events buffered for it without limit; others are unaffected.
#[tokio::test]
async fn a_slow_consumer_is_cut_off_resumably() {
    let app = TestApp::start(
        &config()
            .set("revocation_feed.log_max_len", 100)
            .set("revocation_feed.send_timeout_secs", 1),
    )
    .await;
    let mut admin = admin_client(&app, Some(ADMIN_SECRET)).await;
    // A client with HTTP/2's smallest windows, so the server feels it stop.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.grpc))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut slow = RevocationFeedClient::new(channel)
        .watch(WatchRequest {
            client_id: "watcher".into(),
            client_secret: SECRET.into(),
            cursor: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (_, cursor) = snapshot(&mut slow).await;
    let mut fine = watch(&app, &cursor).await;
    // Far more than the ring, the channel and the HTTP/2 window hold.
    let long = "x".repeat(900);
    for i in 0..1500 {
        admin.revoke_subject(&format!("{long}-{i}")).await.unwrap();
        if i % 50 == 0 {
            // The other watcher keeps up.
            while let Ok(Ok(Some(_))) =
                tokio::time::timeout(Duration::from_millis(1), fine.message()).await
            {}
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The slow one: what was in flight, then ABORTED (slow_consumer).
    let mut last = cursor.clone();
    let end = loop {
        match next(&mut slow).await {
            Ok(Some(e)) => {
                if !e.cursor.is_empty() {
                    last = e.cursor;
                }
            }
            Ok(None) => panic!("ended without a status"),
            Err(s) => break s,
        }
    };
    assert_eq!(
        (end.code(), error_reason(&end)),
        (Code::Aborted, "slow_consumer".into())
    );
    assert_ne!(last, cursor, "it got some events first");
    // Its cursor is usable: a snapshot (too old for the ring) with everything.
    let mut again = watch(&app, &last).await;
    let (entries, _) = snapshot(&mut again).await;
    assert_eq!(entries.len(), 1500);
    app.stop().await;
}

/// A key rotation (reload) is announced to watchers, so verifiers refetch
/// the JWKS at once instead of on their next unknown `kid`.
#[tokio::test]
async fn a_key_rotation_is_announced() {
    use crate::common::TokendProcess;
    use crate::common::config::key_file;
    use tokend::token::Algorithm;
    let dir = tempfile::TempDir::new().unwrap();
    let old = key_file(dir.path(), "old.pem", Algorithm::ES256);
    let new = key_file(dir.path(), "new.pem", Algorithm::ES256);
    let before = config().signing_key("ES256", &old);
    let tokend = TokendProcess::serve(&before).start().await;
    let mut w = watch(&tokend, "").await;
    snapshot(&mut w).await;
    before
        .clone()
        .signing_key("ES256", &new)
        .set("signing.previous_key_files", vec![old.to_str().unwrap()])
        .write(tokend.config_path());
    tokend.sighup();
    let e = next_event(&mut w).await;
    assert_eq!(
        (kind(&e), e.snapshot),
        (EventKind::KeysChanged, false),
        "{e:?}"
    );
    assert!(!e.cursor.is_empty());
}
