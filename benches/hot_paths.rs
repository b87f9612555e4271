//! Criterion micro-benchmarks of tokend's hot pieces (issue 7): JWT mint and
//! verify through tokend's own code (`tokend::token::jwt`, `KeySet`) next to the
//! raw aws-lc-rs signature and verification for the same keys (the floor),
//! client authentication (`Registry::authenticate`, SHA-256 and cached
//! argon2id), HTTP parameter parsing (form and JSON), and the whole OAuth core
//! without a transport (`Core::token` for client_credentials and
//! `Core::introspect` of a cached token, memory store, secret-guessing defence
//! on): what tokend adds to the signature before any wire protocol; and RFC
//! 8693 token exchange through the core against its floor, one verification
//! plus one signature (`exchange/{alg}`).
//!
//! `cargo bench --bench hot_paths` measures; `cargo test --all-targets` runs
//! each benchmark once in criterion's test mode, so they keep compiling in CI.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, RsaKeyPair,
};
use criterion::{Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use tokend::oauth::client::{ClientConfig, SecretHash, argon2_hash};
use tokend::oauth::params::Params;
use tokend::oauth::{Credentials, PresentedVia, Registry};
use tokend::token::keys::generate_pem;
use tokend::token::{AccessClaims, Algorithm, KeySet, SigningKey, jwt};

const ISSUER: &str = "http://127.0.0.1:8080";

/// Claims shaped like a client_credentials token with partner claims.
fn claims(now: i64) -> AccessClaims {
    let extra = serde_json::json!({"organisation_id": 74, "roles": ["ADMIN"]});
    AccessClaims {
        iss: ISSUER.into(),
        sub: "orders-service".into(),
        aud: vec!["orders-api".into()],
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: "0f6a3b1c2d4e5f60718293a4b5c6d7e8".into(),
        client_id: "orders-service".into(),
        scope: "orders:read orders:write".into(),
        sid: None,
        legacy_iat_ms: None,
        act: None,
        chain: Vec::new(),
        cnf: None,
        extra: extra.as_object().cloned().unwrap_or_default(),
    }
}

fn now() -> i64 {
    tokend::oauth::now_unix()
}

/// Raw aws-lc-rs sign of `msg` with the key in `pem_text`.
/// A raw signing closure.
type RawSign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

/// The raw signer and the public key bytes.
fn raw_signer(alg: Algorithm, pem_text: &str) -> (RawSign, Vec<u8>) {
    let der = pem::parse(pem_text).unwrap().into_contents();
    let rng = SystemRandom::new();
    match alg {
        Algorithm::RS256 => {
            let kp = RsaKeyPair::from_pkcs8(&der)
                .or_else(|_| RsaKeyPair::from_der(&der))
                .unwrap();
            let public = kp.public_key().as_ref().to_vec();
            (
                Box::new(move |m| {
                    let mut sig = vec![0; kp.public_modulus_len()];
                    kp.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
                        .unwrap();
                    sig
                }),
                public,
            )
        }
        Algorithm::ES256 => {
            let kp = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .unwrap();
            let public = kp.public_key().as_ref().to_vec();
            (
                Box::new(move |m| kp.sign(&rng, m).unwrap().as_ref().to_vec()),
                public,
            )
        }
        Algorithm::EdDSA => {
            let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
            let public = kp.public_key().as_ref().to_vec();
            (Box::new(move |m| kp.sign(m).as_ref().to_vec()), public)
        }
    }
}

fn verification_alg(alg: Algorithm) -> &'static dyn signature::VerificationAlgorithm {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
    }
}

fn jwt_benches(c: &mut Criterion) {
    for alg in Algorithm::ALL {
        let pem_text = generate_pem(alg).unwrap();
        let keys = KeySet::new(
            SigningKey::from_pem(alg, pem_text.as_bytes()).unwrap(),
            vec![],
        );
        let cl = claims(now());
        let token = jwt::mint(keys.active(), &cl).unwrap();
        let (input, sig_b64) = token.rsplit_once('.').unwrap();
        let sig =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig_b64)
                .unwrap();
        let (raw_sign, public) = raw_signer(alg, &pem_text);
        let parsed = ParsedPublicKey::new(verification_alg(alg), &public).unwrap();

        let mut g = c.benchmark_group(format!("jwt/{alg}"));
        g.bench_function("raw_sign", |b| {
            b.iter(|| raw_sign(black_box(input.as_bytes())))
        });
        g.bench_function("mint", |b| {
            b.iter(|| jwt::mint(keys.active(), black_box(&cl)).unwrap())
        });
        g.bench_function("raw_verify", |b| {
            b.iter(|| parsed.verify_sig(black_box(input.as_bytes()), black_box(&sig)))
        });
        g.bench_function("verify", |b| {
            b.iter(|| jwt::verify(&keys, black_box(&token), ISSUER, now(), 30).unwrap())
        });
        g.finish();
    }
}

fn client(id: &str, hash: &str) -> ClientConfig {
    serde_json::from_value(serde_json::json!({
        "client_id": id,
        "secret_hashes": [hash],
        "scopes": ["orders:read"],
    }))
    .unwrap()
}

fn auth_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let registry = Registry::new(&[
        client("sha", &SecretHash::sha256_of(secret)),
        client("argon", &argon2_hash("a human-chosen secret").unwrap()),
    ])
    .unwrap();
    let creds = |id: &str, s: &str| Credentials {
        client_id: id.into(),
        secret: Some(SecretString::from(s.to_owned())),
        secret_alt: None,
        assertion: None,
        via: PresentedVia::Grpc,
        peer: None,
        cert: None,
    };
    let sha = creds("sha", secret);
    let argon = creds("argon", "a human-chosen secret");
    // The first argon2 check is slow (tens of ms) and fills the cache.
    rt.block_on(registry.authenticate(&argon)).unwrap();
    let mut g = c.benchmark_group("authenticate");
    g.bench_function("sha256", |b| {
        b.iter(|| rt.block_on(registry.authenticate(black_box(&sha))).unwrap())
    });
    g.bench_function("argon2id_cached", |b| {
        b.iter(|| {
            rt.block_on(registry.authenticate(black_box(&argon)))
                .unwrap()
        })
    });
    // No client enumeration: an unknown client id and a wrong secret must
    // cost the same (both hash the presented secret and compare it).
    let wrong = creds(
        "sha",
        "wrong-secret-of-the-same-length-as-the-real-one-0123456789abcdef",
    );
    let unknown = creds("nobody", secret);
    g.bench_function("wrong_secret", |b| {
        b.iter(|| {
            rt.block_on(registry.authenticate(black_box(&wrong)))
                .unwrap_err()
        })
    });
    g.bench_function("unknown_client", |b| {
        b.iter(|| {
            rt.block_on(registry.authenticate(black_box(&unknown)))
                .unwrap_err()
        })
    });
    g.finish();
}

fn params_benches(c: &mut Criterion) {
    let form =
        b"grant_type=client_credentials&scope=orders%3Aread+orders%3Awrite&audience=orders-api";
    let json = br#"{"grant_type":"client_credentials","client_id":"orders-service","client_secret":"0123456789abcdef","scope":"orders:read orders:write"}"#;
    let mut g = c.benchmark_group("params");
    g.bench_function("form", |b| {
        b.iter(|| Params::from_form(black_box(form)).unwrap())
    });
    g.bench_function("json", |b| {
        b.iter(|| Params::from_json(black_box(json)).unwrap())
    });
    g.finish();
}

fn core_benches(c: &mut Criterion) {
    use std::sync::Arc;
    use tokend::oauth::{Core, TokenRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let toml = format!(
        "issuer = \"{ISSUER}\"\n[[clients]]\nclient_id = \"svc\"\nsecret_hashes = [\"{}\"]\n\
         grant_types = [\"client_credentials\"]\nscopes = [\"orders:read\", \"orders:write\"]\n\
         default_scopes = [\"orders:read\"]\naudience = [\"orders-api\"]\n\
         claims = {{ organisation_id = 74, roles = [\"ADMIN\"] }}\n",
        SecretHash::sha256_of(secret)
    );
    let dir = std::env::temp_dir().join(format!("tokend-bench-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokend.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = tokend::config::Config::load(Some(&path), Vec::new()).unwrap();
    let parsed = cfg.clone().parse().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let creds = Credentials {
        client_id: "svc".into(),
        secret: Some(SecretString::from(secret.to_owned())),
        secret_alt: None,
        assertion: None,
        via: PresentedVia::Grpc,
        peer: Some("127.0.0.1".parse().unwrap()),
        cert: None,
    };
    let req = || TokenRequest {
        grant_type: "client_credentials".into(),
        ..Default::default()
    };
    for alg in Algorithm::ALL {
        let core = Core::new(
            parsed.boot.oauth.clone(),
            parsed.live.limits.clone(),
            Registry::new(&cfg.clients).unwrap(),
            KeySet::new(SigningKey::generate(alg).unwrap(), vec![]),
            Arc::new(tokend::store::MemoryStore::new()),
        );
        // First contact marks the caller as established (as in production).
        let token = rt.block_on(core.token(&creds, req())).unwrap().access_token;
        rt.block_on(core.introspect(&creds, &token, None)).unwrap();
        let mut g = c.benchmark_group(format!("core/{alg}"));
        g.bench_function("issue_client_credentials", |b| {
            b.iter(|| black_box(rt.block_on(core.token(&creds, req())).unwrap()))
        });
        g.bench_function("introspect_cached", |b| {
            b.iter(|| black_box(rt.block_on(core.introspect(&creds, &token, None)).unwrap()))
        });
        g.finish();
    }
}

/// RFC 8693 token exchange against its floor. An exchange verifies the
/// subject token and signs a new one, so the floor is one verification plus
/// one signature: `floor_raw` with aws-lc-rs alone, `floor_jwt` with
/// tokend-token's `jwt::verify` and `jwt::mint` (header and claims parsing,
/// JSON, base64). `exchange` is `Core::token` with the token-exchange grant,
/// the code path of both transports (client authentication, policy, scope,
/// revocation check of the subject's chain in the memory store, `act` and
/// `chain` claims, signature), each call with a subject token it has not
/// verified before; `exchange_cached_subject` exchanges the same subject
/// token every time, whose verification the verified-token cache answers.
fn exchange_benches(c: &mut Criterion) {
    use criterion::BatchSize;
    use std::sync::Arc;
    use tokend::oauth::exchange::ACCESS_TOKEN_TYPE;
    use tokend::oauth::{Core, TokenRequest};
    const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let hash = SecretHash::sha256_of(secret);
    // portal's tokens are addressed to orders-api; orders-service receives
    // them and exchanges them for billing-api.
    let toml = format!(
        "issuer = \"{ISSUER}\"\n\
         [[clients]]\nclient_id = \"portal\"\nsecret_hashes = [\"{hash}\"]\n\
         grant_types = [\"client_credentials\"]\nscopes = [\"orders:read\", \"orders:write\"]\n\
         default_scopes = [\"orders:read\", \"orders:write\"]\naudience = [\"orders-api\"]\n\
         claims = {{ organisation_id = 74, roles = [\"ADMIN\"] }}\n\
         [[clients]]\nclient_id = \"orders-service\"\nsecret_hashes = [\"{hash}\"]\n\
         grant_types = [\"client_credentials\", \"{TE}\"]\n\
         scopes = [\"orders:read\", \"orders:write\"]\naudience = [\"orders-api\"]\n\
         token_exchange_audiences = [\"billing-api\"]\n\
         token_exchange_claims = [\"organisation_id\"]\n"
    );
    let dir = std::env::temp_dir().join(format!("tokend-bench-exchange-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokend.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = tokend::config::Config::load(Some(&path), Vec::new()).unwrap();
    let parsed = cfg.clone().parse().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let creds = |id: &str| Credentials {
        client_id: id.into(),
        secret: Some(SecretString::from(secret.to_owned())),
        secret_alt: None,
        assertion: None,
        via: PresentedVia::Grpc,
        peer: Some("127.0.0.1".parse().unwrap()),
        cert: None,
    };
    let (portal, orders) = (creds("portal"), creds("orders-service"));
    let issue = || TokenRequest {
        grant_type: "client_credentials".into(),
        ..Default::default()
    };
    let exchange = |subject: String| TokenRequest {
        grant_type: TE.into(),
        subject_token: Some(subject),
        subject_token_type: Some(ACCESS_TOKEN_TYPE.into()),
        audience: vec!["billing-api".into()],
        scope: vec!["orders:read".into()],
        ..Default::default()
    };
    for alg in Algorithm::ALL {
        let pem_text = generate_pem(alg).unwrap();
        let keys = || {
            KeySet::new(
                SigningKey::from_pem(alg, pem_text.as_bytes()).unwrap(),
                vec![],
            )
        };
        let core = Core::new(
            parsed.boot.oauth.clone(),
            parsed.live.limits.clone(),
            Registry::new(&cfg.clients).unwrap(),
            keys(),
            Arc::new(tokend::store::MemoryStore::new()),
        );
        let subject_token = || {
            rt.block_on(core.token(&portal, issue()))
                .unwrap()
                .access_token
        };
        // First contact marks both callers as established (as in production).
        let subject = subject_token();
        let exchanged = rt
            .block_on(core.token(&orders, exchange(subject.clone())))
            .unwrap()
            .access_token;

        // The floor, for exactly these two tokens: verify the subject token,
        // sign the exchanged token's claims.
        let floor_keys = keys();
        let out_claims = jwt::verify(&floor_keys, &exchanged, ISSUER, now(), 30).unwrap();
        assert_eq!(
            out_claims.act,
            Some(serde_json::json!({"sub": "orders-service"}))
        );
        let (sub_input, sub_sig_b64) = subject.rsplit_once('.').unwrap();
        let sub_sig = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            sub_sig_b64,
        )
        .unwrap();
        let out_input = exchanged.rsplit_once('.').unwrap().0;
        let (raw_sign, public) = raw_signer(alg, &pem_text);
        let parsed_key = ParsedPublicKey::new(verification_alg(alg), &public).unwrap();

        let mut g = c.benchmark_group(format!("exchange/{alg}"));
        g.bench_function("floor_raw", |b| {
            b.iter(|| {
                parsed_key
                    .verify_sig(black_box(sub_input.as_bytes()), black_box(&sub_sig))
                    .unwrap();
                raw_sign(black_box(out_input.as_bytes()))
            })
        });
        g.bench_function("floor_jwt", |b| {
            b.iter(|| {
                jwt::verify(&floor_keys, black_box(&subject), ISSUER, now(), 30).unwrap();
                jwt::mint(floor_keys.active(), black_box(&out_claims)).unwrap()
            })
        });
        // The same with a fresh subject token per call, as `exchange` gets.
        g.bench_function("floor_jwt_fresh", |b| {
            b.iter_batched(
                subject_token,
                |t| {
                    jwt::verify(&floor_keys, &t, ISSUER, now(), 30).unwrap();
                    jwt::mint(floor_keys.active(), black_box(&out_claims)).unwrap()
                },
                BatchSize::SmallInput,
            )
        });
        // A fresh subject token per call (issued in the untimed setup).
        g.bench_function("exchange", |b| {
            b.iter_batched(
                subject_token,
                |t| black_box(rt.block_on(core.token(&orders, exchange(t))).unwrap()),
                BatchSize::SmallInput,
            )
        });
        g.bench_function("exchange_cached_subject", |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(core.token(&orders, exchange(subject.clone())))
                        .unwrap(),
                )
            })
        });
        g.finish();
    }
}

fn config() -> Criterion {
    // Short runs: a full `cargo bench` stays around a minute on 2 cores.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = jwt_benches, auth_benches, params_benches, core_benches, exchange_benches
}
criterion_main!(benches);
