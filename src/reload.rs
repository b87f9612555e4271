//! Hot reload of the clients and signing keys, on SIGHUP and when a watched
//! file changes.
//!
//! A reload re-runs [`Config::load`] and [`Config::validate`], builds a new
//! [`Registry`] and [`KeySet`], and only when all of that succeeded swaps both
//! into the core (each behind an `ArcSwap`, so a request sees the old set or
//! the new one, never a mix). Any error keeps the running configuration and
//! logs why. Settings that are bound at start (listen addresses, store, admin
//! listener, issuer, token lifetimes, log) are not reloaded: a change to them
//! is logged as needing a restart.
//!
//! Files are watched by polling their content hash (config file, clients
//! file, key files) every interval rather than with inotify: reading through
//! the path follows Kubernetes' `..data` symlink swap of mounted Secrets and
//! ConfigMaps, which inotify watches on the old inode would miss.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::oauth::{Core, Registry};
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

    /// Loads, validates and swaps in the new clients and keys, or changes
    /// nothing and returns why.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        let cfg = Config::load(self.opts.config_path.as_deref(), std::env::vars())?;
        let problems = cfg.validate();
        if !problems.is_empty() {
            anyhow::bail!("invalid configuration:\n  {}", problems.join("\n  "));
        }
        let registry = Registry::new(&cfg.clients)
            .map_err(|e| anyhow::anyhow!("invalid clients:\n  {}", e.join("\n  ")))?;
        // Without a key file the key is ephemeral: generating a new one would
        // orphan every token issued so far, so the running key stays.
        let keys = if self.current.signing.key_file.is_some() && cfg.signing.key_file.is_some() {
            Some(crate::server::load_keys(&cfg).context("signing")?)
        } else {
            None
        };
        for key in restart_only_changes(&self.current, &cfg) {
            tracing::warn!(
                key,
                "configuration change needs a restart to take effect; keeping the running value"
            );
        }
        let n = registry.all().count();
        self.core.replace_clients(registry);
        if let Some(keys) = keys {
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
        let mut next = cfg;
        keep_restart_only(&self.current, &mut next);
        self.current = next;
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

/// Names of settings that differ between `old` and `new` but are only read
/// at start.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    let mut check = |name: &'static str, changed: bool| {
        if changed {
            v.push(name);
        }
    };
    check("issuer", old.issuer != new.issuer);
    check("http.listen", old.http.listen != new.http.listen);
    check(
        "http.max_body_bytes",
        old.http.max_body_bytes != new.http.max_body_bytes,
    );
    check("grpc.listen", old.grpc.listen != new.grpc.listen);
    check("store.url", old.store.url != new.store.url);
    check(
        "store.key_prefix",
        old.store.key_prefix != new.store.key_prefix,
    );
    check(
        "store.timeout_ms",
        old.store.timeout_ms != new.store.timeout_ms,
    );
    check(
        "store.tls_*_file",
        (
            &old.store.tls_ca_file,
            &old.store.tls_cert_file,
            &old.store.tls_key_file,
        ) != (
            &new.store.tls_ca_file,
            &new.store.tls_cert_file,
            &new.store.tls_key_file,
        ),
    );
    check(
        "tokens",
        (
            old.tokens.access_ttl_secs,
            old.tokens.refresh_ttl_secs,
            old.tokens.code_ttl_secs,
            old.tokens.leeway_secs,
        ) != (
            new.tokens.access_ttl_secs,
            new.tokens.refresh_ttl_secs,
            new.tokens.code_ttl_secs,
            new.tokens.leeway_secs,
        ),
    );
    check(
        "signing.algorithm",
        old.signing.algorithm != new.signing.algorithm,
    );
    check(
        "signing.key_file (ephemeral key)",
        old.signing.key_file.is_none() != new.signing.key_file.is_none(),
    );
    check(
        "log",
        old.log.level != new.log.level || old.log.format != new.log.format,
    );
    check(
        "server",
        old.server.shutdown_grace_secs != new.server.shutdown_grace_secs
            || old.server.reload_poll_secs != new.server.reload_poll_secs,
    );
    check("admin", old.admin != new.admin);
    check("authorization", old.authorization != new.authorization);
    v
}

/// Copies the start-only settings of `running` into `next`.
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
    next.signing.algorithm = running.signing.algorithm;
    if running.signing.key_file.is_none() || next.signing.key_file.is_none() {
        next.signing = running.signing.clone();
    }
}
