//! The Verifier against a real tokend (its JWKS, its tokens) and against a
//! JWKS server the test controls: strict verification, forgeries, key
//! rotation, rate-limited refetches and failed fetches.

mod common;

use std::time::Duration;

use aws_lc_rs::hmac;
use common::*;
use serde_json::json;
use tokend_token::keys::{Algorithm, SigningKey};
use tokend_verify::{RejectReason, Verifier, VerifierConfig};

async fn verifier_for(
    jwks_url: &str,
    f: impl FnOnce(VerifierConfig) -> VerifierConfig,
) -> Verifier {
    Verifier::start(f(VerifierConfig::new(ISSUER, jwks_url, AUDIENCE)))
        .await
        .unwrap()
}

async fn reason(v: &Verifier, token: &str) -> RejectReason {
    v.verify(token).await.unwrap_err().reason()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_a_real_tokend_verify_and_forgeries_do_not() {
    for alg in Algorithm::ALL {
        let tokend = Tokend::start_with(alg, false).await;
        let v = verifier_for(&tokend.jwks_url(), |c| c).await;
        let token = tokend.token("orders:read", AUDIENCE).await;
        let t = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(t.client_id, CLIENT);
        assert!(t.has_scope("orders:read") && !t.has_scope("orders:write"));
        // Cached: the same answer again.
        assert_eq!(v.verify(&token).await.unwrap(), t);

        let jwks = tokend.jwks().await;
        let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
        let claims = tokend_token::jwt::verify_signature_with(
            &tokend_token::JwkSet::from_json(jwks.to_string().as_bytes()).unwrap(),
            &token,
        )
        .unwrap();

        // alg none, with tokend's kid and no signature.
        let none = forge(
            json!({"alg": "none", "kid": kid, "typ": "at+jwt"}),
            &claims,
            |_| vec![],
        );
        assert_eq!(
            reason(&v, &none).await,
            RejectReason::WrongAlgorithm,
            "{alg}"
        );
        // HS256 keyed with the public key (the JWK, and its bytes as served).
        for secret in [jwks["keys"][0].to_string(), jwks.to_string()] {
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let hs = forge(
                json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"}),
                &claims,
                |m| hmac::sign(&key, m).as_ref().to_vec(),
            );
            assert_eq!(reason(&v, &hs).await, RejectReason::WrongAlgorithm, "{alg}");
        }
        // Another key of the same algorithm claiming tokend's kid.
        let other = SigningKey::generate(alg).unwrap();
        let wrong_key = forge(
            json!({"alg": alg.as_str(), "kid": kid, "typ": "at+jwt"}),
            &claims,
            |m| other.sign(m).unwrap(),
        );
        assert_eq!(
            reason(&v, &wrong_key).await,
            RejectReason::BadSignature,
            "{alg}"
        );
        // A token for another audience.
        let billing = tokend.token("orders:read", "billing-api").await;
        assert_eq!(
            reason(&v, &billing).await,
            RejectReason::WrongAudience,
            "{alg}"
        );
        // A verifier for another issuer.
        let elsewhere = Verifier::start(VerifierConfig::new(
            "https://other",
            tokend.jwks_url(),
            AUDIENCE,
        ))
        .await
        .unwrap();
        assert_eq!(
            reason(&elsewhere, &token).await,
            RejectReason::WrongIssuer,
            "{alg}"
        );
        // Garbage.
        for junk in ["", "a.b.c", "..", &token[..token.len() - 3]] {
            assert!(v.verify(junk).await.is_err(), "{junk}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_checked_strictly() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(&[&key]).await;
    let v = verifier_for(&jwks.url, |c| c.leeway(Duration::from_secs(5))).await;
    assert!(v.verify(&mint(&key, &claims())).await.is_ok());

    // typ JWT (or none) instead of at+jwt.
    for typ in [Some("JWT"), None] {
        let mut header = json!({"alg": "ES256", "kid": key.kid()});
        if let Some(t) = typ {
            header["typ"] = t.into();
        }
        let t = forge(header, &claims(), |m| key.sign(m).unwrap());
        assert_eq!(reason(&v, &t).await, RejectReason::WrongType, "{typ:?}");
    }
    let with = |f: &dyn Fn(&mut tokend_token::AccessClaims)| {
        let mut c = claims();
        f(&mut c);
        mint(&key, &c)
    };
    let now = now();
    type Edit<'a> = &'a dyn Fn(&mut tokend_token::AccessClaims);
    let cases: [(&str, Edit, RejectReason); 6] = [
        (
            "wrong iss",
            &|c| c.iss = "http://evil.test".into(),
            RejectReason::WrongIssuer,
        ),
        (
            "wrong aud",
            &|c| c.aud = vec!["billing-api".into()],
            RejectReason::WrongAudience,
        ),
        ("no aud", &|c| c.aud.clear(), RejectReason::WrongAudience),
        ("expired", &|c| c.exp = now - 6, RejectReason::Expired),
        ("not yet", &|c| c.nbf = now + 60, RejectReason::NotYetValid),
        (
            "expired, cached",
            &|c| c.exp = now - 6,
            RejectReason::Expired,
        ),
    ];
    for (what, f, want) in cases {
        assert_eq!(reason(&v, &with(f)).await, want, "{what}");
    }
    // Within the leeway: accepted.
    assert!(v.verify(&with(&|c| c.exp = now - 2)).await.is_ok());
    // Several audiences, one of them ours.
    assert!(
        v.verify(&with(&|c| c.aud = vec!["x".into(), AUDIENCE.into()]))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_without_a_restart() {
    let old = SigningKey::generate(Algorithm::RS256).unwrap();
    let new = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let jwks = JwksServer::start(&[&old]).await;
    let v = verifier_for(&jwks.url, |c| {
        c.jwks(|j| j.min_refetch_interval(Duration::ZERO))
    })
    .await;
    let old_token = mint(&old, &claims());
    v.verify(&old_token).await.unwrap();
    let fetches = jwks.requests();
    assert_eq!(fetches, 1);

    // The issuer rotates: the JWKS publishes both; a token of the new key
    // triggers one refetch and verifies.
    jwks.serve_keys(&[&new, &old]);
    let new_token = mint(&new, &claims());
    v.verify(&new_token).await.unwrap();
    assert_eq!(jwks.requests(), fetches + 1);
    v.verify(&new_token).await.unwrap();
    v.verify(&old_token).await.unwrap();
    assert_eq!(jwks.requests(), fetches + 1, "known keys fetch nothing");

    // The old key is dropped: once the verifier refetches (here: because of
    // an unknown kid), the old token stops verifying, cached or not.
    jwks.serve_keys(&[&new]);
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    assert_eq!(
        reason(&v, &mint(&stranger, &claims())).await,
        RejectReason::UnknownKey
    );
    assert_eq!(reason(&v, &old_token).await, RejectReason::UnknownKey);
    v.verify(&new_token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_interval() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(&[&key]).await;
    let v = verifier_for(&jwks.url, |c| {
        c.jwks(|j| j.min_refetch_interval(Duration::from_secs(3600)))
    })
    .await;
    assert_eq!(jwks.requests(), 1);
    let strangers: Vec<String> = (0..50)
        .map(|_| mint(&SigningKey::generate(Algorithm::ES256).unwrap(), &claims()))
        .collect();
    let results = futures_join(strangers.iter().map(|t| {
        let v = v.clone();
        let t = t.clone();
        async move { v.verify(&t).await.unwrap_err().reason() }
    }))
    .await;
    assert!(results.iter().all(|r| *r == RejectReason::UnknownKey));
    assert_eq!(jwks.requests(), 2, "one refetch for the whole flood");
    for t in &strangers {
        assert_eq!(reason(&v, t).await, RejectReason::UnknownKey);
    }
    assert_eq!(jwks.requests(), 2, "none within the interval");
    assert_eq!(v.jwks_fetches(), 2);
    // The legitimate key still verifies throughout.
    assert!(v.verify(&mint(&key, &claims())).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_keeps_the_last_good_keys() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = JwksServer::start(&[&key]).await;
    let v = verifier_for(&jwks.url, |c| {
        c.jwks(|j| j.min_refetch_interval(Duration::ZERO).max_bytes(4096))
    })
    .await;
    let token = mint(&key, &claims());
    let stranger = mint(&SigningKey::generate(Algorithm::ES256).unwrap(), &claims());
    let hmac_only =
        json!({"keys": [{"kty": "oct", "kid": key.kid(), "k": "c2VjcmV0"}]}).to_string();
    let oversized = json!({"keys": [], "pad": "x".repeat(5000)}).to_string();
    for (status, body) in [
        (500, "oops".to_owned()),
        (200, "not json".to_owned()),
        (200, r#"{"keys": []}"#.to_owned()),
        (200, hmac_only),
        (200, oversized),
    ] {
        jwks.serve_raw(status, body.clone());
        let before = jwks.requests();
        // An unknown kid makes the verifier fetch the broken document...
        assert_eq!(reason(&v, &stranger).await, RejectReason::UnknownKey);
        assert_eq!(jwks.requests(), before + 1, "{status} {body:.40}");
        // ... and the last good key still verifies (fresh, not cached: a new jti).
        assert!(
            v.verify(&mint(&key, &claims())).await.is_ok(),
            "{status} {body:.40}"
        );
        assert!(v.verify(&token).await.is_ok());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_at_start_is_retried() {
    let key = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let jwks = JwksServer::start(&[&key]).await;
    jwks.serve_raw(503, "starting");
    let v = verifier_for(&jwks.url, |c| {
        c.jwks(|j| j.min_refetch_interval(Duration::from_millis(50)))
    })
    .await;
    assert!(!v.is_ready());
    let token = mint(&key, &claims());
    assert_eq!(reason(&v, &token).await, RejectReason::UnknownKey);
    jwks.serve_keys(&[&key]);
    eventually("the JWKS fetched", || async { v.is_ready().then_some(()) }).await;
    assert!(v.verify(&token).await.is_ok());
}

/// Runs futures concurrently on the runtime.
async fn futures_join<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
