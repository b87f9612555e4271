//! Issue 14, item 1: secret guessing under concurrency, over real sockets.
//! Wrong secrets are counted atomically and checked one at a time per
//! address on each replica, so a burst of guesses cannot outrun the
//! threshold; the argon2 work of wrong
//! secrets is bounded, so a flood of them cannot take the process's memory;
//! unknown client ids cost no store keys of their own; and a success from a
//! shared address gives a guesser there no standing.

use std::collections::HashMap;

use crate::common::http::{client_from, metrics_text, sample, token_from};
use crate::common::{ConfigBuilder, RedisServer, SECRET, TestApp, TokendProcess};

/// Sends `n` concurrent token requests with a wrong secret for `partner` from
/// one address; returns how many got each status.
async fn concurrent_guesses(app: &TestApp, n: usize) -> HashMap<u16, usize> {
    let attacker = client_from("127.0.0.9");
    let answers = futures::future::join_all((0..n).map(|i| {
        token_from(
            app,
            &attacker,
            "partner",
            if i % 2 == 0 { "g1" } else { "g2" },
        )
    }))
    .await;
    let mut by_status = HashMap::new();
    for r in answers {
        *by_status.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    by_status
}

/// At most `threshold` wrong secrets are checked, plus one per replica
/// racing another (`replicas - 1`); the rest are refused without a check.
fn assert_held(by_status: &HashMap<u16, usize>, n: usize, replicas: usize) {
    let checked = by_status.get(&401).copied().unwrap_or(0);
    let refused = by_status.get(&429).copied().unwrap_or(0);
    assert!((10..10 + replicas).contains(&checked), "{by_status:?}");
    assert_eq!(checked + refused, n, "{by_status:?}");
}

fn throttled(config: ConfigBuilder) -> ConfigBuilder {
    config
        .set("auth_throttle.threshold", 10)
        .set("auth_throttle.base_secs", 60)
        .set("auth_throttle.max_secs", 60)
}

#[tokio::test]
async fn concurrent_guesses_hold_the_threshold_in_memory() {
    let app = TestApp::start(&throttled(ConfigBuilder::memory())).await;
    assert_held(&concurrent_guesses(&app, 120).await, 120, 1);
}

#[tokio::test]
async fn concurrent_guesses_hold_the_threshold_across_replicas_on_redis() {
    let redis = RedisServer::start().await;
    let config = throttled(ConfigBuilder::on_store(&redis.url()));
    let a = TestApp::start(&config).await;
    let b = TestApp::start(&config).await;
    let attacker = client_from("127.0.0.9");
    let answers = futures::future::join_all((0..120).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        token_from(app, &attacker, "partner", "guess")
    }))
    .await;
    let mut by_status = HashMap::new();
    for r in answers {
        *by_status.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    assert_held(&by_status, 120, 2);
    // The right secret from that address waits out the back-off too.
    let r = token_from(&b, &attacker, "partner", SECRET).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn a_success_behind_a_shared_address_gives_a_guesser_no_standing() {
    // A partner and an attacker behind one NAT address: the partner's
    // successes must not switch the defence off for the attacker.
    let app =
        TestApp::start(&throttled(ConfigBuilder::memory()).set("auth_throttle.threshold", 3)).await;
    let nat = client_from("127.0.0.10");
    assert_eq!(
        token_from(&app, &nat, "partner", SECRET).await.status(),
        200
    );
    let mut checked = 0;
    for i in 0..20 {
        // The partner keeps succeeding in between (while it may).
        let _ = token_from(&app, &nat, "partner", SECRET).await;
        let r = token_from(&app, &nat, "partner", &format!("guess-{i}")).await;
        match r.status().as_u16() {
            401 => checked += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert!(checked <= 4, "{checked} guesses were checked");
}

#[tokio::test]
async fn unknown_client_ids_cost_no_store_keys_of_their_own() {
    let redis = RedisServer::start().await;
    let app =
        TestApp::start(&ConfigBuilder::on_store(&redis.url()).set("auth_throttle.threshold", 1000))
            .await;
    let before = redis.dbsize().await;
    for i in 0..200 {
        let peer = client_from("127.0.0.11");
        let r = token_from(&app, &peer, &format!("no-such-client-{i}"), "x").await;
        assert_eq!(r.status(), 401);
    }
    let after = redis.dbsize().await;
    assert!(
        after - before <= 2,
        "200 unknown ids made {} keys",
        after - before
    );
}

#[tokio::test]
async fn wrong_argon2_secrets_cannot_take_the_memory() {
    let hash = tokend::oauth::client::argon2_hash("the right horse").unwrap();
    let config = ConfigBuilder::memory()
        .set("auth_throttle.enabled", false)
        .client(toml::toml! {
            client_id = "human"
            secret_hashes = [(hash.as_str())]
            grant_types = ["client_credentials"]
        });
    let tokend = TokendProcess::serve(&config).start().await;
    let base = tokend.peak_rss_kib();
    let client = reqwest::Client::new();
    let answers = futures::future::join_all((0..60).map(|i| {
        client
            .post(tokend.url("/oauth/token"))
            .basic_auth("human", Some(format!("wrong-{i}")))
            .form(&[("grant_type", "client_credentials")])
            .send()
    }))
    .await;
    let mut overloaded = 0;
    for r in answers {
        let r = r.unwrap();
        match r.status().as_u16() {
            401 => {}
            503 => {
                assert_eq!(r.headers()["retry-after"], "1");
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "temporarily_unavailable");
                overloaded += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    let peak = tokend.peak_rss_kib();
    // 60 concurrent argon2 runs took 1.1 GiB before the bound.
    assert!(
        peak - base < 150 * 1024,
        "peak RSS grew from {base} KiB to {peak} KiB"
    );
    eprintln!("{overloaded} of 60 were told to retry; peak RSS {base} -> {peak} KiB");
    if overloaded > 0 {
        let m = metrics_text(tokend.url("/metrics")).await;
        assert_eq!(
            sample(&m, "tokend_argon2_overloaded_total", &[]),
            Some(overloaded as f64),
            "{m}"
        );
    }
    // The right secret still works afterwards.
    let r = client
        .post(tokend.url("/oauth/token"))
        .basic_auth("human", Some("the right horse"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
