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
    /// Trusted issuers' JWKS caches, kept across reloads.
    federation: crate::federation::Federation,
}

impl Reloader {
    pub fn new(core: Arc<Core>, current: Config, opts: ReloadOptions) -> Self {
        Self {
            core,
            opts,
            current,
            federation: crate::federation::Federation::default(),
        }
    }

    /// Shares the server's trusted-issuer fetchers, so a reload keeps their
    /// cached keys (the server's own, built at start).
    pub fn with_federation(mut self, federation: crate::federation::Federation) -> Self {
        self.federation = federation;
        self
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
            trusted_issuers,
        } = next.live;
        let clients = clients.with_issuers(self.federation.issuers(&trusted_issuers));
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
            let after = self.core.keys();
            crate::metrics::signing_key_changed(&before, &after);
            if before.jwks() != after.jwks()
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                // Resource servers refetch the JWKS (tokend.v1.RevocationFeed).
                let core = self.core.clone();
                rt.spawn(async move {
                    if let Err(e) = core.publish_keys_changed().await {
                        tracing::warn!(error = %e, "keys_changed not published to the revocation feed");
                    }
                });
            }
        }
        tracing::info!(
            clients = n,
            kid = self.core.keys().active().kid(),
            "configuration reloaded"
        );
        // Remember what is now running: the live sections only, so a pending
        // restart-only change keeps being reported until a restart.
        let file = next.file;
        let running = &mut self.current;
        running.clients_file = file.clients_file;
        running.clients = file.clients;
        running.trusted_issuers = file.trusted_issuers;
        running.rate_limit = file.rate_limit;
        running.auth_throttle = file.auth_throttle;
        if same_signing {
            running.signing = file.signing;
        }
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
        // Clients' JWK Set files (private_key_jwt).
        files.extend(
            self.current
                .clients
                .iter()
                .filter_map(|c| c.jwks_file.clone()),
        );
        // Trusted issuers' JWK Set files (federation).
        files.extend(
            self.current
                .trusted_issuers
                .iter()
                .filter_map(|t| t.jwks_file.clone()),
        );
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;
    use crate::oauth::limits::{LimitPolicy, RateLimit};

    /// Every restart-only key, with an environment override that changes it.
    const RESTART_ONLY: &[(&str, &str, &str)] = &[
        ("TOKEND_ISSUER", "https://other.example", "issuer"),
        ("TOKEND_HTTP_LISTEN", "127.0.0.1:0", "http.listen"),
        ("TOKEND_HTTP_MAX_BODY_BYTES", "1000", "http.max_body_bytes"),
        ("TOKEND_GRPC_LISTEN", "127.0.0.1:0", "grpc.listen"),
        (
            "TOKEND_GRPC_MAX_MESSAGE_BYTES",
            "1000",
            "grpc.max_message_bytes",
        ),
        ("TOKEND_STORE_KEY_PREFIX", "other:", "store.key_prefix"),
        (
            "TOKEND_TELEMETRY_OTLP_ENDPOINT",
            "http://collector:4317",
            "telemetry.otlp_endpoint",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317",
            "telemetry.otlp_endpoint",
        ),
        (
            "TOKEND_TELEMETRY_SAMPLING_RATIO",
            "0.5",
            "telemetry.sampling_ratio",
        ),
        (
            "TOKEND_TELEMETRY_SERVICE_NAME",
            "auth",
            "telemetry.service_name",
        ),
        (
            "TOKEND_TELEMETRY_RESOURCE_ATTRIBUTES",
            "team=identity",
            "telemetry.resource_attributes",
        ),
        (
            "TOKEND_TELEMETRY_MAX_QUEUE_SIZE",
            "64",
            "telemetry.max_queue_size",
        ),
        ("TOKEND_STORE_TIMEOUT_MS", "99", "store.timeout_ms"),
        ("TOKEND_STORE_PASSWORD", "hunter2", "store.password"),
        (
            "TOKEND_STORE_SENTINEL_USERNAME",
            "sentinel-user",
            "store.sentinel_username",
        ),
        (
            "TOKEND_STORE_SENTINEL_PASSWORD",
            "hunter3",
            "store.sentinel_password",
        ),
        ("TOKEND_STORE_REPLICA_ACKS", "1", "store.replica_acks"),
        (
            "TOKEND_STORE_REPLICA_ACK_TIMEOUT_MS",
            "50",
            "store.replica_ack_timeout_ms",
        ),
        (
            "TOKEND_STORE_ALLOW_EVICTION",
            "true",
            "store.allow_eviction",
        ),
        (
            "TOKEND_TOKENS_ACCESS_TTL_SECS",
            "60",
            "tokens.access_ttl_secs",
        ),
        (
            "TOKEND_TOKENS_REFRESH_TTL_SECS",
            "60",
            "tokens.refresh_ttl_secs",
        ),
        ("TOKEND_TOKENS_CODE_TTL_SECS", "5", "tokens.code_ttl_secs"),
        ("TOKEND_TOKENS_LEEWAY_SECS", "1", "tokens.leeway_secs"),
        ("TOKEND_SIGNING_ALGORITHM", "ES256", "signing.algorithm"),
        ("TOKEND_LOG_LEVEL", "debug", "log.level"),
        ("TOKEND_LOG_FORMAT", "json", "log.format"),
        (
            "TOKEND_SERVER_SHUTDOWN_GRACE_SECS",
            "3",
            "server.shutdown_grace_secs",
        ),
        (
            "TOKEND_SERVER_DRAIN_DELAY_SECS",
            "3",
            "server.drain_delay_secs",
        ),
        (
            "TOKEND_SERVER_RELOAD_POLL_SECS",
            "3",
            "server.reload_poll_secs",
        ),
        (
            "TOKEND_SERVER_HEADER_READ_TIMEOUT_SECS",
            "3",
            "server.header_read_timeout_secs",
        ),
        (
            "TOKEND_SERVER_REQUEST_TIMEOUT_SECS",
            "3",
            "server.request_timeout_secs",
        ),
        (
            "TOKEND_SERVER_MAX_CONCURRENT_REQUESTS",
            "3",
            "server.max_concurrent_requests",
        ),
        (
            "TOKEND_SERVER_MAX_CONNECTIONS",
            "3",
            "server.max_connections",
        ),
        (
            "TOKEND_SERVER_MAX_CONCURRENT_REQUESTS_PER_PEER",
            "3",
            "server.max_concurrent_requests_per_peer",
        ),
        (
            "TOKEND_SERVER_MAX_CONCURRENT_STREAMS",
            "3",
            "server.max_concurrent_streams",
        ),
        (
            "TOKEND_SERVER_BODY_READ_TIMEOUT_SECS",
            "3",
            "server.body_read_timeout_secs",
        ),
        (
            "TOKEND_AUTHORIZATION_CHALLENGE_TTL_SECS",
            "3",
            "authorization.challenge_ttl_secs",
        ),
        ("TOKEND_ADMIN_LISTEN", "127.0.0.1:0", "admin.listen"),
        ("TOKEND_TLS_RELOAD_CHECK_SECS", "3", "tls.reload_check_secs"),
    ];

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_restart_only_key_is_named_when_it_changes() {
        let base = Config::load(None, Vec::new()).unwrap();
        assert!(restart_only_changes(&base, &base).is_empty());
        for (var, value, key) in RESTART_ONLY {
            let next = Config::load(None, env(&[(var, value)])).unwrap();
            assert_eq!(restart_only_changes(&base, &next), vec![*key], "{var}");
        }
        // Paths and URLs too (no env override needed to see them compared).
        let mut next = base.clone();
        next.store.url = "redis://127.0.0.1:1".into();
        next.store.tls_ca_file = Some("ca.pem".into());
        next.store.tls_cert_file = Some("c.pem".into());
        next.store.tls_key_file = Some("k.pem".into());
        next.authorization.login_url = Some("https://login.example".into());
        next.authorization.login_app_token_hash = Some("sha256:00".into());
        next.admin.token_hash = Some("sha256:00".into());
        next.tls.cert_file = Some("t.pem".into());
        next.tls.key_file = Some("t.key".into());
        next.tls.client_ca_file = Some("ca.pem".into());
        next.signing.key_file = Some("k.pem".into());
        let mut named = restart_only_changes(&base, &next);
        named.sort_unstable();
        assert_eq!(
            named,
            [
                "admin.token_hash",
                "authorization.login_app_token_hash",
                "authorization.login_url",
                "signing.key_file",
                "store.tls_ca_file",
                "store.tls_cert_file",
                "store.tls_key_file",
                "store.url",
                "tls.cert_file",
                "tls.client_ca_file",
                "tls.key_file",
            ]
        );
    }

    #[test]
    fn live_keys_are_not_reported() {
        let base = Config::load(None, Vec::new()).unwrap();
        let next = Config::load(
            None,
            env(&[
                ("TOKEND_RATE_LIMIT_PER_SEC", "5"),
                ("TOKEND_RATE_LIMIT_BURST", "7"),
                ("TOKEND_AUTH_THROTTLE_ENABLED", "false"),
                ("TOKEND_AUTH_THROTTLE_THRESHOLD", "3"),
                ("TOKEND_AUTH_THROTTLE_BASE_SECS", "2"),
                ("TOKEND_AUTH_THROTTLE_MAX_SECS", "4"),
                ("TOKEND_AUTH_THROTTLE_RESET_SECS", "5"),
            ]),
        )
        .unwrap();
        assert!(restart_only_changes(&base, &next).is_empty());
    }

    /// Log lines written while `f` runs on this thread.
    fn captured(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(sub, f);
        String::from_utf8(buf.0.lock().clone()).unwrap()
    }

    #[test]
    fn a_reload_applies_limits_live_and_warns_by_name_about_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokend.toml");
        std::fs::write(&path, "[rate_limit]\nper_sec = 1\n").unwrap();
        let settings = crate::config::load(Some(&path), Vec::new()).unwrap();
        let keys = crate::signing::ephemeral(tokend_token::Algorithm::ES256).unwrap();
        let core = Arc::new(Core::new(
            settings.boot.oauth,
            settings.live.limits,
            settings.live.clients,
            keys,
            Arc::new(crate::store::MemoryStore::new()),
        ));
        let mut reloader = Reloader::new(
            core.clone(),
            settings.file,
            ReloadOptions {
                config_path: Some(path.clone()),
                sighup: false,
                poll: None,
            },
        );
        std::fs::write(
            &path,
            "issuer = \"https://moved.example\"\n[rate_limit]\nper_sec = 9\nburst = 4\n\
             [auth_throttle]\nthreshold = 3\n[server]\nmax_connections = 5\n",
        )
        .unwrap();
        let logs = captured(|| reloader.reload().unwrap());
        let limits = core.limits();
        assert_eq!(
            limits.rate_limit,
            RateLimit {
                per_sec: 9.0,
                burst: 4
            }
        );
        assert_eq!(limits.throttle.threshold, 3);
        assert_ne!(*limits, LimitPolicy::default());
        for key in ["issuer", "server.max_connections"] {
            assert!(
                logs.lines()
                    .any(|l| l.contains("WARN") && l.contains(&format!("key=\"{key}\""))),
                "{key} not named at warn level in:\n{logs}"
            );
        }
        assert!(
            !logs.contains("rate_limit") && !logs.contains("auth_throttle"),
            "{logs}"
        );
        // The running value stays the reference: reloading the same file
        // again warns again (the change is still pending a restart).
        let again = captured(|| reloader.reload().unwrap());
        assert!(again.contains("key=\"issuer\""), "{again}");
        assert_eq!(core.settings().issuer, "http://127.0.0.1:8080");
    }
}
