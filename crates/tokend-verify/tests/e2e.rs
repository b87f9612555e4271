//! End to end with a real tokend in-process: its JWKS, its tokens, its
//! RevocationFeed. A token revoked at tokend's /oauth/revoke is refused by
//! the verifier (polled with a generous deadline: a bound, not a timing
//! assertion), and with tokend
//! stopped the fail-closed verifier refuses everything.

mod common;

use std::time::Duration;

use common::*;
use tokend_token::keys::Algorithm;
use tokend_verify::{FeedConfig, RejectReason, Verifier, VerifierConfig};

async fn verifier(tokend: &Tokend, max_staleness: Duration) -> Verifier {
    let mut feed =
        FeedConfig::new(&tokend.grpc, WATCHER, WATCHER_SECRET).max_staleness(max_staleness);
    feed.backoff_initial = Duration::from_millis(20);
    feed.backoff_max = Duration::from_millis(200);
    let v = Verifier::start(VerifierConfig::new(ISSUER, tokend.jwks_url(), AUDIENCE).feed(feed))
        .await
        .unwrap();
    eventually("the feed's snapshot", || async {
        v.is_ready().then_some(())
    })
    .await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_at_tokend_reaches_the_verifier() {
    let tokend = Tokend::start(Algorithm::ES256).await;
    // Revoked before the verifier starts: it arrives in the snapshot.
    let early = tokend.token("orders:read", AUDIENCE).await;
    tokend.revoke(&early).await;
    let v = verifier(&tokend, Duration::from_secs(30)).await;
    assert_eq!(
        v.verify(&early).await.unwrap_err().reason(),
        RejectReason::Revoked
    );

    // Revoked while it watches: a live event.
    let token = tokend.token("orders:read", AUDIENCE).await;
    let other = tokend.token("orders:read", AUDIENCE).await;
    v.verify(&token).await.unwrap();
    tokend.revoke(&token).await;
    assert!(!tokend.introspect_active(&token).await);
    until(&v, &token, Err(RejectReason::Revoked)).await;
    v.verify(&other)
        .await
        .expect("only the revoked token is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokend_stopped_a_fail_closed_verifier_refuses_everything() {
    let mut tokend = Tokend::start(Algorithm::EdDSA).await;
    let token = tokend.token("orders:read", AUDIENCE).await;
    let v = verifier(&tokend, Duration::from_millis(1500)).await;
    v.verify(&token).await.unwrap();
    tokend.stop().await;
    until(&v, &token, Err(RejectReason::FeedUnavailable)).await;
    assert!(!v.is_ready());
    assert!(!v.feed_status().unwrap().connected);
}
