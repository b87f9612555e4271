//! Hot reload of the clients and signing keys, on SIGHUP and when a watched
//! file changes.
//!
//! A reload re-runs [`crate::config::load`] (the same parse as at start) and
//! only when all of it succeeded swaps the live settings into the core: the
//! client registry, the key set, the rate limits and the secret-guessing
//! back-off (each behind an `ArcSwap`, so a request sees the old set or the
//! new one, never a mix). Any error keeps the running configuration and logs
//! why. Every other key is bound at start; a change to one is logged at warn
//! level, naming the key ([`restart_only_changes`]).
//!
//! Files are watched by polling their content hash (config file, clients
//! file, key files) every interval rather than with inotify: reading through
//! the path follows Kubernetes' `..data` symlink swap of mounted Secrets and
//! ConfigMaps, which inotify watches on the old inode would miss.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, Live, restart_only_changes};
use crate::oauth::Core;
use crate::watch::{FileWatch, Trigger};

/// What triggers a reload.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// The config file `serve` was started with (`None`: built-in defaults,
    /// then only SIGHUP reloads, re-reading the environment).
    pub config_path: Option<PathBuf>,
    /// Reload on SIGHUP (only for the `serve` process: a signal is
    /// process-wide).
    pub sighup: bool,
    /// Poll watched files this often; `None` disables file watching.
    pub poll: Option<Duration>,
}

/// Re-loads configuration into a running core.
pub struct Reloader {
    core: Arc<Core>,
    opts: ReloadOptions,
    /// The configuration in effect (to report changes needing a restart).
    current: Config,
}

impl Reloader {
    pub fn new(core: Arc<Core>, current: Config, opts: ReloadOptions) -> Self {
        Self {
            core,
            opts,
            current,
        }
    }

    /// Loads and parses the configuration and swaps in what applies live
    /// (clients, keys, rate limits, the secret-guessing back-off), or changes
    /// nothing and returns why. Restart-only keys that changed are logged at
    /// warn level by name.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        let next = crate::config::load(self.opts.config_path.as_deref(), std::env::vars())?;
        for key in restart_only_changes(&self.current, &next.file) {
            tracing::warn!(
                key,
                "configuration change needs a restart to take effect; keeping the running value"
            );
        }
        let Live {
            clients,
            keys,
            limits,
        } = next.live;
        let n = clients.all().count();
        self.core.replace_clients(clients);
        self.core.replace_limits(limits);
        // An ephemeral key stays (a new one would orphan every token issued
        // so far), and so does the running algorithm.
        let same_signing =
            crate::signing::restart_only_changes(&self.current.signing, &next.file.signing)
                .is_empty();
        if let (Some(keys), true) = (keys, same_signing) {
            let before = self.core.keys();
            self.core.replace_keys(keys);
            crate::metrics::signing_key_changed(&before, &self.core.keys());
        }
        tracing::info!(
            clients = n,
            kid = self.core.keys().active().kid(),
            "configuration reloaded"
        );
        // Remember what is now running, but keep the restart-only settings
        // of the process so they keep being reported until a restart.
        let mut file = next.file;
        keep_restart_only(&self.current, &mut file);
        self.current = file;
        Ok(())
    }

    /// Reloads and logs the outcome.
    pub fn reload_logged(&mut self, why: &'static str) {
        match self.reload() {
            Ok(()) => {}
            Err(e) => tracing::error!(
                trigger = why,
                error = %format!("{e:#}"),
                "reload failed; keeping the previous configuration"
            ),
        }
    }

    /// Files whose content change triggers a reload.
    fn watched(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.opts.config_path.iter().cloned().collect();
        files.extend(self.current.clients_file.iter().cloned());
        files.extend(self.current.signing.key_file.iter().cloned());
        files.extend(self.current.signing.previous_key_files.iter().cloned());
        files
    }

    /// Reloads on SIGHUP and on watched-file changes until `stop`. The
    /// SIGHUP handler is installed before this returns, so call it before
    /// serving, then spawn the future. A failed reload is not retried until
    /// the files change again, so a broken file logs once, not every poll.
    pub fn run(
        self,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let watch = FileWatch::new(self.opts.sighup, self.opts.poll, &self.watched());
        self.run_with(watch, stop)
    }

    async fn run_with(mut self, mut watch: FileWatch, stop: CancellationToken) {
        while let Some(trigger) = watch.next(&stop, &self.watched()).await {
            match trigger {
                Trigger::Hangup => {
                    tracing::info!("SIGHUP: reloading configuration");
                    self.reload_logged("sighup");
                }
                Trigger::Changed => {
                    tracing::info!("configuration file changed: reloading");
                    self.reload_logged("file_change");
                }
            }
            // What is watched may itself have changed (a new clients_file).
            watch.mark_seen(&self.watched());
        }
    }
}

/// Copies the start-only settings of `running` into `next` (everything but
/// what [`Reloader::reload`] applies).
fn keep_restart_only(running: &Config, next: &mut Config) {
    next.issuer = running.issuer.clone();
    next.http = running.http.clone();
    next.grpc = running.grpc.clone();
    next.store = running.store.clone();
    next.tokens = running.tokens.clone();
    next.log = running.log.clone();
    next.server = running.server.clone();
    next.admin = running.admin.clone();
    next.authorization = running.authorization.clone();
    next.tls = running.tls.clone();
    if !crate::signing::restart_only_changes(&running.signing, &next.signing).is_empty() {
        next.signing = running.signing.clone();
    }
}
