//! The checked-in example configuration loads, and bad ones are refused at start.

use std::path::Path;

use tokend_login::config::Settings;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn the_example_config_and_users_load() {
    let s =
        Settings::load_with_env_token(&examples().join("login.toml"), Some("demo".into())).unwrap();
    assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(s.tokend_grpc_url, "http://127.0.0.1:50051");
    assert!(!s.cookie_secure, "the demo runs on plain http");
    assert!(!s.remember_consent);
    let demo = s.users.iter().find(|u| u.username == "demo").unwrap();
    assert!(demo.password_hash.starts_with("$argon2id$"));
    // The secret never reaches the debug output.
    assert!(!format!("{s:?}").contains("demo\""));
    // Without app_token_file or the environment variable: refused.
    let e = Settings::load_with_env_token(&examples().join("login.toml"), None).unwrap_err();
    assert!(e.to_string().contains("TOKEND_LOGIN_APP_TOKEN"), "{e}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let users = std::fs::read_to_string(examples().join("users.toml")).unwrap();
    write(dir.path(), "users.toml", &users);
    write(dir.path(), "token", "from-a-file\n");
    let ok = write(
        dir.path(),
        "ok.toml",
        "tokend_grpc_url = \"http://127.0.0.1:1\"\nusers_file = \"users.toml\"\napp_token_file = \"token\"\n",
    );
    let s = Settings::load_with_env_token(&ok, None).unwrap();
    assert_eq!(s.app_token, "from-a-file");
    assert!(s.cookie_secure, "Secure by default");
    let cases = [
        // https without a CA to trust; an unknown key; a user twice; a bad hash.
        (
            "tokend_grpc_url = \"https://tokend:50051\"\nusers_file = \"users.toml\"\n",
            "",
            "tokend_ca_file",
        ),
        (
            "tokend_grpc_url = \"http://t\"\nusers_file = \"users.toml\"\nlisten_adress = \"x\"\n",
            "",
            "unknown field",
        ),
        (
            "tokend_grpc_url = \"http://t\"\nusers_file = \"u2.toml\"\n",
            &format!("{users}\n{users}"),
            "twice",
        ),
        (
            "tokend_grpc_url = \"http://t\"\nusers_file = \"u2.toml\"\n",
            "[[users]]\nusername = \"a\"\npassword_hash = \"sha256:00\"\nsubject = \"s\"\n",
            "argon2id",
        ),
    ];
    for (config, users2, want) in cases {
        write(dir.path(), "u2.toml", users2);
        let p = write(dir.path(), "bad.toml", config);
        let e = Settings::load_with_env_token(&p, Some("t".into())).unwrap_err();
        assert!(format!("{e:#}").contains(want), "{want}: {e:#}");
    }
}
