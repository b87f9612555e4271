//! Test configurations, built as TOML values and written by the TOML
//! serializer (never by string templates or replacement): a base with
//! loopback listeners on port 0 and the standard test clients, adjusted key
//! by key with [`ConfigBuilder::set`].

use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::SECRET;
use super::flows::{LOGIN_APP_TOKEN, LOGIN_URL, MOBILE_CB, WEB_CB};

/// The issuer of every test configuration.
pub const ISSUER: &str = "https://tokend.test";

/// `sha256:` hash of `secret`, as `secret_hashes` and `token_hash` take it.
pub fn sha256(secret: &str) -> String {
    tokend::oauth::client::SecretHash::sha256_of(secret)
}

/// A tokend configuration under construction.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    table: Table,
}

impl ConfigBuilder {
    /// Both listeners on `127.0.0.1:0`, the test issuer, no clients, and
    /// defaults for everything else (memory store, ephemeral RS256 key).
    pub fn bare() -> Self {
        Self {
            table: toml::toml! {
                issuer = (ISSUER)
                [http]
                listen = "127.0.0.1:0"
                [grpc]
                listen = "127.0.0.1:0"
            },
        }
    }

    /// [`ConfigBuilder::bare`] with the memory store, a 5 s shutdown grace and
    /// the standard clients, all with the secret [`SECRET`]:
    /// `orders-service` (scopes, audiences, claims), `partner`
    /// (`claims_in_response`), `basic-only` (`client_secret_basic` only) and
    /// `resource-server` (introspects).
    pub fn memory() -> Self {
        let hash = sha256(SECRET);
        let mut b = Self::bare()
            .store("memory://")
            .set("server.shutdown_grace_secs", 5);
        for client in [
            toml::toml! {
                client_id = "orders-service"
                secret_hashes = [(hash.as_str())]
                grant_types = ["client_credentials"]
                scopes = ["orders:read", "orders:write"]
                default_scopes = ["orders:read"]
                audience = ["orders-api", "billing-api"]
                access_ttl_secs = 3600
                claims = { organisation_id = 74, roles = ["ADMIN", "DOCTOR"], is_test = false }
            },
            toml::toml! {
                client_id = "partner"
                secret_hashes = [(hash.as_str())]
                grant_types = ["client_credentials"]
                scopes = ["bookings:create"]
                audience = ["bookings-api"]
                claims = { partner_id = "f31120ee", user_id = 276 }
                claims_in_response = true
            },
            toml::toml! {
                client_id = "basic-only"
                secret_hashes = [(hash.as_str())]
                token_endpoint_auth_method = "client_secret_basic"
                grant_types = ["client_credentials"]
            },
            toml::toml! {
                client_id = "resource-server"
                secret_hashes = [(hash.as_str())]
                grant_types = ["client_credentials"]
                introspection = "any"
            },
        ] {
            b = b.client(client);
        }
        b
    }

    /// [`ConfigBuilder::memory`] on another store URL.
    pub fn on_store(url: &str) -> Self {
        Self::memory().store(url)
    }

    pub fn store(self, url: &str) -> Self {
        self.set("store.url", url)
    }

    /// An ephemeral key of `algorithm` (`RS256`, `ES256`, `EdDSA`).
    pub fn algorithm(self, algorithm: &str) -> Self {
        self.set("signing.algorithm", algorithm)
    }

    /// The key file `path` (absolute, or relative to the config file).
    pub fn signing_key(self, algorithm: &str, path: &Path) -> Self {
        self.algorithm(algorithm).set_path("signing.key_file", path)
    }

    /// Sets `key`, a dotted path (`"server.drain_delay_secs"`); missing
    /// tables on the way are created.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let (table, last) = walk(&mut self.table, key);
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Sets `key` to a file path.
    pub fn set_path(self, key: &str, path: &Path) -> Self {
        let text = path.to_str().expect("a UTF-8 path").to_owned();
        self.set(key, text)
    }

    /// Removes `key` (a dotted path) if present.
    pub fn remove(mut self, key: &str) -> Self {
        let (table, last) = walk(&mut self.table, key);
        table.remove(last);
        self
    }

    /// Appends a `[[clients]]` entry (build it with `toml::toml!`).
    pub fn client(mut self, client: Table) -> Self {
        let clients = self
            .table
            .entry("clients")
            .or_insert_with(|| Value::Array(Vec::new()));
        clients
            .as_array_mut()
            .expect("clients is an array")
            .push(Value::Table(client));
        self
    }

    /// Sets `key` on the client `client_id` (which must exist).
    pub fn client_set(mut self, client_id: &str, key: &str, value: impl Into<Value>) -> Self {
        let client = self
            .table
            .get_mut("clients")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_table_mut)
            .find(|c| c.get("client_id").and_then(Value::as_str) == Some(client_id))
            .unwrap_or_else(|| panic!("no client {client_id:?} in the test config"));
        client.insert(key.to_owned(), value.into());
        self
    }

    /// The authorization-code flow: clients `web-app` (confidential, PKCE
    /// optional, refresh tokens), `mobile-app` (public, loopback redirect)
    /// and `other-web`, and the login app (`[authorization]`).
    pub fn code_flow(self) -> Self {
        let hash = sha256(SECRET);
        self.client(toml::toml! {
            client_id = "web-app"
            secret_hashes = [(hash.as_str())]
            grant_types = ["authorization_code", "refresh_token"]
            scopes = ["profile", "orders:read", "orders:write"]
            default_scopes = ["profile"]
            audience = ["orders-api"]
            redirect_uris = [(WEB_CB), "https://app.example/other"]
            claims = { tenant = "acme" }
        })
        .client(toml::toml! {
            client_id = "mobile-app"
            token_endpoint_auth_method = "none"
            grant_types = ["authorization_code", "refresh_token"]
            scopes = ["profile"]
            redirect_uris = [(MOBILE_CB)]
        })
        .client(toml::toml! {
            client_id = "other-web"
            secret_hashes = [(hash.as_str())]
            grant_types = ["authorization_code"]
            scopes = ["profile"]
            redirect_uris = ["https://other.example/cb"]
        })
        .set("authorization.login_url", LOGIN_URL)
        .set(
            "authorization.login_app_token_hash",
            sha256(LOGIN_APP_TOKEN),
        )
    }

    /// The admin listener on `127.0.0.1:0`, with the bearer secret `token`
    /// for the ClientAdmin API (`None`: metrics and probes only).
    pub fn admin(self, token: Option<&str>) -> Self {
        let b = self.set("admin.listen", "127.0.0.1:0");
        match token {
            Some(t) => b.set("admin.token_hash", sha256(t)),
            None => b,
        }
    }

    /// The TOML text, from the serializer.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.table).expect("a test config serializes")
    }

    /// Writes the TOML text to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.to_toml())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Writes `dir/tokend.toml` (so relative paths resolve against `dir`, as
    /// in production) and loads it with the `TOKEND_*` overrides in `env`.
    pub fn load_in(&self, dir: &Path, env: &[(&str, &str)]) -> tokend::config::Config {
        let path = dir.join("tokend.toml");
        self.write(&path);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        tokend::config::Config::load(Some(&path), env).expect("the test config loads")
    }
}

/// The table holding the last segment of the dotted `key`, and that segment.
fn walk<'a, 'k>(root: &'a mut Table, key: &'k str) -> (&'a mut Table, &'k str) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a non-empty key");
    let mut table = root;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{part} in {key} is not a table"));
    }
    (table, last)
}

/// A clients file (only `[[clients]]`, as `clients_file` takes it) with the
/// given entries.
pub fn clients_file(clients: impl IntoIterator<Item = Table>) -> String {
    let mut table = Table::new();
    table.insert(
        "clients".into(),
        Value::Array(clients.into_iter().map(Value::Table).collect()),
    );
    toml::to_string(&table).expect("a clients file serializes")
}

/// A fresh key of `algorithm` written to `dir/name`; returns its path.
pub fn key_file(dir: &Path, name: &str, algorithm: tokend::token::Algorithm) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        tokend::token::keys::generate_pem(algorithm).expect("key generation"),
    )
    .unwrap();
    path
}
