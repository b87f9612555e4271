//! tokend in-process: the server built from a test configuration and run on
//! the test's runtime, its listeners bound to ephemeral loopback ports.
//! Derefs to [`Api`] for requests; `core` gives the tests the OAuth core.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;
use tokend::config::Config;
use tokend::server::Server;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::config::ConfigBuilder;
use super::wait::eventually;

/// Bound on an in-process server turning ready.
const READY: Duration = Duration::from_secs(10);

/// A running in-process tokend, stopped on drop.
pub struct TestApp {
    api: Api,
    pub core: Arc<tokend::oauth::Core>,
    pub shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The folder of the config file, alive as long as the server.
    _dir: Option<TempDir>,
}

impl Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestApp {
    /// Starts tokend from `config` (written to a temp folder first, so
    /// relative paths and `clients_file` behave as in production) and waits
    /// until `/readyz` answers 200.
    pub async fn start(config: &ConfigBuilder) -> Self {
        let app = Self::start_unready(config).await;
        app.wait_ready().await;
        app
    }

    /// Starts tokend from `config` without waiting for readiness (e.g. while
    /// its Redis is down, or with TLS listeners the plain probe cannot
    /// reach).
    pub async fn start_unready(config: &ConfigBuilder) -> Self {
        let dir = TempDir::with_prefix("tokend-app-").unwrap();
        let cfg = config.load_in(dir.path(), &[]);
        let mut app = Self::start_config_unready(cfg).await;
        app._dir = Some(dir);
        app
    }

    /// Starts tokend from a loaded configuration and waits for readiness.
    pub async fn start_config(cfg: Config) -> Self {
        let app = Self::start_config_unready(cfg).await;
        app.wait_ready().await;
        app
    }

    /// Starts tokend from a loaded configuration.
    pub async fn start_config_unready(cfg: Config) -> Self {
        let server = Server::build(cfg.parse().expect("test config parses"))
            .await
            .expect("server builds");
        let api = Api::new(server.http_addr(), server.grpc_addr(), server.admin_addr());
        let core = server.core();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Self {
            api,
            core,
            shutdown,
            task: Some(task),
            _dir: None,
        }
    }

    /// Memory store, ephemeral RS256 key, the standard clients.
    /// Two replicas of `config` sharing one fresh `algorithm` signing key
    /// (as replicas share a mounted key file); the folder holds the key.
    pub async fn replicas(
        config: ConfigBuilder,
        algorithm: tokend::token::Algorithm,
    ) -> (TempDir, Self, Self) {
        let dir = TempDir::new().unwrap();
        let key = super::config::key_file(dir.path(), "signing.pem", algorithm);
        let config = config.signing_key(algorithm.as_str(), &key);
        let a = Self::start(&config).await;
        let b = Self::start(&config).await;
        (dir, a, b)
    }

    pub async fn default_memory() -> Self {
        Self::start(&ConfigBuilder::memory()).await
    }

    async fn wait_ready(&self) {
        assert!(
            eventually(READY, || async { self.readyz().await == 200 }).await,
            "tokend did not become ready within {READY:?}"
        );
    }

    /// Stops the server and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A reloader of `app`'s configuration `cfg`, read from `dir/tokend.toml`
/// (as [`ConfigBuilder::load_in`] writes it), reloading when told to.
pub fn reloader(app: &TestApp, cfg: Config, dir: &std::path::Path) -> tokend::reload::Reloader {
    tokend::reload::Reloader::new(
        app.core.clone(),
        cfg,
        tokend::reload::ReloadOptions {
            config_path: Some(dir.join("tokend.toml")),
            sighup: false,
            poll: None,
        },
    )
}
