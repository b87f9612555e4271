//! Watching files for a reload, shared by the configuration reloader
//! (`reload`) and the TLS certificate reloader (`transport::tls`): SIGHUP, and
//! a poll of the files' *content* (SHA-256) every interval rather than
//! inotify or modification times, so an in-place write, a rename over the
//! file and a Kubernetes symlink swap (`..data -> ..2024_...`) all register.
//!
//! A change is reported once: the caller reloads and marks what it saw, so a
//! broken file logs one failure, not one per poll. Files replaced one after
//! the other (a certificate, then its key) change the fingerprint again when
//! the second one lands, which triggers another attempt.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// Why [`FileWatch::next`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Hangup,
    Changed,
}

/// The content of each watched file (missing or unreadable files hash as
/// such).
type Fingerprint = Vec<(PathBuf, Option<[u8; 32]>)>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files.iter().map(|p| (p.clone(), read_hash(p))).collect()
}

fn read_hash(p: &Path) -> Option<[u8; 32]> {
    std::fs::read(p).ok().map(|b| Sha256::digest(&b).into())
}

/// SIGHUP and a content poll of some files; see the module docs.
pub struct FileWatch {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    tick: Option<tokio::time::Interval>,
    seen: Fingerprint,
}

impl FileWatch {
    /// Starts watching `files`: every `poll` (never when `None`), and on
    /// SIGHUP when `sighup`. The SIGHUP handler is installed here, before the
    /// caller starts serving, since SIGHUP's default action ends the process.
    /// Needs a Tokio runtime.
    pub fn new(sighup: bool, poll: Option<Duration>, files: &[PathBuf]) -> Self {
        #[cfg(unix)]
        let hup = if sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file change only");
                    None
                }
            }
        } else {
            None
        };
        #[cfg(not(unix))]
        let _ = sighup;
        let tick = poll.map(|every| {
            let mut t = tokio::time::interval(every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        Self {
            #[cfg(unix)]
            hup,
            tick,
            seen: fingerprint(files),
        }
    }

    /// Waits for SIGHUP or for the content of `files` to differ from what was
    /// last marked seen; `None` once `stop` is cancelled. The caller reloads,
    /// then calls [`FileWatch::mark_seen`].
    pub async fn next(&mut self, stop: &CancellationToken, files: &[PathBuf]) -> Option<Trigger> {
        loop {
            #[cfg(unix)]
            let hangup = async {
                match self.hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let tick = async {
                match self.tick.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = stop.cancelled() => return None,
                () = hangup => return Some(Trigger::Hangup),
                () = tick => {
                    if fingerprint(files) != self.seen {
                        return Some(Trigger::Changed);
                    }
                }
            }
        }
    }

    /// Remembers the current content of `files` (after a reload attempt,
    /// successful or not).
    pub fn mark_seen(&mut self, files: &[PathBuf]) {
        self.seen = fingerprint(files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_change_is_reported_once_and_stop_ends_the_wait() {
        let dir = std::env::temp_dir().join(format!("tokend-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = vec![dir.join("a"), dir.join("missing")];
        std::fs::write(&files[0], "one").unwrap();
        let stop = CancellationToken::new();
        let mut w = FileWatch::new(false, Some(Duration::from_millis(10)), &files);
        std::fs::write(&files[0], "two").unwrap();
        assert_eq!(w.next(&stop, &files).await, Some(Trigger::Changed));
        w.mark_seen(&files);
        // Nothing changed since: the next wait only ends with `stop`.
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stopper.cancel();
        });
        assert_eq!(w.next(&stop, &files).await, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
