//! The `tokend` binary's helper commands, run as a user would.

use std::path::Path;
use std::process::Stdio;

use tempfile::TempDir;

use crate::common::process::tokend_command as tokend;
use crate::common::{ConfigBuilder, TokendProcess};

fn run_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = tokend()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `tokend check-config --config PATH`.
fn check_config(path: &std::path::Path) -> std::process::Output {
    tokend()
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn hash_secret_matches_the_documented_sha256() {
    let out = run_with_stdin(&["hash-secret"], "demo-secret\n");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "sha256:cd577fe2561ebff23505db0bb006300c7cdecbd46bc0e03c449afafaca2c25bf"
    );
    let out = run_with_stdin(&["hash-secret", "--argon2"], "correct horse\n");
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("$argon2id$")
    );
    let out = run_with_stdin(&["hash-secret"], "");
    assert!(!out.status.success());
}

#[tokio::test]
async fn keygen_writes_keys_check_config_accepts_and_rejects() {
    let dir = TempDir::new().unwrap();
    for alg in ["RS256", "ES256", "EdDSA"] {
        let key = dir.path().join(format!("{alg}.pem"));
        let st = tokend()
            .args(["keygen", "--alg", alg, "--out"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "private key is not world-readable");
        }
        let cfg = dir.path().join(format!("{alg}.toml"));
        // Relative to the config file, as in production.
        ConfigBuilder::bare()
            .signing_key(alg, Path::new(&format!("{alg}.pem")))
            .write(&cfg);
        let out = check_config(&cfg);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // keygen refuses to overwrite.
    let st = tokend()
        .args(["keygen", "--out"])
        .arg(dir.path().join("RS256.pem"))
        .output()
        .unwrap();
    assert!(!st.status.success());

    // A config with several problems names each key.
    let bad = dir.path().join("bad.toml");
    ConfigBuilder::bare()
        .set("http.listen", "nowhere")
        .signing_key("ES256", Path::new("RS256.pem"))
        .client(toml::toml! {
            client_id = "a"
            secret_hashes = ["md5:abc"]
            grant_types = ["password"]
            scopes = ["ok"]
            default_scopes = ["missing"]
            claims = { sub = "x" }
        })
        .write(&bad);
    let out = check_config(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    for needle in [
        "http.listen",
        "signing.key_file",
        "secret_hashes[0]",
        "grant_types",
        "default_scopes",
        "claims.sub",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    // Unknown keys and bad types are named too, and stop `serve`.
    let typo = dir.path().join("typo.toml");
    ConfigBuilder::bare()
        .set("tokens.access_ttl", 5)
        .write(&typo);
    let out = check_config(&typo);
    assert!(!out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("access_ttl")
    );
    let log = TokendProcess::serve_file(&typo)
        .start_expecting_failure()
        .await;
    assert!(log.contains("access_ttl"), "{log}");
}

#[test]
fn client_new_prints_a_working_block() {
    let out = tokend()
        .args(["client", "new", "--id", "billing", "--scope", "a,b"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let secret = text
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("# ")
        .to_owned();
    assert_eq!(secret.len(), 43, "256-bit secret, base64url");
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[clients]]"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = TempDir::new().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, &block).unwrap();
    let st = check_config(&cfg);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(block.contains(&tokend::oauth::client::SecretHash::sha256_of(&secret)));
}

/// `tokend client new ARGS`: (what is printed once, the `[[clients]]` block).
fn client_new(args: &[&str]) -> (String, String) {
    let out = tokend()
        .args(["client", "new"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let at = text.find("[[clients]]").expect("a [[clients]] block");
    (text[..at].to_owned(), text[at..].to_owned())
}

/// A real tokend (in-process) from the standard test config plus `extra`
/// (printed blocks), parsed by the real config loader.
async fn serve_with(dir: &Path, extra: &str) -> crate::common::TestApp {
    let path = dir.join("tokend.toml");
    std::fs::write(
        &path,
        format!("{}\n{extra}", ConfigBuilder::memory().to_toml()),
    )
    .unwrap();
    let cfg = tokend::config::Config::load(Some(&path), Vec::new()).unwrap();
    crate::common::TestApp::start_config(cfg).await
}

fn assertion_claims(iss: &str, sub: &str) -> serde_json::Value {
    let now = tokend::oauth::now_unix();
    serde_json::json!({
        "iss": iss, "sub": sub, "aud": crate::common::config::ISSUER,
        "iat": now, "exp": now + 300, "jti": tokend::token::opaque::random_id(),
    })
}

fn sign(pem: &str, alg: jsonwebtoken::Algorithm, claims: &serde_json::Value) -> String {
    use jsonwebtoken::EncodingKey as K;
    let key = match alg {
        jsonwebtoken::Algorithm::ES256 => K::from_ec_pem(pem.as_bytes()),
        jsonwebtoken::Algorithm::EdDSA => K::from_ed_pem(pem.as_bytes()),
        _ => K::from_rsa_pem(pem.as_bytes()),
    }
    .unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key).unwrap()
}

#[tokio::test]
async fn client_new_registers_key_and_federated_clients_that_work() {
    use jsonwebtoken::Algorithm as A;
    let dir = TempDir::new().unwrap();
    let mut blocks = String::new();
    let mut signed = Vec::new();
    // Generated key pairs: printed once, or written 0600.
    for (alg, ours) in [
        (A::ES256, None),
        (A::RS256, Some("RS256")),
        (A::EdDSA, Some("EdDSA")),
    ] {
        let id = format!("key-{alg:?}");
        let mut args = vec!["--id", &id, "--auth", "private_key_jwt", "--scope", "a"];
        if let Some(ours) = ours {
            args.extend(["--generate-key", ours]);
        }
        let out = dir.path().join(format!("{id}.pem"));
        let out_s = out.to_str().unwrap().to_owned();
        if alg == A::EdDSA {
            args.extend(["--private-key-out", &out_s]);
        }
        let (once, block) = client_new(&args);
        let pem = if alg == A::EdDSA {
            assert!(!once.contains("PRIVATE KEY-----"), "{once}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&out).unwrap().permissions().mode();
                assert_eq!(mode & 0o077, 0, "private key is not world-readable");
            }
            std::fs::read_to_string(&out).unwrap()
        } else {
            let start = once
                .find("-----BEGIN PRIVATE KEY-----")
                .expect("the private key");
            let end = once.find("-----END PRIVATE KEY-----").unwrap();
            once[start..end + "-----END PRIVATE KEY-----".len()].to_owned()
        };
        assert!(
            !block.contains("PRIVATE"),
            "only the public key in the block"
        );
        assert!(
            block.contains("jwks = { keys = [{") && block.contains("kid = "),
            "{block}"
        );
        blocks.push_str(&block);
        signed.push(sign(&pem, alg, &assertion_claims(&id, &id)));
    }
    // An existing public key (a partner's, made elsewhere: rcgen).
    let partner = rcgen::KeyPair::generate().unwrap();
    let public = dir.path().join("partner.pub.pem");
    std::fs::write(&public, partner.public_key_pem()).unwrap();
    let (once, block) = client_new(&[
        "--id",
        "partner-key",
        "--auth",
        "private_key_jwt",
        "--public-key",
        public.to_str().unwrap(),
    ]);
    assert!(once.is_empty(), "nothing secret to show: {once}");
    blocks.push_str(&block);
    signed.push(sign(
        &partner.serialize_pem(),
        A::ES256,
        &assertion_claims("partner-key", "partner-key"),
    ));
    // An existing JWK Set file.
    let jwks_key = crate::common::assertion::ClientKey::new(A::PS256);
    let jwks = dir.path().join("file.jwks.json");
    std::fs::write(
        &jwks,
        serde_json::json!({"keys": [jwks_key.jwk]}).to_string(),
    )
    .unwrap();
    let (_, block) = client_new(&[
        "--id",
        "file-key",
        "--auth",
        "private_key_jwt",
        "--jwks-file",
        jwks.to_str().unwrap(),
    ]);
    blocks.push_str(&block);
    signed.push(jwks_key.sign(&assertion_claims("file-key", "file-key"), false));
    // A federated workload, with a trusted issuer of the test's (a JWKS file).
    let issuer_key = crate::common::assertion::ClientKey::new(A::RS256);
    let issuer_jwks = dir.path().join("issuer.jwks.json");
    std::fs::write(
        &issuer_jwks,
        serde_json::json!({"keys": [issuer_key.jwk]}).to_string(),
    )
    .unwrap();
    let (once, block) = client_new(&[
        "--id",
        "workload",
        "--auth",
        "federated",
        "--issuer",
        "https://cluster.example",
        "--subject",
        "system:serviceaccount:payments:api",
    ]);
    assert!(once.contains("[[trusted_issuers]]"), "{once}");
    blocks.push_str(&block);
    blocks.push_str(&format!(
        "[[trusted_issuers]]\nissuer = \"https://cluster.example\"\njwks_file = {:?}\n",
        issuer_jwks.to_str().unwrap()
    ));
    signed.push(issuer_key.sign(
        &assertion_claims(
            "https://cluster.example",
            "system:serviceaccount:payments:api",
        ),
        true,
    ));
    // Every printed block parses in a real tokend, and every client gets a token.
    let app = serve_with(dir.path(), &blocks).await;
    for (i, assertion) in signed.iter().enumerate() {
        assert_eq!(
            crate::common::assertion::token_with(&app, assertion, &[])
                .await
                .status(),
            200,
            "client {i}"
        );
    }
    // An option of another kind is refused.
    let out = tokend()
        .args(["client", "new", "--id", "x", "--auth", "private_key_jwt"])
        .args(["--issuer", "https://cluster.example"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = tokend()
        .args(["client", "new", "--id", "x", "--auth", "federated"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "federated needs --issuer and --subject"
    );
}

#[test]
fn client_new_prints_mtls_blocks_with_the_rfc_8705_names() {
    // Every printed block is also loaded, with the others, by a tokend
    // whose listeners take client certificates (at the end).
    let mut blocks = String::new();
    for (flag, value, name) in [
        (
            "--san-uri",
            "spiffe://example.org/ns/payments/sa/api",
            "tls_client_auth_san_uri",
        ),
        ("--san-dns", "api.payments.svc", "tls_client_auth_san_dns"),
        (
            "--subject-dn",
            "CN=api,O=Payments",
            "tls_client_auth_subject_dn",
        ),
        ("--san-ip", "10.0.0.7", "tls_client_auth_san_ip"),
    ] {
        let id = format!("mtls-{name}");
        let (once, block) = client_new(&[
            "--id",
            &id,
            "--auth",
            "tls_client_auth",
            flag,
            value,
            "--bound-tokens",
        ]);
        assert!(once.is_empty());
        let t: toml::Table = toml::from_str(&block).unwrap();
        let c = &t["clients"][0];
        assert_eq!(
            c["token_endpoint_auth_method"].as_str(),
            Some("tls_client_auth")
        );
        assert_eq!(c[name].as_str(), Some(value), "{block}");
        assert_eq!(
            c["tls_client_certificate_bound_access_tokens"].as_bool(),
            Some(true)
        );
        assert!(c.get("secret_hashes").is_none());
        blocks.push_str(&block);
    }
    // Exactly one name.
    let out = tokend()
        .args(["client", "new", "--id", "x", "--auth", "tls_client_auth"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // self_signed: the certificate's public key as the client's jwks, the
    // same JWK as its public key's.
    let dir = TempDir::new().unwrap();
    let ca = crate::common::pki::ca("self-signed client");
    let cert = dir.path().join("client.pem");
    std::fs::write(&cert, ca.pem()).unwrap();
    let public = dir.path().join("client.pub.pem");
    std::fs::write(&public, ca.key().public_key_pem()).unwrap();
    let (_, block) = client_new(&[
        "--id",
        "self-signed",
        "--auth",
        "self_signed_tls_client_auth",
        "--cert",
        cert.to_str().unwrap(),
    ]);
    let t: toml::Table = toml::from_str(&block).unwrap();
    let c = &t["clients"][0];
    assert_eq!(
        c["token_endpoint_auth_method"].as_str(),
        Some("self_signed_tls_client_auth")
    );
    assert_eq!(
        c["tls_client_certificate_bound_access_tokens"].as_bool(),
        Some(false)
    );
    let (_, key_block) = client_new(&[
        "--id",
        "self-signed",
        "--auth",
        "private_key_jwt",
        "--public-key",
        public.to_str().unwrap(),
    ]);
    let k: toml::Table = toml::from_str(&key_block).unwrap();
    assert_eq!(c["jwks"], k["clients"][0]["jwks"], "the certificate's key");
    assert_eq!(c["jwks"]["keys"][0]["kty"].as_str(), Some("EC"));
    blocks.push_str(&block);
    // A tokend with client certificates on (optional, self-signed admitted)
    // accepts every printed block: no problem in the whole configuration.
    let server_ca = crate::common::pki::ca("server CA");
    let (server_cert, server_key, _) = crate::common::pki::leaf(&server_ca, "tokend");
    std::fs::write(dir.path().join("cert.pem"), server_cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), server_key).unwrap();
    std::fs::write(
        dir.path().join("client-ca.pem"),
        crate::common::pki::ca("client CA").pem(),
    )
    .unwrap();
    let base = ConfigBuilder::memory()
        .set_path("tls.cert_file", &dir.path().join("cert.pem"))
        .set_path("tls.key_file", &dir.path().join("key.pem"))
        .set_path("tls.client_ca_file", &dir.path().join("client-ca.pem"))
        .set("tls.client_auth", "optional")
        .set("tls.self_signed_client_certs", true);
    let path = dir.path().join("tokend.toml");
    std::fs::write(&path, format!("{}\n{blocks}", base.to_toml())).unwrap();
    let problems = tokend::config::Config::load(Some(&path), Vec::new())
        .unwrap()
        .validate();
    assert!(problems.is_empty(), "{problems:?}\n{blocks}");
    assert_eq!(blocks.matches("[[clients]]").count(), 5, "{blocks}");
}
