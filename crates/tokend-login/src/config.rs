//! The login app's configuration file (`examples/login.toml`) and its users
//! file (`examples/users.toml`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Environment variable holding the login app's bearer secret when the
/// config has no `app_token_file`.
pub const TOKEN_ENV: &str = "TOKEND_LOGIN_APP_TOKEN";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    /// tokend's gRPC listener, e.g. `http://127.0.0.1:50051`.
    tokend_grpc_url: String,
    /// For an `https://` URL: the PEM CA certificate(s) tokend's certificate chains to.
    tokend_ca_file: Option<PathBuf>,
    /// A file holding the bearer secret (first line). Unset: `TOKEND_LOGIN_APP_TOKEN`.
    app_token_file: Option<PathBuf>,
    users_file: PathBuf,
    #[serde(default = "yes")]
    cookie_secure: bool,
    #[serde(default)]
    remember_consent: bool,
    #[serde(default = "default_slots")]
    max_concurrent_verifications: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}
fn yes() -> bool {
    true
}
fn default_slots() -> usize {
    4
}

/// The effective settings.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub tokend_grpc_url: String,
    /// PEM CA certificates to trust for an `https://` tokend_grpc_url.
    pub tokend_ca_pem: Option<String>,
    /// The login app's bearer secret for tokend (never logged).
    pub app_token: String,
    pub users: Vec<User>,
    pub cookie_secure: bool,
    pub remember_consent: bool,
    pub max_concurrent_verifications: usize,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("tokend_grpc_url", &self.tokend_grpc_url)
            .field("users", &self.users.len())
            .field("cookie_secure", &self.cookie_secure)
            .field("remember_consent", &self.remember_consent)
            .finish_non_exhaustive()
    }
}

/// One user of the users file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: String,
    /// argon2id PHC string (`tokend hash-secret --argon2`).
    pub password_hash: String,
    /// The stable user id: the access tokens' `sub`.
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<User>,
}

impl Settings {
    /// Reads the config file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with_env_token(path, std::env::var(TOKEN_ENV).ok())
    }

    /// [`Settings::load`] with the value of `TOKEND_LOGIN_APP_TOKEN` given.
    pub fn load_with_env_token(path: &Path, env_token: Option<String>) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: File =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let app_token = match &file.app_token_file {
            Some(p) => {
                let p = dir.join(p);
                let t = std::fs::read_to_string(&p)
                    .with_context(|| format!("reading app_token_file {}", p.display()))?;
                t.lines().next().unwrap_or("").trim().to_owned()
            }
            None => env_token.with_context(|| {
                format!("no app_token_file in the config and {TOKEN_ENV} is not set")
            })?,
        };
        if app_token.is_empty() {
            bail!("the login app's bearer secret is empty");
        }
        let users = load_users(&dir.join(&file.users_file))?;
        let tokend_ca_pem = match &file.tokend_ca_file {
            Some(p) => {
                let p = dir.join(p);
                Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("reading tokend_ca_file {}", p.display()))?,
                )
            }
            None => None,
        };
        if file.tokend_grpc_url.starts_with("https://") && tokend_ca_pem.is_none() {
            bail!("an https:// tokend_grpc_url needs tokend_ca_file (the CA to trust for tokend)");
        }
        Ok(Self {
            listen: file.listen,
            tokend_grpc_url: file.tokend_grpc_url,
            tokend_ca_pem,
            app_token,
            users,
            cookie_secure: file.cookie_secure,
            remember_consent: file.remember_consent,
            max_concurrent_verifications: file.max_concurrent_verifications.max(1),
        })
    }
}

/// Reads and checks a users file: unique usernames, subjects and hashes that parse.
pub fn load_users(path: &Path) -> anyhow::Result<Vec<User>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: UsersFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    check_users(&file.users)?;
    Ok(file.users)
}

/// The rules every user entry must follow.
pub fn check_users(users: &[User]) -> anyhow::Result<()> {
    let mut seen = HashMap::new();
    for u in users {
        // tokend's rules for AcceptAuthorization.username.
        if u.username.is_empty()
            || u.username.chars().count() > 255
            || u.username.chars().any(char::is_control)
        {
            bail!("a username must have 1 to 255 characters and no control characters");
        }
        if u.subject.is_empty() || u.subject.chars().count() > 255 {
            bail!(
                "user {:?}: subject must have 1 to 255 characters",
                u.username
            );
        }
        if !u.password_hash.starts_with("$argon2id$")
            || argon2::password_hash::phc::PasswordHash::new(&u.password_hash).is_err()
        {
            bail!(
                "user {:?}: password_hash must be an argon2id PHC string (`tokend hash-secret --argon2`)",
                u.username
            );
        }
        if seen.insert(u.username.as_str(), ()).is_some() {
            bail!("user {:?} appears twice", u.username);
        }
    }
    Ok(())
}
