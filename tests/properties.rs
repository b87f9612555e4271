//! Property-based tests (proptest) over every parser that sees untrusted
//! input: form and JSON bodies, the Basic-auth decoder, scope and audience
//! parsing, JWT verification and the whole core (token, introspect, revoke).
//! For every input: no panic, and either success or a well-formed OAuth error
//! that is never `server_error`.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use common::ConfigBuilder;
use common::config::sha256;
use proptest::prelude::*;
use secrecy::SecretString;
use tokend::oauth::params::Params;
use tokend::oauth::{Core, Credentials, OAuthError, PresentedVia, TokenRequest};
use tokend::store::MemoryStore;
use tokend::token::{Algorithm, KeySet, SigningKey, jwt};
use tokend::transport::http::decode_basic;

const KNOWN_CODES: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "unsupported_token_type",
    "invalid_scope",
    "invalid_target",
    "access_denied",
    "unsupported_response_type",
    "rate_limited",
    "temporarily_unavailable",
];

fn well_formed(e: &OAuthError) {
    assert!(KNOWN_CODES.contains(&e.code()), "unexpected error {e:?}");
    let d = e.description();
    assert!(!d.is_empty() && d.len() < 300, "description {d:?}");
}

fn core() -> Core {
    let hash = sha256("secret");
    let dir = tempfile::TempDir::new().unwrap();
    let cfg = ConfigBuilder::bare()
        .client(toml::toml! {
            client_id = "svc"
            secret_hashes = [(hash.as_str())]
            scopes = ["a", "b:c"]
            audience = ["api"]
        })
        .load_in(dir.path(), &[]);
    let parsed = cfg.parse().unwrap();
    Core::new(
        parsed.boot.oauth,
        parsed.live.limits,
        parsed.live.clients,
        KeySet::new(SigningKey::generate(Algorithm::ES256).unwrap(), vec![]),
        Arc::new(MemoryStore::new()),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Strings biased towards the characters parsers care about.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        "[a-z:=&%+ .\"\\\\]{0,40}",
        Just(String::new()),
        Just("svc".to_string()),
        Just("secret".to_string()),
        Just("client_credentials".to_string()),
        "[\u{0}-\u{20}\u{7f}-\u{ff}\u{1F600}]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn form_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        match Params::from_form(&body) {
            Ok(_) => {}
            Err(e) => well_formed(&e),
        }
    }

    #[test]
    fn query_parser_is_strict_and_round_trips(
        raw in ".{0,200}",
        pairs in proptest::collection::vec((".{1,12}", ".{0,24}"), 0..8),
    ) {
        if let Err(e) = tokend::oauth::params::parse_query(&raw) { well_formed(&e) }
        // What a form serializer writes decodes back exactly, raw values kept.
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            ser.append_pair(k, v);
        }
        let query = ser.finish();
        let parsed = tokend::oauth::params::parse_query(&query).unwrap();
        let decoded: Vec<(String, String)> =
            parsed.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
        prop_assert_eq!(&decoded, &pairs);
        for p in &parsed {
            let sent = format!("={}", p.raw_value);
            prop_assert!(query.contains(&sent), "{} not in {}", sent, query);
        }
    }

    #[test]
    fn json_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = Params::from_json(&body) { well_formed(&e) }
    }

    #[test]
    fn json_objects_of_any_shape_are_accepted_or_invalid_request(
        v in proptest::arbitrary::any::<std::collections::HashMap<String, Option<bool>>>()
    ) {
        let body = serde_json::to_vec(&v).unwrap();
        if let Err(e) = Params::from_json(&body) {
            prop_assert_eq!(e.code(), "invalid_request");
        }
    }

    #[test]
    fn basic_decoder_never_panics(s in ".{0,200}", raw in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_basic(&s);
        use base64::Engine;
        let enc = base64::engine::general_purpose::STANDARD.encode(&raw);
        if decode_basic(&format!("Basic {enc}")).is_some() {
            // Whatever decodes must have come from a colon-separated pair.
            prop_assert!(raw.contains(&b':'));
        }
    }

    #[test]
    fn scope_split_round_trips(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,12}", 0..10)) {
        let joined = tokens.join(" ");
        let split = tokend::oauth::scope::split(&joined);
        prop_assert_eq!(&split, &tokens);
        prop_assert!(split.iter().all(|t| tokend::oauth::scope::is_scope_token(t)));
    }

    #[test]
    fn certificate_rules_never_panic_on_garbage(
        der in proptest::collection::vec(any::<u8>(), 0..2048),
        dn in ".{0,120}",
        validated in any::<bool>(),
    ) {
        use tokend::oauth::mtls::{CertificateRule, ClientCertificate, DistinguishedName, TlsSubject};
        let _ = DistinguishedName::parse(&dn);
        let cert = ClientCertificate::new(der, validated);
        for (key, value) in [("tls_client_auth_subject_dn", "CN=a"), ("tls_client_auth_san_uri", "spiffe://a/b")] {
            let rule = CertificateRule::Subject(TlsSubject::parse(key, value).unwrap());
            prop_assert!(!rule.accepts(&cert));
        }
        prop_assert!(!CertificateRule::Keys(Vec::new()).accepts(&cert));
    }

    #[test]
    fn mutated_certificates_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        use tokend::oauth::mtls::{CertificateRule, ClientCertificate, DistinguishedName, TlsSubject};
        let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "a");
        p.subject_alt_names.push(rcgen::SanType::URI("spiffe://a/b".try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let mut der = p.self_signed(&key).unwrap().der().to_vec();
        let i = pos.index(der.len());
        der[i] = byte;
        let cert = ClientCertificate::new(der, true);
        for (k, v) in [
            ("tls_client_auth_subject_dn", "CN=a"),
            ("tls_client_auth_san_uri", "spiffe://a/b"),
            ("tls_client_auth_san_dns", "a.example"),
            ("tls_client_auth_san_ip", "10.0.0.1"),
        ] {
            let _ = CertificateRule::Subject(TlsSubject::parse(k, v).unwrap()).accepts(&cert);
        }
        let _ = DistinguishedName::parse("CN=a");
        let _ = CertificateRule::Keys(Vec::new()).accepts(&cert);
    }

    #[test]
    fn jwt_verify_never_panics_on_garbage(parts in proptest::collection::vec(".{0,80}", 0..5)) {
        let keys = KeySet::new(SigningKey::generate(Algorithm::EdDSA).unwrap(), vec![]);
        let token = parts.join(".");
        prop_assert!(jwt::verify(&keys, &token, "https://tokend.test", 0, 30).is_err());
    }

    #[test]
    fn jwt_with_any_single_byte_flipped_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let keys = KeySet::new(SigningKey::generate(Algorithm::ES256).unwrap(), vec![]);
        let claims = jwt::AccessClaims {
            iss: "https://tokend.test".into(), sub: "s".into(), aud: vec![], exp: 100, iat: 0, nbf: 0,
            jti: "j".into(), client_id: "c".into(), scope: String::new(), sid: None, legacy_iat_ms: None, act: None, chain: Vec::new(), cnf: None,
            extra: serde_json::Map::new(),
        };
        let token = jwt::mint(keys.active(), &claims).unwrap();
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(t) = String::from_utf8(bytes) && t != token {
            // Flipping a bit in base64url padding bits may decode identically;
            // anything that verifies must then be byte-for-byte the same claims.
            if let Ok(c) = jwt::verify(&keys, &t, "https://tokend.test", 1, 0) {
                prop_assert_eq!(c, claims);
            }
        }
    }

    #[test]
    fn core_token_endpoint_answers_every_request(
        grant_type in nasty(), client_id in nasty(), secret in proptest::option::of(nasty()),
        scope in proptest::collection::vec(nasty(), 0..4), audience in proptest::collection::vec(nasty(), 0..3),
        code in proptest::option::of(nasty()), refresh in proptest::option::of(nasty()),
        subject in proptest::option::of(nasty()), subject_type in proptest::option::of(nasty()),
        via in prop_oneof![Just(PresentedVia::Basic), Just(PresentedVia::Body), Just(PresentedVia::Grpc)],
    ) {
        let core = core();
        let creds = Credentials { client_id, secret: secret.map(SecretString::from), secret_alt: None, via, assertion: None, peer: None, cert: None };
        let req = TokenRequest {
            grant_type, scope, audience, code, redirect_uri: None, code_verifier: None, refresh_token: refresh,
            subject_token: subject, subject_token_type: subject_type, ..Default::default()
        };
        match rt().block_on(core.token(&creds, req)) {
            Ok(t) => prop_assert!(t.access_token.split('.').count() == 3),
            Err(e) => well_formed(&e),
        }
    }

    #[test]
    fn core_authorize_answers_every_query(raw in ".{0,300}", client in nasty()) {
        let core = core();
        for query in [raw.clone(), format!("response_type=code&client_id={client}&{raw}")] {
            if let Err(e) = rt().block_on(core.authorize(&query)) { well_formed(&e) }
        }
    }

    #[test]
    fn core_introspect_and_revoke_answer_every_token(token in ".{0,300}", hint in proptest::option::of(nasty())) {
        let core = core();
        let creds = Credentials {
            client_id: "svc".into(), secret: Some(SecretString::from("secret")), secret_alt: None,
            via: PresentedVia::Body, assertion: None, peer: None, cert: None,
        };
        let rt = rt();
        match rt.block_on(core.introspect(&creds, &token, hint.as_deref())) {
            Ok(tokend::oauth::Introspection::Active(_)) => prop_assert!(false, "garbage was active"),
            Ok(_) => {}
            Err(e) => well_formed(&e),
        }
        if let Err(e) = rt.block_on(core.revoke(&creds, &token, hint.as_deref())) { well_formed(&e) }
    }
}
