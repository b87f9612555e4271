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
