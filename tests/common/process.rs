//! tokend as a child process: the one way the tests run the `tokend` binary.
//! [`tokend_command`] is the binary under test for one-shot commands
//! (`keygen`, `check-config`, `admin ...`); [`TokendProcess`] runs
//! `tokend serve --ready-file PATH` on a test configuration (listeners on
//! port 0) and waits on that machine-readable readiness signal, failing fast
//! with the child's stderr if it exits first. Killed on drop.

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::api::Api;
use super::config::ConfigBuilder;
use super::wait::eventually;

/// Bound on `tokend serve` binding its listeners and, unless skipped,
/// turning ready (generous: a loaded 2-core machine, a Redis to reach).
const START: Duration = Duration::from_secs(30);

/// The `tokend` binary under test, with `RUST_LOG` removed so the config's
/// `[log]` section decides.
pub fn tokend_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokend"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// What `tokend serve --ready-file` writes once its listeners are bound.
#[derive(Debug, serde::Deserialize)]
struct Ready {
    pid: u32,
    http: SocketAddr,
    grpc: SocketAddr,
    admin: Option<SocketAddr>,
}

/// How to start a `tokend serve` child process; see [`TokendProcess::serve`].
#[must_use]
pub struct Serve {
    config: Option<ConfigBuilder>,
    config_path: Option<PathBuf>,
    env: Vec<(String, String)>,
    probe_readyz: bool,
}

impl Serve {
    /// Sets an environment variable (e.g. a `TOKEND_<SECTION>_<KEY>`
    /// override) for the process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes the configuration to `path` instead of a private temp folder
    /// (relative paths in it resolve against `path`'s folder; a test that
    /// rewrites the file and reloads needs to know where it is).
    pub fn config_at(mut self, path: &Path) -> Self {
        self.config_path = Some(path.to_path_buf());
        self
    }

    /// Returns once the listeners are bound, without waiting for `/readyz`
    /// 200 (a TLS HTTP listener, or a store that is down on purpose).
    pub fn listeners_only(mut self) -> Self {
        self.probe_readyz = false;
        self
    }

    /// Starts the process and waits until it wrote its ready file and, by
    /// default, `/readyz` answers 200. Panics with its log if it exits or
    /// does not get there within 30 s.
    pub async fn start(self) -> TokendProcess {
        let probe = self.probe_readyz;
        let mut p = match self.spawn().await {
            Ok(p) => p,
            Err(NotStarted::Exited(status, log)) => {
                panic!("tokend serve exited ({status}) before it was ready; its log:\n{log}")
            }
            Err(NotStarted::TimedOut(log)) => {
                panic!("tokend serve wrote no ready file within {START:?}; its log:\n{log}")
            }
        };
        if probe {
            // Fail fast here too: a process that dies (e.g. on its store)
            // is not waited on for the whole deadline.
            let api = p.api.clone();
            let child = &mut p.child;
            let mut exited = None;
            let ready = eventually(START, || {
                exited = child.try_wait().ok().flatten();
                let (api, gone) = (&api, exited.is_some());
                async move { gone || api.readyz().await == 200 }
            })
            .await;
            if let Some(status) = exited {
                panic!(
                    "tokend serve exited ({status}) before it was ready; its log:\n{}",
                    p.log()
                );
            }
            if !ready {
                let log = p.log();
                p.kill_now();
                panic!("tokend serve did not become ready within {START:?}; its log:\n{log}");
            }
        }
        p
    }

    /// Starts a process that must fail to start: it exits unsuccessfully
    /// before it is ready. Returns its stderr.
    pub async fn start_expecting_failure(self) -> String {
        match self.spawn().await {
            Ok(p) => panic!(
                "tokend serve started although it should not have; its log:\n{}",
                p.log()
            ),
            Err(NotStarted::Exited(status, log)) => {
                assert!(!status.success(), "tokend serve exited 0: {log}");
                log
            }
            Err(NotStarted::TimedOut(log)) => {
                panic!("tokend serve neither started nor failed: {log}")
            }
        }
    }

    /// Spawns `tokend serve` and waits for the ready file.
    async fn spawn(self) -> Result<TokendProcess, NotStarted> {
        let dir = TempDir::with_prefix("tokend-serve-").unwrap();
        let config_path = match (self.config_path, &self.config) {
            (Some(path), Some(cfg)) => {
                cfg.write(&path);
                path
            }
            (Some(path), None) => path,
            (None, Some(cfg)) => {
                let path = dir.path().join("tokend.toml");
                cfg.write(&path);
                path
            }
            (None, None) => unreachable!("a Serve has a config or a path"),
        };
        let ready_file = dir.path().join("ready.json");
        let log_path = dir.path().join("stderr.log");
        let mut child = tokend_command()
            .args(["serve", "--config"])
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready_file)
            .envs(self.env)
            .stdout(Stdio::null())
            // A file, not a pipe: a pipe nobody drains would block tokend's
            // logging.
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("cannot run the tokend binary");
        let mut exited = None;
        let wrote = eventually(START, || {
            exited = child.try_wait().ok().flatten();
            let done = exited.is_some() || ready_file.exists();
            async move { done }
        })
        .await;
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(status) = exited {
            return Err(NotStarted::Exited(status, log()));
        }
        if !wrote {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NotStarted::TimedOut(log()));
        }
        let text = std::fs::read_to_string(&ready_file).unwrap();
        let ready: Ready =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("ready file {text:?}: {e}"));
        assert_eq!(
            ready.pid,
            child.id(),
            "the ready file names another process"
        );
        Ok(TokendProcess {
            child,
            api: Api::new(ready.http, ready.grpc, ready.admin),
            config_path,
            log_path,
            _dir: dir,
        })
    }
}

/// Why a `tokend serve` did not start; each carries its log.
enum NotStarted {
    Exited(std::process::ExitStatus, String),
    TimedOut(String),
}

/// A running `tokend serve` child process, killed (SIGKILL) on drop. Derefs
/// to [`Api`] for requests.
pub struct TokendProcess {
    child: Child,
    api: Api,
    config_path: PathBuf,
    log_path: PathBuf,
    /// Holds the ready file and the log (and the config unless placed
    /// elsewhere).
    _dir: TempDir,
}

impl Deref for TokendProcess {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TokendProcess {
    /// `tokend serve` on `config`: chain options on the returned [`Serve`],
    /// then `.start().await`.
    pub fn serve(config: &ConfigBuilder) -> Serve {
        Serve {
            config: Some(config.clone()),
            config_path: None,
            env: Vec::new(),
            probe_readyz: true,
        }
    }

    /// `tokend serve` on an existing config file (written by the test, e.g.
    /// deliberately broken).
    pub fn serve_file(path: &Path) -> Serve {
        Serve {
            config: None,
            config_path: Some(path.to_path_buf()),
            env: Vec::new(),
            probe_readyz: true,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the process was started with (SIGHUP re-reads it).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's resident set now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The process's peak resident set so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// A `kB` field of /proc/PID/status.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    /// What the process wrote to stderr (its log) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (at most 15 s) until the log contains `needle` at least `n`
    /// times; panics with the log otherwise.
    pub async fn wait_log(&self, needle: &str, n: usize) {
        let seen = eventually(Duration::from_secs(15), || async {
            self.log().matches(needle).count() >= n
        })
        .await;
        assert!(seen, "log never showed {needle:?} x{n}:\n{}", self.log());
    }

    /// Sends `signal` (a `kill -s` name: `HUP`, `TERM`, ...).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {signal} {} failed", self.pid());
    }

    /// SIGHUP: reload the configuration.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// SIGTERM: graceful shutdown.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits (at most `within`) for the process to exit; returns its exit
    /// code and log. Panics (after SIGKILL) if it is still running.
    pub async fn wait_exit(mut self, within: Duration) -> (Option<i32>, String) {
        let mut status = None;
        let child = &mut self.child;
        let exited = eventually(within, || {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
            }
            let done = status.is_some();
            async move { done }
        })
        .await;
        if !exited {
            self.kill_now();
            panic!(
                "tokend did not exit within {within:?}; its log:\n{}",
                self.log()
            );
        }
        (status.and_then(|s| s.code()), self.log())
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL (no graceful shutdown) and wait for it.
    pub fn kill(mut self) {
        self.kill_now();
    }
}

impl Drop for TokendProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}
