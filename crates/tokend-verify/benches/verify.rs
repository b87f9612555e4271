//! What local verification costs a resource server, against the floor of
//! the bare signature check (aws-lc-rs), per algorithm:
//!
//! - `verify/{alg}/raw_verify`: the signature over the token's signing input
//!   and nothing else;
//! - `verify/{alg}/uncached`: `Verifier::verify_now` with the verified-token
//!   cache off: SHA-256 of the token, header and claims parsing, the pinned
//!   algorithm, the signature, `iss`/`aud`/`exp`/`nbf`, the feed policy and
//!   the revocation set (target: at most 1.1x `raw_verify`);
//! - `verify/{alg}/cached`: the same token again with the cache on (target:
//!   at most 2 us);
//! - `revocation/is_revoked_100k`: the revocation check alone against a set
//!   of 100 000 revoked jtis.
//!
//! And, printed once (not a criterion measurement), the memory of a
//! revocation set holding 100 000 jtis: the process's resident-set growth
//! while building it (Linux /proc/self/statm, page-granular, includes
//! allocator overhead) next to the set's own capacity-based estimate.
//! `unsafe_code` is forbidden workspace-wide, so no counting allocator.
//!
//! The verifiers here have a revocation feed configured fail-open at an
//! address nothing listens on, so every verification runs the revocation
//! check (against an empty set; `is_revoked_100k` prices a full one).

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use tokend_token::jwt::{self, AccessClaims};
use tokend_token::keys::{Algorithm, SigningKey};
use tokend_verify::proto::{EventKind, RevocationEvent};
use tokend_verify::{FeedConfig, FeedPolicy, RevocationSet, Verifier, VerifierConfig};

const ISSUER: &str = "https://tokend.bench";
const AUDIENCE: &str = "orders-api";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: ISSUER.into(),
        sub: "svc-orders".into(),
        aud: vec![AUDIENCE.into()],
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: tokend_token::opaque::time_ordered_id(now * 1000),
        client_id: "svc-orders".into(),
        scope: "orders:read orders:write".into(),
        sid: None,
        legacy_iat_ms: None,
        act: None,
        chain: Vec::new(),
        cnf: None,
        extra: serde_json::Map::new(),
    }
}

/// Serves `jwks` on a loopback port for the verifier's fetch.
async fn serve_jwks(jwks: String) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = jwks.clone();
            async move { body }
        }),
    );
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{a}/jwks.json")
}

async fn verifier(jwks_url: &str, cache: usize) -> Verifier {
    // Nothing listens on port 9 of loopback: the feed stays down and the
    // fail-open policy accepts, still consulting the (empty) set.
    let mut feed =
        FeedConfig::new("http://127.0.0.1:9", "bench", "bench").policy(FeedPolicy::FailOpen);
    feed.backoff_initial = Duration::from_secs(60);
    feed.backoff_max = Duration::from_secs(60);
    let v = Verifier::start(
        VerifierConfig::new(ISSUER, jwks_url, AUDIENCE)
            .cache_capacity(cache)
            .feed(feed),
    )
    .await
    .unwrap();
    assert!(v.verify_now("x.y.z").is_err());
    v
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg).unwrap();
        let token = jwt::mint(&key, &claims()).unwrap();
        let jwks = serde_json::json!({"keys": [key.verify_key().jwk]}).to_string();
        let (uncached, cached) = rt.block_on(async {
            let url = serve_jwks(jwks.clone()).await;
            (verifier(&url, 0).await, verifier(&url, 10_000).await)
        });
        // The floor: the key parsed from the same JWK (an aws-lc-rs
        // `ParsedPublicKey`) and the bare signature check over the token's
        // signing input.
        let set = tokend_token::JwkSet::from_json(jwks.as_bytes()).unwrap();
        let floor = tokend_token::KeyLookup::verify_key(&set, key.kid())
            .unwrap()
            .clone();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = B64.decode(sig).unwrap();
        assert!(floor.verify(input.as_bytes(), &sig));
        uncached.verify_now(&token).unwrap();
        cached.verify_now(&token).unwrap();

        let mut g = c.benchmark_group(format!("verify/{alg}"));
        g.bench_function("raw_verify", |b| {
            b.iter(|| floor.verify(black_box(input.as_bytes()), black_box(&sig)))
        });
        g.bench_function("uncached", |b| {
            b.iter(|| uncached.verify_now(black_box(&token)).unwrap())
        });
        g.bench_function("cached", |b| {
            b.iter(|| cached.verify_now(black_box(&token)).unwrap())
        });
        g.finish();
    }
    drop(rt);
}

fn revoked_set(n: usize) -> (RevocationSet, Vec<String>) {
    let base = now() * 1000;
    let mut set = RevocationSet::new();
    let mut jtis = Vec::with_capacity(n);
    for i in 0..n {
        let jti = tokend_token::opaque::time_ordered_id(base + i as i64);
        set.apply(&RevocationEvent {
            kind: EventKind::TokenRevoked as i32,
            jti: jti.clone(),
            client_id: "svc-orders".into(),
            expires_at: now() + 3600,
            ..Default::default()
        });
        if i % 1000 == 0 {
            jtis.push(jti);
        }
    }
    (set, jtis)
}

fn resident_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn revocation(c: &mut Criterion) {
    const N: usize = 100_000;
    let before = resident_bytes();
    let (set, sample) = revoked_set(N);
    let after = resident_bytes();
    if let (Some(b), Some(a)) = (before, after) {
        eprintln!(
            "revocation set of {N} jtis: resident-set growth {} bytes ({} per jti, includes the {} sampled jti strings kept for the lookups); estimate from capacities {} bytes",
            a.saturating_sub(b),
            a.saturating_sub(b) / N,
            sample.len(),
            set.approx_heap_bytes()
        );
    }
    let mut revoked = claims();
    revoked.jti = sample[7].clone();
    let live = claims();
    assert!(set.is_revoked(&revoked) && !set.is_revoked(&live));
    let mut g = c.benchmark_group("revocation");
    g.bench_function("is_revoked_100k", |b| {
        b.iter(|| black_box(&set).is_revoked(black_box(&live)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = verify, revocation
}
criterion_main!(benches);
